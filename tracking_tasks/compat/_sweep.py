"""The seed's sweep tracker: a sweep run as a ``with`` block, an Optuna study's results on it."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from tracking_tasks._status import OPTUNA_TRIAL_STATUSES
from tracking_tasks.compat._stage import StageTracker, note_ignored
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._artifacts.manifest import CheckpointArtifacts
from tracking_tasks.ops._filters import and_, tag_equals
from tracking_tasks.ops._finders import find_mlflow_runs
from tracking_tasks.ops._fluent import RunHandle, enclosing_run
from tracking_tasks.tags import (
    BEST_RUN_TAG,
    BEST_TRIAL_TAG,
    PARENT_RUN_TAG,
    REFIT_COMPLETED_TAG,
    SEED_STAGE_NAMES,
    TRIAL_INDEX_TAG,
    TRIAL_RUN_ATTR,
)
from tracking_tasks.tasks._artifacts import log_best_checkpoint as log_checkpoint_task
from tracking_tasks.tasks._runs import log_metrics, log_params, set_tags
from tracking_tasks.trackers._sweep_results import sweep_counts

log = logging.getLogger(__name__)


def _get(mapping: Mapping[str, Any] | None, *keys: str) -> Any:
    value: Any = mapping or {}
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


class MLflowSweepTracker(StageTracker):
    """The seed's sweep tracker: ``start_sweep_run``, ``log_final_metrics``, ``log_best_checkpoint``.

    Its runs are tagged ``stage=hpo`` (the seed's name, so the seed's filters
    ``tags.stage='hpo'`` find them; ``stage="sweep"`` writes the library's). Trials are
    your own nested runs (``with create_mlflow_run(...)`` inside the sweep block nests
    under it), or an Optuna sweep through ``track_sweep``.

    Args:
        experiment_name: The MLflow experiment.
        tracking: Where it is (see ``StageTracker``).
        stage: The stage tag (default ``hpo``).

    Example:
        >>> tracker = MLflowSweepTracker("ner")
        >>> tracker.stage
        'hpo'
    """

    default_stage = SEED_STAGE_NAMES["sweep"]

    def start_sweep_run(
        self,
        run_name: str,
        hpo_config: Mapping[str, Any] | None = None,
        backbone: str | None = None,
        study_name: str | None = None,
        checkpoint_config: Mapping[str, Any] | None = None,
        storage_path: Any = None,
        should_resume: bool = False,
        context: Any = None,
        output_dir: str | os.PathLike[str] | None = None,
        group_id: str | None = None,
        data_config: Mapping[str, Any] | None = None,
        benchmark_config: Mapping[str, Any] | None = None,
        train_config: Mapping[str, Any] | None = None,
    ) -> contextlib.AbstractContextManager[RunHandle]:
        """Open the sweep's parent run for the ``with`` block.

        Params logged: ``objective_metric`` and ``objective_goal``
        (``hpo_config["objective"]["metric"/"goal"]``), ``max_trials``
        (``hpo_config["sampling"]["max_trials"]``), ``backbone``, ``study_name``,
        ``resumed`` (``should_resume``); they are also the run's config, hashed as
        ``tracking_tasks.config_hash``.

        Args:
            run_name: The run's name.
            hpo_config: The seed's HPO config (objective and sampling read from it).
            backbone: Logged as a param.
            study_name: The Optuna study's name, logged as a param.
            checkpoint_config: Ignored (checkpoints go through ``log_best_checkpoint``).
            storage_path: Ignored (the study's storage is the study's business).
            should_resume: Logged as the ``resumed`` param.
            context: Ignored (the seed's NamingContext).
            output_dir: Ignored (nothing is inferred from paths here).
            group_id: Ignored.
            data_config: Ignored (the seed hashed it into grouping tags; ``config_hash``
                of the params above groups runs here).
            benchmark_config: Ignored, likewise.
            train_config: Ignored, likewise.

        Returns:
            A context manager yielding the sweep run's ``RunHandle``.
        """
        note_ignored(
            "start_sweep_run",
            checkpoint_config=checkpoint_config,
            storage_path=storage_path,
            context=context,
            output_dir=output_dir,
            group_id=group_id,
            data_config=data_config,
            benchmark_config=benchmark_config,
            train_config=train_config,
        )
        params = {
            "objective_metric": _get(hpo_config, "objective", "metric"),
            "objective_goal": _get(hpo_config, "objective", "goal"),
            "max_trials": _get(hpo_config, "sampling", "max_trials"),
            "backbone": backbone,
            "study_name": study_name,
            "resumed": bool(should_resume),
        }
        return self.start_run(run_name, params)

    def log_final_metrics(
        self,
        study: Any,
        objective_metric: str,
        parent_run_id: str | RunRef | None = None,
        run_name: str | None = None,
        should_resume: bool = False,
        hpo_output_dir: str | os.PathLike[str] | None = None,
        backbone: str | None = None,
        run_id: str | None = None,
        fold_splits: list[Any] | None = None,
        hpo_config: Mapping[str, Any] | None = None,
        child_runs_map: list[Any] | None = None,
        upload_checkpoint: bool = True,
        output_dir: str | os.PathLike[str] | None = None,
        config_dir: str | os.PathLike[str] | None = None,
    ) -> str | None:
        """Log an Optuna study's outcome on the sweep run, and tag its best trial's run.

        On the sweep run (``parent_run_id``, else the enclosing block's): metrics
        ``n_trials``, ``n_completed_trials``, ``n_failed_trials``, ``n_pruned_trials`` (as
        ``track_sweep`` logs them) and ``best.<objective_metric>``, params
        ``best.<param>``, tags ``tracking_tasks.best_trial`` and
        ``tracking_tasks.best_run_id``. The best trial's run is the one ``track_sweep``
        recorded on the trial, else the child run of the sweep run tagged
        ``tracking_tasks.trial_index`` = the trial's number.

        Nothing is searched for on disk: the seed's checkpoint upload from
        ``hpo_output_dir`` is not done here (a warning says so when it would have been):
        call ``log_best_checkpoint(checkpoint_dir=..., config_dir=...)``.

        Args:
            study: The ``optuna.Study``.
            objective_metric: The metric the study optimised.
            parent_run_id: The sweep run (default: the enclosing block's run).
            run_name: Ignored.
            should_resume: Ignored.
            hpo_output_dir: Ignored (see above).
            backbone: Ignored.
            run_id: Ignored.
            fold_splits: Ignored.
            hpo_config: Ignored.
            child_runs_map: Ignored (the best trial's run is found by its tags).
            upload_checkpoint: Ignored (see above).
            output_dir: Ignored.
            config_dir: Ignored (only ``log_best_checkpoint`` uploads configs).

        Returns:
            The best trial's run id, or None (no completed trial, or no run found for it).

        Raises:
            InvalidArgumentError: no ``parent_run_id`` and no enclosing block.
        """
        note_ignored(
            "log_final_metrics",
            run_name=run_name,
            should_resume=should_resume,
            backbone=backbone,
            run_id=run_id,
            fold_splits=fold_splits,
            hpo_config=hpo_config,
            child_runs_map=child_runs_map,
            output_dir=output_dir,
            config_dir=config_dir,
        )
        if upload_checkpoint and hpo_output_dir is not None:
            log.warning(
                "log_final_metrics uploads no checkpoint (nothing is searched for under %s): "
                "call log_best_checkpoint(checkpoint_dir=..., config_dir=...)",
                hpo_output_dir,
            )
        parent = self._target(parent_run_id, None, "log_final_metrics")
        trials = study.get_trials(deepcopy=False)
        completed = [t for t in trials if t.state.name == "COMPLETE"]
        # the summary every sweep logs (trackers.sweep's), from the trials' run statuses
        metrics = sweep_counts(OPTUNA_TRIAL_STATUSES.get(t.state.name, "") for t in trials)
        if not completed:
            log_metrics(parent, metrics)
            return None
        best = study.best_trial
        metrics[f"best.{objective_metric}"] = float(best.value)
        log_metrics(parent, metrics)
        log_params(parent, {f"best.{name}": value for name, value in best.params.items()})
        best_run = best.user_attrs.get(TRIAL_RUN_ATTR) or self._trial_run(parent, best.number)
        tags = {BEST_TRIAL_TAG: str(best.number)}
        if best_run:
            tags[BEST_RUN_TAG] = str(best_run)
        else:
            log.warning(
                "no run of trial %d under sweep run %s (tagged %s): %s not set",
                best.number,
                parent.run_id,
                TRIAL_INDEX_TAG,
                BEST_RUN_TAG,
            )
        set_tags(parent, tags)
        return str(best_run) if best_run else None

    def log_best_checkpoint(
        self,
        study: Any = None,
        hpo_output_dir: str | os.PathLike[str] | None = None,
        backbone: str | None = None,
        run_id: str | None = None,
        fold_splits: list[Any] | None = None,
        prefer_checkpoint_dir: str | os.PathLike[str] | None = None,
        refit_ok: bool | None = None,
        parent_run_id: str | RunRef | None = None,
        refit_run_id: str | RunRef | None = None,
        *,
        config_dir: str | os.PathLike[str] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        artifact_path: str = "best_checkpoint",
    ) -> CheckpointArtifacts:
        """Upload the best checkpoint and its config folder, both named, nothing inferred.

        ``config_dir`` is used as given: no project root is looked for from the
        checkpoint's path (checkpoints often sit on a mounted drive, the code
        elsewhere). The checkpoint is ``checkpoint_dir`` (or the seed's
        ``prefer_checkpoint_dir``): it is not searched for under ``hpo_output_dir``.
        They go to the refit run if given, else the sweep run (``parent_run_id``, else
        the enclosing block's), under ``<artifact_path>/checkpoint`` and
        ``<artifact_path>/config``, with the artifact retries and verification.

        Args:
            study: Ignored (the best trial is the caller's choice of checkpoint).
            hpo_output_dir: Ignored (nothing is searched for).
            backbone: Ignored.
            run_id: Ignored.
            fold_splits: Ignored.
            prefer_checkpoint_dir: The checkpoint, when ``checkpoint_dir`` is not given.
            refit_ok: Tagged ``tracking_tasks.refit_completed`` (``true``/``false``).
            parent_run_id: The sweep run.
            refit_run_id: The refit run: the upload goes there when given.
            config_dir: The config folder to keep beside the checkpoint (required).
            checkpoint_dir: The checkpoint folder (or file).
            artifact_path: The folder for both on the run.

        Returns:
            ``CheckpointArtifacts`` with both manifests.

        Raises:
            InvalidArgumentError: no checkpoint or no ``config_dir`` given, or no run.
            LocalArtifactPathError: the checkpoint or the config folder is missing.
        """
        note_ignored(
            "log_best_checkpoint",
            study=study,
            hpo_output_dir=hpo_output_dir,
            backbone=backbone,
            run_id=run_id,
            fold_splits=fold_splits,
        )
        checkpoint = checkpoint_dir if checkpoint_dir is not None else prefer_checkpoint_dir
        if checkpoint is None:
            raise InvalidArgumentError(
                "log_best_checkpoint needs checkpoint_dir=<the checkpoint folder>: it is not "
                "searched for under hpo_output_dir"
            )
        if config_dir is None:
            raise InvalidArgumentError(
                "log_best_checkpoint needs config_dir=<your config folder>: it is used as "
                "given, never inferred from the checkpoint's path (which may be on another "
                "drive than the code)"
            )
        run = self._target(parent_run_id, refit_run_id, "log_best_checkpoint")
        if refit_ok is not None:
            set_tags(run, {REFIT_COMPLETED_TAG: "true" if refit_ok else "false"})
        return log_checkpoint_task(run, checkpoint, config_dir, artifact_path=artifact_path)

    def _target(
        self, parent_run_id: str | RunRef | None, refit_run_id: str | RunRef | None, method: str
    ) -> RunRef:
        chosen = refit_run_id or parent_run_id or enclosing_run()
        if chosen is None:
            raise InvalidArgumentError(
                f"MLflowSweepTracker.{method} needs parent_run_id=<the sweep run id>, or a "
                "call inside `with tracker.start_sweep_run(...)`"
            )
        return self.run_ref(chosen)

    def _trial_run(self, parent: RunRef, number: int) -> str | None:
        found = find_mlflow_runs(
            self.context(),
            and_(
                tag_equals(PARENT_RUN_TAG, parent.run_id), tag_equals(TRIAL_INDEX_TAG, str(number))
            ),
            max_results=1,
        )
        return found[0].run_id if found else None
