"""The operations behind the CLI, as a Python API: deploy, resume, cancel, rollback, delete, read."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError

from . import config as config_module
from . import secret_values
from .errors import ConfigError, EndpointBusy, NotFound, StateError, StoreUnavailable
from .model import mlmodel, requirements
from .model import uri as model_uri_module
from .model.uri import ModelSource
from .runner import DeploymentRunner, Echo
from .runner.faults import Faults
from .states import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    DeploymentStatus,
    EventKind,
)
from .store import Store, claims, describe_failure, leases, migrate, orchestrate_home, reads
from .store.tables import Deployment, Endpoint, Event, Resource, StageAttempt, utcnow
from .target_contract import DeploymentView, Invocation, Target, load_target, merged_outputs


@dataclass
class Client:
    """One handle on the state store and the deployment runner; the CLI makes one per command."""

    db_url: str | None = None
    echo: Echo | None = None
    actor: str | None = None
    lease_ttl_s: float = leases.DEFAULT_TTL_S
    owner: leases.LeaseOwner = field(default_factory=leases.LeaseOwner.current)
    # How a target name becomes a target: entry points, or what a test hands in.
    targets: Callable[[str], Target] = load_target
    # False for commands that only read: a --db-url naming no store is an error, not a new store.
    create_store: bool = True
    # True for commands that write nothing: the store's full integrity scan is left to writers.
    read_only: bool = False
    # Whether the last deploy() found the model and config already live and did nothing.
    unchanged: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.home = orchestrate_home()
        self.store = Store(
            self.db_url,
            actor=self.actor or self.owner.owner.split("/")[0],
            create=self.create_store,
            check_integrity=not self.read_only,
        )
        self.runner = DeploymentRunner(
            self.store,
            self.owner,
            self.home,
            echo=self.echo,
            lease_ttl_s=self.lease_ttl_s,
            targets=self.targets,
            faults=Faults.from_env(),
        )

    def close(self) -> None:
        self.store.dispose()

    # -- writes ---------------------------------------------------------------------------

    def deploy(
        self,
        model_uri: str,
        *,
        name: str,
        target: str = "local",
        config: Mapping[str, Any] | None = None,
        config_file: str | Path | None = None,
        detach: bool = False,
        wait_in_queue: bool = False,
        poll_interval_s: float = 0.5,
        reset_config: bool = False,
        force: bool = False,
    ) -> int:
        """Check the input, resolve the model URI into a snapshot, record the deployment, and run
        it; returns its id.

        On an endpoint with a live deployment the config starts from that deployment's chosen
        keys (`reset_config` starts from the defaults); the file, then `config`, go on top. When
        the live deployment already serves this model with this config nothing happens and its
        id is returned (`self.unchanged` is True) unless `force`. `detach` only queues it for a
        worker; `wait_in_queue` queues it behind a busy endpoint and runs it here when its turn
        comes. Raises ConfigError for bad input or a model URI that cannot be resolved (nothing
        recorded), EndpointBusy when the endpoint is busy and neither was asked."""
        mlmodel.check_endpoint_name(name)
        plugin = self.targets(target)
        file_values = plugin.normalize_config(
            config_module.load_config_file(config_file) if config_file else {}, "config file"
        )
        current = self._live(name, target)
        live = None if reset_config or current.config is None else current.config
        resolved, config_sources = _layered_config(
            target, plugin.config_keys, live, file_values, plugin.normalize_config(config or {}, "-C")
        )
        model = model_uri_module.resolve(model_uri, self.home / "models", log=self.runner.echo)
        info = model.info
        self.unchanged = False
        if live is not None and not force and live.digest == info.digest and live.config == resolved:
            self.unchanged = True
            self.runner.echo(
                f"endpoint {name} already serves {model.source.summary()} ({info.digest[:12]}) "
                f"with this config as deployment {live.id}; nothing to do (--force deploys it again)"
            )
            return live.id
        requirements.check_policy(info.requirements, requirements.Policy.from_config(resolved))
        plugin.preflight(resolved, current.outputs)
        if not detach:  # an unset env:NAME or unreadable file:PATH fails now, with nothing recorded
            secret_values.resolve_config(resolved)  # (a worker resolves them in its own environment)
        queued = detach or wait_in_queue
        deployment_id, fence = self._create(
            name,
            target,
            model.source.uri,
            info.digest,
            resolved,
            None,
            queued,
            model_source=model.source.as_dict(),
            config_sources=config_sources,
        )
        if detach:
            return deployment_id
        if fence is None:
            fence = self._wait_for_turn(deployment_id, poll_interval_s)
        self._run(deployment_id, fence)
        return deployment_id

    def _run(self, deployment_id: int, fence: Any) -> None:
        """Run the deployment here; a database that goes away mid-run is an error that says how
        to go on, not a driver traceback (workers handle it themselves: they wait and take over)."""
        from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

        try:
            self.runner.run(deployment_id, fence)
        except (OperationalError, InterfaceError, DisconnectionError) as exc:
            reason, hint = describe_failure(exc, self.store.sqlite_path)
            raise StoreUnavailable(
                f"the state store {self.store.display_url} stopped answering during deployment {deployment_id}: {reason}",
                hint=f"{hint}; what was recorded is kept, and `orchestrate resume {deployment_id}` continues "
                "where it stopped",
            ) from exc

    def _wait_for_turn(self, deployment_id: int, poll_interval_s: float) -> Any:
        announced = False
        while True:
            claim = claims.claim_queued(self.store, self.owner, self.lease_ttl_s, deployment_id=deployment_id)
            if claim is not None:
                return claim.fence
            with self.store.read() as session:
                status = session.get_one(Deployment, deployment_id).status
            if status != DeploymentStatus.QUEUED.value:  # a worker took it, or it was cancelled
                raise StateError(
                    f"deployment {deployment_id} left the queue as {status} while waiting",
                    hint=f"see `orchestrate status {deployment_id}`",
                )
            if not announced:
                ahead = claims.queue_position(self.store, deployment_id)
                self.runner.echo(
                    f"deployment {deployment_id} queued behind the endpoint's current work ({ahead} queued ahead)"
                )
                announced = True
            time.sleep(poll_interval_s)

    def _create(
        self,
        name: str,
        target: str,
        model_uri: str,
        digest: str,
        resolved: dict[str, Any],
        source_id: int | None,
        queued: bool,
        *,
        model_source: dict[str, Any] | None = None,
        config_sources: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        for _ in range(3):  # a concurrent first deploy may insert the endpoint under us
            try:
                with self.store.write() as tx:
                    endpoint = tx.session.execute(
                        select(Endpoint).where(Endpoint.name == name).with_for_update()
                    ).scalar_one_or_none()
                    if endpoint is None:
                        endpoint = Endpoint(name=name, target=target, config=secret_values.redact(resolved))
                        tx.session.add(endpoint)
                        tx.session.flush()
                    elif endpoint.deleted_at is not None:
                        endpoint.deleted_at = None
                        endpoint.target = target
                    elif endpoint.target != target:
                        raise ConfigError(
                            f"endpoint {name!r} already exists on target {endpoint.target!r}",
                            hint=f"choose another --name, or `orchestrate delete {name}` first",
                        )
                    if not queued:
                        self._check_idle(tx.session, endpoint)
                    deployment = Deployment(
                        endpoint_id=endpoint.id,
                        target=target,
                        model_uri=model_uri,
                        model_digest=digest,
                        model_source=model_source,
                        config_sources=config_sources,
                        config=resolved,
                        status=DeploymentStatus.QUEUED.value if queued else DeploymentStatus.RUNNING.value,
                        source_deployment_id=source_id,
                        previous_live_id=endpoint.live_deployment_id,
                        actor=self.store.actor,
                        started_at=None if queued else utcnow(),
                    )
                    tx.session.add(deployment)
                    tx.session.flush()
                    fence = (
                        None
                        if queued
                        else leases.take(tx.session, endpoint, deployment.id, self.owner, self.lease_ttl_s)
                    )
                    model = ModelSource.from_dict(model_source, model_uri).summary()
                    what = (
                        f"rollback to deployment {source_id}" if source_id else "model"
                    ) + f" {model} ({digest[:12]})"
                    tx.event(
                        EventKind.DEPLOYMENT_CREATED,
                        f"deployment {deployment.id} of {what} on {name} ({target})",
                        endpoint_id=endpoint.id,
                        deployment_id=deployment.id,
                        data={"model_uri": model_uri, "queued": queued, "model": model},
                    )
                    return deployment.id, fence
            except IntegrityError:
                continue
        raise EndpointBusy(f"endpoint {name!r} is being created by another deploy", hint="try again")

    @staticmethod
    def _check_idle(session: Any, endpoint: Endpoint) -> None:
        active = (
            session.execute(
                select(Deployment)
                .where(
                    Deployment.endpoint_id == endpoint.id,
                    Deployment.status.in_([s.value for s in ACTIVE_STATUSES]),
                )
                .order_by(Deployment.id)
            )
            .scalars()
            .first()
        )
        if not leases.holder_is_gone(endpoint):
            raise leases.busy_error(endpoint)
        if active is not None and active.status == DeploymentStatus.QUEUED.value:
            raise EndpointBusy(
                f"endpoint {endpoint.name!r} has queued deployment {active.id} waiting its turn",
                hint="pass --queue to wait behind it, --detach to queue for a worker, "
                f"or `orchestrate cancel {active.id}`",
            )
        if active is not None:
            raise EndpointBusy(
                f"endpoint {endpoint.name!r} has unfinished deployment {active.id} ({active.status}, "
                f"its runner is gone)",
                hint=f"finish it with `orchestrate resume {active.id}` or end it with `orchestrate cancel {active.id}`",
            )

    def resume(self, deployment_id: int) -> int:
        """Take over a failed or abandoned deployment and run it from its first unfinished stage."""
        with self.store.write() as tx:
            deployment = self._get(tx.session, deployment_id)
            status = DeploymentStatus(deployment.status)
            if status in TERMINAL_STATUSES:
                raise StateError(
                    f"deployment {deployment_id} already {status.value}; there is nothing to resume",
                    hint=f"deploy again, or roll back with `orchestrate rollback NAME --to {deployment_id}`",
                )
            endpoint = leases.lock_endpoint(tx.session, deployment.endpoint_id)
            fence = leases.take(tx.session, endpoint, deployment.id, self.owner, self.lease_ttl_s)
            other = (
                tx.session.execute(
                    select(Deployment.id).where(
                        Deployment.endpoint_id == endpoint.id,
                        Deployment.id != deployment.id,
                        Deployment.status.in_([s.value for s in ACTIVE_STATUSES]),
                    )
                )
                .scalars()
                .first()
            )
            if other is not None:
                raise EndpointBusy(
                    f"endpoint {endpoint.name!r} has unfinished deployment {other}",
                    hint=f"resume or cancel deployment {other} first",
                )
            abandoned = claims.abandon_running_attempts(tx.session, deployment.id)
            if status != DeploymentStatus.RUNNING:
                deployment.status = DeploymentStatus.RUNNING.value
            deployment.error = None
            deployment.finished_at = None
            deployment.started_at = deployment.started_at or utcnow()
            tx.event(
                EventKind.DEPLOYMENT_RESUMED,
                f"deployment {deployment_id} resumed by {self.owner.owner}"
                + (f" ({abandoned} abandoned attempt(s) marked)" if abandoned else ""),
                endpoint_id=endpoint.id,
                deployment_id=deployment.id,
            )
        self._run(deployment_id, fence)
        return deployment_id

    def cancel(self, deployment_id: int, *, wait_s: float = 600) -> DeploymentStatus:
        """Stop a deployment at its next stage boundary and release what it created."""
        with self.store.write() as tx:
            deployment = self._get(tx.session, deployment_id)
            status = DeploymentStatus(deployment.status)
            if status in TERMINAL_STATUSES:
                raise StateError(f"deployment {deployment_id} already {status.value}; nothing to cancel")
            if status == DeploymentStatus.QUEUED:  # nothing made yet, no lease to take
                deployment.status = DeploymentStatus.CANCELLED.value
                deployment.finished_at = utcnow()
                tx.event(
                    EventKind.DEPLOYMENT_CANCELLED,
                    f"deployment {deployment_id} cancelled while queued",
                    endpoint_id=deployment.endpoint_id,
                    deployment_id=deployment_id,
                )
                return DeploymentStatus.CANCELLED
            endpoint = leases.lock_endpoint(tx.session, deployment.endpoint_id)
            runner_alive = endpoint.lease_deployment_id == deployment.id and not leases.holder_is_gone(endpoint)
            if runner_alive:
                deployment.cancel_requested = True
                tx.event(
                    EventKind.CANCEL_REQUESTED,
                    f"cancel of deployment {deployment_id} requested",
                    endpoint_id=endpoint.id,
                    deployment_id=deployment_id,
                )
                fence = None
            else:
                fence = leases.take(tx.session, endpoint, deployment.id, self.owner, self.lease_ttl_s)
                claims.abandon_running_attempts(tx.session, deployment.id)
                name = endpoint.name
        if fence is None:
            return self._wait_for_end(deployment_id, wait_s)
        with self.store.read() as session:
            view = DeploymentView.of(session.get_one(Deployment, deployment_id), name)
        try:
            with leases.Heartbeat(self.store, fence):
                return self.runner.abort(
                    view, fence, self.targets(view.target), DeploymentStatus.CANCELLED, "cancelled by request"
                )
        finally:
            leases.release(self.store, fence)

    def _wait_for_end(self, deployment_id: int, wait_s: float) -> DeploymentStatus:
        deadline = time.monotonic() + wait_s
        while True:
            with self.store.read() as session:
                status = DeploymentStatus(session.get_one(Deployment, deployment_id).status)
            if status in TERMINAL_STATUSES or status == DeploymentStatus.FAILED or time.monotonic() > deadline:
                return status
            time.sleep(0.2)

    def rollback(self, name: str, *, to: int | None = None) -> int:
        """Redeploy an earlier good deployment's recorded build and config, without rebuilding."""
        with self.store.read() as session:
            endpoint = self._endpoint(session, name)
            if to is None:
                to = (
                    session.execute(
                        select(Deployment.id)
                        .where(
                            Deployment.endpoint_id == endpoint.id,
                            Deployment.status == DeploymentStatus.SUCCEEDED.value,
                            Deployment.id != (endpoint.live_deployment_id or -1),
                            Deployment.id < (endpoint.live_deployment_id or 1 << 62),
                        )
                        .order_by(Deployment.id.desc())
                    )
                    .scalars()
                    .first()
                )
                if to is None:
                    raise ConfigError(f"endpoint {name!r} has no earlier successful deployment to roll back to")
            source = session.get(Deployment, to)
            if source is None or source.endpoint_id != endpoint.id:
                raise NotFound(
                    f"deployment {to} is not a deployment of endpoint {name!r}",
                    hint=f"see `orchestrate history {name}`",
                )
            if source.status != DeploymentStatus.SUCCEEDED.value:
                raise ConfigError(f"deployment {to} {source.status}; only a succeeded deployment can be restored")
            if source.id == endpoint.live_deployment_id:
                raise ConfigError(f"deployment {to} is already live on {name!r}")
            source_view = (source.target, source.model_uri, source.model_digest, dict(source.config))
            recorded = (source.model_source, source.config_sources)
        target, model_uri, digest, resolved = source_view
        secret_values.resolve_config(resolved)  # an env:NAME unset since then fails now, with nothing recorded
        deployment_id, fence = self._create(
            name,
            target,
            model_uri,
            digest,
            resolved,
            to,
            queued=False,
            model_source=recorded[0],
            config_sources=recorded[1],
        )
        self._run(deployment_id, fence)
        return deployment_id

    def reconfigure(self, name: str, config: Mapping[str, Any]) -> int:
        """Redeploy the live deployment's recorded model with its config patched by `config`
        (`mlflow deployments update` without a model); returns the new deployment's id.
        Every stage runs again, as the new config may change the build."""
        with self.store.read() as session:
            endpoint = self._endpoint(session, name)
            if endpoint.live_deployment_id is None:
                raise ConfigError(
                    f"endpoint {name!r} has no live deployment to reconfigure",
                    hint=f"deploy a model first: `orchestrate deploy MODEL --name {name}`",
                )
            live = session.get_one(Deployment, endpoint.live_deployment_id)
            target, model_uri, digest = live.target, live.model_uri, live.model_digest
            model_source = live.model_source
        plugin = self.targets(target)
        current = self._live(name, target)
        resolved, config_sources = _layered_config(
            target, plugin.config_keys, current.config, {}, plugin.normalize_config(config, "-C")
        )
        plugin.preflight(resolved, current.outputs)
        deployment_id, fence = self._create(
            name,
            target,
            model_uri,
            digest,
            resolved,
            None,
            queued=False,
            model_source=model_source,
            config_sources=config_sources,
        )
        self._run(deployment_id, fence)
        return deployment_id

    def delete_plan(self, name: str) -> dict[str, Any]:
        """What `delete(name)` would release, for the confirmation prompt; raises NotFound."""
        from .states import LIVE_RESOURCE_STATES

        with self.store.read() as session:
            endpoint = self._endpoint(session, name)
            resources = session.execute(
                select(Resource.kind, Resource.name)
                .where(
                    Resource.endpoint_id == endpoint.id,
                    Resource.state.in_([s.value for s in LIVE_RESOURCE_STATES]),
                )
                .order_by(Resource.id)
            ).all()
            target, live_id = endpoint.target, endpoint.live_deployment_id
        disposable = self.targets(target).disposable_kinds
        return {
            "endpoint": name,
            "target": target,
            "live_deployment_id": live_id,
            "releases": [f"{kind} {resource}" for kind, resource in resources if kind in disposable],
        }

    def delete(self, name: str) -> list[str]:
        """Stop everything the endpoint serves with and mark it deleted; returns what was released."""
        with self.store.write() as tx:
            endpoint = self._endpoint(tx.session, name, lock=True)
            self._check_idle(tx.session, endpoint)
            anchor = (
                endpoint.live_deployment_id
                or tx.session.execute(
                    select(func.max(Deployment.id)).where(Deployment.endpoint_id == endpoint.id)
                ).scalar()
            )
            if anchor is None:
                endpoint.deleted_at = utcnow()
                tx.event(EventKind.ENDPOINT_DELETED, f"endpoint {name} deleted", endpoint_id=endpoint.id)
                return []
            fence = leases.take(tx.session, endpoint, anchor, self.owner, self.lease_ttl_s)
            view = DeploymentView.of(tx.session.get_one(Deployment, anchor), name)
        plugin = self.targets(view.target)
        try:
            ctx = self.runner.cleanup_context(view, fence, "cleanup-0.log")
            released = [f"{r.kind} {r.name}" for r in plugin.release_disposable(ctx, ctx.endpoint_resources())]
            with self.store.write(fence) as tx:
                endpoint = tx.session.get_one(Endpoint, view.endpoint_id)
                endpoint.live_deployment_id = None
                endpoint.deleted_at = utcnow()
                tx.event(
                    EventKind.ENDPOINT_DELETED,
                    f"endpoint {name} deleted; released {len(released)} resource(s)",
                    endpoint_id=endpoint.id,
                    data={"released": released},
                )
        finally:
            leases.release(self.store, fence)
        if view.config.get("registry_tags"):  # the version no longer serves here: say so in the registry
            with self.store.read() as session:
                anchor_row = session.get_one(Deployment, view.id)
                source = ModelSource.from_dict(anchor_row.model_source, anchor_row.model_uri)
            warning = model_uri_module.untag_version(source, name)
            if warning:
                self.runner.echo(f"warning: {warning}")
        return released

    # -- reads ----------------------------------------------------------------------------

    @staticmethod
    def _get(session: Any, deployment_id: int) -> Deployment:
        return reads.deployment_row(session, deployment_id)

    @staticmethod
    def _endpoint(session: Any, name: str, *, lock: bool = False) -> Endpoint:
        return reads.endpoint_row(session, name, lock=lock)

    def _live(self, name: str, target: str) -> _Live:
        """Endpoint `name`'s live deployment, in one read: its config (what a redeploy on
        `target` starts from; None on another target) and its outputs (for the preflight)."""
        with self.store.read() as session:
            row = session.execute(
                select(Deployment)
                .join(Endpoint, Endpoint.live_deployment_id == Deployment.id)
                .where(Endpoint.name == name, Endpoint.deleted_at.is_(None))
            ).scalar_one_or_none()
            if row is None:
                return _Live(None, None)
            config = (
                _LiveConfig(row.id, row.model_digest, dict(row.config), dict(row.config_sources or {}))
                if row.target == target
                else None
            )
            return _Live(config, merged_outputs(session, row.id))

    def resolve_ref(self, ref: str) -> tuple[int | None, str | None]:
        """A deployment id (ASCII digits) or an endpoint name: (deployment id, endpoint name)."""
        from .arguments import deployment_id_of

        deployment_id = deployment_id_of(ref)
        return (deployment_id, None) if deployment_id is not None else (None, ref)

    def deployment_record(
        self, deployment_id: int, *, with_attempts: bool = True, describe: bool = False
    ) -> reads.DeploymentRecord:
        with self.store.read() as session:
            outputs = merged_outputs(session, deployment_id)
            record = reads.deployment(session, deployment_id, with_attempts=with_attempts, outputs=outputs)
        if describe:
            record = replace(record, runtime=self.targets(record.target).describe(outputs))
        return record

    def endpoint_status(self, name: str) -> reads.EndpointStatus:
        with self.store.read() as session:
            status = reads.endpoint_status(session, name)
        live_id, latest_id = status.live_deployment_id, status.latest_deployment_id
        return replace(
            status,
            live=self.deployment_record(live_id, with_attempts=False, describe=True) if live_id else None,
            latest=self.deployment_record(latest_id) if latest_id is not None and latest_id != live_id else None,
        )

    def list_deployments(self, *, limit: int = 50, endpoint: str | None = None) -> list[reads.DeploymentRecord]:
        with self.store.read() as session:
            return reads.deployments(session, limit=limit, endpoint=endpoint)

    def list_endpoints(self) -> list[reads.EndpointSummary]:
        with self.store.read() as session:
            return reads.endpoints(session)

    def history(self, ref: str, *, limit: int = 200) -> list[reads.RecordedEvent]:
        deployment_id, name = self.resolve_ref(ref)
        with self.store.read() as session:
            return reads.history(session, deployment_id=deployment_id, endpoint=name, limit=limit)

    def events(
        self, *, after_id: int = 0, since: dt.datetime | None = None, endpoint: str | None = None, limit: int = 1000
    ) -> list[reads.RecordedEvent]:
        """Events after an event id and/or a time, oldest first, for streaming to CI logs."""
        with self.store.read() as session:
            return reads.events(session, after_id=after_id, since=since, endpoint=endpoint, limit=limit)

    def gc(self, *, older_than: dt.timedelta, dry_run: bool = False) -> dict[str, int]:
        """Delete attempts, events and deleted-resource rows of deployments that ended before
        the cutoff, keeping every endpoint's live deployment and the one before it."""
        cutoff = utcnow() - older_than
        with self.store.write() as tx:
            kept = set()
            for (live_id,) in tx.session.execute(
                select(Endpoint.live_deployment_id).where(Endpoint.live_deployment_id.is_not(None))
            ).all():
                kept.add(live_id)
                previous = tx.session.get_one(Deployment, live_id).previous_live_id
                if previous is not None:
                    kept.add(previous)
            ended = [s.value for s in TERMINAL_STATUSES] + [DeploymentStatus.FAILED.value]
            has_history = exists().where(StageAttempt.deployment_id == Deployment.id) | exists().where(
                Event.deployment_id == Deployment.id
            )
            old = [
                row
                for (row,) in tx.session.execute(
                    select(Deployment.id).where(
                        Deployment.status.in_(ended), Deployment.finished_at < cutoff, has_history
                    )
                ).all()
                if row not in kept
            ]
            counts = {"deployments": len(old), "attempts": 0, "events": 0, "resources": 0}
            for chunk in (old[i : i + 500] for i in range(0, len(old), 500)):
                for table, key in ((StageAttempt, "attempts"), (Event, "events")):
                    query = delete(table).where(table.deployment_id.in_(chunk))
                    if not dry_run:
                        counts[key] += tx.session.execute(query).rowcount  # type: ignore[attr-defined]
                    else:
                        counts[key] += tx.session.execute(
                            select(func.count()).select_from(table).where(table.deployment_id.in_(chunk))
                        ).scalar_one()
                resources = (
                    select(func.count())
                    .select_from(Resource)
                    .where(Resource.deployment_id.in_(chunk), Resource.state == "deleted")
                )
                counts["resources"] += tx.session.execute(resources).scalar_one()
                if not dry_run:
                    tx.session.execute(
                        delete(Resource).where(Resource.deployment_id.in_(chunk), Resource.state == "deleted")
                    )
            if not dry_run:
                tx.event(
                    EventKind.GC,
                    f"pruned {counts['attempts']} attempts, {counts['events']} events, "
                    f"{counts['resources']} deleted resources of {counts['deployments']} deployments "
                    f"that ended before {cutoff.isoformat()}",
                    data=counts,
                )
            else:
                tx.session.rollback()
        return counts

    def predict(self, name: str, body: bytes, content_type: str = "application/json") -> Invocation:
        """Send `body` (JSON or CSV, as `content_type` says) to endpoint `name`'s live deployment
        and return its answer as it came, whatever its status."""
        target, outputs = self.live_target(name)
        return target.invoke(outputs, body, content_type)

    def logs(self, name: str, tail: int = 100) -> str:
        """The last `tail` lines of endpoint `name`'s live server log."""
        target, outputs = self.live_target(name)
        return target.logs(outputs, tail)

    def live_target(self, name: str) -> tuple[Target, dict[str, Any]]:
        """The target plugin and recorded outputs of the endpoint's live deployment."""
        with self.store.read() as session:
            endpoint = self._endpoint(session, name)
            if endpoint.live_deployment_id is None:
                raise ConfigError(
                    f"endpoint {name!r} has no live deployment",
                    hint=f"deploy one: `orchestrate deploy MODEL --name {name}`",
                )
            outputs = merged_outputs(session, endpoint.live_deployment_id)
            target = endpoint.target
        return self.targets(target), outputs


