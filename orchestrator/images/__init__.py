"""Scoring-container images: content-addressed build on a Docker engine, and registry push.

`build` makes the image of one model from the template in `dockerfile`: first the
requirements image (base + venv, tagged by the hash of requirements, platform and base), then
the model image on top of it (server, model files, labels). The model image's tag is derived
from (model digest, requirements hash, server version and content, base image id), so the same
inputs always give the same tag and a build that finds its tag on the engine does nothing.
`push` sends an image to any OCI registry with the engine (skipped when the registry already
has the tag) and returns the digest it stored.

Every Docker SDK call runs under `docker_engine.translated`, so callers only see our errors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import scoring

from ..errors import ConfigError, PermanentTargetError, RetryableTargetError
from ..model import environments, requirements
from . import dockerfile, host_install, layer_image, wheelhouse
from .docker_engine import image_exists, translated

Log = Callable[[str], None]

DEPENDENCIES_REPOSITORY = "orchestrate-requirements"
DEFAULT_PYTHON = "3.11"
LABEL_PREFIX = "io.orchestrate."


def default_base_image(python_version: str | None) -> str:
    """A slim Python image with the model's Python version (from `python_env.yaml`)."""
    major_minor = ".".join((python_version or DEFAULT_PYTHON).split(".")[:2])
    return f"python:{major_minor}-slim"


