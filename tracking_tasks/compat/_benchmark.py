"""The seed's benchmark tracker, on the library's tasks: lineage trial > refit > sweep."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tracking_tasks.compat._stage import StageTracker, note_ignored
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
            backbone: Logged as the ``backbone`` param.
            benchmark_source: Logged as the ``benchmark_source`` param.
            context: Ignored (the seed's NamingContext).
            output_dir: Ignored.
            parent_run_id: Nest the run under this one (else the enclosing block's).
            group_id: Ignored.
            study_key_hash: Ignored: runs are grouped by their ``config_hash`` here.
            trial_key_hash: Ignored, likewise.
            hpo_trial_run_id: The trial run (lineage).
            hpo_refit_run_id: The refit run (lineage).
            hpo_sweep_run_id: The sweep run (lineage).

        Returns:
            A context manager yielding the run's ``RunHandle``.
        """
        note_ignored(
            "start_benchmark_run",
            context=context,
            output_dir=output_dir,
            group_id=group_id,
            study_key_hash=study_key_hash,
            trial_key_hash=trial_key_hash,
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
        return self.start_run(run_name, params, tags=lineage, parent_run_id=parent_run_id)

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

        ``benchmark_data["batch_<n>"]["mean_ms"]`` becomes ``latency_batch_<n>_ms`` (the
        seed's name); every other number of a batch ``batch_<n>_<name>``. The JSON file
        is uploaded to the run's root.
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