@dataclass(frozen=True)
class DowngradePlan:
    """What `StoreSchema.downgrade` to `revision` would do, for a person to confirm first."""

    store: str  # the store's URL, password masked
    revision: str
    steps: tuple[migrate.Revision, ...]  # the migrations reverted, newest first
    dropped_rows: Mapping[str, int] | None  # to `base`: every table dropped, with its rows
    backup: bool  # a SQLite store is backed up beside itself first

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "revision": self.revision,
            "steps": [{"id": step.id, "doc": step.doc} for step in self.steps],
            "dropped_rows": dict(self.dropped_rows) if self.dropped_rows is not None else None,
            "backup": self.backup,
        }


class StoreSchema:
    """The state store's schema revision, moved by hand (`orchestrate db`): it opens the store
    without migrating it, and only `upgrade` (with `create=True`) makes a store where none is."""

    def __init__(self, db_url: str | None = None, *, create: bool = False) -> None:
        self.store = Store(db_url, actor="cli", migrate_schema=False, create=create)

    @property
    def display_url(self) -> str:
        return self.store.display_url

    def current(self) -> str | None:
        return migrate.current_revision(self.store.engine)

    def upgrade(self, revision: str = "head") -> str | None:
        """Apply the migrations up to `revision`; returns the revision the store is at."""
        migrate.upgrade(self.store.engine, revision)
        return self.current()

    def downgrade_plan(self, revision: str) -> DowngradePlan:
        engine = self.store.engine
        steps = tuple(migrate.downgrade_steps(engine, revision))
        return DowngradePlan(
            store=self.display_url,
            revision=revision,
            steps=steps,
            dropped_rows=migrate.table_row_counts(engine) if revision == "base" and steps else None,
            backup=self.store.sqlite_path is not None,
        )

    def downgrade(self, plan: DowngradePlan) -> Path | None:
        """Carry `plan` out: back a SQLite store up, then revert its steps; returns the backup."""
        if not plan.steps:
            return None
        backup = migrate.backup_sqlite(self.store.engine) if plan.backup else None
        migrate.downgrade(self.store.engine, plan.revision)
        return backup

    def close(self) -> None:
        self.store.dispose()