def orchestrate_version() -> str:
    try:
        return version("orchestrate")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def server_hash() -> str:
    """Content hash of the scoring package: a server change is a new image even at one version."""
    source = Path(scoring.__file__).parent
    sha = hashlib.sha256()
    for file in sorted(source.rglob("*.py")):
        sha.update(file.relative_to(source).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return sha.hexdigest()[:16]


def image_requirements(
    model_requirements: Sequence[str], overrides: str | None, *, log: Log | None = None, home: Path | None = None
) -> list[str]:
    """What the image installs: `requirements.serving_requirements`, the one rule every target
    applies (mlflow → mlflow-skinny with what mlflow.pyfunc needs, the overrides, the server's).
    What the rule did goes to `log`; mlflow's metadata is cached under `home` (default: the
    orchestrate home)."""
    from ..store import orchestrate_home

    plan = requirements.serving_requirements(
        model_requirements,
        requirements.parse_overrides(overrides),
        server_requirements=scoring.SERVER_REQUIREMENTS,
        cache_dir=environments.metadata_cache(home or orchestrate_home()),
    )
    for note in plan.notes:
        if log is not None:
            log(note)
    return list(plan.requirements)


def split_reference(reference: str) -> tuple[str, str | None]:
    """`registry/repo:tag` → (`registry/repo`, `tag`); a digest reference keeps its tag None."""
    if "@" in reference:
        return reference.split("@", 1)[0], None
    repository, sep, tag = reference.rpartition(":")
    if sep and "/" not in tag:
        return repository, tag
    return reference, None


def registry_of(repository: str) -> str:
    first = repository.split("/", 1)[0]
    if "/" in repository and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


def check_repository(repository: str) -> str:
    """A repository name Docker accepts (an optional `host[:port]/` then lower-case path parts)."""
    path = repository.partition("/")[2] if registry_of(repository) != "docker.io" else repository
    if not path or not _REPOSITORY.match(path) or len(repository) > 255:
        raise ConfigError(
            f"invalid image name {repository!r}",
            hint="use lower-case letters, digits and . _ - separators, e.g. "
            "127.0.0.1:5000/team/churn (optionally with :TAG)",
        )
    return repository


# -- the base image --------------------------------------------------------------------------


_PROBE = (
    "import json, platform, sys; print(json.dumps({'python': '%d.%d' % sys.version_info[:2], "
    "'machine': platform.machine(), 'glibc': platform.libc_ver()[1]}))"
)


def probe_base(client: Any, base_image: str, cache_dir: Path, log: Log) -> tuple[str, wheelhouse.Platform]:
    """The base image's id and what its `python3` accepts; fetched once per image id."""
    if not image_exists(client, base_image):
        log(f"base image {base_image} is not on this engine; pulling it")
        try:
            with translated(f"pulling base image {base_image}"):
                client.images.pull(base_image)
        except (PermanentTargetError, RetryableTargetError) as exc:
            raise PermanentTargetError(
                f"base image {base_image} is not on this Docker engine and cannot be pulled ({exc.message})",
                hint="choose one the engine has with --base-image / -C base_image=IMAGE, or `docker pull` it",
            ) from exc
    with translated(f"inspecting base image {base_image}"):
        image_id = str(client.images.get(base_image).id)
    cached = cache_dir / f"{image_id.replace(':', '-')}.json"
    if cached.is_file():
        return image_id, wheelhouse.Platform(**json.loads(cached.read_text()))
    with translated(f"running python3 in base image {base_image}"):
        output = client.containers.run(
            image_id, ["python3", "-c", _PROBE], remove=True, network_mode="none", entrypoint=[]
        )
    try:
        facts = json.loads(output.decode().strip().splitlines()[-1])
        platform = wheelhouse.Platform(python=facts["python"], machine=facts["machine"], glibc=facts["glibc"])
    except (ValueError, KeyError, IndexError):
        raise PermanentTargetError(
            f"base image {base_image} has no usable python3 (it printed {output[:200]!r})",
            hint="use a Debian- or Ubuntu-based Python image",
        ) from None
    if not platform.glibc:
        raise PermanentTargetError(
            f"base image {base_image} is not glibc-based; manylinux wheels cannot run on it",
            hint="use a Debian- or Ubuntu-based image such as python:3.11-slim",
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(facts))
    return image_id, platform


# -- build -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """Everything that decides an image's content (and therefore its tag)."""

    model_dir: Path
    model_digest: str
    requirements: tuple[str, ...]
    base_image: str
    loader_module: str = "mlflow.pyfunc"
    user: str = dockerfile.USER_NAME

    def requirements_hash(self, base_id: str, platform: wheelhouse.Platform) -> str:
        # The byte code written at build time is part of the layer: what the server imports counts.
        document = {
            "requirements": list(self.requirements),
            "base": base_id,
            "platform": vars(platform),
            "template": dockerfile.TEMPLATE_VERSION,
            "user": self.user,
            "loader": self.loader_module,
            "imports": list(scoring.serving_imports(self.loader_module)),
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BuiltImage:
    reference: str  # repository:content-tag
    image_id: str
    tag: str
    labels: dict[str, str]
    skipped: bool  # the engine already had the tag
    requirements_reused: bool  # the requirements image already existed
    offline: bool  # installed from the wheelhouse alone
    extra_references: tuple[str, ...] = ()
    seconds: float = 0.0


def plan_tag(spec: ImageSpec, base_id: str, platform: wheelhouse.Platform) -> tuple[str, str, dict[str, str]]:
    """(content tag, requirements hash, labels) of the image `spec` describes."""
    requirements_hash = spec.requirements_hash(base_id, platform)
    labels = {
        f"{LABEL_PREFIX}model-digest": spec.model_digest,
        f"{LABEL_PREFIX}requirements-hash": requirements_hash,
        f"{LABEL_PREFIX}server-version": scoring.__version__,
        f"{LABEL_PREFIX}server-hash": server_hash(),
        f"{LABEL_PREFIX}version": orchestrate_version(),
        f"{LABEL_PREFIX}base-image": spec.base_image,
        f"{LABEL_PREFIX}base-image-id": base_id,
    }
    # "checked": images built before the import check existed are not reused as good.
    document = {
        "model": spec.model_digest,
        "requirements": requirements_hash,
        "server": scoring.__version__,
        "server-hash": labels[f"{LABEL_PREFIX}server-hash"],
        "base": base_id,
        "checked": "imports-1",
    }
    tag = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:20]
    return tag, requirements_hash, labels


def build(
    client: Any,
    spec: ImageSpec,
    repository: str,
    *,
    cache_dir: Path,
    log: Log,
    log_file: Path,
    extra_tags: Iterable[str] = (),
    no_cache: bool = False,
) -> BuiltImage:
    """Build (or find) the image of `spec` as `repository:<content tag>`; see the module docstring.

    An image served by mlflow-skinny that cannot be installed or fails its import check is built
    again with the full mlflow package (as the local target does), and the build log says so."""
    try:
        return _build_image(
            client,
            spec,
            repository,
            cache_dir=cache_dir,
            log=log,
            log_file=log_file,
            extra_tags=extra_tags,
            no_cache=no_cache,
        )
    except PermanentTargetError as exc:
        full = requirements.with_full_mlflow(spec.requirements)
        if full is None:
            raise
        log(
            f"the mlflow-skinny image did not work for this model ({exc.message.splitlines()[0]}); "
            "building it with the full mlflow package"
        )
        return _build_image(
            client,
            dataclasses.replace(spec, requirements=full),
            repository,
            cache_dir=cache_dir,
            log=log,
            log_file=log_file,
            extra_tags=extra_tags,
            no_cache=no_cache,
        )


def _built_elsewhere(client: Any, model_digest: str, tag: str) -> str | None:
    """A reference to an image of this content tag in another repository (the same model built
    for another target), so every target serves the very same image."""
    with translated("looking for images of this model"):
        found = client.images.list(filters={"label": f"{LABEL_PREFIX}model-digest={model_digest}"})
    return next((t for image in found for t in image.tags if t.endswith(f":{tag}")), None)


def _build_image(
    client: Any,
    spec: ImageSpec,
    repository: str,
    *,
    cache_dir: Path,
    log: Log,
    log_file: Path,
    extra_tags: Iterable[str],
    no_cache: bool,
) -> BuiltImage:
    started = time.monotonic()
    check_repository(repository)
    base_id, platform = probe_base(client, spec.base_image, cache_dir / "platforms", log)
    tag, requirements_hash, labels = plan_tag(spec, base_id, platform)
    reference = f"{repository}:{tag}"
    extras = tuple(f"{repository}:{t}" for t in extra_tags if t and t != tag)
    present = image_exists(client, reference)
    if present:
        log(f"image {reference} already built (same model, requirements, server and base); build skipped")
    elif (elsewhere := _built_elsewhere(client, spec.model_digest, tag)) is not None:
        with translated(f"tagging {elsewhere} as {reference}"):
            client.images.get(elsewhere).tag(repository, tag)
        log(f"{elsewhere} is this image (another target or name built it); tagged as {reference}, build skipped")
        present = True
    if present:
        image_id = _tag_extras(client, reference, extras)
        return BuiltImage(
            reference, image_id, tag, labels, True, True, True, extras, round(time.monotonic() - started, 3)
        )
    parent = f"{DEPENDENCIES_REPOSITORY}:{requirements_hash}"
    reused = image_exists(client, parent)
    offline = True
    if reused:
        log(f"requirements layer {parent} reused (requirements unchanged)")
    else:
        offline = _build_requirements(
            client,
            spec,
            base_id,
            platform,
            parent,
            requirements_hash,
            cache_dir=cache_dir,
            log=log,
            log_file=log_file,
            no_cache=no_cache,
        )
    with tempfile.TemporaryDirectory(prefix="orchestrate-image-") as tmp:
        context = Path(tmp)
        template = dockerfile.Template(spec.base_image, installer_wheel="", user=spec.user)
        (context / "Dockerfile").write_text(template.application(labels, parent=parent))
        dockerfile.write_server_files(context, Path(scoring.__file__).parent)
        dockerfile.write_model_files(context, spec.model_dir)
        log(f"building {reference} (server and model layers on {parent})")
        image_id = _run_build(client, context, reference, log=log, log_file=log_file, no_cache=no_cache)
    check_image_imports(client, image_id, spec, log=log, log_file=log_file)
    _tag_extras(client, reference, extras)
    log(f"built {reference} ({image_id[:19]})")
    return BuiltImage(
        reference, image_id, tag, labels, False, reused, offline, extras, round(time.monotonic() - started, 3)
    )


def check_image_imports(client: Any, image_id: str, spec: ImageSpec, *, log: Log, log_file: Path) -> None:
    """Import what the server will import to serve the model (`environments.serving_imports`)
    in a container of the new image, without network. A module that does not import fails the
    build, and the image is removed so that no later build finds its tag and reuses it."""
    modules = environments.serving_imports(spec.model_dir, spec.requirements)
    python = f"{dockerfile.VENV}/bin/python"
    code = [
        f"{dockerfile.MODEL_DIR}/{p.relative_to(spec.model_dir).as_posix()}"
        for p in environments.code_paths_of(spec.model_dir)
    ]
    log(f"checking that the image imports {', '.join(modules)}")
    with translated(f"checking the imports of image {image_id[:19]}"):
        output = client.containers.run(
            image_id,
            environments.import_check_command(python, modules),
            entrypoint=[],
            network_mode="none",
            remove=True,
            working_dir=dockerfile.MODEL_DIR,
            environment={
                **environments.flavor_environment(spec.model_dir),
                **({"PYTHONPATH": ":".join(code)} if code else {}),
            },
            stdout=True,
            stderr=False,
        )
    try:
        environments.raise_for_import_failures(output.decode(errors="replace"), "", "the image", log_file)
    except PermanentTargetError:
        with translated(f"removing image {image_id[:19]}, which failed its import check"):
            client.images.remove(image_id, force=True)
        raise


def _build_requirements(
    client: Any,
    spec: ImageSpec,
    base_id: str,
    platform: wheelhouse.Platform,
    reference: str,
    requirements_hash: str,
    *,
    cache_dir: Path,
    log: Log,
    log_file: Path,
    no_cache: bool = False,
) -> bool:
    """Build the base + venv image; returns whether it installed offline (from the wheelhouse alone)."""
    labels = {f"{LABEL_PREFIX}requirements-hash": requirements_hash}
    with tempfile.TemporaryDirectory(prefix="orchestrate-requirements-") as tmp:
        context = Path(tmp)
        house = prepare_requirements_context(context, spec, platform, log=log, log_file=log_file)
        if house.installed:
            # The venv goes in as one ready-made layer (see layer_image); a small build finishes it.
            venv_image = f"{reference}-venv"
            log(f"loading the requirements installed on the host as one layer ({len(spec.requirements)} requirements)")
            layer_image.load_directory(
                client,
                base_id,
                house.path,
                at=dockerfile.VENV,
                reference=venv_image,
                created_by="orchestrate: the model's requirements, installed on the host by uv",
                cache_dir=cache_dir / "base-configs",
            )
            shutil.rmtree(house.path)
            (context / "Dockerfile").write_text(_template(spec, context, house).finish_loaded_venv(venv_image))
            try:
                _run_build(client, context, reference, log=log, log_file=log_file, labels=labels, no_cache=no_cache)
            finally:
                with translated(f"untagging {venv_image}"):
                    client.images.remove(venv_image)  # only the tag: the layer is the new image's parent
            return True
        how = "offline from the wheelhouse" if house.complete else "from the package index"
        log(f"building requirements layer {reference} ({len(spec.requirements)} requirements, {how})")
        _run_build(
            client,
            context,
            reference,
            log=log,
            log_file=log_file,
            labels=labels,
            network_mode=None if house.complete else "host",
            buildargs=None if house.complete else _proxy_buildargs(),
            no_cache=no_cache,
        )
    return house.complete


def _template(spec: ImageSpec, context: Path, house: wheelhouse.Wheelhouse) -> dockerfile.Template:
    warm_imports = scoring.serving_imports(spec.loader_module)
    if house.installed:
        return dockerfile.Template(spec.base_image, installer_wheel="", user=spec.user, warm_imports=warm_imports)

    def newest(pattern: str) -> str | None:
        found = sorted(p.name for p in (context / "wheelhouse").glob(pattern))
        return found[-1] if found else None

    installer = (newest("uv-*.whl") if house.complete else None) or newest("pip-*.whl")
    if installer is None:
        raise PermanentTargetError(
            "the wheelhouse has no pip wheel to install with", hint="check that the host's pip can download pip itself"
        )
    return dockerfile.Template(
        spec.base_image, installer_wheel=installer, offline=house.complete, user=spec.user, warm_imports=warm_imports
    )


def prepare_requirements_context(
    context: Path, spec: ImageSpec, platform: wheelhouse.Platform, *, log: Log, log_file: Path
) -> wheelhouse.Wheelhouse:
    """Write requirements.txt, the requirements installed on the host (or else a wheelhouse and
    pip settings) and the first half of the Dockerfile."""
    # Credentials masked in spec.requirements are put back for the host's installer only; the
    # build context (and so any layer) only ever holds the masked lines.
    install_lines = requirements.reveal(spec.requirements, spec.model_dir)
    installed = host_install.install(
        install_lines, platform, context / "venv", venv=dockerfile.VENV, log_file=log_file, log=log
    )
    if installed.ok:
        house = wheelhouse.Wheelhouse(installed.prefix, True, (), installed=True)
    else:
        log(
            f"uv could not install the requirements on the host ({installed.reason}); "
            "falling back to a pip wheelhouse installed inside the build"
        )
        log(f"downloading wheels for CPython {platform.python} {platform.machine} (glibc {platform.glibc})")
        house = wheelhouse.download(install_lines, platform, context / "wheelhouse", log=log, log_file=log_file)
    (context / "requirements.txt").write_text("\n".join(spec.requirements) + "\n")
    build_dir = context / "build"
    build_dir.mkdir(exist_ok=True)
    (build_dir / "warm_imports.py").write_text(dockerfile.WARM_IMPORTS_SCRIPT)
    if not house.complete:  # the host's pip settings, for the in-build install from the index
        for name, path in wheelhouse.host_pip_files().items():
            shutil.copyfile(path, build_dir / name)
    (context / "Dockerfile").write_text(_template(spec, context, house).dependencies())
    return house


def _proxy_buildargs() -> dict[str, str]:
    import os

    names = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
    return {name: os.environ[name] for name in names if os.environ.get(name)}


_MISSING_IN_BUILD = (
    re.compile(r"No matching distribution found for ([^\s]+)"),
    re.compile(r"Could not find a version that satisfies the requirement ([^\s]+)"),
)


def _run_build(
    client: Any,
    context: Path,
    reference: str,
    *,
    log: Log,
    log_file: Path,
    labels: Mapping[str, str] | None = None,
    network_mode: str | None = None,
    buildargs: Mapping[str, str] | None = None,
    no_cache: bool = False,
) -> str:
    """One classic-builder build, its output streamed to `log`; returns the image id."""
    output: list[str] = []
    error: str | None = None
    image_id: str | None = None
    with translated(f"building image {reference}"):
        stream = client.api.build(
            path=str(context),
            tag=reference,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            labels=dict(labels or {}),
            network_mode=network_mode,
            buildargs=dict(buildargs or {}),
            nocache=no_cache,
        )
        for chunk in stream:
            if "stream" in chunk:
                for line in str(chunk["stream"]).splitlines():
                    if line.strip():
                        output.append(line)
                        log("  " + line.rstrip())
            if "error" in chunk:
                error = str(chunk["error"]).strip()
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
    with log_file.open("a") as handle:
        handle.write("\n".join(output) + "\n")
    if error is not None or image_id is None:
        text = "\n".join(output[-40:]) + ("\n" + error if error else "")
        for pattern in _MISSING_IN_BUILD:
            match = pattern.search(text)
            if match:
                package = match.group(1)
                raise PermanentTargetError(
                    f"could not install {package!r} in the image:\n" + "\n".join(output[-12:]),
                    hint=f"pin an installable version with --pip-requirements-override "
                    f"'{environments.requirement_name(package)}==VERSION' or fix requirements.txt "
                    f"(full log: {log_file})",
                )
        raise PermanentTargetError(
            f"building {reference} failed: {error or 'no image id reported'}\n" + "\n".join(output[-12:]),
            hint=f"full log: {log_file}",
        )
    return image_id


def _tag_extras(client: Any, reference: str, extras: Sequence[str]) -> str:
    with translated(f"tagging {reference}"):
        image = client.images.get(reference)
        for extra in extras:
            repository, tag = split_reference(extra)
            image.tag(repository, tag)
        return str(image.id)


def layers(client: Any, reference: str) -> list[str]:
    """The image's file-system layer ids, base first."""
    with translated(f"inspecting image {reference}"):
        return list(client.images.get(reference).attrs["RootFS"]["Layers"])


def generate(
    context: Path, spec: ImageSpec, platform: wheelhouse.Platform, *, base_id: str, log: Log, log_file: Path
) -> Path:
    """A self-contained build directory with one multi-stage Dockerfile: `docker build DIR` works."""
    context.mkdir(parents=True, exist_ok=True)
    house = prepare_requirements_context(context, spec, platform, log=log, log_file=log_file)
    _tag, _requirements_hash, labels = plan_tag(spec, base_id, platform)
    (context / "Dockerfile").write_text(_template(spec, context, house).single(labels))
    dockerfile.write_server_files(context, Path(scoring.__file__).parent)
    dockerfile.write_model_files(context, spec.model_dir)
    return context / "Dockerfile"


# -- push --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A registry login; the password never appears in repr, logs or messages."""

    username: str
    password: str = field(repr=False)
    registry: str = ""

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


PASSWORD_VARIABLE = "ORCHESTRATE_REGISTRY_PASSWORD"


def credentials_from_environment(
    username: str | None, registry: str = "", variable: str = PASSWORD_VARIABLE
) -> Credentials | None:
    """A login from a user name and the password in an environment variable (never in config or
    on a command line, so neither the state store nor `ps` ever holds it); None without a user."""
    import os

    if not username:
        return None
    password = os.environ.get(variable)
    if not password:
        raise ConfigError(
            f"registry user {username!r} given but {variable} is not set",
            hint=f"export {variable} with the password or token, or use `docker login`",
        )
    return Credentials(username, password, registry)


# How cloud targets plug in token logins (ECR, ACR): registry host → credentials or None.
CredentialProvider = Callable[[str], "Credentials | None"]


@dataclass(frozen=True)
class Pushed:
    reference: str
    digest: str  # sha256:...
    skipped: bool
    bytes_pushed: int
    layers_pushed: int
    layers_present: int
    seconds: float

    @property
    def pinned(self) -> str:
        return f"{split_reference(self.reference)[0]}@{self.digest}"


_AUTH_WORDS = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "denied",
    "incorrect username or password",
    "401",
    "403",
)


