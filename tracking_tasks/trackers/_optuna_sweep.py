"""Optuna sweeps: the sampler proposes, each trial is a Prefect task in its own nested run.

``track_sweep`` comes here when it is given an Optuna study, or a sampler and search
space. Optuna is imported only then (``pip install 'tracking-tasks[optuna]'``).

The study is the sweep's memory: each trial's MLflow run id is a user attribute of the
trial, the sweep's run is a user attribute of the study. With an RDB storage (or the
same in-memory study object on a subflow retry) a sweep started again resumes: trials
already finished are neither run again nor logged again, and ``n_trials`` counts them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed

from tracking_tasks._status import OPTUNA_TRIAL_STATUSES, RunStatus
from tracking_tasks.errors import InvalidArgumentError, MissingExtraError, StageOutputError
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.ops._filters import tag_equals
from tracking_tasks.ops._finders import find_mlflow_runs
from tracking_tasks.ops._lifecycle import end_mlflow_run as end_run
from tracking_tasks.ops._logging import RunLogger
from tracking_tasks.tags import (
    INTERRUPTED_ATTR,
    PARENT_RUN_TAG,
    SWEEP_RUN_ATTR,
    TRIAL_CHECKPOINT_ATTR,
    TRIAL_INDEX_TAG,
    TRIAL_RUN_ATTR,
)
from tracking_tasks.trackers._core import StageOutput
from tracking_tasks.trackers._trial import TrialSummary, run_tracked_trial

log = logging.getLogger(__name__)

OPTUNA_EXTRA_INSTALL = "pip install 'tracking-tasks[optuna]'"

#: What an Optuna objective returns: the metric's value, final metrics, or a StageOutput.
TrialOutput = float | Mapping[str, float] | StageOutput


def import_optuna() -> Any:
    """Import Optuna, or say which extra brings it.

    Returns:
        The ``optuna`` module.

    Raises:
        MissingExtraError: Optuna is not installed.

    Example:
        >>> import_optuna().__name__
        'optuna'
    """
    try:
        import optuna
    except ImportError as exc:
        raise MissingExtraError(
            f"an Optuna sweep needs the optuna extra, which is not installed ({exc}). "
            f"Install it with: {OPTUNA_EXTRA_INSTALL}"
        ) from exc
    return optuna


def _metrics(value: Any, metric: str) -> StageOutput:
    if isinstance(value, StageOutput):
        return value
    if isinstance(value, Mapping):
        return StageOutput(metrics={str(k): float(v) for k, v in value.items()})
    if isinstance(value, int | float):
        return StageOutput(metrics={metric: float(value)})
    raise StageOutputError(
        f"the objective returned {type(value).__name__}; return the value of {metric!r}, a "
        "mapping of metric name to number, or a StageOutput"
    )


@task(name="run_optuna_trial", cache_policy=NO_CACHE, task_run_name="trial-{number}")  # user code
def run_optuna_trial(
    objective: Callable[[Any, RunLogger], TrialOutput],
    context: TrackingContext,
    parent: RunRef,
    study: Any,
    trial: Any,
    number: int,
    metric: str,
    stage: str = "sweep-trial",
) -> TrialSummary:
    """Run one Optuna trial in its own run nested under the sweep's run, and tell the study.

    The objective gets the ``optuna.Trial`` (its params already drawn when the sweep has
    a search space; ``trial.suggest_*`` otherwise) and a ``RunLogger`` on the trial's
    run. It returns the value of ``metric``, a mapping of final metrics (holding
    ``metric``), or a ``StageOutput``. ``optuna.TrialPruned`` ends the run KILLED, tagged
    ``tracking_tasks.pruned``, and the trial PRUNED; any other exception ends the run
    FAILED, the trial FAIL, and this task Failed. The study is told before the run is
    ended, so a resumed sweep can mend a run a crash left RUNNING.

    Args:
        objective: ``objective(trial, log) -> value | {metric: value} | StageOutput``.
        context: The sweep's tracking context.
        parent: The sweep's run.
        study: The ``optuna.Study``.
        trial: The ``optuna.Trial`` asked from it.
        number: The trial's number (names the run and the task run ``trial-<number>``).
        metric: The metric whose value the study optimises.
        stage: The stage tag of the trial's run.

    Returns:
        The trial's ``TrialSummary``.

    Raises:
        Exception: whatever the objective raised (except ``TrialPruned``).
    """
    optuna = import_optuna()
    state = optuna.trial.TrialState

    def opened(run: RunRef) -> None:
        trial.set_user_attr(TRIAL_RUN_ATTR, run.run_id)

    def check(output: StageOutput) -> None:
        if metric not in output.metrics:
            raise StageOutputError(
                f"trial {number} reported {sorted(output.metrics)} but not {metric!r}, the "
                "metric the study optimises"
            )
        if output.checkpoint is not None:
            trial.set_user_attr(TRIAL_CHECKPOINT_ATTR, str(output.checkpoint))

    def ended(status: RunStatus, output: StageOutput | None) -> None:
        if status == "FINISHED" and output is not None:
            study.tell(trial, output.metrics[metric])
        else:  # never left RUNNING in the study
            study.tell(trial, state=state.PRUNED if status == "KILLED" else state.FAIL)

    return run_tracked_trial(
        context,
        parent,
        number,
        lambda log: _metrics(objective(trial, log), metric),
        lambda: trial.params,
        stage=stage,
        pruned=optuna.TrialPruned,
        on_opened=opened,
        on_ended=ended,
        check=check,
    )


class OptunaSweep:
    """One Optuna sweep under way: its study, where it tracks, and what is left to run.

    Made by ``track_sweep``; :meth:`run` asks, submits and tells until the study has
    ``n_trials`` finished trials.

    Args:
        study: The ``optuna.Study``.
        objective: ``objective(trial, log) -> value | {metric: value} | StageOutput``.
        metric: The metric the study optimises.
        context: Where the runs go.
        search_space: Param name -> Optuna distribution, drawn before the objective runs.
        n_trials: Finished trials the study should have when the sweep returns.
        max_concurrency: Trials in flight at once (on the flow's task runner).
        callbacks: ``callback(study, frozen_trial)`` after each trial, as Optuna's own.
        trial_stage: The stage tag of the trial runs.

    Example:
        >>> OptunaSweep.__name__
        'OptunaSweep'
    """

    def __init__(
        self,
        study: Any,
        objective: Callable[[Any, RunLogger], TrialOutput],
        metric: str,
        context: TrackingContext,
        *,
        search_space: Mapping[str, Any] | None,
        n_trials: int,
        max_concurrency: int,
        callbacks: Sequence[Callable[[Any, Any], None]] = (),
        trial_stage: str = "sweep-trial",
    ) -> None:
        if n_trials < 1:
            raise InvalidArgumentError(f"n_trials must be at least 1, not {n_trials}")
        if max_concurrency < 1:
            raise InvalidArgumentError(f"max_concurrency must be at least 1, not {max_concurrency}")
        self.optuna = import_optuna()
        self.study = study
        self.objective = objective
        self.metric = metric
        self.context = context
        self.search_space = dict(search_space or {})
        self.n_trials = n_trials
        self.max_concurrency = max_concurrency
        self.callbacks = list(callbacks)
        self.trial_stage = trial_stage
        #: Trials an attempt that died left RUNNING, failed by :meth:`mend`.
        self.interrupted: set[int] = set(study.user_attrs.get(INTERRUPTED_ATTR, []))

    @property
    def mode(self) -> Literal["max", "min"]:
        """``max`` for a maximising study, ``min`` for a minimising one."""
        return study_mode(self.study)

    def earlier_run_id(self) -> str | None:
        """The sweep run an earlier attempt on this study opened on the same server, if any."""
        raw = self.study.user_attrs.get(SWEEP_RUN_ATTR)
        if not raw:
            return None
        where = json.loads(raw)
        same = (
            where.get("tracking_uri") == self.context.tracking_uri
            and where.get("experiment_id") == self.context.experiment_id
        )
        return str(where["run_id"]) if same else None

    def remember_run(self, parent: RunRef) -> None:
        """Record the sweep's run on the study, for a later attempt to find it."""
        where = {
            "tracking_uri": parent.tracking_uri,
            "experiment_id": parent.experiment_id,
            "run_id": parent.run_id,
        }
        self.study.set_user_attr(SWEEP_RUN_ATTR, json.dumps(where, sort_keys=True))

    def mend(self, parent: RunRef) -> None:
        """Settle what an attempt that died left behind, before new trials are asked.

        A trial left RUNNING is told FAIL and its params are enqueued, so they are tried
        again (it does not count toward ``n_trials``); a trial run left RUNNING in
        MLflow is ended as its trial ended (KILLED for an interrupted one).
        """
        state = self.optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        for frozen in trials:
            if frozen.state == state.RUNNING:
                log.warning(
                    "Trial %d of study %r was left running by an earlier attempt: failed, "
                    "and its params asked again",
                    frozen.number,
                    self.study.study_name,
                )
                self.study.tell(frozen.number, state=state.FAIL)
                self.study.enqueue_trial(frozen.params, skip_if_exists=False)
                self.interrupted.add(frozen.number)
                self.study.set_user_attr(INTERRUPTED_ATTR, sorted(self.interrupted))
        if not trials:
            return
        open_runs = find_mlflow_runs(
            self.context, tag_equals(PARENT_RUN_TAG, parent.run_id), status="RUNNING"
        )
        for summary in open_runs:
            number = summary.tags.get(TRIAL_INDEX_TAG, "")
            frozen = by_number.get(int(number)) if number.isdigit() else None
            if frozen is None:
                continue
            interrupted = frozen.number in self.interrupted
            status = (
                "KILLED" if interrupted else OPTUNA_TRIAL_STATUSES.get(frozen.state.name, "KILLED")
            )
            end_run(summary.to_ref(), status)

    def counted(self) -> int:
        """Finished trials that count toward ``n_trials`` (interrupted ones do not)."""
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False)
            if t.state.is_finished() and t.number not in self.interrupted
        )

    def run(self, parent: RunRef) -> tuple[dict[int, TrialSummary], dict[int, str]]:
        """Ask, submit and tell until ``n_trials`` trials have finished.

        Returns:
            ``(results of this attempt's finished trials by number, errors by number)``.

        Raises:
            Exception: what a callback raised, after the trials in flight have finished.
        """
        self.mend(parent)
        remaining = self.n_trials - self.counted()
        results: dict[int, TrialSummary] = {}
        errors: dict[int, str] = {}
        in_flight: dict[PrefectFuture[TrialSummary], int] = {}
        stop: BaseException | None = None
        started = 0
        while True:
            while stop is None and started < remaining and len(in_flight) < self.max_concurrency:
                trial = self.study.ask(fixed_distributions=self.search_space)
                future = run_optuna_trial.submit(
                    self.objective,
                    self.context,
                    parent,
                    self.study,
                    trial,
                    trial.number,
                    self.metric,
                    self.trial_stage,
                )
                in_flight[future] = trial.number
                started += 1
            if not in_flight:
                break
            done = next(as_completed(list(in_flight)))
            number = in_flight.pop(done)
            done.wait()  # the final state, without asking the API
            state = done.state
            if state.is_completed():
                results[number] = done.result()
            else:
                try:
                    done.result()
                except Exception as exc:
                    errors[number] = f"{type(exc).__name__}: {exc}"
                else:
                    errors[number] = str(state.message or "failed")
            if stop is None and self.callbacks:
                try:
                    frozen = self.study.trials[number]
                    for callback in self.callbacks:
                        callback(self.study, frozen)
                except Exception as exc:
                    stop = exc  # no new trials; the ones in flight finish first
        if stop is not None:
            raise stop
        return results, errors


