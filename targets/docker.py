"""The `docker` target: the scoring container on the local Docker engine, on a published port.

Each endpoint has a small network-holder container (the pod, as in Kubernetes) that owns the
published `host:port`; every deployment's server container joins the pod's network
namespace and binds port 8080 there with SO_REUSEPORT, plus a private port its health check
uses through the pod's bridge address. So a redeploy keeps one address: the new server
shares the port from the moment it has loaded its model, passes its health check, and only
then does cleanup stop the old one (which drains its requests). A new server that fails its
check is removed and the old one serves alone, as before.

Resources recorded: `image` (build) and `pushed_image` (push, when a registry is configured)
by the image stages every container target shares (targets/_container.py), `pod` and
`container` (create_endpoint). Every deployment records the pod it uses; the pod
goes with the last record of it, so delete removes it and a redeploy keeps it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from orchestrator import health, images, secret_values
from orchestrator.addresses import check_listen_address, free_port
from orchestrator.images.docker_engine import connect, image_exists, translated
from orchestrator.target_contract import (
    ConfigError,
    ConfigKey,
    Invocation,
    Outputs,
    PermanentTargetError,
    ResourceState,
    ResourceView,
    StageContext,
    invoke_scoring_server,
    validated_model,
)
from targets._container import IMAGE, ContainerImageTarget

POD = "pod"
CONTAINER = "container"

LABEL = "io.orchestrate."
# The server's private port inside the pod is derived from the deployment id, so the servers
# of consecutive deployments sharing a pod never ask for the same one.
PRIVATE_PORT_BASE = 20000
_MEMORY = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)
_POD_COMMAND = [
    "python3",
    "-c",
    ("import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()"),
]


class DockerTarget(ContainerImageTarget):
    name = "docker"
    description = "the scoring container on this machine's Docker engine, published on a host port"
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "image": ConfigKey(str, "", "image repository (default: orchestrate/<endpoint>)"),
        "registry": ConfigKey(str, "", "registry host[:port][/namespace] to push to (default: no push)"),
        "registry_username": ConfigKey(str, "", "registry user (default: `docker login` credentials)"),
        "registry_password_env": ConfigKey(
            str, images.PASSWORD_VARIABLE, "environment variable that holds the registry password"
        ),
        "base_image": ConfigKey(str, "", "base image (default: python:X.Y-slim for the model's python_env.yaml)"),
        "user": ConfigKey(str, "orchestrate", "user the container runs as ('root' for platforms that need it)"),
        "host": ConfigKey(str, "127.0.0.1", "host address the port is published on"),
        "port": ConfigKey(
            int, 0, "host port; 0 keeps the endpoint's port, or picks a free one", minimum=0, maximum=65535
        ),
        "restart_policy": ConfigKey(
            str, "unless-stopped", "Docker restart policy", choices=("no", "always", "unless-stopped", "on-failure")
        ),
        "cpus": ConfigKey(float, 0.0, "CPU limit of the server container (0: none)", minimum=0),
        "memory": ConfigKey(str, "", "memory limit, e.g. 512m or 2g (empty: none)"),
        "workers": ConfigKey(int, 1, "gunicorn worker processes", minimum=1),
        "threads": ConfigKey(int, 4, "threads per worker", minimum=1),
        "pip_requirements_override": ConfigKey(
            str, "", "comma-separated requirements that replace or add to the model's (e.g. 'scikit-learn==1.5.2')"
        ),
        "drain_timeout": ConfigKey(float, 30.0, "seconds an old server has to finish requests", minimum=0),
        "remove_image": ConfigKey(bool, False, "delete also removes the endpoint's images"),
    }
    disposable_kinds = frozenset({CONTAINER, POD})

    def preflight(self, config: Mapping[str, Any], live_outputs: Mapping[str, Any] | None) -> None:
        port = int(config.get("port") or 0)
        taken_over = bool(live_outputs) and live_outputs.get("port") == port  # type: ignore[union-attr]
        check_listen_address(str(config["host"]), 0 if taken_over else port)
        memory = str(config.get("memory") or "")
        if memory and not _MEMORY.match(memory):
            raise ConfigError(f"config key 'memory' must look like 512m or 2g, got {memory!r}")
        if config.get("image"):
            images.check_repository(_repository(config, "x"))

    # -- stages ---------------------------------------------------------------------------

    def validate(self, ctx: StageContext) -> Outputs:
        outputs = validated_model(ctx)
        connect()  # no engine: say so now, with how to start one
        return outputs

    def image_repository(self, ctx: StageContext) -> str:
        return _repository(ctx.config, ctx.deployment.endpoint_name)

    def push_repository(self, ctx: StageContext) -> str | None:
        return _repository(ctx.config, ctx.deployment.endpoint_name) if ctx.config.get("registry") else None

    def registry_credentials(self, ctx: StageContext, registry: str) -> images.Credentials | None:
        """-C registry_username with the password in the environment, or the engine's `docker login`."""
        return images.credentials_from_environment(
            str(ctx.config.get("registry_username") or ""),
            registry,
            str(ctx.config.get("registry_password_env") or images.PASSWORD_VARIABLE),
        )

    def create_endpoint(self, ctx: StageContext) -> Outputs:
        client = connect()
        image = self._local_image(client, ctx)
        namespace = _namespace(ctx)
        host = str(ctx.config["host"])
        live = ctx.live_outputs or {}
        port = int(ctx.config.get("port") or 0) or (
            int(live["port"]) if live.get("host") == host and live.get("port") else free_port(host)
        )
        labels = {f"{LABEL}namespace": namespace, f"{LABEL}endpoint": ctx.deployment.endpoint_name}
        pod = self._pod(
            ctx, client, image, f"orchestrate-{namespace}-{ctx.deployment.endpoint_name}-{port}", host, port, labels
        )
        name = f"orchestrate-{namespace}-{ctx.deployment.endpoint_name}-{ctx.deployment.id}"
        private_port = PRIVATE_PORT_BASE + ctx.deployment.id % 40000
        resource = ctx.plan(CONTAINER, name, {"pod": pod.name, "private_port": private_port})
        with translated(f"looking for container {name}"):
            found = client.containers.list(all=True, filters={"name": f"^{name}$"})
        if found:
            container = found[0]
            ctx.log(f"adopting container {name} ({container.short_id}) started by an earlier attempt")
            if container.status != "running":
                with translated(f"starting container {name}"):
                    container.start()
        else:
            environment = {
                "ORCHESTRATE_REUSE_PORT": "1",
                "ORCHESTRATE_PRIVATE_PORT": str(private_port),
                "ORCHESTRATE_WORKERS": str(ctx.config["workers"]),
                "ORCHESTRATE_THREADS": str(ctx.config["threads"]),
                "ORCHESTRATE_GRACEFUL_TIMEOUT": str(ctx.config["drain_timeout"]),
            }
            policy = str(ctx.config["restart_policy"])
            # Any: the stubs' policy names omit "unless-stopped" (our default) and "no", which Docker takes.
            restart_policy: Any = {"Name": policy, **({"MaximumRetryCount": 3} if policy == "on-failure" else {})}
            with translated(f"starting container {name} from {image}"):
                container = client.containers.run(
                    image,
                    detach=True,
                    name=name,
                    network_mode=f"container:{pod.id}",
                    environment=environment,
                    labels={**labels, f"{LABEL}deployment": str(ctx.deployment.id), f"{LABEL}pod": pod.name},
                    restart_policy=restart_policy,
                    nano_cpus=int(float(ctx.config["cpus"]) * 1e9) or None,
                    mem_limit=ctx.config.get("memory") or None,
                    stop_signal="SIGTERM",
                )
            ctx.log(f"started container {name} ({container.short_id}) from {image}")
        if resource.state != ResourceState.CREATED or resource.external_id != container.id:
            ctx.mark(resource, ResourceState.CREATED, external_id=str(container.id))
        return {
            "container_id": container.id,
            "container_name": name,
            "pod": pod.name,
            "pod_ip": _address(pod),
            "host": host,
            "port": port,
            "private_port": private_port,
            "url": f"http://{host}:{port}",
        }

    def _local_image(self, client: Any, ctx: StageContext) -> str:
        image = str(ctx.outputs["image"])
        if image_exists(client, image):
            return image
        pinned = ctx.outputs.get("pushed_image")
        if not pinned:
            raise PermanentTargetError(
                f"image {image} is no longer on this Docker engine",
                hint="deploy the model again: `orchestrate deploy ...` rebuilds it",
            )
        ctx.log(f"image {image} is gone from this engine; pulling {pinned}")
        credentials = self.registry_credentials(ctx, images.registry_of(images.split_reference(image)[0]))
        if credentials is not None:
            secret_values.remember(credentials.password)  # scrubbed from the pull log and errors
        with translated(f"pulling {pinned}"):
            pulled = client.images.pull(pinned, auth_config=credentials.auth_config() if credentials else None)
            repository, tag = images.split_reference(image)
            pulled.tag(repository, tag)
        return image

    def _pod(
        self, ctx: StageContext, client: Any, image: str, name: str, host: str, port: int, labels: Mapping[str, str]
    ) -> Any:
        resource = ctx.plan(POD, name, {"host": host, "port": port})
        with translated(f"looking for pod container {name}"):
            found = client.containers.list(all=True, filters={"name": f"^{name}$"})
        if found:
            pod = found[0]
            if pod.status != "running":
                with translated(f"starting pod container {name}"):
                    pod.start()
            state = (
                ResourceState.ADOPTED
                if resource.state == ResourceState.PLANNED
                and resource.external_id is None
                and not _started_by(pod, ctx)
                else ResourceState.CREATED
            )
        else:
            with translated(f"starting pod container {name} on {host}:{port}"):
                pod = client.containers.run(
                    image,
                    _POD_COMMAND,
                    detach=True,
                    name=name,
                    entrypoint=[],
                    user="0",
                    ports={"8080/tcp": (host, port)},
                    labels={**labels, f"{LABEL}role": "pod", f"{LABEL}deployment": str(ctx.deployment.id)},
                    restart_policy={"Name": "unless-stopped"},
                    healthcheck={"test": ["NONE"]},
                    # When the old server closes its SO_REUSEPORT socket, the kernel (5.14+) moves
                    # connections queued on it to the new server's instead of resetting them.
                    sysctls={"net.ipv4.tcp_migrate_req": "1"},
                )
            ctx.log(f"started pod {name} publishing {host}:{port}")
            state = ResourceState.CREATED
        if resource.state != state or resource.external_id != pod.id:
            ctx.mark(resource, state, external_id=str(pod.id))
        with translated(f"inspecting pod container {name}"):
            pod.reload()
        return pod

    def health_check(self, ctx: StageContext) -> Outputs:
        client = connect()
        container_id = str(ctx.outputs["container_id"])
        private_url = f"http://{ctx.outputs['pod_ip']}:{ctx.outputs['private_port']}"

        def starting() -> bool:
            with translated(f"inspecting container {container_id[:12]}"):
                container = client.containers.get(container_id)
            # A server that exited (even if its restart policy brings it back) failed to start.
            return container.status in ("created", "running") and container.attrs.get("RestartCount", 0) == 0

        def details() -> str:
            return "container log tail:\n" + _log_tail(client, container_id, 20)

        return health.check_new_server(
            private_url,
            timeout_s=float(ctx.config["startup_timeout"]),
            still_starting=starting,
            failure_details=details,
            model_dir=Path(ctx.outputs["model_dir"]),
            example=ctx.outputs.get("input_example"),
            log=ctx.log,
            what="container",
        )

    def shift_traffic(self, ctx: StageContext) -> Outputs:
        # The new server has shared the pod's published port since it bound it; cleanup retires the old.
        return {"url": ctx.outputs["url"]}

    def release(self, ctx: StageContext, resource: ResourceView) -> None:
        if resource.kind == CONTAINER:
            self._remove_container(
                ctx, resource.external_id or resource.name, float(ctx.config.get("drain_timeout", 30.0))
            )
        elif resource.kind == POD:
            others = [
                r for r in ctx.endpoint_resources() if r.kind == POD and r.name == resource.name and r.id != resource.id
            ]
            if others:
                return  # a newer deployment serves through this pod
            client = connect()
            with translated(f"listing the containers of pod {resource.name}"):
                members = client.containers.list(all=True, filters={"label": f"{LABEL}pod={resource.name}"})
            for member in members:
                self._remove_container(ctx, str(member.id), float(ctx.config.get("drain_timeout", 30.0)))
            self._remove_container(ctx, resource.external_id or resource.name, 5.0)
            if ctx.config.get("remove_image"):
                self._remove_images(ctx, client)

    def _remove_container(self, ctx: StageContext, ref: str, timeout: float) -> None:
        import docker

        client = connect()
        with translated(f"removing container {ref[:40]}"):
            try:
                container = client.containers.get(ref)
            except docker.errors.NotFound:
                return
            ctx.log(f"stopping container {container.name} ({container.short_id})")
            try:
                container.stop(timeout=int(timeout))
                container.remove(force=True)
            except docker.errors.NotFound:
                return

    def _remove_images(self, ctx: StageContext, client: Any) -> None:
        import docker

        for resource in ctx.endpoint_resources():
            if resource.kind != IMAGE:
                continue
            with translated(f"removing image {resource.name}"):
                try:
                    client.images.remove(resource.name)
                    ctx.log(f"removed image {resource.name}")
                except docker.errors.ImageNotFound:
                    pass
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:
                        raise
                    ctx.log(f"kept image {resource.name}: another container uses it")
                    continue
            ctx.mark(resource, ResourceState.DELETED)

    # -- reads ----------------------------------------------------------------------------

    def describe(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        if "container_id" not in outputs:
            return {}
        import docker

        client = connect()
        with translated("inspecting the server container"):
            try:
                container = client.containers.get(str(outputs["container_id"]))
            except docker.errors.NotFound:
                return {"container": outputs.get("container_name"), "container_status": "gone", "answering": False}
        try:
            answering = health.http("GET", f"{outputs['url']}/ping", timeout=1.0)[0] == 200
        except OSError:
            answering = False
        state = container.attrs.get("State", {})
        return {
            "container": container.name,
            "container_status": container.status,
            "health": (state.get("Health") or {}).get("Status"),
            "answering": answering,
            "image": outputs.get("image"),
        }

    def invoke(self, outputs: Mapping[str, Any], body: bytes, content_type: str) -> Invocation:
        return invoke_scoring_server(
            str(outputs["url"]), body, content_type, hint="check `orchestrate status` that the container is up"
        )

    def logs(self, outputs: Mapping[str, Any], tail: int) -> str:
        return _log_tail(connect(), str(outputs["container_id"]), tail)


def _repository(config: Mapping[str, Any], endpoint: str) -> str:
    image = str(config.get("image") or f"orchestrate/{endpoint.lower()}")
    registry = str(config.get("registry") or "").rstrip("/")
    return f"{registry}/{image}" if registry else image


def _namespace(ctx: StageContext) -> str:
    """Names containers per state store, so two stores on one engine never adopt each other's."""
    return hashlib.sha256(str(ctx.store.url).encode()).hexdigest()[:8]


def _started_by(container: Any, ctx: StageContext) -> bool:
    return str(container.labels.get(f"{LABEL}deployment")) == str(ctx.deployment.id)


def _address(container: Any) -> str:
    settings = container.attrs.get("NetworkSettings", {})
    address = settings.get("IPAddress") or next(
        (n.get("IPAddress") for n in (settings.get("Networks") or {}).values() if n.get("IPAddress")), ""
    )
    if not address:
        raise PermanentTargetError(
            f"pod container {container.name} has no bridge address",
            hint="the docker target needs the default bridge network",
        )
    return str(address)


def _log_tail(client: Any, container_id: str, lines: int) -> str:
    import docker

    with translated(f"reading the log of container {container_id[:12]}"):
        try:
            raw = client.containers.get(container_id).logs(tail=lines)
        except docker.errors.NotFound:
            return f"(container {container_id[:12]} is gone)"
    return bytes(raw).decode(errors="replace").rstrip("\n")