def _auth_error(registry: str, detail: str, credentials: Credentials | None) -> PermanentTargetError:
    who = f" for user {credentials.username!r}" if credentials else ""
    what = "refused the credentials" if credentials else "requires a login"
    clean = detail.replace(credentials.password, "***") if credentials and credentials.password else detail
    return PermanentTargetError(
        f"registry {registry} {what}{who} ({clean.splitlines()[0][:200]})",
        hint=f"check the user name and the password in ORCHESTRATE_REGISTRY_PASSWORD (-C registry_username=...),"
        f" or run `docker login {registry}`",
    )


def remote_digest(client: Any, reference: str, credentials: Credentials | None) -> str | None:
    """The digest the registry holds for `reference`, or None when it has no such tag."""
    import docker

    with translated(f"asking the registry about {reference}"):
        try:
            answer = client.api.inspect_distribution(
                reference, auth_config=credentials.auth_config() if credentials else None
            )
        except docker.errors.APIError as exc:
            detail = str(exc.explanation or exc)
            if exc.status_code in (401, 403) or any(w in detail.lower() for w in _AUTH_WORDS[:5]):
                raise _auth_error(registry_of(split_reference(reference)[0]), detail, credentials) from exc
            return None  # not there (manifest unknown), or the registry is down: the push will say
    digest = (answer.get("Descriptor") or {}).get("digest")
    return str(digest) if digest else None


