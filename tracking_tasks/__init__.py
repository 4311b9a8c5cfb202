"""MLflow experiment tracking as Prefect tasks, subflows and state hooks.

What a flow needs, on one card. Everything else lives in a named module:
``tracking_tasks.errors`` (the exception tree), ``tracking_tasks.ops`` (the plain
functions, usable without Prefect), ``tracking_tasks.tasks`` (the Prefect layer),
``tracking_tasks.urls``, ``tracking_tasks.hashing``, ``tracking_tasks.tags``,
``tracking_tasks.config``, ``tracking_tasks.azure_ml``.
"""

from tracking_tasks._version import __version__
from tracking_tasks.config.models import AzureMLWorkspace, TrackingConfig
from tracking_tasks.errors import TrackingTasksError
from tracking_tasks.handles import RunRef, RunSummary, TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops.artifacts.manifest import ArtifactManifest, CheckpointArtifacts
from tracking_tasks.ops.batching import RunLogger
from tracking_tasks.ops.search import get_run_summary
from tracking_tasks.tasks.artifacts import download_artifacts, log_best_checkpoint, upload_artifacts
from tracking_tasks.tasks.blocks import MlflowCredentials
from tracking_tasks.tasks.finders import (
    find_best_run,
    find_mlflow_runs,
    find_run_by_config_hash,
    find_runs_for_flow_run,
)
from tracking_tasks.tasks.hooks import mlflow_state_hooks
from tracking_tasks.tasks.runs import (
    create_mlflow_run,
    end_mlflow_run,
    log_metrics,
    log_params,
    set_tags,
)
from tracking_tasks.tasks.setup import setup_mlflow
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
    register_model_version,
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
    "log_params",
    "mlflow_state_hooks",
    "register_model_version",
    "set_tags",
    "setup_mlflow",
    "track_benchmark",
    "track_conversion",
    "track_sweep",
    "track_training",
    "upload_artifacts",
]
