"""`orchestrate render`: the objects a declarative target would apply, printed instead.

Nothing is recorded and no cluster is asked: the model is resolved into its snapshot as `deploy`
resolves it, the config is checked as `deploy` checks it, and the image is the one given with
`-C image=REF` or else built and pushed to `-C registry=...` as the shared image stage builds it,
and referenced by the digest the registry answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import config as config_module
from .errors import ConfigError
from .model import mlmodel, requirements
from .target_contract import RenderRequest, Target, available_targets, load_target


def render(
    model_uri: str,
    *,
    name: str,
    target: str,
    home: Path,
    file_values: Mapping[str, Any],
    cli_values: Mapping[str, Any],
    log: Callable[[str], None],
    targets: Callable[[str], Target] = load_target,
) -> list[dict[str, Any]]:
    """The objects, in apply order; ConfigError for a target with nothing to render or a bad value."""
    from .model import uri as model_uri_module

    mlmodel.check_endpoint_name(name)
    plugin = targets(target)
    if not plugin.renders:
        raise ConfigError(
            f"target {target!r} has no objects to render",
            hint="targets that render: " + (", ".join(_rendering_targets()) or "none installed"),
        )
    config = config_module.resolve(
        target,
        plugin.config_keys,
        plugin.normalize_config(file_values, "config file"),
        plugin.normalize_config(cli_values, "-C"),
    )
    plugin.check_render(name, config)
    resolved = model_uri_module.resolve(model_uri, home / "models", log=log)
    image = str(config.get("image") or "") or _built_image(model_uri, name, config, home, log)
    return plugin.render(RenderRequest(name, resolved.info, resolved.source, image, config))


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML, keys in the order the objects were written, without anchors: a value
    shared by two fields is written out twice, as a reviewer reads it."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump_all(objects, Dumper=Dumper, sort_keys=False, explicit_start=True)


def _built_image(model_uri: str, name: str, config: Mapping[str, Any], home: Path, log: Callable[[str], None]) -> str:
    from . import images
    from .images.dockerfile import USER_NAME

    registry = str(config.get("registry") or "").rstrip("/")
    if not registry:
        raise ConfigError(
            "render needs an image the cluster can pull",
            hint="pass -C registry=HOST[:PORT][/NAMESPACE] to build and push the model's image there, "
            "or -C image=REPOSITORY@sha256:... for one already pushed",
        )
    built = images.build_command(
        model_uri,
        f"{registry}/orchestrate-{name}",
        home=home,
        base_image=str(config.get("base_image") or "") or None,
        push_image=True,
        overrides=None,
        user=USER_NAME,
        credentials=None,
        log=log,
        policy=requirements.Policy.from_config(config),
    )
    return str(built["pushed"][0]["pinned"])


def _rendering_targets() -> list[str]:
    names = []
    for candidate in sorted(available_targets()):
        try:
            if load_target(candidate).renders:
                names.append(candidate)
        except ConfigError:  # a plugin that does not load is not one that renders
            continue
    return names
