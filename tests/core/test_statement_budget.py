"""The store's cost per deployment, counted: SQL statements and commits of one noop
deployment run in-process (`Client.deploy`), on SQLite and PostgreSQL.

docs/performance.md explains how these numbers came down (one transaction per stage
boundary, statements built once). The budgets below are today's counts: a change that adds a
statement or a commit to every deployment fails here and has to say why in that document,
rather than slow every deployment unnoticed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event

# (statements, commits) of one forced redeploy of a live endpoint; BEGIN is a statement on SQLite,
# PostgreSQL has 15 BEGINs that are not (psycopg sends them with the first statement).
BUDGETS = {"sqlite": (77, 15), "postgresql": (62, 15)}  # measured 2026-12-02


@contextmanager
def counted(engine: object) -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()

    def on_statement(conn: object, cursor: object, statement: str, *args: object) -> None:
        counts["statements"] += 1
        counts[statement.split(None, 1)[0].upper()] += 1

    def on_commit(conn: object) -> None:
        counts["commits"] += 1

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "commit", on_commit)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine, "commit", on_commit)


def test_a_noop_deployment_stays_within_its_statement_budget(db_url: str, noop_model: Path) -> None:
    from orchestrator.api import Client

    client = Client(db_url=db_url)
    try:
        backend = client.store.engine.url.get_backend_name()
        client.deploy(str(noop_model), name="budget", target="noop", config={"sleep_s": 0})  # imports, caches
        with counted(client.store.engine) as counts:
            deployment_id = client.deploy(str(noop_model), name="budget", target="noop", config={"sleep_s": 0},
                                          force=True)
        assert client.deployment_record(deployment_id).status == "succeeded"
    finally:
        client.close()
    statements, commits = BUDGETS[backend]
    print(f"{backend}: {dict(counts)}")
    assert counts["statements"] <= statements, (
        f"a noop deployment now runs {counts['statements']} statements on {backend} (budget {statements}): "
        f"{dict(counts)}; if that is needed, say why in docs/performance.md and raise the budget")
    assert counts["commits"] <= commits, (
        f"a noop deployment now commits {counts['commits']} times on {backend} (budget {commits}): {dict(counts)}")
