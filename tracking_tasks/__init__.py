"""MLflow experiment tracking as Prefect tasks, subflows and state hooks."""

from tracking_tasks.batching import RunLogger
from tracking_tasks.config import TrackingConfig
from tracking_tasks.exceptions import (
    ConfigHashError,
    CredentialInURIError,
    ExperimentNotFoundError,
    ExperimentSetupError,
    InvalidLogDataError,
    InvalidSearchError,
    RunCreationError,
    RunNotFoundError,
    RunSearchError,
    TrackingConfigError,
    TrackingTasksError,
)
from tracking_tasks.finder import (
    RunSummary,
    find_best_run,
    find_mlflow_runs,
    find_run_by_config_hash,
    find_runs_for_flow_run,
    get_run_summary,
)
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.hashing import canonical_json, config_hash
from tracking_tasks.lifecycle import end_mlflow_run, mlflow_state_hooks, state_to_run_status
from tracking_tasks.runs import create_mlflow_run, get_run_info, log_metrics, log_params, set_tags
from tracking_tasks.setup import resolve_tracking_config, setup_mlflow
from tracking_tasks.urls import experiment_url, redact_uri, run_url

__version__ = "0.1.0"

__all__ = [
    "ConfigHashError",
    "CredentialInURIError",
    "ExperimentNotFoundError",
    "ExperimentSetupError",
    "InvalidLogDataError",
    "InvalidSearchError",
    "RunCreationError",
    "RunLogger",
    "RunNotFoundError",
    "RunRef",
    "RunSearchError",
    "RunSummary",
    "TrackingConfig",
    "TrackingConfigError",
    "TrackingContext",
    "TrackingTasksError",
    "__version__",
    "canonical_json",
    "config_hash",
    "create_mlflow_run",
    "end_mlflow_run",
    "experiment_url",
    "find_best_run",
    "find_mlflow_runs",
    "find_run_by_config_hash",
    "find_runs_for_flow_run",
    "get_run_info",
    "get_run_summary",
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
