"""Logged-model tasks: log one (retried on transient faults), link metrics, register, alias
and promote (the model finders are with the run finders)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from prefect.cache_policies import NO_CACHE

from tracking_tasks.handles import ModelRef, RunRef
from tracking_tasks.ops import _model_metrics as linked
from tracking_tasks.ops import _model_registry as registry
from tracking_tasks.ops import _models as plain
from tracking_tasks.ops import _promotion as promotion
from tracking_tasks.ops._model_files import Requirements
from tracking_tasks.tasks._artifacts import RETRY_OPTIONS
from tracking_tasks.tasks._runtime import current_run_info
from tracking_tasks.tasks._task import tracking_task


# Writes to MLflow (found again on a retry by its identity): never cached.
@tracking_task(name="log_model", cache_policy=NO_CACHE, **RETRY_OPTIONS)
def log_model(
    run: RunRef,
    model: Any,
    name: str,
    *,
    flavor: str | ModuleType | None = None,
    input_example: Any = None,
    signature: Any = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    model_type: str | None = None,
    metrics: Mapping[str, float] | None = None,
    step: int = 0,
    pip_requirements: Requirements = None,
    extra_pip_requirements: Sequence[str] | None = None,
    save_kwargs: Mapping[str, Any] | None = None,
    max_workers: int = 8,
    timeout_seconds: float | None = None,
) -> ModelRef:
    """Log a model into a run as an MLflow 3 logged model; return its ``ModelRef``.

    The task form of ``tracking_tasks.ops.log_model`` (see it for what is saved and in
    which order): the model is also tagged with the Prefect flow run, flow and task run
    that logged it, and the task is retried on transient faults only, like
    ``upload_artifacts`` (4 retries after 2, 4, 8 and 16 s). A retry, or a retried flow
    run, gets back the model it already made: READY as it is, or an interrupted one
    taken up and finished.

    Args:
        run: The run the model is logged into.
        model: A model object of any MLflow flavour, a pyfunc ``PythonModel`` (or its
            ``.py`` file), or the folder of an already saved MLflow model.
        name: The model's name.
        flavor: The MLflow flavour module or name; None tells it from the model.
        input_example: A few rows of input; the signature is inferred from it.
        signature: An ``mlflow.models.ModelSignature``, if not inferred.
        params: Params of the model (the run's params are added under them).
        tags: Tags of the model.
        model_type: A type to search models by.
        metrics: Metrics to link to the model.
        step: The run's step the model belongs to.
        pip_requirements: Requirements; None for the flavour's defaults, ``"infer"`` for
            MLflow's inference.
        extra_pip_requirements: Requirements added to the defaults.
        save_kwargs: More arguments for the flavour's ``save_model``.
        max_workers: Files sent at once.
        timeout_seconds: Per-request timeout of the upload.

    Returns:
        The model's ``ModelRef``.

    Raises:
        InvalidArgumentError: a bad name, flavour, path or argument (nothing written).
        LoggedModelError: the model could not be saved, created, finalised or found.
        TransientArtifactError: a transient fault outlasted the retries (model FAILED).
        ArtifactError: the upload failed or could not be verified (model FAILED).

    Example:
        >>> from prefect import flow
        >>> from tracking_tasks import create_mlflow_run, setup_mlflow
        >>> @flow
        ... def train():
        ...     from sklearn.linear_model import LogisticRegression
        ...     run = create_mlflow_run(setup_mlflow(experiment_name="digits"), "train")
        ...     clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
        ...     return log_model(run, clf, "digits-clf", input_example=[[0.5]],
        ...                      metrics={"train_accuracy": 1.0})
    """
    scope = current_run_info().tags()
    return plain.log_model(
        run,
        model,
        name,
        flavor=flavor,
        input_example=input_example,
        signature=signature,
        params=params,
        tags={**scope, **(tags or {})},
        model_type=model_type,
        metrics=metrics,
        step=step,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        save_kwargs=save_kwargs,
        max_workers=max_workers,
        timeout_seconds=timeout_seconds,
    )


# Writes to MLflow: each call logs its points, so none is cached.
log_model_metrics = tracking_task(name="log_model_metrics", cache_policy=NO_CACHE)(
    linked.log_model_metrics
)

# Creates a registry entry (found again on a retry by its source): never cached.
register_model = tracking_task(name="register_model", cache_policy=NO_CACHE)(
    registry.register_model
)
# Moves an alias: never cached.
set_model_alias = tracking_task(name="set_model_alias", cache_policy=NO_CACHE)(
    registry.set_model_alias
)
# Reads what an alias points at now: never cached.
get_model_version = tracking_task(name="get_model_version", cache_policy=NO_CACHE)(
    registry.get_model_version
)
# Compares with the alias's current version and may move it: never cached.
promote_model = tracking_task(name="promote_model", cache_policy=NO_CACHE)(promotion.promote_model)
