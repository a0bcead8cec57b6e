"""The status table: one initial status, terminal means terminal, everything ends somewhere."""

from __future__ import annotations

import pytest

from orchestrator.errors import StateError
from orchestrator.states import (
    INITIAL_STATUS,
    TERMINAL_STATUSES,
    TRANSITIONS,
    DeploymentStatus,
    check_transition,
)


def test_every_status_has_a_row() -> None:
    assert set(TRANSITIONS) == set(DeploymentStatus)


def test_nothing_leaves_a_terminal_status() -> None:
    for status in TERMINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset(), status


def _reachable(start: DeploymentStatus) -> set[DeploymentStatus]:
    seen = {start}
    frontier = [start]
    while frontier:
        for following in TRANSITIONS[frontier.pop()]:
            if following not in seen:
                seen.add(following)
                frontier.append(following)
    return seen


def test_every_status_is_reachable_from_the_initial_one() -> None:
    assert _reachable(INITIAL_STATUS) == set(DeploymentStatus)


def test_every_status_can_reach_a_terminal_one() -> None:
    for status in DeploymentStatus:
        assert _reachable(status) & TERMINAL_STATUSES, status


def test_initial_status_has_no_way_in() -> None:
    assert all(INITIAL_STATUS not in moves for moves in TRANSITIONS.values())


def test_an_illegal_move_names_deployment_and_statuses() -> None:
    with pytest.raises(StateError, match=r"deployment 7 cannot move from succeeded to running"):
        check_transition(7, DeploymentStatus.SUCCEEDED, DeploymentStatus.RUNNING)
    check_transition(7, DeploymentStatus.FAILED, DeploymentStatus.RUNNING)
