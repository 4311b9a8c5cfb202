"""The seed's training tracker, on the library's tasks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from tracking_tasks.compat._stage import StageTracker
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._fluent import RunHandle
from tracking_tasks.tasks._artifacts import upload_artifacts
from tracking_tasks.tasks._runs import log_metrics, log_params
from tracking_tasks.trackers._core import flatten_params, lineage_tags


class MLflowTrainingTracker(StageTracker):
    """The seed's training tracker: ``start_training_run`` and its logging methods.

    Example:
        >>> tracker = MLflowTrainingTracker("ner")
        >>> with tracker.start_training_run("final", backbone="distilbert") as run:
        ...     tracker.log_training_metrics({"macro-f1": 0.9})
        >>> run.run_name
        'final'
    """

    default_stage = "training"

    def start_training_run(
        self,
        run_name: str,
        backbone: str | None = None,
        training_type: str = "final",
        context: Any = None,
        output_dir: str | os.PathLike[str] | None = None,
        parent_run_id: str | RunRef | None = None,
        group_id: str | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        sweep_run_id: str | RunRef | None = None,
        trial_run_id: str | RunRef | None = None,
    ) -> contextlib.AbstractContextManager[RunHandle]:
        """Open a training run for the ``with`` block.

        What is logged as params is also the run's config (its ``config_hash``).

        Args:
            run_name: The run's name.
            backbone: The ``backbone`` param.
            training_type: ``final`` or ``continued``, the ``training_type`` param.
            context: Refused (the seed's NamingContext): ``run_name`` names the run.
            output_dir: Refused: nothing is inferred from folders; upload with
                ``log_training_artifacts``.
            parent_run_id: Nest the run under this one (else the enclosing block's).
            group_id: The ``tracking_tasks.group_id`` tag.
            config: More of the training config, as params (nested keys dotted).
            sweep_run_id: The sweep it came from, tagged ``tracking_tasks.lineage.sweep``.
            trial_run_id: The trial it came from, tagged ``tracking_tasks.lineage.trial``.

        Returns:
            A context manager yielding the run's ``RunHandle``.

        Raises:
            InvalidArgumentError: a refused argument given.
        """
        self.refuse_start("start_training_run", context, output_dir)
        params = {"backbone": backbone, "training_type": training_type, **(config or {})}
        lineage = lineage_tags({"sweep": sweep_run_id, "trial": trial_run_id})
        return self.start_run(
            run_name, params, tags=lineage, parent_run_id=parent_run_id, group_id=group_id
        )

    def log_training_parameters(
        self,
        config: Mapping[str, Any],
        data_config: Mapping[str, Any] | None = None,
        source_checkpoint: str | None = None,
        data_strategy: str | None = None,
        random_seed: int | None = None,
    ) -> None:
        """Log a training config as params on the block's run (every key, nested dotted).

        Unlike the seed, which picked a few known keys, the whole ``config`` is logged.

        Args:
            config: The training config: every key a param (nested keys dotted).
            data_config: The data config: params ``data.<key>``.
            source_checkpoint: The ``source_checkpoint`` param; with it the
                ``training_type`` param is ``continued``, else ``final``.
            data_strategy: The ``data_strategy`` param.
            random_seed: The ``random_seed`` param.

        Raises:
            InvalidArgumentError: called outside a ``start_training_run`` block.
        """
        params: dict[str, Any] = dict(flatten_params(config))
        if data_config:
            params.update(flatten_params(data_config, "data."))
        params["training_type"] = "continued" if source_checkpoint else "final"
        extra = {
            "source_checkpoint": source_checkpoint,
            "data_strategy": data_strategy,
            "random_seed": random_seed,
        }
        params.update({k: v for k, v in extra.items() if v is not None})
        log_params(self.active("log_training_parameters"), params)

    def log_training_metrics(
        self,
        metrics: Mapping[str, float],
        per_entity_metrics: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """Log final metrics, and per-entity ones, on the block's run in one batch.

        Args:
            metrics: Metric name to value.
            per_entity_metrics: Entity to its metrics, logged as ``<entity>_<metric>``.

        Raises:
            InvalidArgumentError: called outside a ``start_training_run`` block.
        """
        values = {name: float(value) for name, value in metrics.items()}
        for entity, entity_metrics in (per_entity_metrics or {}).items():
            values.update({f"{entity}_{name}": float(v) for name, v in entity_metrics.items()})
        log_metrics(self.active("log_training_metrics"), values)

    def log_training_artifacts(
        self,
        checkpoint_dir: str | os.PathLike[str],
        metrics_json_path: str | os.PathLike[str] | None = None,
    ) -> None:
        """Upload the checkpoint and the metrics file to the block's run (retried, verified).

        Args:
            checkpoint_dir: The checkpoint folder (or file), uploaded to ``checkpoint/``.
            metrics_json_path: A metrics file, uploaded to the run's root.

        Raises:
            InvalidArgumentError: called outside a ``start_training_run`` block.
            LocalArtifactPathError: a path that does not exist.
        """
        run = self.active("log_training_artifacts")
        upload_artifacts(run, checkpoint_dir, "checkpoint")
        if metrics_json_path is not None:
            upload_artifacts(run, metrics_json_path, None)
