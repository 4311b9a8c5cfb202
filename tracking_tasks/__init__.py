"""MLflow experiment tracking as Prefect tasks, subflows and state hooks."""

from tracking_tasks.artifacts import (
    MANIFEST_NAME,
    ArtifactManifest,
    CheckpointArtifacts,
    ManifestEntry,
    download_artifacts,
    log_best_checkpoint,
    retry_on_transient_fault,
    upload_artifacts,
)
from tracking_tasks.batching import RunLogger
from tracking_tasks.config import TrackingConfig
from tracking_tasks.exceptions import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactVerificationError,
    ConfigHashError,
    CredentialInURIError,
    ExperimentSetupError,
    InvalidLogDataError,
    LocalArtifactPathError,
    RunCreationError,
    RunNotFoundError,
    TrackingConfigError,
    TrackingTasksError,
    TransientArtifactError,
    UnsafeArtifactPathError,
)
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.hashing import canonical_json, config_hash
from tracking_tasks.lifecycle import end_mlflow_run, mlflow_state_hooks, state_to_run_status
from tracking_tasks.runs import create_mlflow_run, get_run_info, log_metrics, log_params, set_tags
from tracking_tasks.setup import resolve_tracking_config, setup_mlflow
from tracking_tasks.urls import experiment_url, redact_uri, run_url

__version__ = "0.1.0"

__all__ = [
    "MANIFEST_NAME",
    "ArtifactError",
    "ArtifactManifest",
    "ArtifactNotFoundError",
    "ArtifactVerificationError",
    "CheckpointArtifacts",
    "ConfigHashError",
    "CredentialInURIError",
    "ExperimentSetupError",
    "InvalidLogDataError",
    "LocalArtifactPathError",
    "ManifestEntry",
    "RunCreationError",
    "RunLogger",
    "RunNotFoundError",
    "RunRef",
    "TrackingConfig",
    "TrackingConfigError",
    "TrackingContext",
    "TrackingTasksError",
    "TransientArtifactError",
    "UnsafeArtifactPathError",
    "__version__",
    "canonical_json",
    "config_hash",
    "create_mlflow_run",
    "download_artifacts",
    "end_mlflow_run",
    "experiment_url",
    "get_run_info",
    "log_best_checkpoint",
    "log_metrics",
    "log_params",
    "mlflow_state_hooks",
    "redact_uri",
    "resolve_tracking_config",
    "retry_on_transient_fault",
    "run_url",
    "set_tags",
    "setup_mlflow",
    "state_to_run_status",
    "upload_artifacts",
]