def push(
    client: Any, reference: str, *, credentials: Credentials | None, log: Log, progress_interval_s: float = 2.0
) -> Pushed:
    """Push `reference` unless the registry has it; live progress to `log`; returns the digest."""
    started = time.monotonic()
    repository, tag = split_reference(reference)
    registry = registry_of(repository)
    existing = remote_digest(client, reference, credentials)
    if existing:
        log(f"{reference} is already in {registry} ({existing}); push skipped")
        return Pushed(reference, existing, True, 0, 0, 0, round(time.monotonic() - started, 3))
    log(f"pushing {reference} to {registry}")
    sizes: dict[str, int] = {}
    pushed: set[str] = set()
    present: set[str] = set()
    digest: str | None = None
    last_report = 0.0
    with translated(f"pushing {reference}"):
        stream = client.api.push(
            repository,
            tag=tag,
            stream=True,
            decode=True,
            auth_config=credentials.auth_config() if credentials else None,
        )
        for event in stream:
            if "error" in event:
                detail = str(event.get("error") or event.get("errorDetail"))
                if any(word in detail.lower() for word in _AUTH_WORDS):
                    raise _auth_error(registry, detail, credentials)
                kind = (
                    RetryableTargetError
                    if re.search(r"(timeout|connection|reset|5\d\d)", detail, re.IGNORECASE)
                    else PermanentTargetError
                )
                raise kind(f"pushing {reference} to {registry} failed: {detail}")
            layer, status = event.get("id"), str(event.get("status", ""))
            progress: dict[str, Any] = event.get("progressDetail") or {}
            if layer and progress.get("total"):
                sizes[layer] = max(sizes.get(layer, 0), int(progress["total"]))
            if layer and status == "Pushed":
                pushed.add(layer)
                log(f"  {layer}: pushed {_mb(sizes.get(layer, 0))}")
            elif layer and status == "Layer already exists":
                present.add(layer)
            elif layer and status == "Pushing" and time.monotonic() - last_report > progress_interval_s:
                last_report = time.monotonic()
                log(f"  {layer}: {_mb(int(progress.get('current', 0)))} of {_mb(sizes.get(layer, 0))}")
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
    if digest is None:
        raise RetryableTargetError(f"pushing {reference}: the engine reported no digest")
    sent = sum(sizes.get(layer, 0) for layer in pushed)
    log(f"pushed {reference}: {len(pushed)} layer(s), {_mb(sent)} sent, {len(present)} already there; {digest}")
    return Pushed(reference, digest, False, sent, len(pushed), len(present), round(time.monotonic() - started, 3))


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# -- the `orchestrate build` / `generate-dockerfile` commands ------------------------------------


