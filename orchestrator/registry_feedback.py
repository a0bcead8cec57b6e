"""Registry feedback (-C registry_tags=true): the MLflow model version that went live is tagged with
where it serves, and the one it replaced is untagged. Run after a deployment by whichever runner ran
it, the CLI's or a worker's (the runner calls it when a deployment with the key succeeds). A tag that cannot be written is a warning (on the output and a
`registry_tag_failed` event), never a failure."""

from __future__ import annotations

from collections.abc import Callable

from .model import uri as model_uri
from .states import EventKind
from .store import Store
from .store.tables import Deployment, Endpoint
from .target_contract import merged_outputs


def update_registry_tags(store: Store, deployment_id: int, echo: Callable[[str], None]) -> None:
    """Tag the live version of deployment ``deployment_id``'s endpoint, untag the replaced one."""
    with store.read() as session:
        deployment = session.get_one(Deployment, deployment_id)
        endpoint = session.get_one(Endpoint, deployment.endpoint_id)
        if endpoint.live_deployment_id != deployment.id or not deployment.config.get("registry_tags"):
            return
        source = model_uri.ModelSource.from_dict(deployment.model_source, deployment.model_uri)
        previous = session.get(Deployment, deployment.previous_live_id) if deployment.previous_live_id else None
        replaced = model_uri.ModelSource.from_dict(previous.model_source, previous.model_uri) if previous else None
        where = {
            "target": deployment.target,
            "deployment_id": deployment.id,
            "url": merged_outputs(session, deployment.id).get("url"),
        }
        name, endpoint_id = endpoint.name, endpoint.id
    warnings = [model_uri.tag_version(source, name, where)]
    if replaced is not None and replaced.version_key() != source.version_key():
        warnings.append(model_uri.untag_version(replaced, name))
    for warning in filter(None, warnings):
        echo(f"warning: {warning}")
        # Kept in the history too: a worker's output is a log nobody may read.
        with store.write() as tx:
            tx.event(EventKind.REGISTRY_TAG_FAILED, warning, endpoint_id=endpoint_id, deployment_id=deployment_id)
