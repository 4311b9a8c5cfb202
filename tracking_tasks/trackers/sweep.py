"""track_sweep: a parent run and one nested child run per trial, trials run concurrently."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks.config.models import TrackingConfig
from tracking_tasks.errors import InvalidArgumentError, SweepFailedError
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops.batching import RunLogger
from tracking_tasks.ops.filters import and_, tag_equals
from tracking_tasks.ops.lifecycle import end_mlflow_run as end_run
from tracking_tasks.ops.search import find_mlflow_runs
from tracking_tasks.tags import (
    BEST_RUN_TAG,
    BEST_TRIAL_TAG,
    PARENT_RUN_TAG,
    STAGE_TAG,
    TRIAL_INDEX_TAG,
    trial_run_name,
)
from tracking_tasks.tasks.hooks import mlflow_state_hooks
from tracking_tasks.tasks.runs import log_metrics, log_params, open_mlflow_run, set_tags
from tracking_tasks.trackers.core import (
    StageOutput,
    StageResult,
    flatten_params,
    normalise_output,
    open_stage_run,
    tracking_context,
)
from tracking_tasks.trackers.training import upload_checkpoint

__all__ = ["SweepResult", "TrialSummary", "run_trial", "track_sweep"]


class TrialSummary(BaseModel):
    """One trial of a sweep: its params, its run, and how it went.

    Args:
        index: Position in the sweep's trial list.
        params: The trial's params.
        run_id: The trial's MLflow run (nested under the sweep's run).
        status: ``FINISHED`` or ``FAILED``.
        metrics: Final metrics the objective returned.
        error: The error of a failed trial.
        checkpoint: Local checkpoint the objective returned, if any.

    Example:
        >>> TrialSummary(index=0, params={"C": 1.0}, run_id="r", status="FINISHED").status
        'FINISHED'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(description="Position in the trial list.")
    params: dict[str, Any] = Field(description="The trial's params.")
    run_id: str = Field(description="The trial's nested MLflow run.")
    status: Literal["FINISHED", "FAILED"] = Field(description="How the trial ended.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Final metrics.")
    error: str | None = Field(default=None, description="Error of a failed trial.")
    checkpoint: Path | None = Field(default=None, description="Local checkpoint, if any.")


class SweepResult(StageResult):
    """``StageResult`` of a sweep: every trial and the best one.

    Args:
        metric: The metric trials were ranked by.
        mode: ``max`` or ``min``.
        trials: Every trial, in trial-list order.
        best: The best finished trial that reported the metric.

    Example:
        >>> SweepResult.model_fields["mode"].annotation
        typing.Literal['max', 'min']
    """

    metric: str = Field(description="Ranking metric.")
    mode: Literal["max", "min"] = Field(description="Whether higher or lower is better.")
    trials: list[TrialSummary] = Field(description="Every trial, in order.")
    best: TrialSummary = Field(description="The best trial.")


@task(name="run_trial", cache_policy=NO_CACHE, task_run_name="trial-{index}")  # user code
def run_trial(
    objective: Callable[[dict[str, Any], RunLogger], Any],
    context: TrackingContext,
    parent: RunRef,
    index: int,
    params: dict[str, Any],
    run_name_prefix: str = "trial",
) -> TrialSummary:
    """Run one trial in its own run nested under the sweep's run.

    The objective gets the trial's params and a ``RunLogger`` on the trial's run; it
    returns a mapping of final metrics (or a ``StageOutput`` with a checkpoint). A
    raising objective ends the trial's run FAILED and this task Failed.

    Args:
        objective: ``objective(params, log) -> {metric: value} | StageOutput``.
        context: The sweep's tracking context.
        parent: The sweep's run.
        index: The trial's position (names the run ``trial-<index>``).
        params: The trial's params, logged on its run.
        run_name_prefix: Prefix of the trial run names.

    Returns:
        A ``TrialSummary``.

    Raises:
        Exception: whatever the objective raised.

    Example:
        >>> def objective(params, log):
        ...     log.log_metric("loss", 1 / params["C"], 0)
        ...     return {"accuracy": 0.9}
    """
    run = open_mlflow_run(
        context,
        run_name=trial_run_name(index, run_name_prefix),
        config=params,
        parent_run_id=parent,
        tags={STAGE_TAG: "sweep-trial", TRIAL_INDEX_TAG: str(index)},
        idempotency_key=f"trial-{index}",
    )
    try:
        with RunLogger(run) as log:
            log.log_params(flatten_params(params))
            output = normalise_output(objective(dict(params), log), "objective")
            log.log_metrics(output.metrics)
    except Exception:
        end_run(run, "FAILED")
        raise
    end_run(run, "FINISHED")
    return TrialSummary(
        index=index,
        params=dict(params),
        run_id=run.run_id,
        status="FINISHED",
        metrics=output.metrics,
        checkpoint=output.checkpoint,
    )


def _pick_best(trials: list[TrialSummary], metric: str, mode: str) -> TrialSummary | None:
    scored = [
        t
        for t in trials
        if t.status == "FINISHED" and metric in t.metrics and not math.isnan(t.metrics[metric])
    ]
    if not scored:
        return None
    sign = 1 if mode == "max" else -1
    # best value first; ties go to the earliest trial, so the choice is deterministic
    return min(scored, key=lambda t: (-sign * t.metrics[metric], t.index))


