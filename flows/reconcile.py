"""Reconcile: end the MLflow runs a killed flow process left RUNNING.

Deployed by prefect.yaml on a 10-minute interval, and meant to be triggered too by an
automation when a flow run enters Crashed (docs/guides/reconcile.md). It asks the
Prefect API it reports to for the states of the flow runs that opened RUNNING runs, and
ends those whose flow run is over (Completed -> FINISHED, Failed/Crashed -> FAILED,
Cancelled -> KILLED) or gone (FAILED). Only runs of that Prefect API are touched (their
``prefect.api`` tag); runs of flow runs still going, runs written to within the grace
period and runs of other APIs or tools never are.
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow

from tracking_tasks.ops._reconcile import ReconcileReport
from tracking_tasks.ops._reconcile_guard import DEFAULT_GRACE_SECONDS
from tracking_tasks.tasks._reconcile import reconcile_mlflow_runs


@flow(name="reconcile-mlflow-runs")
def reconcile(
    experiments: list[str] | None = None,
    tracking_uri: str | None = None,
    credentials: str | None = None,
    dry_run: bool = False,
    workspace: str | None = None,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
) -> ReconcileReport:
    """End orphaned MLflow runs (every experiment unless ``experiments`` names some).

    Args:
        experiments: Experiment names to search (default: all active experiments).
        tracking_uri: Tracking URI (default: the block's, else ``$MLFLOW_TRACKING_URI``).
        credentials: The name of a saved ``MlflowCredentials`` block.
        dry_run: Only report what would be ended.
        workspace: The MLflow workspace (default: the block's, else ``$MLFLOW_WORKSPACE``).
        grace_seconds: End only runs not written to for this long.

    Returns:
        The ``ReconcileReport``.
    """
    return reconcile_mlflow_runs(
        experiments,
        tracking_uri=tracking_uri,
        credentials=credentials,
        workspace=workspace,
        dry_run=dry_run,
        grace_seconds=grace_seconds,
    )


if __name__ == "__main__":
    print(reconcile().counts())
