"""The seed's sweep tracker: a sweep run as a ``with`` block, an Optuna study's results on it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from tracking_tasks.compat._stage import StageTracker
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._artifacts.manifest import CheckpointArtifacts
from tracking_tasks.ops._finders import get_run_summary
from tracking_tasks.ops._fluent import RunHandle, enclosing_run
from tracking_tasks.tags import REFIT_COMPLETED_TAG, SEED_STAGE_NAMES, TRIAL_CHECKPOINT_ATTR
from tracking_tasks.tasks._artifacts import log_best_checkpoint as log_checkpoint_task
from tracking_tasks.tasks._runs import log_metrics, set_tags
from tracking_tasks.trackers._core import config_dict, run_id_of
from tracking_tasks.trackers._optuna_sweep import study_mode, study_summaries
from tracking_tasks.trackers._sweep_results import pick_best, record_best, sweep_counts
from tracking_tasks.trackers._trial import TrialSummary, trial_runs
from tracking_tasks.urls import redact_uri

_NOT_SEARCHED = (
    "nothing is searched for on disk here: record the best trial's checkpoint on it "
    f"(trial.set_user_attr('{TRIAL_CHECKPOINT_ATTR}', path)) and pass config_dir= for this "
    "method to upload it, or call log_best_checkpoint(checkpoint_dir=..., config_dir=...)"
)
_BACKBONE = (
    "the seed built the checkpoint's path from it; the sweep's backbone is a param of "
    "start_sweep_run(backbone=) already: leave it out"
)
_FOLDS = (
    "the seed searched the folds' folders for checkpoints; here the checkpoint is named "
    "(checkpoint_dir=) or recorded on the trial: leave fold_splits out"
)


def _get(mapping: Mapping[str, Any] | None, *keys: str) -> Any:
    value: Any = mapping or {}
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _best(study: Any, metric: str) -> tuple[list[TrialSummary], TrialSummary | None]:
    """The study's finished trials and its best one, ranked as ``track_sweep`` ranks them."""
    summaries = study_summaries(study, metric)
    return summaries, pick_best(summaries, metric, study_mode(study))


