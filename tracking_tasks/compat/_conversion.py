"""The seed's conversion tracker, on the library's tasks."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from tracking_tasks.compat._stage import StageTracker
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._fluent import RunHandle
from tracking_tasks.tasks._artifacts import upload_artifacts
from tracking_tasks.tasks._runs import log_metrics, log_params
from tracking_tasks.trackers._core import lineage_tags


class MLflowConversionTracker(StageTracker):
    """The seed's conversion tracker: lineage to the source training run.

    Example:
        >>> MLflowConversionTracker("ner").stage
        'conversion'
    """

    default_stage = "conversion"

    def start_conversion_run(
        self,
        run_name: str,
        conversion_type: str,
        source_training_run: str | RunRef | None = None,
        context: Any = None,
        output_dir: str | os.PathLike[str] | None = None,
        parent_run_id: str | RunRef | None = None,
        group_id: str | None = None,
    ) -> contextlib.AbstractContextManager[RunHandle]:
        """Open a conversion run for the ``with`` block.

        Args:
            run_name: The run's name.
            conversion_type: The ``conversion_type`` param.
            source_training_run: The training run converted (``tracking_tasks.lineage.source``).
            context: Refused (the seed's NamingContext): ``run_name`` names the run.
            output_dir: Refused: nothing is inferred from folders.
            parent_run_id: Nest the run under this one (else the enclosing block's).
            group_id: The ``tracking_tasks.group_id`` tag.

        Returns:
            A context manager yielding the run's ``RunHandle``.

        Raises:
            InvalidArgumentError: a refused argument given.
        """
        self.refuse_start("start_conversion_run", context, output_dir)
        lineage = lineage_tags({"source": source_training_run})
        params = {"conversion_type": conversion_type}
        return self.start_run(
            run_name, params, tags=lineage, parent_run_id=parent_run_id, group_id=group_id
        )

    def log_conversion_parameters(
        self,
        checkpoint_path: str,
        conversion_target: str,
        quantization: str,
        opset_version: int,
        backbone: str,
    ) -> None:
        """Log the conversion's settings as params on the block's run, under the seed's names.

        Args:
            checkpoint_path: The ``conversion_source`` param.
            conversion_target: The ``conversion_target`` param.
            quantization: The ``quantization`` param.
            opset_version: The ``onnx_opset_version`` param.
            backbone: The ``conversion_backbone`` param.

        Raises:
            InvalidArgumentError: called outside a ``start_conversion_run`` block.
        """
        log_params(
            self.active("log_conversion_parameters"),
            {
                "conversion_source": checkpoint_path,
                "conversion_target": conversion_target,
                "quantization": quantization,
                "onnx_opset_version": opset_version,
                "conversion_backbone": backbone,
            },
        )

    def log_conversion_results(
        self,
        conversion_success: bool,
        onnx_model_path: str | os.PathLike[str] | None,
        original_checkpoint_size: float | None = None,
        smoke_test_passed: bool | None = None,
        conversion_log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        """Log the outcome on the block's run (the seed's metric names), upload model and log.

        Args:
            conversion_success: The ``conversion_success`` metric (1 or 0).
            onnx_model_path: The converted model, when the file exists (a failed
                conversion may write none): uploaded to ``onnx_model/``, its size the
                ``onnx_model_size_mb`` metric.
            original_checkpoint_size: The checkpoint's size in MB: the
                ``compression_ratio`` metric is it over the model's size.
            smoke_test_passed: The ``smoke_test_passed`` metric (1 or 0).
            conversion_log_path: The conversion's log, uploaded to ``logs/`` when the
                file exists.

        Raises:
            InvalidArgumentError: called outside a ``start_conversion_run`` block.
        """
        run = self.active("log_conversion_results")
        metrics = {"conversion_success": 1.0 if conversion_success else 0.0}
        model = Path(onnx_model_path) if onnx_model_path is not None else None
        if model is not None and model.is_file():
            size_mb = model.stat().st_size / (1024 * 1024)
            metrics["onnx_model_size_mb"] = size_mb
            if original_checkpoint_size and size_mb > 0:
                metrics["compression_ratio"] = original_checkpoint_size / size_mb
        if smoke_test_passed is not None:
            metrics["smoke_test_passed"] = 1.0 if smoke_test_passed else 0.0
        log_metrics(run, metrics)
        if model is not None and model.is_file():
            upload_artifacts(run, model, "onnx_model")
        if conversion_log_path is not None and Path(conversion_log_path).is_file():
            upload_artifacts(run, conversion_log_path, "logs")
