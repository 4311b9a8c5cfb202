"""track_conversion: a converted model, its size, its parity, and optional registration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks.config._models import TrackingConfig
from tracking_tasks.errors import StageOutputError
from tracking_tasks.handles import ModelRef, RunRef, TrackingContext
from tracking_tasks.ops._model_registry import ModelVersion
from tracking_tasks.tasks._artifacts import upload_artifacts
from tracking_tasks.tasks._hooks import mlflow_state_hooks
from tracking_tasks.tasks._model_registry import register_model_version
from tracking_tasks.tasks._models import register_model
from tracking_tasks.tasks._runs import log_metrics
from tracking_tasks.trackers._core import StageResult, config_dict, lineage_tags, open_stage_run
from tracking_tasks.trackers._training import run_stage_function


class ConversionOutput(BaseModel):
    """What a conversion function returns.

    Args:
        artifact: The converted model: a file or a folder.
        parity_max_abs_diff: Largest absolute difference between the source model's and
            the converted model's outputs on the same inputs.
        metrics: Extra metrics to log.
        model: The converted model logged as an MLflow model (``log_model``'s handle,
            logged into ``stage.run``): ``register_as`` then registers it, so MLflow can
            load and serve the registered version.

    Example:
        >>> from pathlib import Path
        >>> ConversionOutput(artifact=Path("model.json"), parity_max_abs_diff=1e-7).artifact
        PosixPath('model.json')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact: Path = Field(description="The converted model file or folder.")
    parity_max_abs_diff: float = Field(ge=0, description="Max |source - converted| output.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Extra metrics.")
    model: ModelRef | None = Field(
        default=None, description="The converted model as a logged MLflow model, if logged."
    )


class ConversionResult(StageResult):
    """``StageResult`` of a conversion, with the registered model version if any.

    Args:
        artifact_path: Where the converted model lives under the run's artifacts.
        model_name: The registered model name, when registered.
        model_version: The new model version, when registered.
        model: The converted model's ``ModelRef``, when the conversion logged one.
        registered: The registered ``ModelVersion``, when registered from that model
            (pass it to ``promote_model``).

    Example:
        >>> ConversionResult.model_fields["model_version"].default is None
        True
    """

    artifact_path: str = Field(description="Converted model's artifact path.")
    model_name: str | None = Field(default=None, description="Registered model name.")
    model_version: str | None = Field(default=None, description="Registered model version.")
    model: ModelRef | None = Field(default=None, description="The converted logged model.")
    registered: ModelVersion | None = Field(
        default=None, description="The registered version, when registered from the model."
    )


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@flow(name="track_conversion", **mlflow_state_hooks())
def track_conversion(
    convert_fn: Callable[[Any], ConversionOutput],
    config: Any = None,
    context: TrackingContext | TrackingConfig | None = None,
    *,
    source_run: RunRef | str | None = None,
    run_name: str = "conversion",
    artifact_path: str = "converted",
    register_as: str | None = None,
) -> ConversionResult:
    """Track a model conversion as a subflow, optionally registering the result.

    ``convert_fn(stage)`` converts the model and returns a ``ConversionOutput``; the
    converted file or folder is uploaded with the artifact retries, its size logged as
    ``converted_size_bytes`` and the parity as ``parity_max_abs_diff``; lineage tags
    point at the source model's run. With ``register_as`` the converted model becomes a
    new version of that registered model: the logged model of ``output.model`` when the
    function logged one (``log_model(stage.run, ...)``: a version MLflow can load and
    serve), else the uploaded folder (``runs:/<run>/<artifact_path>``).

    Args:
        convert_fn: The conversion function; gets a ``StageContext``.
        config: Conversion params (pydantic model or mapping), logged as params.
        context: Where to track: a ``TrackingContext`` or ``TrackingConfig``.
        source_run: The run of the model converted (tagged as lineage).
        run_name: The MLflow run name.
        artifact_path: Where the converted model goes under the run's artifacts.
        register_as: Registered model name; None skips registration.

    Returns:
        A frozen ``ConversionResult``.

    Raises:
        StageOutputError: ``convert_fn`` did not return a ``ConversionOutput``.
        Exception: whatever ``convert_fn`` raised (run FAILED, subflow Failed).

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def pipeline(convert):
        ...     return track_conversion(convert, {"format": "json"}, register_as="digits")
    """
    cfg = config_dict(config)
    lineage = lineage_tags({"source": source_run})
    run = open_stage_run("conversion", context, cfg, run_name, tags=lineage)
    output: Any = run_stage_function("conversion", convert_fn, run, cfg, lineage)
    if not isinstance(output, ConversionOutput):
        raise StageOutputError(
            f"the conversion function returned {type(output).__name__}; return a "
            "ConversionOutput(artifact=..., parity_max_abs_diff=...)"
        )
    upload_artifacts(run, output.artifact, artifact_path)
    metrics = {
        "converted_size_bytes": float(_size(output.artifact)),
        "parity_max_abs_diff": output.parity_max_abs_diff,
        **output.metrics,
    }
    log_metrics(run, metrics)
    registered = None
    if register_as and output.model is not None:
        registered = register_model(output.model, register_as)
        version: str | None = registered.version
    else:
        version = register_model_version(run, artifact_path, register_as) if register_as else None
    return ConversionResult(
        stage="conversion",
        run=run,
        metrics=metrics,
        artifact_path=artifact_path,
        model_name=register_as,
        model_version=version,
        model=output.model,
        registered=registered,
    )
