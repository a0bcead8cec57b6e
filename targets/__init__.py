"""Targets: where models serve. Each module implements targets.base.Target and is registered
under the entry-point group `orchestrate.targets`."""

from targets.base import ENTRY_POINT_GROUP, Invocation, Target, available_targets, load_target

__all__ = ["ENTRY_POINT_GROUP", "Invocation", "Target", "available_targets", "load_target"]
