"""MLflow experiment tracking as Prefect tasks, subflows and state hooks."""

from tracking_tasks.azure_ml import get_azure_tracking_uri
from tracking_tasks.batching import RunLogger
from tracking_tasks.blocks import MlflowCredentials
from tracking_tasks.config import AzureMLWorkspace, TrackingConfig
from tracking_tasks.exceptions import (
    AzureAuthenticationError,
    AzureWorkspaceError,
    ConfigHashError,
    CredentialInURIError,
    ExperimentSetupError,
    InvalidLogDataError,
    MissingExtraError,
    RunCreationError,
    RunNotFoundError,
    TrackingConfigError,
    TrackingTasksError,
)
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.hashing import canonical_json, config_hash
from tracking_tasks.lifecycle import end_mlflow_run, mlflow_state_hooks, state_to_run_status
from tracking_tasks.runs import create_mlflow_run, get_run_info, log_metrics, log_params, set_tags
from tracking_tasks.setup import resolve_tracking_config, setup_mlflow
from tracking_tasks.urls import (
    azure_studio_experiment_url,
    azure_studio_run_url,
    experiment_url,
    redact_uri,
    run_url,
)

__version__ = "0.1.0"

__all__ = [
    "AzureAuthenticationError",
    "AzureMLWorkspace",
    "AzureWorkspaceError",
    "ConfigHashError",
    "CredentialInURIError",
    "ExperimentSetupError",
    "InvalidLogDataError",
    "MissingExtraError",
    "MlflowCredentials",
    "RunCreationError",
    "RunLogger",
    "RunNotFoundError",
    "RunRef",
    "TrackingConfig",
    "TrackingConfigError",
    "TrackingContext",
    "TrackingTasksError",
    "__version__",
    "azure_studio_experiment_url",
    "azure_studio_run_url",
    "canonical_json",
    "config_hash",
    "create_mlflow_run",
    "end_mlflow_run",
    "experiment_url",
    "get_azure_tracking_uri",
    "get_run_info",
    "log_metrics",
    "log_params",
    "mlflow_state_hooks",
    "redact_uri",
    "resolve_tracking_config",
    "run_url",
    "set_tags",
    "setup_mlflow",
    "state_to_run_status",
]
