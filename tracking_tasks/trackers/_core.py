"""What every stage tracker shares: open the stage's run, log its config, run the stage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks.config._models import TrackingConfig
from tracking_tasks.errors import InvalidArgumentError, StageOutputError, TrackingConfigError
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.ops._fluent import RunHandle
from tracking_tasks.ops._logging import RunLogger
from tracking_tasks.tags import STAGE_TAG, lineage_tag, stage_run_name
from tracking_tasks.tasks._runs import create_mlflow_run, log_params
from tracking_tasks.tasks._setup import resolve_context


class StageOutput(BaseModel):
    """What a stage function may return: final metrics, files to keep, and any value.

    A stage function may also return a plain mapping of metric name to number, or None.

    Args:
        metrics: Final metrics, logged on the stage's run.
        checkpoint: A file or folder uploaded to the run as the stage's checkpoint.
        value: Anything else the stage hands back to the flow (a trained model...):
            not logged, returned as ``StageResult.value``.

    Example:
        >>> StageOutput(metrics={"f1": 0.91}, checkpoint=None).metrics
        {'f1': 0.91}
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    metrics: dict[str, float] = Field(default_factory=dict, description="Final metrics.")
    checkpoint: Path | None = Field(default=None, description="File or folder to upload.")
    value: Any = Field(default=None, description="Anything the stage hands back (a model).")


class StageResult(BaseModel):
    """What a stage tracker returns: the stage's run handle and what it recorded.

    Args:
        stage: The stage (sweep, training, benchmark, conversion).
        run: The stage's MLflow run.
        metrics: The final metrics logged on the run.
        checkpoint_path: Artifact path of the uploaded checkpoint, if any.
        value: What the stage function handed back in ``StageOutput.value``.

    Example:
        >>> r = StageResult(stage="training", run=RunRef(run_id="a", experiment_id="1",
        ...     run_name="training", tracking_uri="sqlite:///m.db"), metrics={"f1": 0.9})
        >>> r.metrics["f1"]
        0.9
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(description="The stage this result is of.")
    run: RunRef = Field(description="The stage's MLflow run.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Final metrics.")
    checkpoint_path: str | None = Field(default=None, description="Checkpoint artifact path.")
    value: Any = Field(default=None, description="What the stage function handed back.")


@dataclass
class StageContext:
    """What a stage function receives: its run, its config and a batched logger.

    Attributes:
        run: The stage's MLflow run handle.
        config: The stage config as a plain dict.
        log: A ``RunLogger`` on the run (per-step metrics, params, tags).
        lineage: Runs this stage came from, by role (``{"sweep": RunRef, ...}``).

    Example:
        >>> def train(stage: StageContext) -> dict[str, float]:
        ...     for step in range(3):
        ...         stage.log.log_metric("loss", 1.0 / (step + 1), step)
        ...     return {"loss": 0.33}
    """

    run: RunRef
    config: dict[str, Any]
    log: RunLogger
    lineage: dict[str, str] = field(default_factory=dict)


def config_dict(config: Any) -> dict[str, Any]:
    """A stage config (pydantic model, mapping or None) as a plain dict."""
    if config is None:
        return {}
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    if isinstance(config, Mapping):
        return dict(config)
    raise TrackingConfigError(
        f"a stage config must be a pydantic model or a mapping, not {type(config).__name__}"
    )


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted param names (``{"opt": {"lr": 1}} -> opt.lr``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def run_id_of(run: RunRef | str | None) -> str | None:
    """A run id from a handle, an id, or None."""
    return run.run_id if isinstance(run, RunRef) else run


def lineage_tags(lineage: Mapping[str, RunRef | str | None]) -> dict[str, str]:
    """Tags ``tracking_tasks.lineage.<role> = <run id>`` for the runs a stage came from."""
    tags = {}
    for role, run in lineage.items():
        run_id = run_id_of(run)
        if run_id:
            tags[lineage_tag(role)] = run_id
    return tags


def open_stage_run(
    stage: str,
    context: TrackingContext | TrackingConfig | None,
    config: dict[str, Any],
    run_name: str | None,
    *,
    parent_run_id: str | RunRef | None = None,
    tags: Mapping[str, str] | None = None,
    resume_run_id: str | None = None,
    idempotency_key: str | None = None,
    log_config: bool = True,
) -> RunHandle:
    """Open (or, on a retry, find again) the stage's run and log its config as params.

    ``resume_run_id``: a run an earlier flow run opened for this stage, reopened instead
    (its params are then the caller's to log: MLflow refuses to change one).
    """
    ctx = resolve_context(context)
    run = create_mlflow_run(
        ctx,
        run_name=stage_run_name(stage, run_name),
        config=config,
        tags={STAGE_TAG: stage, **(tags or {})},
        parent_run_id=parent_run_id,
        idempotency_key=idempotency_key or stage,
        resume_run_id=resume_run_id,
    )
    if config and log_config:
        log_params(run, flatten_params(config))
    return run


def check_travels(fn: Any, what: str) -> None:
    """Refuse a function the flow's task runner cannot send to its worker processes.

    A thread pool runs tasks in this process and takes any callable; another runner
    (prefect-dask's ``DaskTaskRunner``) pickles each task's arguments with cloudpickle.
    Checked once, before the stage writes anything, instead of failing per task.

    Raises:
        InvalidArgumentError: ``fn`` cannot be pickled, naming why and the fix.
    """
    from prefect.context import FlowRunContext
    from prefect.task_runners import ThreadPoolTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    if runner is None or isinstance(runner, ThreadPoolTaskRunner):
        return
    import cloudpickle

    try:
        cloudpickle.dumps(fn)
    except Exception as exc:
        name = getattr(fn, "__qualname__", type(fn).__name__)
        raise InvalidArgumentError(
            f"the {what} {name} cannot be pickled ({type(exc).__name__}: {exc}), and the "
            f"flow's {type(runner).__name__} sends it to other processes: define it at "
            "module level in a module the workers can import, and let it capture only "
            "picklable values (open locks, files and clients inside it)"
        ) from exc


def normalise_output(value: Any, stage: str) -> StageOutput:
    """Accept what a stage function returned: StageOutput, a metrics mapping, or None."""
    if value is None:
        return StageOutput()
    if isinstance(value, StageOutput):
        return value
    if isinstance(value, Mapping):
        return StageOutput(metrics={str(k): float(v) for k, v in value.items()})
    raise StageOutputError(
        f"the {stage} function returned {type(value).__name__}; return a StageOutput, a "
        "mapping of metric name to number, or None"
    )
