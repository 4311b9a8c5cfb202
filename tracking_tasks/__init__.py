"""MLflow experiment tracking as Prefect tasks, subflows and state hooks.

What a flow needs, on one card. The rest is in the public packages, each documented in
the API reference: ``tracking_tasks.tasks`` (every Prefect task and the hooks),
``tracking_tasks.ops`` (the same work as plain functions, without Prefect),
``tracking_tasks.trackers`` (the stage subflows), ``tracking_tasks.auth``
(credentials), ``tracking_tasks.config``, ``tracking_tasks.errors``,
``tracking_tasks.handles``, ``tracking_tasks.tags``, ``tracking_tasks.urls``,
``tracking_tasks.hashing``, ``tracking_tasks.azure_ml``, ``tracking_tasks.compat`` (the
seed's classes) and ``tracking_tasks.cli``. Modules whose names start with ``_`` are
the implementation: import from the packages.
"""

from tracking_tasks._version import __version__
from tracking_tasks.auth import MlflowCredentials
from tracking_tasks.config import AzureMLWorkspace, TrackingConfig
from tracking_tasks.errors import TrackingTasksError
from tracking_tasks.handles import ModelRef, RunRef, RunSummary, TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops import ArtifactManifest, CheckpointArtifacts, RunLogger, get_run_summary
from tracking_tasks.tasks import (
    create_mlflow_run,
    download_artifacts,
    end_mlflow_run,
    find_best_run,
    find_mlflow_runs,
    find_run_by_config_hash,
    find_runs_for_flow_run,
    log_best_checkpoint,
    log_metrics,
    log_model,
    log_params,
    mlflow_state_hooks,
    promote_model,
    register_model,
    register_model_version,
    set_tags,
    setup_mlflow,
    upload_artifacts,
)
from tracking_tasks.trackers import (
    BenchmarkOutput,
    BenchmarkResult,
    ConversionOutput,
    ConversionResult,
    StageContext,
    StageOutput,
    StageResult,
    SweepResult,
    TrialSummary,
    track_benchmark,
    track_conversion,
    track_sweep,
    track_training,
)

__all__ = [
    "ArtifactManifest",
    "AzureMLWorkspace",
    "BenchmarkOutput",
    "BenchmarkResult",
    "CheckpointArtifacts",
    "ConversionOutput",
    "ConversionResult",
    "MlflowCredentials",
    "ModelRef",
    "RunLogger",
    "RunRef",
    "RunSummary",
    "StageContext",
    "StageOutput",
    "StageResult",
    "SweepResult",
    "TrackingConfig",
    "TrackingContext",
    "TrackingTasksError",
    "TrialSummary",
    "__version__",
    "config_hash",
    "create_mlflow_run",
    "download_artifacts",
    "end_mlflow_run",
    "find_best_run",
    "find_mlflow_runs",
    "find_run_by_config_hash",
    "find_runs_for_flow_run",
    "get_run_summary",
    "log_best_checkpoint",
    "log_metrics",
    "log_model",
    "log_params",
    "mlflow_state_hooks",
    "promote_model",
    "register_model",
    "register_model_version",
    "set_tags",
    "setup_mlflow",
    "track_benchmark",
    "track_conversion",
    "track_sweep",
    "track_training",
    "upload_artifacts",
]
