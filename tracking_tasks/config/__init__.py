"""Configuration: the models (where to track, which experiment) and the resolution order."""

from tracking_tasks.config._models import ENV_VARS, AzureMLWorkspace, TrackingConfig
from tracking_tasks.config._resolve import (
    DEFAULT_EXPERIMENT_NAME,
    resolve_tracking_config,
    resolve_tracking_uri,
)

__all__ = [
    "DEFAULT_EXPERIMENT_NAME",
    "ENV_VARS",
    "AzureMLWorkspace",
    "TrackingConfig",
    "resolve_tracking_config",
    "resolve_tracking_uri",
]
