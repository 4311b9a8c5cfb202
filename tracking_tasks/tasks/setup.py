"""The setup_mlflow task: the plain setup, cached per flow run and remembered for the hooks."""

from __future__ import annotations

from typing import Any

from prefect import task

from tracking_tasks.handles import TrackingContext
from tracking_tasks.ops import setup as plain
from tracking_tasks.ops.client import ensure_credentials
from tracking_tasks.ops.environment import point_fluent_api
from tracking_tasks.tasks.cache import SetupCachePolicy
from tracking_tasks.tasks.registry import RUN_REGISTRY

__all__ = ["setup_mlflow"]


def _after_setup(tsk: Any, task_run: Any, state: Any) -> None:
    """Remember where the flow run tracks (for its hooks and for calls that omit the
    context); re-point MLflow on a cache hit.

    A cache hit skips the body, which is what points MLflow's fluent API at the
    experiment and scopes the credentials; the process may be a new one (a retried flow
    run), so do both here (a saved block is loaded again by its name).
    """
    context = state.result(raise_on_failure=False)
    if not isinstance(context, TrackingContext):
        return
    if state.name == "Cached":
        ensure_credentials(context.credentials, context.tracking_uri)
        point_fluent_api(context)
    flow_run_id = str(task_run.flow_run_id) if task_run.flow_run_id else None
    RUN_REGISTRY.remember_location(flow_run_id, context)
    RUN_REGISTRY.remember_context(flow_run_id, context)


setup_mlflow = task(
    name="setup_mlflow",
    cache_policy=SetupCachePolicy(),
    on_completion=[_after_setup],
)(plain.setup_mlflow)