@dataclass(frozen=True)
class _LiveConfig:
    id: int
    digest: str
    config: dict[str, Any]
    sources: dict[str, Any]  # key -> where it came from; empty for deployments made before this was kept


@dataclass(frozen=True)
class _Live:
    config: _LiveConfig | None
    outputs: dict[str, Any] | None


DEFAULT_SOURCE = "default"


def _layered_config(
    target: str,
    keys: Mapping[str, config_module.ConfigKey],
    live: _LiveConfig | None,
    file_values: Mapping[str, Any],
    cli_values: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, str]]:
    """The config of a new deployment and where each key came from: defaults, then the keys the
    live deployment's user chose (not its defaults, so a default changed since follows), then the
    config file, then -C (as `mlflow deployments update` patches)."""
    inherited: dict[str, Any] = {}
    if live is not None:
        known = {**config_module.ENGINE_KEYS, **keys}
        for key, value in live.config.items():
            if key not in known:
                continue  # a key this version of the target no longer has
            origin = live.sources.get(key)
            chosen = origin != DEFAULT_SOURCE if origin is not None else value != known[key].default
            if chosen:
                inherited[key] = value
    resolved = config_module.resolve(target, keys, {**inherited, **file_values}, cli_values)
    sources: dict[str, str] = {}
    for key in resolved:
        if key in cli_values:
            sources[key] = "-C"
        elif key in file_values:
            sources[key] = "config file"
        elif key in inherited and live is not None:
            sources[key] = f"deployment {live.id}"
        else:
            sources[key] = DEFAULT_SOURCE
    return resolved, sources
