"""What a sweep returns, and how its best trial is chosen, tabled and recorded."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import Field

from tracking_tasks.errors import SweepFailedError
from tracking_tasks.handles import RunRef
from tracking_tasks.tags import BEST_RUN_TAG, BEST_TRIAL_TAG
from tracking_tasks.tasks._keyed_artifacts import artifact_key, keyed_markdown, publish
from tracking_tasks.tasks._runs import log_metrics, log_params, set_tags
from tracking_tasks.tasks._runtime import current_run_info
from tracking_tasks.trackers._core import StageOutput, StageResult, flatten_params
from tracking_tasks.trackers._training import upload_checkpoint
from tracking_tasks.trackers._trial import TrialSummary

log = logging.getLogger(__name__)


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


def sweep_counts(statuses: Iterable[str]) -> dict[str, float]:
    """The one summary every sweep logs on its run, from its trials' run statuses.

    Args:
        statuses: Each counted trial's run status (``FINISHED``, ``FAILED``, ``KILLED``
            for a pruned one).

    Returns:
        Metrics ``n_trials``, ``n_completed_trials``, ``n_failed_trials`` and
        ``n_pruned_trials``.

    Example:
        >>> sweep_counts(["FINISHED", "FAILED", "KILLED", "FINISHED"])["n_completed_trials"]
        2.0
    """
    seen = list(statuses)
    return {
        "n_trials": float(len(seen)),
        "n_completed_trials": float(seen.count("FINISHED")),
        "n_failed_trials": float(seen.count("FAILED")),
        "n_pruned_trials": float(seen.count("KILLED")),
    }


def pick_best(trials: list[TrialSummary], metric: str, mode: str) -> TrialSummary | None:
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


def record_best(
    parent: RunRef, best: TrialSummary, logged_params: Mapping[str, str] | None = None
) -> None:
    """Record the best trial on the sweep's run: tags, ``best.*`` metrics and params.

    Tags ``tracking_tasks.best_trial`` and ``tracking_tasks.best_run_id`` (when the trial
    has a run), metrics and params ``best.<name>`` of the trial's. ``logged_params``: the
    params a resumed sweep's run already has. MLflow never changes a param, so a
    ``best.*`` param an earlier attempt logged keeps its value (a warning says so when the
    best has changed); the tags and ``best.*`` metrics are current.
    """
    tags = {BEST_TRIAL_TAG: str(best.index)}
    if best.run_id:
        tags[BEST_RUN_TAG] = best.run_id
    else:
        log.warning(
            "no MLflow run of trial %d under sweep run %s: %s not set",
            best.index,
            parent.run_id,
            BEST_RUN_TAG,
        )
    set_tags(parent, tags)
    log_metrics(parent, {f"best.{k}": v for k, v in best.metrics.items()})
    params = {f"best.{k}": v for k, v in flatten_params(best.params).items()}
    kept = {k for k in params if k in (logged_params or {})}
    if any(str(params[k]) != (logged_params or {})[k] for k in kept):
        log.warning(
            "The best trial of resumed sweep %s is now trial %d; its best.* params keep the "
            "earlier best's values (MLflow never changes a param): read %s",
            parent.run_id,
            best.index,
            BEST_TRIAL_TAG,
        )
    if fresh := {k: v for k, v in params.items() if k not in kept}:
        log_params(parent, fresh)


def finish_sweep(
    parent: RunRef,
    summaries: list[TrialSummary],
    metric: str,
    mode: Literal["max", "min"],
    checkpoint_artifact_path: str,
    logged_params: Mapping[str, str] | None = None,
) -> SweepResult:
    """Rank the trials, table them, tag and log the best on the parent, upload its checkpoint.

    Every sweep, list or Optuna, describes itself the same way on its run: the counts of
    :func:`sweep_counts` as metrics, ``best.*`` metrics and params, the best run's tags,
    and a Prefect artifact keyed ``mlflow-sweep-<run id>`` tabling the trials.

    ``logged_params``: the params a resumed sweep's run already has (see ``record_best``).
    """
    best = pick_best(summaries, metric, mode)
    publish(
        keyed_markdown(
            artifact_key("sweep", parent.run_id),
            f"### Sweep `{parent.run_name}` ranked by `{metric}` ({mode})\n\n"
            + _markdown(summaries, best, metric),
            f"Trials of MLflow run {parent.run_id}",
            current_run_info().flow_run_id,
        )
    )
    log_metrics(parent, sweep_counts(t.status for t in summaries))
    if best is None:
        failed = sum(t.status == "FAILED" for t in summaries)
        raise SweepFailedError(
            f"no trial of sweep {parent.run_id} reported {metric!r}: {failed} of "
            f"{len(summaries)} trials failed"
        )
    record_best(parent, best, logged_params)
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
