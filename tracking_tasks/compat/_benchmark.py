"""The seed's benchmark tracker, on the library's tasks: lineage trial > refit > sweep."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tracking_tasks.compat._stage import StageTracker
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._fluent import RunHandle
from tracking_tasks.tasks._artifacts import upload_artifacts
from tracking_tasks.tasks._runs import log_metrics, log_params
from tracking_tasks.trackers._core import lineage_tags


class MLflowBenchmarkTracker(StageTracker):
    """The seed's benchmark tracker: lineage to the trial, refit and sweep runs.

    Example:
        >>> MLflowBenchmarkTracker("ner").stage
        'benchmark'
    """

    default_stage = "benchmark"

    def start_benchmark_run(
        self,
        run_name: str,
        backbone: str | None = None,
        benchmark_source: str = "final_training",
        context: Any = None,
        output_dir: str | os.PathLike[str] | None = None,
        parent_run_id: str | RunRef | None = None,
        group_id: str | None = None,
        study_key_hash: str | None = None,
        trial_key_hash: str | None = None,
        hpo_trial_run_id: str | RunRef | None = None,
        hpo_refit_run_id: str | RunRef | None = None,
        hpo_sweep_run_id: str | RunRef | None = None,
    ) -> contextlib.AbstractContextManager[RunHandle]:
        """Open a benchmark run for the ``with`` block, with its lineage.

        Lineage tags ``tracking_tasks.lineage.trial``/``.refit``/``.sweep`` name the runs
        given; ``tracking_tasks.lineage.model`` names the run whose model is benchmarked:
        the refit run, else the trial run, else the sweep run.

        Args:
            run_name: The run's name.
            backbone: The ``backbone`` param.
            benchmark_source: The ``benchmark_source`` param.
            context: Refused (the seed's NamingContext): ``run_name`` names the run.
            output_dir: Refused: nothing is inferred from folders.
            parent_run_id: Nest the run under this one (else the enclosing block's).
            group_id: The ``tracking_tasks.group_id`` tag.
            study_key_hash: Refused: the seed's hash keys are lineage by run id here.
            trial_key_hash: Refused, likewise.
            hpo_trial_run_id: The trial run (lineage).
            hpo_refit_run_id: The refit run (lineage).
            hpo_sweep_run_id: The sweep run (lineage).

        Returns:
            A context manager yielding the run's ``RunHandle``.

        Raises:
            InvalidArgumentError: a refused argument given.
        """
        keys = (
            "the seed's hash_utils keys linked a benchmark to its study and trial; here "
            "the lineage is by run id: pass hpo_sweep_run_id= / hpo_trial_run_id= (tagged "
            "tracking_tasks.lineage.*), and find runs by their config with "
            "find_run_by_config_hash"
        )
        self.refuse_start(
            "start_benchmark_run",
            context,
            output_dir,
            study_key_hash=(study_key_hash, keys),
            trial_key_hash=(trial_key_hash, keys),
        )
        model = hpo_refit_run_id or hpo_trial_run_id or hpo_sweep_run_id
        lineage = lineage_tags(
            {
                "trial": hpo_trial_run_id,
                "refit": hpo_refit_run_id,
                "sweep": hpo_sweep_run_id,
                "model": model,
            }
        )
        params = {"backbone": backbone, "benchmark_source": benchmark_source}
        return self.start_run(
            run_name, params, tags=lineage, parent_run_id=parent_run_id, group_id=group_id
        )

    def log_benchmark_results(
        self,
        batch_sizes: list[int],
        iterations: int,
        warmup_iterations: int,
        max_length: int,
        device: str | None,
        benchmark_json_path: str | os.PathLike[str] | None,
        benchmark_data: Mapping[str, Any],
    ) -> None:
        """Log the benchmark's settings as params and each batch size's numbers as metrics.

        On the block's run, under the seed's names.

        Args:
            batch_sizes: The ``benchmark_batch_sizes`` param; the batches read from
                ``benchmark_data``.
            iterations: The ``benchmark_iterations`` param.
            warmup_iterations: The ``benchmark_warmup_iterations`` param.
            max_length: The ``benchmark_max_length`` param.
            device: The ``benchmark_device`` param (None: ``auto``).
            benchmark_json_path: The benchmark's JSON file, uploaded to the run's root
                when it exists (the seed's rule: a benchmark may write none).
            benchmark_data: ``["batch_<n>"]["mean_ms"]`` becomes the metric
                ``latency_batch_<n>_ms``; every other number of a batch
                ``batch_<n>_<name>``.

        Raises:
            InvalidArgumentError: called outside a ``start_benchmark_run`` block.
        """
        run = self.active("log_benchmark_results")
        log_params(
            run,
            {
                "benchmark_batch_sizes": str(list(batch_sizes)),
                "benchmark_iterations": iterations,
                "benchmark_warmup_iterations": warmup_iterations,
                "benchmark_max_length": max_length,
                "benchmark_device": device or "auto",
            },
        )
        metrics: dict[str, float] = {}
        for size in batch_sizes:
            for name, value in dict(benchmark_data.get(f"batch_{size}") or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    key = (
                        f"latency_batch_{size}_ms" if name == "mean_ms" else f"batch_{size}_{name}"
                    )
                    metrics[key] = float(value)
        if metrics:
            log_metrics(run, metrics)
        if benchmark_json_path is not None and Path(benchmark_json_path).is_file():
            upload_artifacts(run, benchmark_json_path, None)
