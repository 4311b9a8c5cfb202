"""track_training: one training run with per-step metrics, final metrics and a checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tracking_tasks.config._models import TrackingConfig
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.ops._logging import RunLogger
from tracking_tasks.tasks._artifacts import upload_artifacts
from tracking_tasks.tasks._hooks import mlflow_state_hooks
from tracking_tasks.tasks._runs import log_metrics
from tracking_tasks.trackers._core import (
    StageContext,
    StageOutput,
    StageResult,
    config_dict,
    lineage_tags,
    normalise_output,
    open_stage_run,
)


@task(name="run_stage_function", cache_policy=NO_CACHE)  # user code with side effects
def run_stage_function(
    stage: str,
    fn: Callable[[StageContext], Any],
    run: RunRef,
    config: dict[str, Any],
    lineage: dict[str, str],
) -> Any:
    """Call a stage function with its context; flush its buffered metrics whatever happens.

    Returns what the function returned, for the tracker to interpret.
    """
    with RunLogger(run) as log:
        return fn(StageContext(run=run, config=config, log=log, lineage=lineage))


def upload_checkpoint(run: RunRef, output: StageOutput, artifact_path: str) -> str | None:
    """Upload the stage's checkpoint, if it returned one, with the artifact retries."""
    if output.checkpoint is None:
        return None
    upload_artifacts(run, output.checkpoint, artifact_path)
    return artifact_path


def finish_stage(stage: str, run: RunRef, output: StageOutput, artifact_path: str) -> StageResult:
    """Log the final metrics and upload the checkpoint: the end every stage shares."""
    if output.metrics:
        log_metrics(run, output.metrics)
    checkpoint = upload_checkpoint(run, output, artifact_path)
    return StageResult(
        stage=stage,
        run=run,
        metrics=output.metrics,
        checkpoint_path=checkpoint,
        value=output.value,
    )


@flow(name="track_training", **mlflow_state_hooks())
def track_training(
    train_fn: Callable[[StageContext], Any],
    config: Any = None,
    context: TrackingContext | TrackingConfig | None = None,
    *,
    run_name: str = "training",
    sweep_run: RunRef | str | None = None,
    trial_run: RunRef | str | None = None,
    checkpoint_artifact_path: str = "checkpoint",
) -> StageResult:
    """Track a training stage as a subflow: one MLflow run, ended by the subflow's hooks.

    The run is opened (found again on a retry: idempotent by config hash), the config is
    logged as params, ``train_fn`` runs with a ``StageContext`` whose ``log`` batches
    per-step metrics, its final metrics are logged and its checkpoint uploaded with the
    artifact retries. Lineage tags point at the sweep and trial it came from.

    Args:
        train_fn: ``train_fn(stage) -> StageOutput | {metric: value} | None``.
        config: The training config (pydantic model or mapping), logged as params.
        context: Where to track: a ``TrackingContext`` or ``TrackingConfig`` (None: environment/default).
        run_name: The MLflow run name.
        sweep_run: The sweep run the config came from (tagged as lineage).
        trial_run: The trial run the config came from (tagged as lineage).
        checkpoint_artifact_path: Where the checkpoint goes under the run's artifacts.

    Returns:
        A frozen ``StageResult`` with the run handle and final metrics.

    Raises:
        Exception: whatever ``train_fn`` raised; the run is then ended FAILED and the
            subflow is Failed, for the calling flow to decide.

    Example:
        >>> from prefect import flow
        >>> def fit(stage):
        ...     for step in range(10):
        ...         stage.log.log_metric("loss", 1 / (step + 1), step)
        ...     return {"loss": 0.1}
        >>> @flow
        ... def pipeline():
        ...     return track_training(fit, {"lr": 0.1})
    """
    cfg = config_dict(config)
    lineage = lineage_tags({"sweep": sweep_run, "trial": trial_run})
    run = open_stage_run("training", context, cfg, run_name, tags=lineage)
    output = normalise_output(
        run_stage_function("training", train_fn, run, cfg, lineage), "training"
    )
    return finish_stage("training", run, output, checkpoint_artifact_path)