def _markdown(trials: list[TrialSummary], best: TrialSummary | None, metric: str) -> str:
    keys = sorted({k for t in trials for k in t.params})
    head = ["trial", *keys, metric, "status", "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trials:
        value = t.metrics.get(metric)
        mark = " **best**" if best is not None and t.index == best.index else ""
        cells = [
            f"{t.index}{mark}",
            *(str(t.params.get(k, "")) for k in keys),
            "" if value is None else f"{value:.6g}",
            t.status if t.error is None else f"{t.status}: {t.error[:80]}",
            f"`{t.run_id}`",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


@flow(name="track_sweep", **mlflow_state_hooks())
def track_sweep(
    objective: Callable[[dict[str, Any], RunLogger], Any],
    trials: Sequence[Mapping[str, Any]],
    metric: str,
    mode: Literal["max", "min"] = "max",
    tracking: TrackingContext | TrackingConfig | None = None,
    *,
    run_name: str = "sweep",
    checkpoint_artifact_path: str = "best_checkpoint",
) -> SweepResult:
    """Track a hyper-parameter sweep as a subflow: one parent run, one child per trial.

    Trials are Prefect tasks submitted to the flow's task runner, so they run
    concurrently; each gets its own nested run, params and metrics. The best finished
    trial by ``metric`` and ``mode`` (ties: the earliest trial) is tagged on the parent
    (``tracking_tasks.best_run_id``), its metrics and params are logged on the parent
    as ``best.*``, its checkpoint (if the objective returned one) is uploaded to the
    parent with the artifact retries, and a Prefect markdown artifact tables every trial.
    A failed trial is FAILED in MLflow and does not sink the sweep; if every trial
    fails, the sweep fails.

    Args:
        objective: ``objective(params, log) -> {metric: value} | StageOutput``.
        trials: The params of each trial.
        metric: The metric to rank trials by.
        mode: ``max`` (default) or ``min``.
        tracking: A ``TrackingContext`` or ``TrackingConfig``.
        run_name: The parent run's name.
        checkpoint_artifact_path: Where the best checkpoint goes on the parent run.

    Returns:
        A frozen ``SweepResult`` (parent run, every trial, the best).

    Raises:
        InvalidArgumentError: no trials, or ``mode`` is not max/min.
        SweepFailedError: every trial failed, or none reported ``metric``.

    Example:
        >>> from prefect import flow
        >>> def objective(params, log):
        ...     return {"accuracy": 1 - abs(params["C"] - 1)}
        >>> @flow
        ... def hpo():
        ...     return track_sweep(objective, [{"C": 0.5}, {"C": 1.0}], metric="accuracy")
    """
    if not trials:
        raise InvalidArgumentError(
            "a sweep needs at least one trial: pass a list of param mappings"
        )
    if mode not in ("max", "min"):
        raise InvalidArgumentError(f"mode must be 'max' or 'min', not {mode!r}")
    context = tracking_context(tracking)
    # the trial list is part of the sweep's identity (a retried sweep finds its run; a
    # sweep over other trials in the same flow run gets its own), by hash: it may be long
    sweep_config = {
        "metric": metric,
        "mode": mode,
        "n_trials": len(trials),
        "trials_hash": config_hash([dict(t) for t in trials], short=True),
    }
    parent = open_stage_run("sweep", context, sweep_config, run_name)
    futures = [
        run_trial.submit(objective, context, parent, i, dict(params))
        for i, params in enumerate(trials)
    ]
    summaries: list[TrialSummary] = []
    for i, future in enumerate(futures):
        state = future.wait() or future.state
        if state.is_completed():
            summaries.append(future.result())
        else:
            error = str(state.message or "failed")
            try:
                future.result()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            run_id = _trial_run_id(context, parent, i)
            summaries.append(
                TrialSummary(
                    index=i, params=dict(trials[i]), run_id=run_id, status="FAILED", error=error
                )
            )
    best = _pick_best(summaries, metric, mode)
    create_markdown_artifact(
        markdown=f"### Sweep `{parent.run_name}` ranked by `{metric}` ({mode})\n\n"
        + _markdown(summaries, best, metric),
        description=f"Trials of MLflow run {parent.run_id}",
    )
    if best is None:
        failed = sum(t.status == "FAILED" for t in summaries)
        raise SweepFailedError(
            f"no trial of sweep {parent.run_id} reported {metric!r}: {failed} of "
            f"{len(summaries)} trials failed"
        )
    set_tags(parent, {BEST_RUN_TAG: best.run_id, BEST_TRIAL_TAG: str(best.index)})
    log_metrics(parent, {f"best.{k}": v for k, v in best.metrics.items()})
    log_params(parent, {f"best.{k}": v for k, v in flatten_params(best.params).items()})
    checkpoint = None
    if best.checkpoint is not None:
        checkpoint = upload_checkpoint(
            parent, StageOutput(checkpoint=best.checkpoint), checkpoint_artifact_path
        )
    return SweepResult(
        stage="sweep",
        run=parent,
        metrics={f"best.{k}": v for k, v in best.metrics.items()},
        checkpoint_path=checkpoint,
        metric=metric,
        mode=mode,
        trials=summaries,
        best=best,
    )


def _trial_run_id(context: TrackingContext, parent: RunRef, index: int) -> str:
    """The run id of a failed trial, found by its parent and index tags."""
    found = find_mlflow_runs(
        context,
        and_(tag_equals(PARENT_RUN_TAG, parent.run_id), tag_equals(TRIAL_INDEX_TAG, str(index))),
        max_results=1,
    )
    return found[0].run_id if found else ""