def checkpoint_of(frozen: Any) -> Path | None:
    """The local checkpoint a finished trial's objective returned, if it still exists."""
    raw = frozen.user_attrs.get(TRIAL_CHECKPOINT_ATTR)
    path = Path(raw) if raw else None
    return path if path is not None and path.exists() else None


def study_mode(study: Any) -> Literal["max", "min"]:
    """``max`` for a maximising (single-objective) study, ``min`` for a minimising one."""
    maximize = import_optuna().study.StudyDirection.MAXIMIZE
    return "max" if study.direction == maximize else "min"


def study_summaries(
    study: Any,
    metric: str,
    results: Mapping[int, TrialSummary] | None = None,
    errors: Mapping[int, str] | None = None,
    *,
    skip: Collection[int] = (),
) -> list[TrialSummary]:
    """A ``TrialSummary`` of each finished trial of a study, in trial-number order.

    A trial's run is the one recorded on it (``TRIAL_RUN_ATTR``; "" when none was), its
    status the run status its Optuna state maps to, its metrics those its objective
    returned (``results``, this attempt's) else ``{metric: value}`` of a completed trial.

    Args:
        study: The ``optuna.Study``.
        metric: The metric the study's value is.
        results: Summaries this attempt's trials returned, by number.
        errors: Errors of this attempt's failed trials, by number.
        skip: Numbers of trials left out (interrupted ones, which do not count).

    Returns:
        The summaries.
    """
    summaries = []
    for frozen in study.get_trials(deepcopy=False):
        if not frozen.state.is_finished() or frozen.number in skip:
            continue
        result = (results or {}).get(frozen.number)
        value = frozen.value if frozen.state.name == "COMPLETE" else None
        summaries.append(
            TrialSummary(
                index=frozen.number,
                params=dict(frozen.params),
                run_id=str(frozen.user_attrs.get(TRIAL_RUN_ATTR, "")),
                status=OPTUNA_TRIAL_STATUSES[frozen.state.name],
                metrics=(result.metrics if result else {})
                or ({} if value is None else {metric: value}),
                error=(errors or {}).get(frozen.number),
                checkpoint=checkpoint_of(frozen),
            )
        )
    return summaries
