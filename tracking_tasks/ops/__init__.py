"""The plain layer: the library's work as ordinary functions over ``MlflowClient``, no Prefect.

Every Prefect task of ``tracking_tasks`` wraps one of these; call them directly from a
script, a notebook or a test, where no flow runs. Same arguments, same errors, same
guarantees, minus what Prefect adds (retries, caching, the state hooks). MLflow is
imported when a function first needs it.
"""

from tracking_tasks._status import RunStatus
from tracking_tasks.ops._artifacts.checkpoint import log_best_checkpoint
from tracking_tasks.ops._artifacts.download import download_artifacts
from tracking_tasks.ops._artifacts.manifest import (
    MANIFEST_NAME,
    ArtifactManifest,
    CheckpointArtifacts,
    ManifestEntry,
)
from tracking_tasks.ops._artifacts.transport import RETRY_AFTER_ATTEMPTS, RETRY_AFTER_MAX_SECONDS
from tracking_tasks.ops._artifacts.upload import upload_artifacts
from tracking_tasks.ops._finders import (
    find_best_run,
    find_mlflow_runs,
    find_run_by_config_hash,
    find_runs_for_flow_run,
    get_run_summary,
)
from tracking_tasks.ops._fluent import RunHandle
from tracking_tasks.ops._lifecycle import end_mlflow_run
from tracking_tasks.ops._logging import RunLogger, log_metrics, log_params, set_tags
from tracking_tasks.ops._model_metrics import log_model_metrics
from tracking_tasks.ops._model_read import get_model_summary, load_model
from tracking_tasks.ops._model_registry import (
    ModelVersion,
    get_model_version,
    latest_model_version,
    register_model,
    register_model_version,
    set_model_alias,
)
from tracking_tasks.ops._model_search import ModelSummary, find_best_model, find_logged_models
from tracking_tasks.ops._models import log_model
from tracking_tasks.ops._promotion import PromotionDecision, promote_model
from tracking_tasks.ops._reconcile import FlowRunStates, ReconcileReport, reconcile_runs
from tracking_tasks.ops._runs import create_mlflow_run
from tracking_tasks.ops._setup import setup_mlflow
from tracking_tasks.ops._workspaces import workspace_scope

__all__ = [
    "MANIFEST_NAME",
    "RETRY_AFTER_ATTEMPTS",
    "RETRY_AFTER_MAX_SECONDS",
    "ArtifactManifest",
    "CheckpointArtifacts",
    "FlowRunStates",
    "ManifestEntry",
    "ModelSummary",
    "ModelVersion",
    "PromotionDecision",
    "ReconcileReport",
    "RunHandle",
    "RunLogger",
    "RunStatus",
    "create_mlflow_run",
    "download_artifacts",
    "end_mlflow_run",
    "find_best_model",
    "find_best_run",
    "find_logged_models",
    "find_mlflow_runs",
    "find_run_by_config_hash",
    "find_runs_for_flow_run",
    "get_model_summary",
    "get_model_version",
    "get_run_summary",
    "latest_model_version",
    "load_model",
    "log_best_checkpoint",
    "log_metrics",
    "log_model",
    "log_model_metrics",
    "log_params",
    "promote_model",
    "reconcile_runs",
    "register_model",
    "register_model_version",
    "set_model_alias",
    "set_tags",
    "setup_mlflow",
    "upload_artifacts",
    "workspace_scope",
]
