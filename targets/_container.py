"""The image stages every container target shares: `build` and `push`, written once.

A target whose endpoint runs orchestrate's scoring image (docker, sagemaker, and the coming
azureml and kubernetes) subclasses `ContainerImageTarget` and says only what differs:

- `image_repository`: the local repository the image is built as (the content tag is added);
- `push_repository`: where `push` sends it, or None to keep it on the engine;
- `registry_credentials`: the login for that registry (None: the engine's `docker login`);
  cloud targets return a token login here (ECR, ACR);
- `registry_digest`: optionally, the digest the registry already holds for a tag, asked through
  the cloud's API, so a push that is not needed costs no login.

The image modules are imported when a stage runs, so loading a target for a read stays light.
Everything else is the same on every target, so the same model gets the same `ImageSpec`, tag
and requirements layer (hence the same byte code) wherever it goes. The records, also the same
everywhere: `image` (name `repository:tag`, the engine's image id) in build, and `pushed_image`
(name `registry/repository:tag`, the pinned `repository@digest`, data repository and tag) in
push; each is planned before and marked created, or adopted when it was already there.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.target_contract import Outputs, ResourceState, ResourceView, StageContext, Target

if TYPE_CHECKING:
    from orchestrator import images

IMAGE = "image"
PUSHED_IMAGE = "pushed_image"


class ContainerImageTarget(Target):
    """A target that serves orchestrate's scoring image; see the module docstring."""

    # -- hooks ----------------------------------------------------------------------------

    @abstractmethod
    def image_repository(self, ctx: StageContext) -> str:
        """The repository the built image is tagged in on the local engine."""

    def push_repository(self, ctx: StageContext) -> str | None:
        """Where `push` sends the image (`host[:port]/path`), or None to keep it on this engine.
        May create the repository (and record it) first."""
        return None

    def registry_credentials(self, ctx: StageContext, registry: str) -> images.Credentials | None:
        """The login for `registry`; None uses the engine's own (`docker login`)."""
        return None

    def registry_digest(self, ctx: StageContext, repository: str, tag: str) -> str | None:
        """The digest `repository` already holds for `tag`, when the target can ask without a
        login; None lets the push ask the registry itself."""
        return None

    # -- the shared parts -------------------------------------------------------------------

    def image_spec(self, ctx: StageContext) -> images.ImageSpec:
        """The one description of this deployment's image: what decides its tag and content."""
        from orchestrator import images
        from orchestrator.images import dockerfile

        return images.ImageSpec(
            model_dir=Path(ctx.outputs["model_dir"]),
            model_digest=ctx.deployment.model_digest,
            requirements=tuple(
                images.image_requirements(
                    ctx.outputs["requirements"],
                    ctx.config.get("pip_requirements_override") or None,
                    log=ctx.log,
                    home=ctx.home,
                )
            ),
            base_image=str(ctx.config.get("base_image") or images.default_base_image(ctx.outputs["python_version"])),
            loader_module=str(ctx.outputs.get("loader_module") or "mlflow.pyfunc"),
            user=str(ctx.config.get("user") or dockerfile.USER_NAME),
        )

    def build(self, ctx: StageContext) -> Outputs:
        from orchestrator import images
        from orchestrator.images.docker_engine import connect

        client = connect()
        spec = self.image_spec(ctx)
        repository = self.image_repository(ctx)
        base_id, platform = images.probe_base(client, spec.base_image, ctx.home / "cache" / "platforms", ctx.log)
        tag, _requirements_hash, _labels = images.plan_tag(spec, base_id, platform)
        resource = ctx.plan(IMAGE, f"{repository}:{tag}")
        built = images.build(
            client,
            spec,
            repository,
            cache_dir=ctx.home / "cache",
            log=ctx.log,
            log_file=ctx.log_file,
        )
        if built.reference != resource.name:  # built again with the full mlflow: another tag
            ctx.mark(resource, ResourceState.DELETED)
            resource = ctx.plan(IMAGE, built.reference)
        state = _recorded_state(resource, made=not built.skipped)
        if resource.state != state or resource.external_id != built.image_id:
            ctx.mark(resource, state, external_id=built.image_id)
        return {
            "image": built.reference,
            "image_id": built.image_id,
            "image_tag": built.tag,
            "requirements_hash": built.labels[f"{images.LABEL_PREFIX}requirements-hash"],
            "loader_module": spec.loader_module,
            "build_skipped": built.skipped,
            "requirements_reused": built.requirements_reused,
            "offline_install": built.offline,
            "labels": built.labels,
            "build_s": built.seconds,
        }

    def push(self, ctx: StageContext) -> Outputs:
        from orchestrator import images, secret_values
        from orchestrator.images.docker_engine import connect, translated

        repository = self.push_repository(ctx)
        if repository is None:
            return {
                "pushed": False,
                "note": "no registry configured: the image stays on this engine",
            }
        tag = str(ctx.outputs["image_tag"])
        reference = f"{repository}:{tag}"
        registry = images.registry_of(repository)
        resource = ctx.plan(PUSHED_IMAGE, reference, {"repository": repository, "tag": tag})
        digest = self.registry_digest(ctx, repository, tag)
        if digest is not None:
            ctx.log(f"{registry} already has {reference} ({digest[:19]}); push skipped")
            pushed = images.Pushed(reference, digest, True, 0, 0, 0, 0.0)
        else:
            client = connect()
            if reference != ctx.outputs["image"]:
                with translated(f"tagging {ctx.outputs['image']} as {reference}"):
                    client.images.get(str(ctx.outputs["image_id"])).tag(repository, tag)
            credentials = self.registry_credentials(ctx, registry)
            if credentials is not None:
                secret_values.remember(credentials.password)  # scrubbed from the push log and errors
            pushed = images.push(client, reference, credentials=credentials, log=ctx.log)
        state = _recorded_state(resource, made=not pushed.skipped)
        if resource.state != state or resource.external_id != pushed.pinned:
            ctx.mark(resource, state, external_id=pushed.pinned)
        return {
            "pushed": not pushed.skipped,
            "push_skipped": pushed.skipped,
            "pushed_image": pushed.pinned,
            "repository": repository,
            "digest": pushed.digest,
            "bytes_pushed": pushed.bytes_pushed,
            "push_s": pushed.seconds,
        }


def _recorded_state(resource: ResourceView, *, made: bool) -> ResourceState:
    """Created when this stage made it, adopted when it was there already; a rerun that finds
    what an earlier attempt of this deployment made keeps it created (so it is this one's to delete)."""
    return ResourceState.CREATED if made or resource.state == ResourceState.CREATED else ResourceState.ADOPTED
