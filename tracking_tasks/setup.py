"""The setup_mlflow task: resolve where to track and make sure the experiment exists."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from pydantic import ValidationError

from tracking_tasks.clients import error_code, get_client
from tracking_tasks.config import TrackingConfig
from tracking_tasks.exceptions import ExperimentSetupError, TrackingConfigError
from tracking_tasks.handles import TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.lifecycle import remember_location
from tracking_tasks.urls import DEFAULT_TRACKING_URI, absolute_local_uri, redact_uri

__all__ = ["resolve_tracking_config", "setup_mlflow"]

DEFAULT_EXPERIMENT_NAME = "Default"


def resolve_tracking_config(
    config: TrackingConfig | None = None,
    *,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    artifact_location: str | None = None,
) -> TrackingConfig:
    """Fill every field: explicit argument > ``config`` > environment > embedded default.

    The embedded default is a SQLite store ``mlflow.db`` in the working directory (made
    absolute, so tasks in other processes reach the same file) and the ``Default``
    experiment.

    Args:
        config: A ``TrackingConfig``, or None.
        experiment_name: Overrides the config's experiment name.
        tracking_uri: Overrides the config's tracking URI.
        registry_uri: Overrides the config's registry URI.
        artifact_location: Overrides the config's artifact location.

    Returns:
        A ``TrackingConfig`` with tracking URI and experiment name set.

    Raises:
        TrackingConfigError: a value is invalid; the message names the field, where the
            value came from, and the fix.

    Example:
        >>> cfg = resolve_tracking_config(tracking_uri="http://127.0.0.1:5000",
        ...                               experiment_name="ner")
        >>> cfg.tracking_uri, cfg.experiment_name
        ('http://127.0.0.1:5000', 'ner')
    """
    base = config if config is not None else TrackingConfig()
    if not isinstance(base, TrackingConfig):
        raise TrackingConfigError(
            f"config must be a TrackingConfig, not {type(base).__name__}: "
            "write TrackingConfig(**your_mapping)"
        )
    explicit = {
        "experiment_name": experiment_name,
        "tracking_uri": tracking_uri,
        "registry_uri": registry_uri,
        "artifact_location": artifact_location,
    }
    env = {
        "experiment_name": "MLFLOW_EXPERIMENT_NAME",
        "tracking_uri": "MLFLOW_TRACKING_URI",
        "registry_uri": "MLFLOW_REGISTRY_URI",
    }
    defaults = {"experiment_name": DEFAULT_EXPERIMENT_NAME, "tracking_uri": DEFAULT_TRACKING_URI}
    values: dict[str, Any] = {"tags": base.tags}
    sources: dict[str, str] = {}
    for field, value in explicit.items():
        if value is not None:
            values[field], sources[field] = value, f"the {field} argument"
        elif getattr(base, field) is not None:
            values[field], sources[field] = getattr(base, field), f"config.{field}"
        elif field in env and os.environ.get(env[field], "").strip():
            values[field], sources[field] = os.environ[env[field]], f"${env[field]}"
        elif field in defaults:
            values[field], sources[field] = defaults[field], "the embedded default"
    try:
        resolved = TrackingConfig(**values)
    except ValidationError as exc:
        where = ", ".join(
            f"{err['loc'][0]} (from {sources.get(str(err['loc'][0]), 'config')})"
            for err in exc.errors()
            if err["loc"]
        )
        raise TrackingConfigError(f"invalid tracking settings in {where}: {exc}") from exc
    assert resolved.tracking_uri is not None
    return resolved.model_copy(update={"tracking_uri": absolute_local_uri(resolved.tracking_uri)})


def _ensure_experiment(config: TrackingConfig) -> str:
    """Return the experiment id, creating the experiment if missing, restoring it if deleted."""
    from mlflow.exceptions import MlflowException

    assert config.tracking_uri is not None and config.experiment_name is not None
    client = get_client(config.tracking_uri, config.registry_uri)
    name = config.experiment_name
    where = redact_uri(config.tracking_uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return str(
                    client.create_experiment(name, artifact_location=config.artifact_location)
                )
            except MlflowException as exc:
                if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)  # created concurrently
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    except MlflowException as exc:
        raise ExperimentSetupError(
            f"could not find, create or restore experiment {name!r} on {where}: {exc.message}"
        ) from exc
    except OSError as exc:
        raise ExperimentSetupError(
            f"could not reach the MLflow tracking store {where} to set up experiment {name!r}: "
            f"{exc}. Check that the server is running and the URI is right."
        ) from exc


def point_fluent_api(context: TrackingContext) -> None:
    """Point this process's fluent ``mlflow.*`` API at the context's URI and experiment.

    User code that calls ``mlflow.log_metric`` inside its own ``mlflow.start_run()``
    then lands in the same place; the library itself never relies on it.
    """
    import mlflow
    from mlflow.tracking import fluent

    mlflow.set_tracking_uri(context.tracking_uri)
    if context.registry_uri:
        mlflow.set_registry_uri(context.registry_uri)
    if hasattr(fluent, "_active_experiment_id"):
        # What mlflow.set_experiment(experiment_id=...) does, without its request to fetch
        # an experiment that _ensure_experiment has just found or created.
        fluent._active_experiment_id = context.experiment_id  # type: ignore[assignment]
        os.environ["MLFLOW_EXPERIMENT_ID"] = context.experiment_id
    else:  # a future MLflow without that global: take the public, slower path
        mlflow.set_experiment(experiment_id=context.experiment_id)


def _setup(
    config: TrackingConfig | None = None,
    *,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    artifact_location: str | None = None,
) -> TrackingContext:
    resolved = resolve_tracking_config(
        config,
        experiment_name=experiment_name,
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        artifact_location=artifact_location,
    )
    experiment_id = _ensure_experiment(resolved)
    assert resolved.tracking_uri is not None and resolved.experiment_name is not None
    return TrackingContext(
        tracking_uri=resolved.tracking_uri,
        registry_uri=resolved.registry_uri,
        experiment_id=experiment_id,
        experiment_name=resolved.experiment_name,
        config_hash=config_hash(resolved),
        default_tags=resolved.tags,
    )


@dataclass
class SetupCachePolicy(CachePolicy):
    """Cache ``setup_mlflow`` per flow run, keyed by the hash of the resolved config.

    Resolution reads the environment, so the key is computed from what the task would
    resolve, not from its raw inputs. Outside a flow run nothing is cached.
    """

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        flow_run_id = task_ctx.task_run.flow_run_id
        if flow_run_id is None:
            return None
        try:
            resolved = resolve_tracking_config(
                inputs.get("config"),
                experiment_name=inputs.get("experiment_name"),
                tracking_uri=inputs.get("tracking_uri"),
                registry_uri=inputs.get("registry_uri"),
                artifact_location=inputs.get("artifact_location"),
            )
        except TrackingConfigError:
            return None  # no key: the task body runs and raises the clear error
        return f"tracking-tasks-setup-{flow_run_id}-{config_hash(resolved)}"


def _point_fluent_on_completion(tsk: Any, task_run: Any, state: Any) -> None:
    # A cache hit skips the body, so the process is pointed here instead; a fresh
    # completion already did it in the body (which also serves plain ``.fn`` calls).
    if state.name != "Cached":
        return
    context = state.result(raise_on_failure=False)
    if isinstance(context, TrackingContext):
        point_fluent_api(context)
        remember_location(str(task_run.flow_run_id) if task_run.flow_run_id else None, context)


@task(
    name="setup_mlflow",
    cache_policy=SetupCachePolicy(),
    on_completion=[_point_fluent_on_completion],
)
def setup_mlflow(
    config: TrackingConfig | None = None,
    *,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    artifact_location: str | None = None,
) -> TrackingContext:
    """Resolve where to track, make sure the experiment exists, return a ``TrackingContext``.

    Resolution order for each field: explicit argument > ``config`` > environment
    (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``, ``MLFLOW_EXPERIMENT_NAME``) >
    embedded default (``sqlite:///mlflow.db`` in the working directory, experiment
    ``Default``). The experiment is created if missing and restored if deleted. The
    result is cached per flow run by the hash of the resolved config. It also points
    this process's fluent ``mlflow.*`` API at the same URI and experiment.

    Args:
        config: A ``TrackingConfig``; None means environment and defaults.
        experiment_name: Experiment name (wins over ``config``).
        tracking_uri: Tracking URI (wins over ``config``).
        registry_uri: Registry URI (wins over ``config``).
        artifact_location: Artifact root used if the experiment is created.

    Returns:
        A frozen ``TrackingContext`` to pass to ``create_mlflow_run``.

    Raises:
        TrackingConfigError: invalid settings, e.g. a ``file:`` URI while
            ``MLFLOW_ALLOW_FILE_STORE`` is not true, or a password inside the URI.
        ExperimentSetupError: the store is unreachable or refuses the experiment.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def pipeline():
        ...     ctx = setup_mlflow(experiment_name="ner", tracking_uri="sqlite:///mlflow.db")
        ...     return ctx.experiment_id
    """
    context = _setup(
        config,
        experiment_name=experiment_name,
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        artifact_location=artifact_location,
    )
    point_fluent_api(context)
    task_ctx = TaskRunContext.get()
    flow_run_id = task_ctx.task_run.flow_run_id if task_ctx else None
    remember_location(str(flow_run_id) if flow_run_id else None, context)
    if task_ctx is not None:
        get_run_logger().info(
            "MLflow experiment %r (id %s) on %s",
            context.experiment_name,
            context.experiment_id,
            redact_uri(context.tracking_uri),
        )
    return context
