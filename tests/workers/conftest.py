"""Worker drills: real `orchestrate worker` processes against a real state store.

- ``noop_model``: a minimal MLflow model directory; the noop target never loads it.
- ``cluster``: a :class:`Cluster` bound to this test's ``ORCHESTRATE_HOME`` and a state store
  (``cluster.db_url``, set by the test or by the ``pg_cluster`` / ``any_cluster`` fixtures; helpers in ``_cluster.py``).
  It starts workers and CLI commands as subprocesses, each worker logging JSON lines to its own
  file (never a pipe: 400 deployments log more than a pipe buffer holds), and at the end of the
  test stops every worker still running (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _cluster import Cluster


@pytest.fixture
def cluster(orchestrate_home: Path) -> Iterator[Cluster]:
    helper = Cluster(home=orchestrate_home)
    try:
        yield helper
    finally:
        helper.close()


@pytest.fixture
def pg_cluster(cluster: Cluster, fresh_pg_url: str) -> Cluster:
    """A cluster on a fresh PostgreSQL database."""
    cluster.db_url = fresh_pg_url
    return cluster


@pytest.fixture
def any_cluster(cluster: Cluster, db_url: str) -> Cluster:
    """A cluster on SQLite and on PostgreSQL (parametrized through ``db_url``)."""
    cluster.db_url = db_url
    return cluster