class MLflowSweepTracker(StageTracker):
    """The seed's sweep tracker: ``start_sweep_run``, ``log_final_metrics``, ``log_best_checkpoint``.

    Its runs are tagged ``stage=hpo`` (the seed's name, so the seed's filters
    ``tags.stage='hpo'`` find them; ``stage="sweep"`` writes the library's). Trials are
    your own nested runs (``with create_mlflow_run(...)`` inside the sweep block nests
    under it, tagged ``tracking_tasks.trial_index``), or an Optuna sweep through
    ``track_sweep``.

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
        storage_path: str | os.PathLike[str] | None = None,
        should_resume: bool = False,
        context: Any = None,
        output_dir: str | os.PathLike[str] | None = None,
        group_id: str | None = None,
        data_config: Mapping[str, Any] | None = None,
        benchmark_config: Mapping[str, Any] | None = None,
        train_config: Mapping[str, Any] | None = None,
    ) -> contextlib.AbstractContextManager[RunHandle]:
        """Open the sweep's parent run for the ``with`` block.

        What is logged as params is also the run's config, hashed as
        ``tracking_tasks.config_hash`` (what the seed's study key hash was: two sweeps
        of other data, training or benchmark configs hash apart).

        Args:
            run_name: The run's name.
            hpo_config: Params ``objective_metric`` and ``objective_goal``
                (``["objective"]["metric"/"goal"]``) and ``max_trials``
                (``["sampling"]["max_trials"]``).
            backbone: The ``backbone`` param.
            study_name: The Optuna study's name, the ``study_name`` param.
            checkpoint_config: Params ``checkpoint.<key>`` (nested keys dotted).
            storage_path: The study's storage (a path, or a URL shown redacted), the
                ``storage_path`` param: where to load the study again to resume it.
            should_resume: The ``resumed`` param.
            context: Refused (the seed's NamingContext): ``run_name`` names the run.
            output_dir: Refused: nothing is inferred from folders.
            group_id: The ``tracking_tasks.group_id`` tag.
            data_config: Params ``data.<key>``.
            benchmark_config: Params ``benchmark.<key>``.
            train_config: Params ``train.<key>``.

        Returns:
            A context manager yielding the sweep run's ``RunHandle``.

        Raises:
            InvalidArgumentError: a refused argument given; ``storage_path`` not a path.
            TrackingConfigError: a config that is not a mapping.
        """
        self.refuse_start("start_sweep_run", context, output_dir)
        if storage_path is not None and not isinstance(storage_path, str | os.PathLike):
            raise InvalidArgumentError(
                f"MLflowSweepTracker.start_sweep_run: storage_path is the study's storage as "
                f"a path or URL, not {type(storage_path).__name__}"
            )
        params = {
            "objective_metric": _get(hpo_config, "objective", "metric"),
            "objective_goal": _get(hpo_config, "objective", "goal"),
            "max_trials": _get(hpo_config, "sampling", "max_trials"),
            "backbone": backbone,
            "study_name": study_name,
            "resumed": bool(should_resume),
            "storage_path": redact_uri(os.fspath(storage_path)) if storage_path else None,
            "checkpoint": config_dict(checkpoint_config) or None,
            "data": config_dict(data_config) or None,
            "train": config_dict(train_config) or None,
            "benchmark": config_dict(benchmark_config) or None,
        }
        return self.start_run(run_name, params, group_id=group_id)

    def log_final_metrics(
        self,
        study: Any,
        objective_metric: str,
        parent_run_id: str | RunRef | None = None,
        run_name: str | None = None,
        should_resume: bool = False,
        hpo_output_dir: str | os.PathLike[str] | None = None,
        backbone: str | None = None,
        run_id: str | RunRef | None = None,
        fold_splits: list[Any] | None = None,
        hpo_config: Mapping[str, Any] | None = None,
        child_runs_map: list[Any] | None = None,
        upload_checkpoint: bool = True,
        output_dir: str | os.PathLike[str] | None = None,
        config_dir: str | os.PathLike[str] | None = None,
    ) -> str | None:
        """Log an Optuna study's outcome on the sweep run, and tag its best trial's run.

        As ``track_sweep`` records its own (``record_best``): on the sweep run, metrics
        ``n_trials``, ``n_completed_trials``, ``n_failed_trials``, ``n_pruned_trials``
        (finished trials) and
        ``best.<objective_metric>``, params ``best.<param>``, tags
        ``tracking_tasks.best_trial`` and ``tracking_tasks.best_run_id``. The best trial
        (ties: the earliest) is ranked in the study's direction; its run is the one
        recorded on the trial (``track_sweep`` does), else the run nested under the sweep
        run tagged ``tracking_tasks.trial_index`` = its number.

        Args:
            study: The ``optuna.Study``.
            objective_metric: The metric the study optimised.
            parent_run_id: The sweep run (default: the enclosing block's run).
            run_name: Refused: the sweep run is named by id (``parent_run_id``).
            should_resume: True: the sweep run may hold ``best.*`` params of an earlier
                attempt; they are read first and kept (MLflow never changes a param; a
                warning says when the best has changed).
            hpo_output_dir: Refused: nothing is searched for on disk.
            backbone: Refused: the seed built a checkpoint path from it.
            run_id: The sweep run, as ``parent_run_id`` (give one, or both the same).
            fold_splits: Refused: the seed searched the folds' folders.
            hpo_config: Refused: ``start_sweep_run`` logs it; the metric is
                ``objective_metric``, the direction the study's.
            child_runs_map: Refused: trial runs are found by what they record (above).
            upload_checkpoint: True (the default): the best trial's checkpoint, when it
                recorded one (the trial attribute ``tracking_tasks.checkpoint``, as
                ``track_sweep`` records it) is uploaded with ``config_dir`` to
                ``best_checkpoint/`` on the sweep run, as ``log_best_checkpoint`` does;
                False: nothing is uploaded.
            output_dir: Refused: nothing is searched for on disk.
            config_dir: The config folder uploaded beside that checkpoint (required then,
                used as given).

        Returns:
            The best trial's run id, or None (no completed trial, or no run found for it).

        Raises:
            InvalidArgumentError: a refused argument given; ``run_id`` and
                ``parent_run_id`` naming two runs; no sweep run given or enclosing; a
                checkpoint to upload without ``config_dir``, or ``config_dir`` with no
                checkpoint to upload.
        """
        self.refuse(
            "log_final_metrics",
            run_name=(
                run_name,
                "the sweep run is named by its id, not its name: pass parent_run_id= (or "
                "call inside the start_sweep_run block)",
            ),
            hpo_output_dir=(hpo_output_dir, _NOT_SEARCHED),
            output_dir=(output_dir, _NOT_SEARCHED),
            backbone=(backbone, _BACKBONE),
            fold_splits=(fold_splits, _FOLDS),
            hpo_config=(
                hpo_config,
                "start_sweep_run(hpo_config=) logs the sweep's config; here the metric is "
                "objective_metric and the direction the study's: leave it out",
            ),
            child_runs_map=(
                child_runs_map,
                "a trial's run is the one recorded on the trial, else the run under the "
                "sweep run tagged tracking_tasks.trial_index: tag your trial runs so and "
                "leave child_runs_map out",
            ),
        )
        sweep_run = self._one_run("log_final_metrics", parent_run_id, run_id)
        summaries, best = _best(study, objective_metric)
        checkpoint = best.checkpoint if best is not None and upload_checkpoint else None
        if checkpoint is not None and config_dir is None:
            raise InvalidArgumentError(
                "MLflowSweepTracker.log_final_metrics uploads the best trial's recorded "
                f"checkpoint {checkpoint} with its config folder: pass config_dir=<your "
                "config folder> (never inferred from the checkpoint's path), or "
                "upload_checkpoint=False"
            )
        if checkpoint is None and config_dir is not None:
            raise InvalidArgumentError(
                "MLflowSweepTracker.log_final_metrics got config_dir but has no checkpoint "
                f"to upload with it (upload_checkpoint={upload_checkpoint}, and the best "
                f"trial records no existing one under '{TRIAL_CHECKPOINT_ATTR}'): call "
                "log_best_checkpoint(checkpoint_dir=..., config_dir=...)"
            )
        parent = self._target("log_final_metrics", sweep_run)
        logged = (
            get_run_summary(parent.run_id, tracking_uri=parent.tracking_uri).params
            if should_resume
            else None
        )
        log_metrics(parent, sweep_counts(t.status for t in summaries))
        if best is None:
            return None
        if not best.run_id:
            found = trial_runs(self.context(), parent, best.index)
            best = best.model_copy(update={"run_id": found[0].run_id if found else ""})
        record_best(parent, best, logged)
        if checkpoint is not None and config_dir is not None:
            log_checkpoint_task(parent, checkpoint, config_dir)
        return best.run_id or None

    def log_best_checkpoint(
        self,
        study: Any = None,
        hpo_output_dir: str | os.PathLike[str] | None = None,
        backbone: str | None = None,
        run_id: str | RunRef | None = None,
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
        elsewhere), and the checkpoint is not searched for under an output folder.
        Both go to the refit run if given, else the sweep run (``parent_run_id``, else
        the enclosing block's), under ``<artifact_path>/checkpoint`` and
        ``<artifact_path>/config``, with the artifact retries and verification
        (``tasks.log_best_checkpoint``).

        Args:
            study: The checkpoint when neither ``checkpoint_dir`` nor
                ``prefer_checkpoint_dir`` is given: the one its best trial recorded (the
                trial attribute ``tracking_tasks.checkpoint``, as ``track_sweep`` does).
            hpo_output_dir: Refused: nothing is searched for on disk.
            backbone: Refused: the seed built the checkpoint's path from it.
            run_id: The sweep run, as ``parent_run_id`` (give one, or both the same).
            fold_splits: Refused: the seed searched the folds' folders.
            prefer_checkpoint_dir: The checkpoint, when ``checkpoint_dir`` is not given.
            refit_ok: Tagged ``tracking_tasks.refit_completed`` (``true``/``false``) on
                the run the checkpoint went to.
            parent_run_id: The sweep run.
            refit_run_id: The refit run: the upload goes there when given.
            config_dir: The config folder to keep beside the checkpoint (required).
            checkpoint_dir: The checkpoint folder (or file).
            artifact_path: The folder for both on the run.

        Returns:
            ``CheckpointArtifacts`` with both manifests.

        Raises:
            InvalidArgumentError: a refused argument given, no checkpoint or no
                ``config_dir``, ``run_id`` and ``parent_run_id`` naming two runs, or no run.
            LocalArtifactPathError: the checkpoint or the config folder is missing.
        """
        self.refuse(
            "log_best_checkpoint",
            hpo_output_dir=(
                hpo_output_dir,
                "the checkpoint is not searched for on disk here: pass "
                "checkpoint_dir=<the checkpoint folder> (or a study whose best trial "
                "recorded it) and config_dir=<your config folder>",
            ),
            backbone=(backbone, _BACKBONE),
            fold_splits=(fold_splits, _FOLDS),
        )
        sweep_run = self._one_run("log_best_checkpoint", parent_run_id, run_id)
        checkpoint = checkpoint_dir if checkpoint_dir is not None else prefer_checkpoint_dir
        if checkpoint is None and study is not None:
            _, best = _best(study, "value")
            checkpoint = best.checkpoint if best is not None else None
        if checkpoint is None:
            raise InvalidArgumentError(
                "log_best_checkpoint needs checkpoint_dir=<the checkpoint folder> (or a "
                "study whose best trial recorded one): it is not searched for under "
                "hpo_output_dir"
            )
        if config_dir is None:
            raise InvalidArgumentError(
                "log_best_checkpoint needs config_dir=<your config folder>: it is used as "
                "given, never inferred from the checkpoint's path (which may be on another "
                "drive than the code)"
            )
        run = self._target("log_best_checkpoint", refit_run_id or sweep_run)
        uploaded = log_checkpoint_task(run, checkpoint, config_dir, artifact_path=artifact_path)
        if refit_ok is not None:
            set_tags(run, {REFIT_COMPLETED_TAG: "true" if refit_ok else "false"})
        return uploaded

    @staticmethod
    def _one_run(
        method: str, parent_run_id: str | RunRef | None, run_id: str | RunRef | None
    ) -> str | RunRef | None:
        """The sweep run ``parent_run_id`` and the seed's ``run_id`` both name, if any."""
        if parent_run_id and run_id and run_id_of(parent_run_id) != run_id_of(run_id):
            raise InvalidArgumentError(
                f"MLflowSweepTracker.{method}: run_id={run_id_of(run_id)!r} and "
                f"parent_run_id={run_id_of(parent_run_id)!r} both name the sweep run and "
                "differ: pass one of them"
            )
        return parent_run_id or run_id

    def _target(self, method: str, chosen: str | RunRef | None) -> RunRef:
        chosen = chosen or enclosing_run()
        if chosen is None:
            raise InvalidArgumentError(
                f"MLflowSweepTracker.{method} needs parent_run_id=<the sweep run id>, or a "
                "call inside `with tracker.start_sweep_run(...)`"
            )
        return self.run_ref(chosen)
