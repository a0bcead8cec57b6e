"""The orphan claim reads its candidates without locks, so what it read may be stale by the
time it locks the endpoint: on real PostgreSQL, a deployment that ended in between (here: a
`cancel` of the orphan that ran to completion, lease released) must not be adopted."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from orchestrator.api import Client
from orchestrator.store import Store, claims, leases


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_orphan_that_ended_after_the_unlocked_read_is_not_adopted(fresh_pg_url: str, noop_model: Path,
                                                                   monkeypatch: Any) -> None:
    client = Client(db_url=fresh_pg_url)
    store = Store(fresh_pg_url, actor="test")
    try:
        deployment_id = client.deploy(str(noop_model), name="orphan", target="noop", detach=True)
        dead = leases.LeaseOwner(owner=f"dead/pid:{_dead_pid()}/x", host=socket.gethostname(), pid=_dead_pid())
        claimed = claims.claim_queued(store, dead, 30.0)
        assert claimed is not None and claimed.deployment_id == deployment_id  # running, holder dead

        real_holder_is_gone = leases.holder_is_gone
        interleaved: list[int] = []

        def cancel_in_between(endpoint: Any) -> bool:
            # Called first on the unlocked candidate row: the orphan is cancelled and its lease
            # released, by another connection, before the claim locks the endpoint.
            if not interleaved:
                interleaved.append(1)
                assert client.cancel(deployment_id).value == "cancelled"
            return real_holder_is_gone(endpoint)

        monkeypatch.setattr(leases, "holder_is_gone", cancel_in_between)
        rescuer = leases.LeaseOwner.current("rescuer")
        taken = claims.claim_orphaned(store, rescuer, 30.0)
        assert interleaved
        assert taken is None, f"adopted deployment {taken.deployment_id}, which had been cancelled"
        record = client.deployment_record(deployment_id, with_attempts=False)
        assert record.status == "cancelled"
        with store.read() as session:
            assert session.connection().exec_driver_sql("SELECT lease_owner FROM endpoints").scalar_one() is None
    finally:
        store.dispose()
        client.close()
