"""The Prefect layer: each task wraps one plain function of ``tracking_tasks.ops``.

The decorator carries the Prefect behaviour (caching, retries, hooks); the work is the
plain function's. Also here: the flow state hooks that end a flow run's MLflow runs,
the cache policies, and the reconcile task.
"""

from tracking_tasks._status import state_to_run_status
from tracking_tasks.tasks._artifacts import (
    download_artifacts,
    log_best_checkpoint,
    retry_on_transient_fault,
    upload_artifacts,
)
from tracking_tasks.tasks._cache import LookupCachePolicy, SetupCachePolicy
from tracking_tasks.tasks._finders import (
    allow_stale,
    find_best_model,
    find_best_run,
    find_logged_models,
    find_mlflow_runs,
    find_run_by_config_hash,
    find_runs_for_flow_run,
)
from tracking_tasks.tasks._hooks import FlowStateHooks, mlflow_state_hooks
from tracking_tasks.tasks._model_registry import latest_model_version, register_model_version
from tracking_tasks.tasks._models import (
    get_model_version,
    log_model,
    log_model_metrics,
    promote_model,
    register_model,
    set_model_alias,
)
from tracking_tasks.tasks._prefect_api import prefect_api_identity
from tracking_tasks.tasks._reconcile import read_flow_run_states, reconcile_mlflow_runs
from tracking_tasks.tasks._runs import (
    create_mlflow_run,
    end_mlflow_run,
    log_metrics,
    log_params,
    set_tags,
)
from tracking_tasks.tasks._setup import setup_mlflow

__all__ = [
    "FlowStateHooks",
    "LookupCachePolicy",
    "SetupCachePolicy",
    "allow_stale",
    "create_mlflow_run",
    "download_artifacts",
    "end_mlflow_run",
    "find_best_model",
    "find_best_run",
    "find_logged_models",
    "find_mlflow_runs",
    "find_run_by_config_hash",
    "find_runs_for_flow_run",
    "get_model_version",
    "latest_model_version",
    "log_best_checkpoint",
    "log_metrics",
    "log_model",
    "log_model_metrics",
    "log_params",
    "mlflow_state_hooks",
    "prefect_api_identity",
    "promote_model",
    "read_flow_run_states",
    "reconcile_mlflow_runs",
    "register_model",
    "register_model_version",
    "retry_on_transient_fault",
    "set_model_alias",
    "set_tags",
    "setup_mlflow",
    "state_to_run_status",
    "upload_artifacts",
]
