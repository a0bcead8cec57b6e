"""The target interface, for target modules and third-party plugins: a re-export of
`orchestrator.target_contract`, where the contract lives (orchestrator/ never imports targets/)."""

from orchestrator.target_contract import (
    ENTRY_POINT_GROUP,
    LIVE_RESOURCE_STATES,
    ConfigError,
    ConfigKey,
    DeploymentView,
    Invocation,
    Outputs,
    PermanentTargetError,
    ResourceState,
    ResourceView,
    RetryableTargetError,
    Stage,
    StageContext,
    Target,
    TargetError,
    available_targets,
    invoke_scoring_server,
    load_target,
    private_directory,
    private_opener,
    validated_model,
)

__all__ = [
    "ENTRY_POINT_GROUP", "LIVE_RESOURCE_STATES", "ConfigError", "ConfigKey", "DeploymentView", "Invocation",
    "Outputs", "PermanentTargetError", "ResourceState", "ResourceView", "RetryableTargetError", "Stage",
    "StageContext", "Target", "TargetError", "available_targets", "invoke_scoring_server", "load_target",
    "private_directory", "private_opener", "validated_model",
]
