"""The `directory` target: publishes each deployment's model into a shared directory and
switches a `current` link to it in one atomic rename.

For consumers that load a model from a path rather than call a server: batch scoring jobs,
`mlflow models serve` hosts on a shared volume, notebooks. They load
`<root>/<endpoint>/current`; a deploy replaces that link with rename(2), so a reader sees the
old model or the new one, never a mix; `orchestrate rollback` points it back.

    <root>/<endpoint>/releases/<deployment id>-<digest>/   one checked copy per deployment
    <root>/<endpoint>/current -> releases/<...>            what consumers load

A third-party target in its own package: `pip install` it beside orchestrate and its entry
point (`orchestrate.targets`: `directory`) makes `orchestrate targets` list it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.model import mlmodel
from orchestrator.target_contract import (
    LIVE_RESOURCE_STATES,
    ConfigError,
    ConfigKey,
    Outputs,
    PermanentTargetError,
    ResourceState,
    ResourceView,
    Stage,
    StageContext,
    Target,
)

__all__ = ["DirectoryTarget"]

RELEASE = "release"
LINK = "link"
RELEASES_DIR = "releases"


class DirectoryTarget(Target):
    name = "directory"
    description = "publishes the model into a shared directory; consumers load <root>/<endpoint>/current"
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "root": ConfigKey(str, "", "absolute directory the endpoints are published under (required)"),
        "link_name": ConfigKey(str, "current", "name of the link consumers load, inside <root>/<endpoint>"),
    }
    not_applicable = frozenset({Stage.BUILD, Stage.PUSH})
    # Both serve consumers: a failed deployment's release is removed, and a link is put back.
    disposable_kinds = frozenset({RELEASE, LINK})

    def preflight(self, config: Mapping[str, Any], live_outputs: Mapping[str, Any] | None) -> None:
        root = Path(str(config.get("root") or "")).expanduser()
        if not str(config.get("root") or ""):
            raise ConfigError("the directory target needs a root directory",
                              hint="pass -C root=/srv/models (consumers then load /srv/models/<name>/current)")
        if not root.is_absolute():
            raise ConfigError(f"root {str(root)!r} is not an absolute path",
                              hint="give the directory from /, e.g. -C root=/srv/models")
        if root.exists() and not root.is_dir():
            raise ConfigError(f"root {root} exists and is not a directory", hint="choose another -C root=...")
        link_name = str(config.get("link_name"))
        if not link_name or "/" in link_name or link_name in (".", "..", RELEASES_DIR) or link_name.startswith("."):
            raise ConfigError(f"link_name {link_name!r} is not a plain file name",
                              hint="use a name like current or live (not 'releases', no '/', no leading dot)")

    # -- stages ---------------------------------------------------------------------------

    def create_endpoint(self, ctx: StageContext) -> Outputs:
        """Copy the validated snapshot to releases/<id>-<digest>: into a hidden staging
        directory first, renamed when complete, so a crash never leaves a half release."""
        endpoint_dir = Path(str(ctx.config["root"])).expanduser() / ctx.deployment.endpoint_name
        release_name = f"{ctx.deployment.id}-{ctx.deployment.model_digest[:12]}"
        release = endpoint_dir / RELEASES_DIR / release_name
        resource = ctx.plan(RELEASE, release_name, {"path": str(release)})
        if release.is_dir():
            ctx.log(f"adopting release {release} copied by an earlier attempt")
        else:
            staging = release.with_name(f".{release_name}.partial")
            shutil.rmtree(staging, ignore_errors=True)  # what a crashed attempt left
            staging.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copytree(ctx.outputs["model_dir"], staging, copy_function=shutil.copyfile)
                _make_readable(staging)
                staging.rename(release)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                raise PermanentTargetError(f"cannot publish {release}: {exc}",
                                           hint=f"check that {endpoint_dir} is writable and has space") from exc
            ctx.log(f"published {release}")
        if resource.state not in LIVE_RESOURCE_STATES:
            ctx.mark(resource, ResourceState.CREATED, external_id=str(release))
        return {"endpoint_dir": str(endpoint_dir), "release": str(release)}

    def health_check(self, ctx: StageContext) -> Outputs:
        """The published copy is the recorded model, file for file, and orchestrate can read it."""
        release = Path(ctx.outputs["release"])
        published = mlmodel.digest(release)
        if published != ctx.deployment.model_digest:
            raise PermanentTargetError(
                f"the release {release} does not hold the deployed model (digest {published[:12]}, "
                f"expected {ctx.deployment.model_digest[:12]})",
                hint="something else writes under the endpoint's directory; resume to publish it again",
            )
        mlmodel.read_model(str(release))
        return {"checked_digest": published}

    def shift_traffic(self, ctx: StageContext) -> Outputs:
        """Point the link at this release with one rename; remember what it replaced, so a
        failed or cancelled deployment puts the old target back."""
        endpoint_dir = Path(ctx.outputs["endpoint_dir"])
        release = Path(ctx.outputs["release"])
        link = endpoint_dir / str(ctx.config["link_name"])
        if link.exists() and not link.is_symlink():
            raise PermanentTargetError(f"{link} exists and is not a link orchestrate made",
                                       hint="move it away, or choose another -C link_name=...")
        replaced = os.readlink(link) if link.is_symlink() else None
        resource = ctx.plan(LINK, str(link), {"release": str(release), "replaced": replaced})
        if resource.state not in LIVE_RESOURCE_STATES:
            _point(link, release.relative_to(endpoint_dir))
            ctx.mark(resource, ResourceState.CREATED, external_id=str(link))
            ctx.log(f"{link} -> {release.relative_to(endpoint_dir)}")
        return {"link": str(link), "url": link.as_uri()}

    def release(self, ctx: StageContext, resource: ResourceView) -> None:
        if resource.kind == RELEASE:
            shutil.rmtree(str(resource.data["path"]), ignore_errors=True)
            return
        link = Path(resource.name)
        ours = Path(str(resource.data["release"])).relative_to(link.parent)
        if not link.is_symlink() or Path(os.readlink(link)) != ours:
            return  # a later deployment's link now: not ours to touch
        replaced = resource.data.get("replaced")
        if replaced and (link.parent / replaced).is_dir():
            _point(link, Path(replaced))
            ctx.log(f"{link} -> {replaced} again")
        else:
            link.unlink()

    # -- reads ----------------------------------------------------------------------------

    def describe(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        if "link" not in outputs:
            return {}
        link = Path(outputs["link"])
        points_to = os.readlink(link) if link.is_symlink() else None
        release = Path(outputs["release"])
        return {"link": str(link), "points_to": points_to,
                "serving_this": points_to is not None and link.parent / points_to == release,
                "release_present": release.is_dir()}


def _point(link: Path, destination: Path) -> None:
    """Make `link` point at `destination`, replacing any old link in one rename(2)."""
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(destination)
    os.replace(temporary, link)


def _make_readable(root: Path) -> None:
    """Releases are for other processes and users: the snapshot's 0700/0600 would lock them out."""
    for directory, _dirs, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
