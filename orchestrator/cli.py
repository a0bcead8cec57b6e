"""The `orchestrate` command line; the one place where errors become messages and exit codes."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .arguments import COUNT, DEPLOYMENT_ID, DURATION, Seconds, WholeNumber
from .errors import OrchestrateError
from .states import EventKind

if TYPE_CHECKING:  # the API and its records load when a command runs, so `--help` stays light
    from .api import Client
    from .store.reads import DeploymentRecord


class OrchestrateGroup(click.Group):
    """Turns an expected OrchestrateError into `Error: ...` and its exit code, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import SQLAlchemyError  # here, not at import: `--help` stays light

        try:
            return super().invoke(ctx)
        except OrchestrateError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except SQLAlchemyError as exc:  # the store failed outside a deployment run: no SQL, no parameters
            from .store import describe_failure

            reason, hint = describe_failure(exc)
            click.echo(f"Error: the state store failed: {reason} — {hint}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


def _client(
    ctx: click.Context, *, progress: bool = False, create_store: bool = False, read_only: bool = False
) -> Client:
    """The API client; only a command that starts deployments (`create_store`) may create a store
    at a --db-url where there is none; a command that writes nothing says so (`read_only`)."""
    from .api import Client
    from .progress import Progress

    reporter = Progress() if progress else None
    client = Client(
        db_url=ctx.obj.get("db_url"),
        echo=reporter.detail if reporter else None,
        create_store=create_store,
        read_only=read_only,
    )
    if reporter:
        client.store.listeners.append(_settle_on_success)  # before the line that shows it
        client.store.listeners.append(reporter.on_event)
    ctx.call_on_close(client.close)
    return client


# Set once the deployment this command runs has succeeded (its commit is done): only the report
# is left, and a Ctrl-C then must not turn the success into "Interrupted" and exit 130.
_settled = False


def _settle_on_success(event: Any) -> None:
    global _settled
    if event.kind == EventKind.DEPLOYMENT_SUCCEEDED:
        _settled = True


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
yes_option = click.option(
    "-y", "--yes", is_flag=True, help="Do it without asking (needed when stdin is not a terminal)."
)


def _confirm(what: str, yes: bool, *, command: str) -> None:
    """Say what a destructive command will destroy, then ask; without a terminal to ask on,
    refuse unless --yes."""
    from .errors import ConfigError

    click.echo(what, err=True)
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(
            f"`orchestrate {command}` asks before it destroys anything, and stdin is not a terminal",
            hint="pass --yes to go ahead without asking",
        )
    if not click.confirm("Go ahead?", default=False, err=True):
        raise OrchestrateError(f"`orchestrate {command}` stopped: nothing was changed")


@click.group(cls=OrchestrateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db-url", envvar="ORCHESTRATE_DB_URL", help="State store URL (default: SQLite in ORCHESTRATE_HOME).")
@click.version_option(package_name="orchestrate")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None) -> None:
    """Deploy MLflow models safely, resumably, with every step recorded."""
    ctx.ensure_object(dict)
    ctx.obj["db_url"] = db_url


def _model_argument(model: str | None, model_uri: str | None) -> str:
    """MODEL as the positional argument or as MLflow's -m/--model-uri; exactly one of them."""
    if model and model_uri and model != model_uri:
        raise click.UsageError(f"two models given: {model!r} and -m {model_uri!r}; give one")
    if not (model or model_uri):
        raise click.UsageError(
            "give the model: a directory or URI (runs:/, models:/, s3://…), as the argument or as -m/--model-uri"
        )
    return str(model or model_uri)


model_uri_option = click.option(
    "-m",
    "--model-uri",
    "model_uri",
    metavar="URI",
    help="The model, as MLflow names it (same as the MODEL argument): a path, file://, runs:/RUN/PATH, "
    "models:/NAME/VERSION, models:/NAME@ALIAS, s3://BUCKET/PREFIX, mlflow-artifacts:/…",
)


@cli.command()
@click.argument("model", required=False)
@model_uri_option
@click.option("-n", "--name", required=True, help="Endpoint name (letters, digits, hyphens; at most 63).")
@click.option("-t", "--target", default="local", show_default=True, help="Where to deploy (see `orchestrate targets`).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of target config.")
@click.option("-C", "assignments", multiple=True, metavar="KEY=VALUE", help="A config value; repeatable.")
@click.option("--detach", is_flag=True, help="Queue the deployment for `orchestrate worker`; print its id.")
@click.option("--queue", "wait_in_queue", is_flag=True, help="Wait behind a busy endpoint instead of failing.")
@click.option(
    "--keep-failed",
    is_flag=True,
    help="Keep what a failed deployment created, for inspection and `resume` (-C keep_failed=true).",
)
@click.option("--reset-config", is_flag=True, help="Start from the defaults, not from the live deployment's config.")
@click.option("--force", is_flag=True, help="Deploy even when this model and config are already live.")
@json_option
@click.pass_context
def deploy(
    ctx: click.Context,
    model: str | None,
    model_uri: str | None,
    name: str,
    target: str,
    config_file: str | None,
    assignments: tuple[str, ...],
    detach: bool,
    wait_in_queue: bool,
    keep_failed: bool,
    reset_config: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Deploy MODEL to endpoint NAME on a target. MODEL is an MLflow model directory or URI
    (runs:/, models:/NAME/VERSION, models:/NAME@ALIAS, s3://, …), resolved once, now.

    On an endpoint that already serves, the config starts from the live deployment's and
    -C / --config change it (--reset-config starts from the defaults)."""
    from .config import parse_assignments

    if detach and wait_in_queue:
        raise click.UsageError(
            "--detach and --queue exclude each other: --detach queues the deployment "
            "for `orchestrate worker` and returns; --queue waits here for its turn and runs it"
        )
    values = parse_assignments(assignments)
    if keep_failed:
        values["keep_failed"] = "true"
    client = _client(ctx, progress=not detach, create_store=True)
    deployment_id = client.deploy(
        _model_argument(model, model_uri),
        name=name,
        target=target,
        config=values,
        config_file=config_file,
        detach=detach,
        wait_in_queue=wait_in_queue,
        reset_config=reset_config,
        force=force,
    )
    if client.unchanged:
        if as_json:
            _print_json({**client.deployment_record(deployment_id, with_attempts=False).to_dict(), "unchanged": True})
        else:
            click.echo(
                f"deployment {deployment_id} is already live on {name} with this model and config; "
                "nothing changed (--force deploys again)"
            )
        return
    _report_end(client, deployment_id, as_json, detach=detach)


def _report_end(client: Client, deployment_id: int, as_json: bool, *, detach: bool = False) -> None:
    from .errors import DeploymentFailed

    record = client.deployment_record(deployment_id, with_attempts=as_json)
    if as_json:
        _print_json(record.to_dict())
    elif detach:
        click.echo(deployment_id)
    if detach:
        return
    if record.status != "succeeded":
        raise DeploymentFailed(
            f"deployment {deployment_id} on {record.endpoint} {record.status}: {record.error}",
            hint=f"see `orchestrate status {deployment_id}`",
        )
    if not as_json:
        click.echo(
            f"deployment {deployment_id} succeeded: {record.endpoint} is live"
            + (f" at {record.url}" if record.url else "")
        )


@cli.command()
@click.argument("ref", required=False)
@json_option
@click.pass_context
def status(ctx: click.Context, ref: str | None, as_json: bool) -> None:
    """Where an endpoint (NAME) or a deployment (ID) stands; every endpoint without REF."""
    client = _client(ctx, read_only=True)
    if ref is None:
        rows = client.list_endpoints()
        if as_json:
            _print_json([row.to_dict() for row in rows])
            return
        for row in rows:
            click.echo(
                f"{row.endpoint:<24} {row.target:<10} live={row.live_deployment_id}{'  busy' if row.busy else ''}"
            )
        return
    deployment_id, name = client.resolve_ref(ref)
    if deployment_id is not None:
        record = client.deployment_record(deployment_id, describe=True)
        if as_json:
            _print_json(record.to_dict())
        else:
            _echo_deployment(record)
        return
    assert name is not None  # resolve_ref gives an id or a name
    endpoint = client.endpoint_status(name)
    if as_json:
        _print_json(endpoint.to_dict())
        return
    click.echo(f"endpoint {endpoint.endpoint} ({endpoint.target})")
    if endpoint.lease:
        lease = endpoint.lease
        note = " — its runner is gone; resume or cancel it" if lease.holder_gone else ""
        click.echo(f"  busy: deployment {lease.deployment_id} held by {lease.owner} since {lease.acquired_at}{note}")
    if endpoint.live:
        click.echo("live:")
        _echo_deployment(endpoint.live, indent="  ")
    else:
        click.echo("live: nothing")
    if endpoint.latest:
        click.echo("latest:")
        _echo_deployment(endpoint.latest, indent="  ")


def _echo_deployment(record: DeploymentRecord, indent: str = "") -> None:
    click.echo(
        f"{indent}deployment {record.id}: {record.status}"
        + (f" at {record.current_stage}" if record.current_stage and record.status != "succeeded" else "")
        + (" (live)" if record.live else "")
    )
    click.echo(f"{indent}  model {record.model or record.model_uri} ({record.model_digest[:12]})")
    chosen = {key: origin for key, origin in record.config_sources.items() if origin != "default"}
    if chosen:
        click.echo(
            f"{indent}  config "
            + ", ".join(f"{key}={record.config.get(key)} ({origin})" for key, origin in sorted(chosen.items()))
        )
    if record.url:
        click.echo(f"{indent}  url {record.url}")
    if record.runtime:
        facts = ", ".join(f"{k}={v}" for k, v in record.runtime.items() if k != "log")
        click.echo(f"{indent}  {facts}")
    if record.error:
        click.echo(f"{indent}  error: {record.error}")
    for attempt in record.attempts or ():
        took = attempt.outputs.get("duration_s")
        click.echo(
            f"{indent}  {attempt.stage:<16} #{attempt.attempt} {attempt.status:<10}"
            + (f" {took:.2f}s" if isinstance(took, (int, float)) else "")
            + (f"  {attempt.error_kind}: {attempt.error_message.splitlines()[0]}" if attempt.error_message else "")
        )
    for resource in record.resources or ():
        click.echo(
            f"{indent}  resource {resource.kind} {resource.name} {resource.state}"
            + (f" ({resource.external_id})" if resource.external_id else "")
        )


@cli.command("list")
@click.option("--endpoint", help="Only this endpoint's deployments.")
@click.option("--limit", default=50, show_default=True, type=COUNT, help="At most this many (1 to 1000000).")
@json_option
@click.pass_context
def list_(ctx: click.Context, endpoint: str | None, limit: int, as_json: bool) -> None:
    """Recent deployments, newest first."""
    rows = _client(ctx, read_only=True).list_deployments(limit=limit, endpoint=endpoint)
    if as_json:
        _print_json([row.to_dict() for row in rows])
        return
    for row in rows:
        click.echo(
            f"{row.id:>6}  {row.endpoint:<24} {row.target:<8} {row.status:<12}"
            f"{'live' if row.live else '':<5} {row.created_at}  {row.model}"
        )


@cli.command()
@click.argument("ref")
@click.option("--limit", default=200, show_default=True, type=COUNT, help="The newest this many (1 to 1000000).")
@json_option
@click.pass_context
def history(ctx: click.Context, ref: str, limit: int, as_json: bool) -> None:
    """The event log of an endpoint (NAME) or a deployment (ID)."""
    rows = _client(ctx, read_only=True).history(ref, limit=limit)
    if as_json:
        _print_json([row.to_dict() for row in rows])
        return
    for row in rows:
        click.echo(f"{row.time}  {row.actor:<24} {row.kind:<20} {row.message}")


def _parse_since(value: str | None) -> tuple[int, Any]:
    """`--since`: an event id, a duration ago (30m, 12h, 7d) or an ISO time."""
    import datetime as dt

    from .arguments import MAX_ID
    from .config import looks_like_duration, parse_duration
    from .errors import ConfigError
    from .store.tables import utcnow

    if value is None:
        return 0, None
    if value.isascii() and value.isdigit():
        if len(value) > 10 or int(value) > MAX_ID:
            raise ConfigError(f"--since {value} is not an event id (ids go up to {MAX_ID})")
        return int(value), None
    if looks_like_duration(value):
        return 0, utcnow() - parse_duration(value)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {value!r} is not an event id, a duration (30m, 12h, 7d) or an ISO time") from None
    return 0, moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


@cli.command()
@click.option("--since", help="Event id, duration ago (30m, 12h, 7d) or ISO time.")
@click.option("--endpoint", help="Only this endpoint's events.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until interrupted.")
@json_option
@click.pass_context
def events(ctx: click.Context, since: str | None, endpoint: str | None, follow: bool, as_json: bool) -> None:
    """The audit log: every event, with its actor, as lines or JSON lines."""
    import time

    client = _client(ctx, read_only=True)
    after_id, moment = _parse_since(since)
    while True:
        rows = client.events(after_id=after_id, since=moment, endpoint=endpoint)
        for row in rows:
            click.echo(
                json.dumps(row.to_dict(), default=str)
                if as_json
                else f"{row.id:>7} {row.time}  {row.actor:<28} {row.kind:<22} {row.message}"
            )
            after_id = row.id
        if not follow:
            return
        time.sleep(0.5)


@cli.command()
@click.option("--older-than", "older_than", required=True, type=DURATION, help="Age cutoff, e.g. 90d, 12h.")
@click.option("--dry-run", is_flag=True, help="Count what would go, delete nothing.")
@yes_option
@json_option
@click.pass_context
def gc(ctx: click.Context, older_than: Any, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Prune attempts and events of deployments that ended long ago (live ones and the one
    before each are kept). Shows what it will delete and asks, unless --yes."""
    client = _client(ctx)
    if not dry_run:
        planned = client.gc(older_than=older_than, dry_run=True)
        if planned["deployments"]:
            _confirm(
                f"This permanently deletes {planned['attempts']} attempts, {planned['events']} events and "
                f"{planned['resources']} deleted-resource records of {planned['deployments']} deployments.",
                yes,
                command="gc",
            )
    counts = client.gc(older_than=older_than, dry_run=dry_run)
    if as_json:
        _print_json(counts)
    else:
        click.echo(
            ("would prune" if dry_run else "pruned") + f" {counts['attempts']} attempts, {counts['events']} "
            f"events, {counts['resources']} deleted resources of {counts['deployments']} deployments"
        )


@cli.command()
@click.argument("deployment_id", type=DEPLOYMENT_ID)
@json_option
@click.pass_context
def resume(ctx: click.Context, deployment_id: int, as_json: bool) -> None:
    """Continue a failed or interrupted deployment from its first unfinished stage."""
    client = _client(ctx, progress=True)
    client.resume(deployment_id)
    _report_end(client, deployment_id, as_json)


@cli.command()
@click.argument("deployment_id", type=DEPLOYMENT_ID)
@click.pass_context
def cancel(ctx: click.Context, deployment_id: int) -> None:
    """Stop a deployment at its next stage boundary and release what it created."""
    final = _client(ctx, progress=True).cancel(deployment_id)
    click.echo(f"deployment {deployment_id} {final.value}")


@cli.command()
@click.argument("name")
@click.option("--to", "to", type=DEPLOYMENT_ID, help="Deployment id to restore (default: the one before the live one).")
@json_option
@click.pass_context
def rollback(ctx: click.Context, name: str, to: int | None, as_json: bool) -> None:
    """Put an earlier deployment's recorded build back live, without rebuilding."""
    client = _client(ctx, progress=True)
    deployment_id = client.rollback(name, to=to)
    _report_end(client, deployment_id, as_json)


@cli.command()
@click.argument("name")
@yes_option
@click.pass_context
def delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Stop everything endpoint NAME runs and mark it deleted (its history stays). Shows what it
    will stop and asks, unless --yes."""
    client = _client(ctx, progress=True)
    plan = client.delete_plan(name)
    live = f"live deployment {plan['live_deployment_id']}" if plan["live_deployment_id"] else "no live deployment"
    _confirm(
        f"This stops endpoint {name} ({plan['target']}, {live}) and marks it deleted; it releases "
        + (", ".join(plan["releases"]) if plan["releases"] else "nothing it still runs")
        + ". Its history stays.",
        yes,
        command="delete",
    )
    released = client.delete(name)
    click.echo(f"endpoint {name} deleted" + (f"; released {', '.join(released)}" if released else ""))


def _env_manager(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """MLflow's --env-manager names: uv and virtualenv are one cached virtualenv here (built
    with uv when it is installed); conda is not offered."""
    from .errors import ConfigError

    if value == "conda":
        raise ConfigError(
            "--env-manager conda is not supported: orchestrate builds virtualenvs from the model's "
            "python_env.yaml and requirements.txt",
            hint="use --env-manager virtualenv (or uv), or local for this Python",
        )
    return "virtualenv" if value == "uv" else value


env_manager_option = click.option(
    "--env-manager",
    type=click.Choice(["virtualenv", "uv", "local", "conda"]),
    default="virtualenv",
    show_default=True,
    callback=_env_manager,
    help="Run the model in its own cached virtualenv (virtualenv or uv: the same), or in this Python (local).",
)
override_option = click.option(
    "-r",
    "--pip-requirements-override",
    "pip_override",
    metavar="'PKG==X,PKG2'",
    help="Requirements that replace or add to the model's for this run (the model is unchanged).",
)
install_mlflow_option = click.option(
    "--install-mlflow",
    is_flag=True,
    help="Install MLflow (mlflow-skinny) into the model's environment too (as `mlflow models` does).",
)
no_conda_option = click.option("--no-conda", is_flag=True, help="MLflow's old spelling of --env-manager local.")
_OPTED_IN = "orchestrate.requirements_opt_in"


def _remember_opt_in(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta.setdefault(_OPTED_IN, set()).add(param.name)


def requirements_trust_options(command: Any) -> Any:
    """The opt-ins for requirements that are refused by default (deploy's -C keys of the same names)."""
    for key, what in (
        ("allow_direct_references", "local paths, file: and VCS/URL requirements (setup code runs)"),
        ("allow_index_options", "-i/--index-url/--extra-index-url/--find-links lines"),
    ):
        command = click.option(
            f"--{key.replace('_', '-')}",
            key,
            is_flag=True,
            expose_value=False,
            callback=_remember_opt_in,
            help=f"Trust the model's requirements with {what}.",
        )(command)
    return command


def _requirements_policy() -> Any:
    from .model.requirements import Policy

    return Policy.from_config(dict.fromkeys(click.get_current_context().meta.get(_OPTED_IN, ()), True))


def _overrides(pip_override: str | None, install_mlflow: bool) -> str | None:
    if not install_mlflow:
        return pip_override
    return ",".join(part for part in (pip_override, "mlflow-skinny") if part)


# The scoring server's default request budget (ORCHESTRATE_MAX_REQUEST_BYTES).
PREDICT_INPUT_MAX_BYTES = 100 * 1024 * 1024


def _check_output_path(path: Path) -> None:
    """`-o` is checked before predicting; like `mlflow models predict`, no directory is created."""
    from .errors import ConfigError

    if path.is_dir():
        raise ConfigError(f"-o {path} is a directory", hint="give a file name, e.g. -o predictions.json")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(
            f"-o {path}: directory {parent} does not exist",
            hint=f"create it first (mkdir -p {parent}) or write elsewhere",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"-o {path}: directory {parent} is not writable by you", hint="write elsewhere")


@cli.command()
@click.argument("ref", metavar="NAME|MODEL", required=False)
@model_uri_option
@click.option(
    "-i",
    "--input-path",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="JSON or CSV file to send; - reads standard input.",
)
@click.option(
    "-t",
    "--content-type",
    "content_type",
    type=click.Choice(["json", "csv"]),
    default=None,
    help="Input format (default: from the file extension).",
)
@click.option("-o", "--output-path", "output_path", type=click.Path(dir_okay=False), help="Write the answer here.")
@env_manager_option
@override_option
@install_mlflow_option
@no_conda_option
@requirements_trust_options
@click.pass_context
def predict(
    ctx: click.Context,
    ref: str | None,
    model_uri: str | None,
    input_path: str,
    content_type: str | None,
    output_path: str | None,
    env_manager: str,
    pip_override: str | None,
    install_mlflow: bool,
    no_conda: bool,
) -> None:
    """Score a JSON or CSV file: with endpoint NAME's live deployment, or offline with MODEL,
    a model directory or URI (-m runs:/…, models:/…; no server; like `mlflow models predict`)."""
    import tempfile

    from .errors import ConfigError, TargetError
    from .serving import is_model_reference
    from .untrusted import read_bytes

    ref = _model_argument(ref, model_uri)
    env_manager = "local" if no_conda else env_manager
    pip_override = _overrides(pip_override, install_mlflow)
    if input_path == "-":  # like `mlflow models predict -i -`: the body from standard input, bounded
        body = sys.stdin.buffer.read(PREDICT_INPUT_MAX_BYTES + 1)
        if len(body) > PREDICT_INPUT_MAX_BYTES:
            raise ConfigError(f"standard input holds more than {PREDICT_INPUT_MAX_BYTES} bytes")
        spool = ctx.with_resource(
            tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the click context
                prefix="orchestrate-input-",
                suffix=f".{content_type or 'json'}",
            )
        )
        spool.write(body)
        spool.flush()
        input_path = spool.name

    kind = content_type or ("csv" if input_path.lower().endswith(".csv") else "json")
    body = read_bytes(input_path, what="input file", max_bytes=PREDICT_INPUT_MAX_BYTES)
    if output_path:
        _check_output_path(Path(output_path))
    if is_model_reference(ref):
        _run_scoring(
            ref,
            ["predict", "-i", input_path, "-t", kind, *(["-o", output_path] if output_path else [])],
            env_manager,
            pip_override,
            replace_process=False,
        )
        return
    answer = _client(ctx, read_only=True).predict(ref, body, "text/csv" if kind == "csv" else "application/json")
    text = answer.body.decode(errors="replace")
    if 400 <= answer.status < 500:  # the input is what is wrong, as `predict MODEL` says with exit 2
        raise ConfigError(f"endpoint {ref} refused the input (HTTP {answer.status}): {text}")
    if answer.status != 200:
        raise TargetError(f"endpoint {ref} answered HTTP {answer.status}: {text}")
    if output_path:
        try:
            Path(output_path).write_text(text)
        except OSError as exc:  # checked before predicting, but a disk can fill or a mode change since
            raise ConfigError(
                f"-o {output_path} cannot be written: {exc.strerror}",
                hint="the answer is lost; write elsewhere and predict again",
            ) from None
    else:
        click.echo(text)


@cli.command(context_settings={"help_option_names": ["--help"]})
@click.argument("model", required=False)
@model_uri_option
# The environment variables `mlflow models serve` reads, with its defaults.
@click.option(
    "-p",
    "--port",
    default=5000,
    show_default=True,
    type=WholeNumber(1, 65535, what="a port"),
    envvar="MLFLOW_PORT",
    show_envvar=True,
)
@click.option("-h", "--host", default="127.0.0.1", show_default=True, envvar="MLFLOW_HOST", show_envvar=True)
@click.option(
    "-w",
    "--workers",
    default=1,
    show_default=True,
    type=WholeNumber(1, 64),
    envvar=["MLFLOW_MODELS_WORKERS", "MLFLOW_WORKERS"],
    show_envvar=True,
)
@click.option(
    "-t",
    "--timeout",
    default=60,
    show_default=True,
    type=WholeNumber(1, 86400, what="seconds"),
    envvar="MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT",
    show_envvar=True,
    help="Seconds a request may take (then 504).",
)
@env_manager_option
@override_option
@install_mlflow_option
@no_conda_option
@requirements_trust_options
def serve(
    model: str | None,
    model_uri: str | None,
    port: int,
    host: str,
    workers: int,
    timeout: int,
    env_manager: str,
    pip_override: str | None,
    install_mlflow: bool,
    no_conda: bool,
) -> None:
    """Serve MODEL (a model directory or URI: -m runs:/…, models:/…) in the foreground, like
    `mlflow models serve`; nothing is recorded. Use `orchestrate deploy` for a managed endpoint."""
    from .addresses import check_listen_address

    model = _model_argument(model, model_uri)
    check_listen_address(host, port, option="--host")  # at once, not after building the environment
    _run_scoring(
        model,
        ["serve", "--host", host, "--port", str(port), "--workers", str(workers), "--timeout", str(timeout)],
        "local" if no_conda else env_manager,
        _overrides(pip_override, install_mlflow),
        replace_process=True,
    )


def _run_scoring(
    model: str, arguments: list[str], env_manager: str, pip_override: str | None, *, replace_process: bool
) -> None:
    import os
    import subprocess

    from .errors import ConfigError, TargetError
    from .model.environments import parse_overrides
    from .serving import scoring_command

    command, env = scoring_command(
        model,
        arguments,
        env_manager=env_manager,
        overrides=parse_overrides(pip_override),
        log=lambda line: click.echo(line, err=True),
        policy=_requirements_policy(),
    )
    if replace_process:  # the server owns the terminal: Ctrl-C reaches gunicorn directly
        os.execve(command[0], command, env)
    result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("scoring: error: ")
        raise (ConfigError if result.returncode == 2 else TargetError)(message)


@cli.command()
@click.argument("name")
@click.option("--tail", default=100, show_default=True, type=COUNT, help="Lines to show (1 to 1000000).")
@click.pass_context
def logs(ctx: click.Context, name: str, tail: int) -> None:
    """The last lines of endpoint NAME's live server log."""
    click.echo(_client(ctx, read_only=True).logs(name, tail))


@cli.command()
@json_option
def targets(as_json: bool) -> None:
    """Installed targets and the config keys each accepts."""
    from .config import ENGINE_KEYS, config_schema
    from .target_contract import available_targets, load_target

    rows: list[dict[str, Any]] = []
    for name in sorted(available_targets()):
        plugin = load_target(name)
        rows.append(
            {
                "name": name,
                "description": plugin.description,
                "skips": sorted(stage.value for stage in plugin.not_applicable),
                "config": {
                    key: {"type": spec.type.__name__, "default": spec.default, "help": spec.help}
                    for key, spec in plugin.config_keys.items()
                },
                "schema": config_schema(name, plugin.config_keys),
            }
        )
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        click.echo(f"{row['name']}: {row['description']}")
        for key, spec in row["config"].items():
            click.echo(f"  {key:<28} {spec['type']:<6} default {spec['default']!r:<12} {spec['help']}")
    click.echo(
        "every target also accepts: " + ", ".join(k for k in ENGINE_KEYS if "." not in k) + ", max_attempts.<stage>"
    )


@cli.command()
@click.option(
    "--concurrency", default=1, show_default=True, type=WholeNumber(1, 64), help="Deployments this worker runs at once."
)
@click.option("--targets", "target_names", help="Only these targets (comma-separated).")
@click.option("--once", is_flag=True, help="Exit when nothing is left to claim.")
@click.option(
    "--poll-interval",
    default=1.0,
    show_default=True,
    type=Seconds(0.01, 3600),
    help="Seconds between looks at the queue when idle.",
)
@click.option(
    "--lease-ttl",
    default=30.0,
    show_default=True,
    type=Seconds(1, 86400),
    help="Seconds a lease lasts without a heartbeat.",
)
@click.option("--name", help="Worker name in leases and logs (default worker@HOST).")
@click.pass_context
def worker(
    ctx: click.Context,
    concurrency: int,
    target_names: str | None,
    once: bool,
    poll_interval: float,
    lease_ttl: float,
    name: str | None,
) -> None:
    """Run queued deployments (deploy --detach) and take over those whose runner died."""
    from .runner.worker import Worker
    from .target_contract import available_targets

    only = [t.strip() for t in target_names.split(",") if t.strip()] if target_names is not None else None
    if only is not None:
        unknown = sorted(set(only) - set(available_targets()))
        if unknown or not only:
            raise click.BadParameter(
                f"unknown target(s) {', '.join(map(repr, unknown))}" if unknown else "no target named",
                param_hint="--targets",
                ctx=ctx,
            ) from None
    runner = Worker(
        ctx.obj.get("db_url"),
        concurrency=concurrency,
        targets=only,
        poll_interval_s=poll_interval,
        once=once,
        lease_ttl_s=lease_ttl,
        name=name,
    )
    runner.install_signal_handlers()
    ctx.exit(runner.run())


@cli.command()
@click.argument("model", required=False)
@model_uri_option
@click.option(
    "-t",
    "--tag",
    "image",
    required=True,
    metavar="IMAGE[:TAG]",
    help="Image name, with the registry for --push (127.0.0.1:5000/team/churn). It is always tagged "
    "with its content tag; a TAG given here is added.",
)
@click.option("--base-image", help="Base image (default: python:X.Y-slim for the model's python_env.yaml).")
@click.option(
    "--push", "push_image", is_flag=True, help="Push to the registry IMAGE names (skipped if it has the tag)."
)
@click.option(
    "--pip-requirements-override",
    "overrides",
    metavar="REQS",
    help="Comma-separated requirements that replace or add to the model's.",
)
@click.option(
    "--user",
    default="orchestrate",
    show_default=True,
    help="User the container runs as; 'root' for platforms that need it.",
)
@click.option("--no-cache", is_flag=True, help="Build every step again, ignoring the Docker builder's cache.")
@requirements_trust_options
@click.option(
    "--username",
    envvar="ORCHESTRATE_REGISTRY_USERNAME",
    help="Registry user for --push; the password is read from ORCHESTRATE_REGISTRY_PASSWORD "
    "(default: `docker login` credentials).",
)
@json_option
def build(
    model: str | None,
    model_uri: str | None,
    image: str,
    base_image: str | None,
    push_image: bool,
    overrides: str | None,
    user: str,
    no_cache: bool,
    username: str | None,
    as_json: bool,
) -> None:
    """Build the scoring-container image of MODEL (a directory or URI) with the local Docker
    engine (and push it)."""
    model = _model_argument(model, model_uri)
    from . import images
    from .store import orchestrate_home

    result = images.build_command(
        model,
        image,
        home=orchestrate_home(),
        base_image=base_image,
        push_image=push_image,
        overrides=overrides,
        user=user,
        credentials=images.credentials_from_environment(username),
        log=lambda line: click.echo(line, err=True),
        no_cache=no_cache,
        policy=_requirements_policy(),
    )
    if as_json:
        _print_json(result)
        return
    click.echo(result["image"])
    for pushed in result.get("pushed", []):
        click.echo(pushed["pinned"])


@cli.command("generate-dockerfile")
@click.argument("model", required=False)
@model_uri_option
@click.option(
    "-d",
    "--directory",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write the Dockerfile and build context to (new or empty).",
)
@click.option("--base-image", help="Base image (default: python:X.Y-slim for the model's python_env.yaml).")
@click.option(
    "--pip-requirements-override",
    "overrides",
    metavar="REQS",
    help="Comma-separated requirements that replace or add to the model's.",
)
@click.option("--user", default="orchestrate", show_default=True, help="User the container runs as.")
@requirements_trust_options
def generate_dockerfile(
    model: str | None, model_uri: str | None, directory: str, base_image: str | None, overrides: str | None, user: str
) -> None:
    """Write the Dockerfile and build context of MODEL's image (a directory or URI), for
    `docker build DIR`."""
    model = _model_argument(model, model_uri)
    from . import images
    from .store import orchestrate_home

    path = images.generate_command(
        model,
        Path(directory),
        home=orchestrate_home(),
        base_image=base_image,
        overrides=overrides,
        user=user,
        log=lambda line: click.echo(line, err=True),
        policy=_requirements_policy(),
    )
    click.echo(path)


@cli.command()
@click.argument("model", required=False)
@model_uri_option
@click.option("-n", "--name", required=True, help="Endpoint name the objects are named for.")
@click.option("-t", "--target", default="kubernetes", show_default=True, help="A target that renders (see `targets`).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of target config.")
@click.option("-C", "assignments", multiple=True, metavar="KEY=VALUE", help="A config value; repeatable.")
def render(
    model: str | None,
    model_uri: str | None,
    name: str,
    target: str,
    config_file: str | None,
    assignments: tuple[str, ...],
) -> None:
    """Print, as multi-document YAML, the objects `deploy` would apply for MODEL, without a cluster
    and without recording anything (-C image=REF skips the build; -C registry=... builds and
    pushes the model's image). Review, diff or `kubectl apply -f -` them."""
    from . import render_objects
    from .config import parse_assignments
    from .rendering import to_yaml

    objects = render_objects(
        _model_argument(model, model_uri),
        name=name,
        target=target,
        config=parse_assignments(assignments),
        config_file=config_file,
        log=lambda line: click.echo(line, err=True),
    )
    click.echo(to_yaml(objects), nl=False)


@cli.group()
def emulator() -> None:
    """Fakes of the services targets talk to, on 127.0.0.1, to rehearse a rollout without them."""


@emulator.command("kubernetes")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="0: any free port.")
@click.option(
    "--kubeconfig",
    "kubeconfig_path",
    type=click.Path(dir_okay=False),
    help="Where to write its kubeconfig (default: ORCHESTRATE_HOME/emulators/kubernetes/kubeconfig).",
)
@click.option("--proxy-to", metavar="URL", help="Scoring server the pod and service proxy forwards to.")
@click.option(
    "--rollout-seconds", default=1.0, show_default=True, type=Seconds(0.01, 600), help="How long a rollout takes."
)
def emulator_kubernetes(port: int, kubeconfig_path: str | None, proxy_to: str | None, rollout_seconds: float) -> None:
    """A fake Kubernetes API server (orchestrator/emulators/kubernetes.py says what it serves; its
    pods run nothing). Prints one JSON line, {"config": ..., "env": {"KUBECONFIG": ...}}, the
    settings that point `deploy --target kubernetes` and kubectl at it; serves until Ctrl-C."""
    import threading

    import yaml

    from .emulators.kubernetes import FakeApiServer
    from .store import orchestrate_home, private_directory, private_opener

    path = Path(kubeconfig_path) if kubeconfig_path else orchestrate_home() / "emulators" / "kubernetes" / "kubeconfig"
    private_directory(path.parent)
    server = FakeApiServer()
    server.rollout_s = rollout_seconds
    server.proxy_to = proxy_to.rstrip("/") if proxy_to else None
    try:
        server.start(port)
    except (OSError, SystemExit):  # werkzeug reports a port in use with sys.exit(1)
        from .errors import ConfigError

        raise ConfigError(f"the emulator cannot listen on 127.0.0.1:{port}", hint="pick another --port") from None
    try:
        with open(path, "w", opener=private_opener) as handle:
            yaml.safe_dump(server.kubeconfig(), handle)
        click.echo(
            json.dumps({"config": {"namespace": "default"}, "env": {"KUBECONFIG": str(path)}, "url": server.url})
        )
        click.echo(f"fake Kubernetes API server at {server.url}; Ctrl-C stops it", err=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@cli.group()
def db() -> None:
    """State store schema."""


def _schema(ctx: click.Context, *, create: bool = False) -> Any:
    from .api import StoreSchema

    schema = StoreSchema(ctx.obj.get("db_url"), create=create)
    ctx.call_on_close(schema.close)
    return schema


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply migrations up to REVISION (creates the store if there is none)."""
    schema = _schema(ctx, create=True)
    reached = schema.upgrade(revision)
    click.echo(f"state store {schema.display_url} at revision {reached}")


@db.command("downgrade")
@click.option(
    "--revision", required=True, help="Revision to go back to (see `orchestrate db current`); `base` drops every table."
)
@yes_option
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str, yes: bool) -> None:
    """Revert migrations down to REVISION. Says what it will drop and asks, unless --yes; a SQLite
    store is backed up beside itself first."""
    schema = _schema(ctx)
    plan = schema.downgrade_plan(revision)
    if not plan.steps:
        click.echo(f"state store {plan.store} is already at revision {revision}; nothing to do")
        return
    lines = [f"Downgrading {plan.store} to {revision} reverts:"]
    lines += [f"  {step.id}  {step.doc}" for step in plan.steps]
    if plan.dropped_rows is not None:
        lines.append(
            "and DROPS every table with its rows: "
            + ", ".join(f"{table} ({count} rows)" for table, count in plan.dropped_rows.items())
        )
    lines.append(
        "A backup of the SQLite file is written first."
        if plan.backup
        else "orchestrate cannot back PostgreSQL up: take a pg_dump first."
    )
    _confirm("\n".join(lines), yes, command="db downgrade")
    backup = schema.downgrade(plan)
    if backup is not None:
        click.echo(f"backed up the state store to {backup}", err=True)
    click.echo(f"state store {plan.store} at revision {schema.current() or 'base'}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """The schema revision of the state store."""
    click.echo(_schema(ctx).current() or "empty (run `orchestrate db upgrade`)")


def _install_interrupt_handlers() -> None:
    # SIGTERM gets the same orderly stop as Ctrl-C: the attempt is recorded, serving
    # resources of the unfinished deployment are released, the deployment stays resumable.
    # Neither interrupts once the deployment has succeeded (see _settled).
    def handler(_signum: int, _frame: object) -> None:
        if not _settled:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    _install_interrupt_handlers()
    cli(prog_name="orchestrate")


if __name__ == "__main__":
    main()
