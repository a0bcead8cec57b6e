"""The `local` target: the scoring server as a detached process in the model's own virtualenv.

Redeploys keep one address without ever closing it: each server hands its listening socket
to the next over a unix socket (SCM_RIGHTS), so old and new accept from the same kernel
queue; the new one is health-checked on a private port, and the old one drains only after
the new one passed. A new server that fails its check is stopped; the old one serves on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from orchestrator import health
from orchestrator.addresses import check_listen_address
from orchestrator.model import environments
from orchestrator.processes import find_started_with, pid_alive, started_with
from orchestrator.target_contract import (
    ConfigError,
    ConfigKey,
    Invocation,
    Outputs,
    PermanentTargetError,
    ResourceState,
    ResourceView,
    Stage,
    StageContext,
    Target,
    invoke_scoring_server,
    private_directory,
    private_opener,
)

PROCESS = "process"
VIRTUALENV = "virtualenv"


class LocalTarget(Target):
    name = "local"
    description = "a scoring-server process on this machine, in a virtualenv built from the model's requirements"
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "host": ConfigKey(str, "127.0.0.1", "address the server listens on"),
        "port": ConfigKey(
            int, 0, "public port; 0 keeps the endpoint's port, or picks a free one", minimum=0, maximum=65535
        ),
        "workers": ConfigKey(int, 1, "gunicorn worker processes", minimum=1, maximum=64),
        "threads": ConfigKey(int, 4, "threads per worker", minimum=1, maximum=1024),
        "python": ConfigKey(str, "", "interpreter for the model's virtualenv (default: matches python_env.yaml)"),
        "installer": ConfigKey(str, "auto", "how to build the virtualenv", choices=("auto", "uv", "pip")),
        "pip_requirements_override": ConfigKey(
            str, "", "comma-separated requirements that replace or add to the model's (e.g. 'scikit-learn==1.5.2')"
        ),
        "drain_timeout": ConfigKey(
            float, 30.0, "seconds an old server has to finish requests", minimum=0, maximum=3600
        ),
        "env": ConfigKey(
            dict,
            None,
            "environment variables of the server, beyond the minimal one it gets "
            "(mapping, or k=v,k2=v2; values may be env:NAME or file:PATH)",
        ),
    }
    not_applicable = frozenset({Stage.PUSH})
    disposable_kinds = frozenset({PROCESS})

    def preflight(self, config: Mapping[str, Any], live_outputs: Mapping[str, Any] | None) -> None:
        port = int(config.get("port") or 0)
        taken_over = bool(live_outputs) and live_outputs.get("port") == port  # type: ignore[union-attr]
        check_listen_address(str(config["host"]), 0 if taken_over else port)
        if config.get("python"):
            _check_interpreter(environments.find_python(None, str(config["python"]))[0])

    # -- stages ---------------------------------------------------------------------------

    def outputs_usable(self, stage: Stage, outputs: Mapping[str, Any]) -> bool:
        if stage == Stage.BUILD and outputs.get("env_path"):  # the virtualenv, and the server copy beside it
            server = outputs.get("server_path")
            return (Path(outputs["env_path"]) / "bin" / "python").exists() and bool(server and Path(server).is_dir())
        return super().outputs_usable(stage, outputs)

    def build(self, ctx: StageContext) -> Outputs:
        recorded: list[ResourceView] = []
        env = environments.model_environment(
            home=ctx.home,
            requirements=ctx.outputs["requirements"],
            python_version=ctx.outputs.get("python_version"),
            model_dir=Path(ctx.outputs["model_dir"]),
            overrides=environments.parse_overrides(ctx.config.get("pip_requirements_override")),
            python=ctx.config.get("python") or None,
            installer=str(ctx.config.get("installer", "auto")),
            log=ctx.log,
            log_file=ctx.log_file,
            before_build=lambda key, requirements: recorded.append(
                ctx.plan(VIRTUALENV, key, {"requirements": requirements})
            ),
        )
        resource = recorded[-1]
        state = ResourceState.ADOPTED if env.reused else ResourceState.CREATED
        if resource.state != state:
            ctx.mark(resource, state, external_id=str(env.path))
        ctx.log(("reusing" if env.reused else "built") + f" environment {env.path}")
        return {
            "env_path": str(env.path),
            "env_key": env.key,
            "env_reused": env.reused,
            "installer": env.installer,
            "server_path": str(environments.install_server(ctx.home)),
        }

    def create_endpoint(self, ctx: StageContext) -> Outputs:
        name = f"{ctx.deployment.endpoint_name}-{ctx.deployment.id}"
        existing = ctx.find(PROCESS, name)
        if existing is not None and existing.state != ResourceState.DELETED:
            pid = _recorded_or_running_pid(existing)
            if pid is not None:
                if existing.state == ResourceState.PLANNED:
                    existing = ctx.mark(existing, ResourceState.CREATED, external_id=str(pid))
                ctx.log(f"adopting server process {pid} started by an earlier attempt")
                return _process_outputs(existing.data, pid)
        run_dir = ctx.home / "run"
        log_dir = ctx.home / "logs" / "servers"
        private_directory(run_dir, "run directory")
        private_directory(log_dir, "log directory")
        with self._public_listener(ctx) as public, _listener("127.0.0.1", 0) as private:
            data = {
                "host": public.getsockname()[0],
                "port": public.getsockname()[1],
                "private_port": private.getsockname()[1],
                "pid_file": str(run_dir / f"{name}.pid"),
                "handoff": str(run_dir / f"{name}.sock"),
                "log": str(log_dir / f"{name}.log"),
            }
            resource = (
                existing
                if existing is not None and existing.state == ResourceState.PLANNED
                else ctx.plan(PROCESS, name, data)
            )
            command = [
                str(Path(ctx.outputs["env_path"]) / "bin" / "python"),
                "-m",
                "scoring",
                "serve",
                ctx.outputs["model_dir"],
                "--public-fd",
                str(public.fileno()),
                "--private-fd",
                str(private.fileno()),
                "--handoff-socket",
                data["handoff"],
                "--pid-file",
                data["pid_file"],
                "--workers",
                str(ctx.config["workers"]),
                "--threads",
                str(ctx.config["threads"]),
            ]
            env = {**server_environment(ctx.config.get("env")), "PYTHONPATH": ctx.outputs["server_path"]}
            with open(data["log"], "ab", opener=private_opener) as log:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    cwd=ctx.outputs["model_dir"],
                    pass_fds=(public.fileno(), private.fileno()),
                )
        ctx.mark(resource, ResourceState.CREATED, external_id=str(process.pid), data=data)
        ctx.log(f"started server pid {process.pid} on {data['host']}:{data['port']} (log {data['log']})")
        return _process_outputs(data, process.pid)

    def _public_listener(self, ctx: StageContext) -> socket.socket:
        """The endpoint's listening socket: taken over from the live server, so the address
        never closes during a swap; bound anew for a first deployment."""
        live = ctx.live_outputs or {}
        wanted = int(ctx.config.get("port") or 0)
        if live.get("handoff") and (not wanted or wanted == live.get("port")):
            try:
                inherited = receive_listener(str(live["handoff"]))
            except OSError as exc:
                ctx.log(f"could not take the listening socket over from the live server ({exc}); binding anew")
            else:
                ctx.log(f"took over the listening socket of {live['host']}:{live['port']} from the live server")
                return inherited
        port = wanted or int(live.get("port") or 0)
        try:
            return _listener(str(ctx.config["host"]), port)
        except OSError as exc:
            raise PermanentTargetError(
                f"cannot listen on {ctx.config['host']}:{port}: {exc.strerror}",
                hint="choose another port with -C port=N, or stop what holds it",
            ) from exc

    def health_check(self, ctx: StageContext) -> Outputs:
        pid = int(ctx.outputs["pid"])
        log = Path(ctx.outputs["log"])
        private_url = f"http://127.0.0.1:{ctx.outputs['private_port']}"

        def details() -> str:
            return "server log tail:\n" + log_tail(log, 20)

        return health.check_new_server(
            private_url,
            timeout_s=float(ctx.config["startup_timeout"]),
            still_starting=lambda: pid_alive(pid),
            failure_details=details,
            model_dir=Path(ctx.outputs["model_dir"]),
            example=ctx.outputs.get("input_example"),
            log=ctx.log,
        )

    def shift_traffic(self, ctx: StageContext) -> Outputs:
        # The new server has shared the public port since it bound it; cleanup retires the old.
        return {"url": ctx.outputs["url"]}

    def release(self, ctx: StageContext, resource: ResourceView) -> None:
        if resource.kind != PROCESS:
            return
        pid = _recorded_or_running_pid(resource)
        if pid is not None:
            ctx.log(f"stopping server pid {pid} ({resource.name})")
            stop_process(pid, float(ctx.config.get("drain_timeout", 30.0)))
        for leftover in ("pid_file", "handoff"):
            Path(resource.data.get(leftover, "/nonexistent")).unlink(missing_ok=True)

    # -- reads ----------------------------------------------------------------------------

    def describe(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        if "pid" not in outputs:
            return {}
        pid = int(outputs["pid"])
        alive = pid_alive(pid) and _is_server(pid, outputs.get("pid_file", ""))
        answering = False
        if alive:
            try:
                answering = health.http("GET", f"{outputs['url']}/ping", timeout=1.0)[0] == 200
            except OSError:
                answering = False
        return {"pid": pid, "process_alive": alive, "answering": answering, "log": outputs.get("log")}

    def invoke(self, outputs: Mapping[str, Any], body: bytes, content_type: str) -> Invocation:
        return invoke_scoring_server(
            str(outputs["url"]), body, content_type, hint="check `orchestrate status` that the server is alive"
        )

    def logs(self, outputs: Mapping[str, Any], tail: int) -> str:
        return log_tail(Path(outputs["log"]), tail)


def _check_interpreter(python: str) -> None:
    """`-C python=` must run as a Python 3 interpreter: checked before anything is recorded,
    so /etc/passwd or a script fails here rather than in build."""
    probe = "import sys; print(sys.version_info[0])"
    try:
        result = subprocess.run(
            [python, "-c", probe], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=30
        )
        ok = result.returncode == 0 and result.stdout.strip() == "3"
        reason = (
            result.stderr.strip().splitlines()
            or [f"exit status {result.returncode}" if result.returncode else "it does not run Python code"]
        )[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, reason = False, getattr(exc, "strerror", None) or str(exc)
    if not ok:
        raise ConfigError(
            f"-C python={python} is not a Python 3 interpreter that runs: {reason}",
            hint="give the path of a python3 executable, or leave python out to use the one python_env.yaml names",
        )


def _process_outputs(data: Mapping[str, Any], pid: int) -> Outputs:
    return {**data, "pid": pid, "url": f"http://{data['host']}:{data['port']}"}


# What the server inherits from the deployer: enough to run (locale, paths, the CA bundle TLS
# clients need), nothing that could be a credential (proxy URLs can hold one: name them in `env`).
SERVER_ENVIRONMENT_ALLOWED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
    }
)


def server_environment(configured: Mapping[str, Any] | None) -> dict[str, str]:
    """The scoring server's environment: an allow-list of the deployer's (locale, PATH, HOME...)
    plus exactly what the deployment's `env` config names. The server runs model code for days,
    so the deployer's credentials, virtualenv and ORCHESTRATE_* settings stay out."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in SERVER_ENVIRONMENT_ALLOWED or name.startswith("LC_")
    }
    env.update({str(name): str(value) for name, value in (configured or {}).items()})
    return env


def _is_server(pid: int, pid_file: str) -> bool:
    """Guards against a recycled pid: the process must be our server with this pid file."""
    return started_with(pid, pid_file)


def _recorded_or_running_pid(resource: ResourceView) -> int | None:
    """The live pid of a recorded server; for one only planned, search by its unique pid file."""
    pid_file = str(resource.data.get("pid_file", ""))
    if resource.external_id and _is_server(int(resource.external_id), pid_file):
        return int(resource.external_id)
    return find_started_with(pid_file)


def stop_process(pid: int, drain_timeout: float) -> None:
    """SIGTERM (gunicorn drains in-flight requests), then SIGKILL after the drain timeout."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + drain_timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:  # when we started it ourselves, collect it so it does not linger as a zombie
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _listener(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1024)
    except OSError:
        listener.close()
        raise
    return listener


def receive_listener(handoff_path: str) -> socket.socket:
    """The listening socket a running server hands out over its unix socket (SCM_RIGHTS)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.settimeout(5)
        channel.connect(handoff_path)
        _message, fds, _flags, _address = socket.recv_fds(channel, 1, 1)
    if not fds:
        raise OSError(f"no socket received from {handoff_path}")
    return socket.socket(fileno=fds[0])


def log_tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
