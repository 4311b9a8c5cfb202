"""track_sweep: a parent run and one nested child run per trial, trials run concurrently.

The trials are a list of params, or proposed by an Optuna sampler (``trackers.optuna_sweep``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tracking_tasks._status import TERMINAL_FLOW_RUN_STATES, RunStatus
from tracking_tasks.config._models import TrackingConfig
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops._finders import get_run_summary
from tracking_tasks.ops._lifecycle import end_runs
from tracking_tasks.ops._logging import RunLogger
from tracking_tasks.tags import STUDY_TAG
from tracking_tasks.tasks._hooks import mlflow_state_hooks
from tracking_tasks.tasks._run_memory import location_of
from tracking_tasks.tasks._runs import log_params
from tracking_tasks.tasks._setup import resolve_context
from tracking_tasks.trackers._core import (
    check_travels,
    flatten_params,
    normalise_output,
    open_stage_run,
)
from tracking_tasks.trackers._optuna_sweep import OptunaSweep, import_optuna, study_summaries
from tracking_tasks.trackers._sweep_results import SweepResult, finish_sweep
from tracking_tasks.trackers._trial import TrialSummary, run_tracked_trial, trial_runs

log = logging.getLogger(__name__)


@task(name="run_trial", cache_policy=NO_CACHE, task_run_name="trial-{index}")  # user code
def run_trial(
    objective: Callable[[dict[str, Any], RunLogger], Any],
    context: TrackingContext,
    parent: RunRef,
    index: int,
    params: dict[str, Any],
    stage: str = "sweep-trial",
) -> TrialSummary:
    """Run one trial of a list sweep in its own run nested under the sweep's run.

    The objective gets the trial's params and a ``RunLogger`` on the trial's run; it
    returns a mapping of final metrics (or a ``StageOutput`` with a checkpoint). A
    raising objective ends the trial's run FAILED and this task Failed.

    Args:
        objective: ``objective(params, log) -> {metric: value} | StageOutput``.
        context: The sweep's tracking context.
        parent: The sweep's run.
        index: The trial's position (names the run ``trial-<index>``).
        params: The trial's params, logged on its run.
        stage: The stage tag of the trial's run.

    Returns:
        A ``TrialSummary``.

    Raises:
        Exception: whatever the objective raised.
    """
    return run_tracked_trial(
        context,
        parent,
        index,
        lambda log: normalise_output(objective(dict(params), log), "objective"),
        lambda: params,
        stage=stage,
    )


@flow(name="track_sweep", **mlflow_state_hooks())
def track_sweep(
    objective: Callable[[Any, RunLogger], Any],
    trials: Sequence[Mapping[str, Any]] | None = None,
    metric: str | None = None,
    mode: Literal["max", "min"] | None = None,
    context: TrackingContext | TrackingConfig | None = None,
    *,
    study: Any = None,
    sampler: Any = None,
    search_space: Mapping[str, Any] | None = None,
    n_trials: int | None = None,
    max_concurrency: int = 4,
    callbacks: Sequence[Callable[[Any, Any], None]] | None = None,
    run_name: str = "sweep",
    stage: str = "sweep",
    checkpoint_artifact_path: str = "best_checkpoint",
) -> SweepResult:
    """Track a hyper-parameter sweep as a subflow: one parent run, one child per trial.

    The trials are either a list of params (``trials``), or proposed by Optuna: pass a
    ``study`` (or a ``sampler``, and a new in-memory study is made) with ``n_trials``.
    Trials are Prefect tasks submitted to the flow's task runner, so they run
    concurrently; each gets its own nested run (tagged ``stage=<stage>-trial`` and
    ``tracking_tasks.trial_index``), params and metrics. The best finished trial by
    ``metric`` and ``mode`` (ties: the earliest trial) is tagged on the parent
    (``tracking_tasks.best_run_id``), its metrics and params are logged on the parent
    as ``best.*``, its checkpoint (if the objective returned one) is uploaded to the
    parent with the artifact retries, and a Prefect markdown artifact tables every trial.
    A failed trial is FAILED in MLflow and does not sink the sweep; if every trial
    fails, the sweep fails. Either way the parent gets metrics ``n_trials``,
    ``n_completed_trials``, ``n_failed_trials`` and ``n_pruned_trials``.

    **Optuna.** The objective is ``objective(trial, log)``: an ``optuna.Trial`` (with a
    ``search_space``, its params are drawn before it runs; else call
    ``trial.suggest_*``) and a ``RunLogger``; it returns the value of ``metric``, a
    mapping of final metrics, or a ``StageOutput``. At most ``max_concurrency`` trials
    run at once; the sampler proposes each new one from the trials told so far.
    ``optuna.TrialPruned`` ends a trial's run KILLED, tagged ``tracking_tasks.pruned``.
    ``mode`` follows the study's direction. ``n_trials`` is how many finished trials
    the study should have when the sweep returns: a retried subflow, or a later flow
    run on the same study (RDB storage), resumes it; finished trials are neither run
    nor logged again, and the same MLflow sweep run is reopened. One sweep per study at
    a time: a trial found RUNNING is taken for one an earlier attempt left behind.
    ``callbacks`` are called as Optuna's, ``callback(study, frozen_trial)``, after each
    trial; one that raises stops the sweep once the trials in flight have finished.

    **Dask.** ``track_sweep.with_options(task_runner=DaskTaskRunner(address=...))`` runs
    the trials on a Dask cluster's worker processes (prefect-dask, the ``dask`` extra); the
    objective then travels by pickle and is checked before anything is written. A trial
    whose worker dies is FAILED, and its run ended FAILED by the sweep.

    Args:
        objective: ``objective(params, log)`` for a list; ``objective(trial, log)`` for Optuna.
        trials: The params of each trial (a list sweep).
        metric: The metric to rank trials by (Optuna: the value the study optimises).
        mode: ``max`` (default) or ``min``; for Optuna, the study's direction.
        context: Where to track: a ``TrackingContext`` or ``TrackingConfig``.
        study: An ``optuna.Study`` (its sampler and storage are used as they are).
        sampler: An Optuna sampler, for a new in-memory study (``mode`` gives its direction).
        search_space: Param name -> Optuna distribution, drawn before the objective runs.
        n_trials: Finished trials the study should have (Optuna).
        max_concurrency: Optuna trials in flight at once.
        callbacks: Called after each Optuna trial as ``callback(study, frozen_trial)``.
        run_name: The parent run's name.
        stage: The stage tag of the parent run (the trials get ``<stage>-trial``).
        checkpoint_artifact_path: Where the best checkpoint goes on the parent run.

    Returns:
        A frozen ``SweepResult`` (parent run, every trial, the best).

    Raises:
        InvalidArgumentError: no trials, both a list and a study, no ``metric``,
            ``mode`` not max/min or against the study's direction, ``n_trials`` missing,
            an objective that cannot be pickled for a task runner of other processes.
        MissingExtraError: an Optuna sweep without the optuna extra.
        SweepFailedError: every trial failed, or none reported ``metric``.

    Example:
        >>> from prefect import flow
        >>> def objective(params, log):
        ...     return {"accuracy": 1 - abs(params["C"] - 1)}
        >>> @flow
        ... def hpo():
        ...     return track_sweep(objective, [{"C": 0.5}, {"C": 1.0}], metric="accuracy")
    """
    if metric is None:
        raise InvalidArgumentError("metric is missing: name the metric trials are ranked by")
    if mode not in (None, "max", "min"):
        raise InvalidArgumentError(f"mode must be 'max' or 'min', not {mode!r}")
    optuna_sweep = study is not None or sampler is not None
    if optuna_sweep and trials is not None:
        raise InvalidArgumentError(
            "pass either trials (a list of params) or an Optuna study/sampler, not both"
        )
    if not optuna_sweep and not trials:
        raise InvalidArgumentError(
            "a sweep needs at least one trial: pass a list of param mappings, or an Optuna "
            "study (or sampler) with n_trials"
        )
    check_travels(objective, "objective")
    context = resolve_context(context)
    if optuna_sweep:
        return _optuna_sweep(
            objective,
            metric,
            mode,
            context,
            study=study,
            sampler=sampler,
            search_space=search_space,
            n_trials=n_trials,
            max_concurrency=max_concurrency,
            callbacks=callbacks or (),
            run_name=run_name,
            stage=stage,
            checkpoint_artifact_path=checkpoint_artifact_path,
        )
    assert trials is not None
    mode = mode or "max"
    # the trial list is part of the sweep's identity (a retried sweep finds its run; a
    # sweep over other trials in the same flow run gets its own), by hash: it may be long
    sweep_config = {
        "metric": metric,
        "mode": mode,
        "trials_hash": config_hash([dict(t) for t in trials], short=True),
    }  # n_trials is a metric of every sweep (finish_sweep), not a param
    parent = open_stage_run(stage, context, sweep_config, run_name)
    futures = [
        run_trial.submit(objective, context, parent, i, dict(params), f"{stage}-trial")
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
            # a final state, or none: the worker process died with the trial in it
            ended_as = (state.name if state.is_final() else None) or "Crashed"
            status = TERMINAL_FLOW_RUN_STATES.get(state.type.value, "FAILED")
            run_id = _failed_trial_run_id(context, parent, i, status, ended_as)
            summaries.append(
                TrialSummary(
                    index=i, params=dict(trials[i]), run_id=run_id, status="FAILED", error=error
                )
            )
    return finish_sweep(parent, summaries, metric, mode, checkpoint_artifact_path)


def _optuna_sweep(
    objective: Callable[[Any, RunLogger], Any],
    metric: str,
    mode: Literal["max", "min"] | None,
    context: TrackingContext,
    *,
    study: Any,
    sampler: Any,
    search_space: Mapping[str, Any] | None,
    n_trials: int | None,
    max_concurrency: int,
    callbacks: Sequence[Callable[[Any, Any], None]],
    run_name: str,
    stage: str,
    checkpoint_artifact_path: str,
) -> SweepResult:
    optuna = import_optuna()
    if n_trials is None:
        raise InvalidArgumentError("an Optuna sweep needs n_trials: how many trials to finish")
    if study is None:
        study = optuna.create_study(
            sampler=sampler, direction="minimize" if mode == "min" else "maximize"
        )
    elif sampler is not None:
        raise InvalidArgumentError(
            "pass a study or a sampler, not both: a study keeps the sampler it was made with"
        )
    if len(study.directions) != 1:
        raise InvalidArgumentError(
            "a sweep ranks trials by one metric: use a single-objective study"
        )
    sweep = OptunaSweep(
        study,
        objective,
        metric,
        context,
        search_space=search_space,
        n_trials=n_trials,
        max_concurrency=max_concurrency,
        callbacks=callbacks,
        trial_stage=f"{stage}-trial",
    )
    if mode is not None and mode != sweep.mode:
        raise InvalidArgumentError(
            f"mode {mode!r} contradicts study {study.study_name!r}, which is "
            f"{'maximising' if sweep.mode == 'max' else 'minimising'}: leave mode out"
        )
    # n_trials is a target, not an identity: a later flow run may ask the study for more
    sweep_config = {
        "metric": metric,
        "mode": sweep.mode,
        "study_name": study.study_name,
        "sampler": type(study.sampler).__name__,
        "search_space": {k: repr(v) for k, v in sorted(sweep.search_space.items())},
    }
    earlier = sweep.earlier_run_id()
    parent = open_stage_run(
        stage,
        context,
        sweep_config,
        run_name,
        tags={STUDY_TAG: study.study_name},
        resume_run_id=earlier,
        log_config=earlier is None,
    )
    logged: dict[str, str] = {}
    if earlier is not None:  # params of the earlier attempts stay; new ones are added
        logged = get_run_summary(
            parent.run_id, tracking_uri=context.tracking_uri, workspace=context.workspace
        ).params
        fresh = {k: v for k, v in flatten_params(sweep_config).items() if k not in logged}
        if fresh:
            log_params(parent, fresh)
    sweep.remember_run(parent)
    results, errors = sweep.run(parent)
    summaries = study_summaries(study, metric, results, errors, skip=sweep.interrupted)
    return finish_sweep(
        parent, summaries, metric, sweep.mode, checkpoint_artifact_path, logged_params=logged
    )


def _failed_trial_run_id(
    context: TrackingContext, parent: RunRef, index: int, status: RunStatus, ended_as: str
) -> str:
    """The run of a failed trial, found by its parent and index tags, and ended ``status``
    (FAILED; KILLED for a Cancelled trial) if still RUNNING: a trial whose worker process
    died (a Dask worker killed, out of memory) could not end it, and the sweep's hooks
    would end it as the sweep ends (FINISHED)."""
    found = trial_runs(context, parent, index)
    left_open = [(r.run_id, location_of(context), True) for r in found if r.status == "RUNNING"]
    _, errors = end_runs(left_open, status, ended_as)
    for error in errors:
        log.warning("could not end the run of failed trial %d: %s", index, error)
    return found[0].run_id if found else ""