def spec_for_model(
    model_uri: str,
    *,
    snapshot_dir: Path,
    base_image: str | None,
    overrides: str | None,
    user: str = dockerfile.USER_NAME,
    log: Log | None = None,
    policy: requirements.Policy = requirements.Policy(),  # noqa: B008 - frozen
) -> ImageSpec:
    """The image spec of a model directory (read, checked and snapshotted)."""
    from ..model import mlmodel
    from ..model import uri as model_uris

    info = model_uris.local_model(model_uri, snapshot_dir)  # a models:/… URI is downloaded here
    requirements.check_policy(info.requirements, policy, how_to_allow="{flag}")
    snapshot = mlmodel.snapshot(info, snapshot_dir)
    return ImageSpec(
        snapshot,
        info.digest,
        tuple(image_requirements(info.requirements, overrides, log=log)),
        base_image or default_base_image(info.python_version),
        info.loader_module,
        user,
    )


def build_command(
    model_uri: str,
    image: str,
    *,
    home: Path,
    base_image: str | None,
    push_image: bool,
    overrides: str | None,
    user: str,
    credentials: Credentials | None,
    log: Log,
    no_cache: bool = False,
    policy: requirements.Policy = requirements.Policy(),  # noqa: B008 - frozen
) -> dict[str, Any]:
    """`orchestrate build`: build (and push) one model's image; returns what happened."""
    from .docker_engine import connect

    repository, tag = split_reference(image)
    check_repository(repository)
    spec = spec_for_model(
        model_uri,
        snapshot_dir=home / "models",
        base_image=base_image,
        overrides=overrides,
        user=user,
        log=log,
        policy=policy,
    )
    log_file = _build_log(home)
    client = connect()
    built = build(
        client,
        spec,
        repository,
        cache_dir=home / "cache",
        log=log,
        log_file=log_file,
        extra_tags=[tag] if tag else [],
        no_cache=no_cache,
    )
    result: dict[str, Any] = {
        "image": built.reference,
        "image_id": built.image_id,
        "tags": [built.reference, *built.extra_references],
        "skipped": built.skipped,
        "requirements_reused": built.requirements_reused,
        "offline": built.offline,
        "labels": built.labels,
        "build_s": built.seconds,
        "log": str(log_file),
    }
    if push_image:
        pushes = [
            push(client, reference, credentials=credentials, log=log)
            for reference in (built.reference, *built.extra_references)
        ]
        result["pushed"] = [
            {
                "reference": p.reference,
                "digest": p.digest,
                "pinned": p.pinned,
                "skipped": p.skipped,
                "bytes": p.bytes_pushed,
                "seconds": p.seconds,
            }
            for p in pushes
        ]
    return result


