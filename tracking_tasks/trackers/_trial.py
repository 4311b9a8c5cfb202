"""One trial of a sweep, list or Optuna: its nested run opened, its objective run, its run ended."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks._status import RunStatus
from tracking_tasks.handles import RunRef, RunSummary, TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops._filters import and_, tag_equals
from tracking_tasks.ops._finders import find_mlflow_runs
from tracking_tasks.ops._lifecycle import terminate_run
from tracking_tasks.ops._logging import RunLogger, set_tags
from tracking_tasks.tags import (
    CONFIG_HASH_TAG,
    PARENT_RUN_TAG,
    PRUNED_TAG,
    STAGE_TAG,
    TRIAL_INDEX_TAG,
    trial_run_name,
)
from tracking_tasks.tasks._runs import open_mlflow_run, release_run
from tracking_tasks.trackers._core import StageOutput, flatten_params


class TrialSummary(BaseModel):
    """One trial of a sweep: its params, its run, and how it went.

    Args:
        index: Position in the sweep's trial list (Optuna: the trial's number).
        params: The trial's params.
        run_id: The trial's MLflow run (nested under the sweep's run).
        status: ``FINISHED``, ``FAILED``, or ``KILLED`` for a pruned Optuna trial.
        metrics: Final metrics the objective returned.
        error: The error of a failed trial.
        checkpoint: Local checkpoint the objective returned, if any.

    Example:
        >>> TrialSummary(index=0, params={"C": 1.0}, run_id="r", status="FINISHED").status
        'FINISHED'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(description="Position in the trial list (Optuna: the trial number).")
    params: dict[str, Any] = Field(description="The trial's params.")
    run_id: str = Field(description="The trial's nested MLflow run.")
    status: Literal["FINISHED", "FAILED", "KILLED"] = Field(description="How the trial ended.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Final metrics.")
    error: str | None = Field(default=None, description="Error of a failed trial.")
    checkpoint: Path | None = Field(default=None, description="Local checkpoint, if any.")


def run_tracked_trial(
    context: TrackingContext,
    parent: RunRef,
    index: int,
    objective: Callable[[RunLogger], StageOutput],
    params: Callable[[], Mapping[str, Any]],
    *,
    stage: str,
    run_name_prefix: str = "trial",
    pruned: type[BaseException] | tuple[type[BaseException], ...] = (),
    on_opened: Callable[[RunRef], None] | None = None,
    on_ended: Callable[[RunStatus, StageOutput | None], None] | None = None,
    check: Callable[[StageOutput], None] | None = None,
) -> TrialSummary:
    """Run one trial in its own run nested under the sweep's run; end the run as it went.

    The run is opened (found again on a retry), the objective runs with a ``RunLogger``
    on it, its final metrics and the trial's params (read after the objective: an Optuna
    trial draws them as it runs; their ``config_hash`` is then tagged too, as it is for a
    trial whose params were known up front) are logged, and the run is ended FINISHED, FAILED (the
    objective raised; the error propagates) or KILLED (``pruned`` raised; tagged
    ``tracking_tasks.pruned``). ``on_ended`` hears the outcome before the run is ended,
    so a study told first can mend a run a crash left RUNNING.

    Args:
        context: The sweep's tracking context.
        parent: The sweep's run.
        index: The trial's index (names its run ``<prefix>-<index>``).
        objective: Runs the trial with the logger; returns its output.
        params: The trial's params, read when they are logged.
        stage: The stage tag of the trial's run.
        run_name_prefix: Prefix of the run name.
        pruned: Exceptions that mean the trial was pruned.
        on_opened: Called with the run once it is open.
        on_ended: Called with the status (and the output, if any) before the run ends.
        check: Called with the output after it is logged; raising fails the trial.

    Returns:
        The trial's ``TrialSummary`` (FINISHED or KILLED; a failure raises).

    Raises:
        Exception: whatever the objective (or ``check``) raised.
    """
    opened_with = dict(params()) or None  # an Optuna trial without a search space: none yet
    try:
        run = open_mlflow_run(
            context,
            run_name=trial_run_name(index, run_name_prefix),
            config=opened_with,
            parent_run_id=parent,
            tags={STAGE_TAG: stage, TRIAL_INDEX_TAG: str(index)},
            idempotency_key=f"trial-{index}",
            link=False,  # the sweep's table lists the trials
        )
        if on_opened is not None:
            on_opened(run)
    except BaseException:
        if on_ended is not None:
            on_ended("FAILED", None)
        raise
    output: StageOutput | None = None
    status: RunStatus = "FINISHED"
    try:
        with RunLogger(run) as log:
            try:
                output = objective(log)
                log.log_metrics(output.metrics)
            finally:
                drawn = dict(params())
                log.log_params(flatten_params(drawn))
                if opened_with is None and drawn:  # drawn as it ran: tag their hash now
                    log.set_tags({CONFIG_HASH_TAG: config_hash(drawn)})
        if check is not None:
            check(output)
    except pruned:
        status = "KILLED"
        set_tags(run, {PRUNED_TAG: "true"})
    except BaseException:
        _end(run, "FAILED", output, on_ended)
        raise
    _end(run, status, output, on_ended)
    return TrialSummary(
        index=index,
        params=dict(params()),
        run_id=run.run_id,
        status=status,
        metrics=output.metrics if output is not None and status == "FINISHED" else {},
        checkpoint=output.checkpoint if output is not None and status == "FINISHED" else None,
    )


def trial_runs(context: TrackingContext, parent: RunRef, index: int) -> list[RunSummary]:
    """The runs of a sweep's trial: nested under the sweep's run, tagged with its index.

    How a trial's run is found when nothing recorded its id (a trial whose worker died,
    or a trial run the caller opened and tagged ``tracking_tasks.trial_index`` himself).
    """
    return find_mlflow_runs(
        context,
        and_(tag_equals(PARENT_RUN_TAG, parent.run_id), tag_equals(TRIAL_INDEX_TAG, str(index))),
    )


def _end(
    run: RunRef,
    status: RunStatus,
    output: StageOutput | None,
    on_ended: Callable[[RunStatus, StageOutput | None], None] | None,
) -> None:
    """Tell ``on_ended``, end the run, and spare the flow's hooks a check of it."""
    try:
        if on_ended is not None:
            on_ended(status, output)
    finally:
        terminate_run(run, status)
        release_run(run)
