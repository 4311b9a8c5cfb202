"""MLflow experiment tracking as Prefect tasks, subflows and state hooks."""

from tracking_tasks.batching import RunLogger
from tracking_tasks.config import TrackingConfig
from tracking_tasks.exceptions import (
    ConfigHashError,
    CredentialInURIError,
    ExperimentSetupError,
    InvalidLogDataError,
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
from tracking_tasks.trackers import (
    BenchmarkOutput,
    BenchmarkResult,
    ConversionOutput,
    ConversionResult,
    MLflowBenchmarkTracker,
    MLflowConversionTracker,
    MLflowSweepTracker,
    MLflowTrainingTracker,
    StageContext,
    StageOutput,
    StageResult,
    SweepResult,
    TrialSummary,
    latency_summary,
    register_model_version,
    run_trial,
    track_benchmark,
    track_conversion,
    track_sweep,
    track_training,
)
from tracking_tasks.urls import experiment_url, redact_uri, run_url

__version__ = "0.1.0"

__all__ = [
    "BenchmarkOutput",
    "BenchmarkResult",
    "ConfigHashError",
    "ConversionOutput",
    "ConversionResult",
    "CredentialInURIError",
    "ExperimentSetupError",
    "InvalidLogDataError",
    "MLflowBenchmarkTracker",
    "MLflowConversionTracker",
    "MLflowSweepTracker",
    "MLflowTrainingTracker",
    "RunCreationError",
    "RunLogger",
    "RunNotFoundError",
    "RunRef",
    "StageContext",
    "StageOutput",
    "StageResult",
    "SweepResult",
    "TrackingConfig",
    "TrackingConfigError",
    "TrackingContext",
    "TrackingTasksError",
    "TrialSummary",
    "__version__",
    "canonical_json",
    "config_hash",
    "create_mlflow_run",
    "end_mlflow_run",
    "experiment_url",
    "get_run_info",
    "latency_summary",
    "log_metrics",
    "log_params",
    "mlflow_state_hooks",
    "redact_uri",
    "register_model_version",
    "resolve_tracking_config",
    "run_trial",
    "run_url",
    "set_tags",
    "setup_mlflow",
    "state_to_run_status",
    "track_benchmark",
    "track_conversion",
    "track_sweep",
    "track_training",
]