def generate_command(
    model_uri: str,
    directory: Path,
    *,
    home: Path,
    base_image: str | None,
    overrides: str | None,
    user: str,
    log: Log,
    policy: requirements.Policy = requirements.Policy(),  # noqa: B008 - frozen
) -> Path:
    """`orchestrate generate-dockerfile`: the build directory of a model's image."""
    import platform as host

    from ..errors import TargetError

    spec = spec_for_model(
        model_uri,
        snapshot_dir=home / "models",
        base_image=base_image,
        overrides=overrides,
        user=user,
        log=log,
        policy=policy,
    )
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"{directory} is not empty", hint="choose a new or empty directory with -d")
    try:
        from .docker_engine import connect

        base_id, platform = probe_base(connect(timeout=10), spec.base_image, home / "cache" / "platforms", log)
    except TargetError as exc:
        # No engine (or no base image) here: assume a current Debian base with the model's Python.
        python = ".".join(spec.base_image.partition(":")[2].split("-")[0].split(".")[:2]) or DEFAULT_PYTHON
        platform = wheelhouse.Platform(python=python, machine=host.machine(), glibc="2.28")
        base_id = "unknown"
        log(
            f"could not inspect {spec.base_image} ({exc.message}); assuming CPython {python} on "
            f"{platform.machine} with glibc 2.28 or newer for the wheelhouse"
        )
    return generate(directory, spec, platform, base_id=base_id, log=log, log_file=_build_log(home))


def _build_log(home: Path) -> Path:
    directory = home / "logs" / "builds"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / (time.strftime("%Y%m%dT%H%M%S") + f"-{time.monotonic_ns() % 10**6}.log")
