"""The setup_mlflow task: resolve where to track and make sure the experiment exists."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from pydantic import ValidationError

from tracking_tasks._logging import logger
from tracking_tasks.blocks import MlflowCredentials
from tracking_tasks.clients import error_code, get_client
from tracking_tasks.config import AzureMLWorkspace, TrackingConfig
from tracking_tasks.exceptions import ExperimentSetupError, TrackingConfigError
from tracking_tasks.handles import TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.lifecycle import remember_location
from tracking_tasks.urls import DEFAULT_TRACKING_URI, absolute_local_uri, redact_uri

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = ["resolve_tracking_config", "setup_mlflow"]

DEFAULT_EXPERIMENT_NAME = "Default"


def resolve_tracking_config(
    config: TrackingConfig | None = None,
    *,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    artifact_location: str | None = None,
    azure_workspace: AzureMLWorkspace | None = None,
    ml_client: Any = None,
    credentials: MlflowCredentials | None = None,
) -> TrackingConfig:
    """Fill every field: explicit argument > ``config`` > credentials > environment > default.

    Where to track is one setting: a tracking URI or an Azure ML workspace, taken from the
    first of these that gives one: the ``tracking_uri`` / ``azure_workspace`` /
    ``ml_client`` arguments, ``config``, the ``credentials`` block, ``$MLFLOW_TRACKING_URI``,
    the embedded default. The embedded default is a SQLite store ``mlflow.db`` in the
    working directory (made absolute, so tasks in other processes reach the same file)
    and the ``Default`` experiment. Nothing is read from Azure here: a workspace stays a
    workspace, and ``setup_mlflow`` asks Azure for its tracking URI.

    Args:
        config: A ``TrackingConfig``, or None.
        experiment_name: Overrides the config's experiment name.
        tracking_uri: Overrides the config's tracking URI.
        registry_uri: Overrides the config's registry URI.
        artifact_location: Overrides the config's artifact location.
        azure_workspace: Overrides the config's location with an Azure ML workspace.
        ml_client: An ``azure.ai.ml.MLClient``: its workspace, like ``azure_workspace``.
        credentials: An ``MlflowCredentials`` block: its tracking URI or workspace is used
            when neither the arguments nor the config name one; when it names a tracking
            URI, no other may be resolved (credentials never go to another server).

    Returns:
        A ``TrackingConfig`` with the experiment name and either the tracking URI or the
        Azure workspace set.

    Raises:
        TrackingConfigError: a value is invalid, two sources conflict, or the credentials
            are for another server; the message names the field, where the value came
            from, and the fix.

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
    if credentials is not None and not isinstance(credentials, MlflowCredentials):
        raise TrackingConfigError(
            f"credentials must be an MlflowCredentials block, not {type(credentials).__name__}"
        )
    workspace = _argument_workspace(azure_workspace, ml_client)
    if workspace is not None and tracking_uri is not None:
        raise TrackingConfigError(
            "give either tracking_uri or an Azure workspace (azure_workspace / ml_client), "
            "not both: the workspace's tracking URI is resolved from Azure"
        )
    if workspace is None and tracking_uri is None and base.tracking_uri is None:
        workspace = base.azure_workspace
        if workspace is None and credentials is not None and credentials.tracking_uri is None:
            workspace = credentials.azure_workspace
    if workspace is not None:
        resolved_ws = _resolve_fields(
            base.model_copy(update={"tracking_uri": None, "azure_workspace": None}),
            experiment_name=experiment_name,
            tracking_uri="azureml://placeholder",  # checked by TrackingConfig, replaced below
            registry_uri=registry_uri,
            artifact_location=artifact_location,
        )
        if credentials is not None and credentials.tracking_uri is not None:
            raise TrackingConfigError(
                f"the credentials are for {redact_uri(credentials.tracking_uri)} but the "
                f"tracking location is Azure ML workspace {workspace.workspace_id}: MLflow "
                "credentials are never sent to another server"
            )
        return resolved_ws.model_copy(update={"tracking_uri": None, "azure_workspace": workspace})
    if tracking_uri is None and base.tracking_uri is None and credentials is not None:
        tracking_uri = credentials.tracking_uri
    resolved = _resolve_fields(
        base,
        experiment_name=experiment_name,
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        artifact_location=artifact_location,
    )
    if credentials is not None and credentials.tracking_uri is not None:
        assert resolved.tracking_uri is not None
        wanted = absolute_local_uri(credentials.tracking_uri).rstrip("/")
        if resolved.tracking_uri.rstrip("/") != wanted:
            raise TrackingConfigError(
                f"the credentials are for {redact_uri(credentials.tracking_uri)} but the "
                f"tracking URI resolved to {redact_uri(resolved.tracking_uri)}: MLflow "
                "credentials are never sent to another server. Drop the other tracking URI "
                "or use credentials for it"
            )
    return resolved


def _argument_workspace(
    azure_workspace: AzureMLWorkspace | None, ml_client: Any
) -> AzureMLWorkspace | None:
    """The workspace named by the arguments (the ``MLClient``'s own, if one is given)."""
    if azure_workspace is not None and not isinstance(azure_workspace, AzureMLWorkspace):
        raise TrackingConfigError(
            f"azure_workspace must be an AzureMLWorkspace, not {type(azure_workspace).__name__}"
        )
    if ml_client is None:
        return azure_workspace
    from tracking_tasks.azure_ml import workspace_of

    bound = workspace_of(ml_client)
    if azure_workspace is not None and azure_workspace != bound:
        raise TrackingConfigError(
            f"ml_client is bound to {bound.workspace_id} but azure_workspace is "
            f"{azure_workspace.workspace_id}: pass one of them"
        )
    return bound


def _resolve_fields(
    base: TrackingConfig,
    *,
    experiment_name: str | None,
    tracking_uri: str | None,
    registry_uri: str | None,
    artifact_location: str | None,
) -> TrackingConfig:
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


#: Variables an environment (an Azure ML job, a CI runner) may inject that would steer
#: MLflow's fluent API away from what setup_mlflow resolved.
INJECTED_RUN_VARS = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


def _neutralise_injected_env(context: TrackingContext) -> list[str]:
    """Remove injected ``MLFLOW_*`` variables that would hijack the context's runs.

    ``MLFLOW_RUN_ID`` (set by Azure ML jobs) makes ``mlflow.start_run()`` resume a run
    this library did not open; ``MLFLOW_EXPERIMENT_ID`` / ``MLFLOW_EXPERIMENT_NAME`` and
    ``MLFLOW_TRACKING_URI`` that name another experiment or server send fluent calls
    elsewhere. They are removed from this process's ``os.environ`` with a log line that
    names the variable, never its value. Values that agree with the context stay.

    Args:
        context: The resolved tracking context.

    Returns:
        The names of the variables removed.
    """
    removed = []
    for name in (*INJECTED_RUN_VARS, "MLFLOW_TRACKING_URI"):
        value = os.environ.get(name, "").strip()
        if value and _contradicts(name, value, context):
            del os.environ[name]
            removed.append(name)
            logger().warning(
                "Removed %s from this process's environment: it pointed MLflow at another %s "
                "than setup_mlflow resolved (experiment %r on %s)",
                name,
                "run" if name == "MLFLOW_RUN_ID" else name.removeprefix("MLFLOW_").lower(),
                context.experiment_name,
                redact_uri(context.tracking_uri),
            )
    return removed


def _contradicts(name: str, value: str, context: TrackingContext) -> bool:
    if name == "MLFLOW_EXPERIMENT_ID":
        return value != context.experiment_id
    if name == "MLFLOW_EXPERIMENT_NAME":
        return value != context.experiment_name
    if name == "MLFLOW_TRACKING_URI":
        return absolute_local_uri(value).rstrip("/") != context.tracking_uri.rstrip("/")
    return True  # MLFLOW_RUN_ID: a run this library did not open


def _apply_credentials(credentials: MlflowCredentials, tracking_uri: str) -> list[str]:
    """Hand the block's secrets to MLflow through its environment variables.

    MLflow reads ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or
    ``MLFLOW_TRACKING_TOKEN`` from ``os.environ`` on every request, so they are set for
    this whole process (every MLflow HTTP request it makes from now on carries them);
    variables of the other kind are removed so they cannot mix.

    Args:
        credentials: The block.
        tracking_uri: The resolved tracking URI (for the log line only).

    Returns:
        The names of the variables set.
    """
    names = []
    for name, value in credentials.mlflow_environment().items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
            names.append(name)
    if names:
        logger().info(
            "MLflow credentials for %s set for this process from the MlflowCredentials block (%s)",
            redact_uri(tracking_uri),
            ", ".join(names),
        )
    return names


def _setup(
    config: TrackingConfig | None = None,
    *,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    artifact_location: str | None = None,
    azure_workspace: AzureMLWorkspace | None = None,
    ml_client: Any = None,
    azure_credential: TokenCredential | None = None,
    credentials: MlflowCredentials | None = None,
) -> TrackingContext:
    resolved = resolve_tracking_config(
        config,
        experiment_name=experiment_name,
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        artifact_location=artifact_location,
        azure_workspace=azure_workspace,
        ml_client=ml_client,
        credentials=credentials,
    )
    digest = config_hash(resolved)
    location = resolved
    if resolved.azure_workspace is not None:
        from tracking_tasks.azure_ml import get_azure_tracking_uri

        uri = get_azure_tracking_uri(
            resolved.azure_workspace, ml_client=ml_client, credential=azure_credential
        )
        location = resolved.model_copy(update={"tracking_uri": uri})
        logger().info(
            "Azure ML workspace %s tracks to %s",
            resolved.azure_workspace.workspace_id,
            redact_uri(uri),
        )
    assert location.tracking_uri is not None and location.experiment_name is not None
    if credentials is not None:
        _apply_credentials(credentials, location.tracking_uri)
    experiment_id = _ensure_experiment(location)
    context = TrackingContext(
        tracking_uri=location.tracking_uri,
        registry_uri=location.registry_uri,
        experiment_id=experiment_id,
        experiment_name=location.experiment_name,
        config_hash=digest,
        default_tags=location.tags,
    )
    _neutralise_injected_env(context)
    return context


def _cache_key_source(inputs: dict[str, Any]) -> dict[str, Any]:
    """What identifies a setup: the resolved config and non-secret credential identity.

    No network call (a workspace stays a workspace) and no live object (an ``MLClient``
    counts as its subscription, resource group and workspace).
    """
    credentials = inputs.get("credentials")
    resolved = resolve_tracking_config(
        inputs.get("config"),
        experiment_name=inputs.get("experiment_name"),
        tracking_uri=inputs.get("tracking_uri"),
        registry_uri=inputs.get("registry_uri"),
        artifact_location=inputs.get("artifact_location"),
        azure_workspace=inputs.get("azure_workspace"),
        ml_client=inputs.get("ml_client"),
        credentials=credentials,
    )
    return {
        "config": config_hash(resolved),
        "credentials": (
            credentials.cache_identity() if isinstance(credentials, MlflowCredentials) else None
        ),
    }


@dataclass
class SetupCachePolicy(CachePolicy):
    """Cache ``setup_mlflow`` per flow run, keyed by the hash of the resolved config.

    Resolution reads the environment, so the key is computed from what the task would
    resolve, not from its raw inputs. An Azure workspace counts by its identifiers (an
    ``MLClient`` is neither hashed nor persisted), a credentials block by its non-secret
    identity. Outside a flow run nothing is cached.
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
            source = _cache_key_source(inputs)
        except TrackingConfigError:
            return None  # no key: the task body runs and raises the clear error
        return f"tracking-tasks-setup-{flow_run_id}-{config_hash(source)}"


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
    azure_workspace: AzureMLWorkspace | None = None,
    ml_client: Any = None,
    azure_credential: TokenCredential | None = None,
    credentials: MlflowCredentials | None = None,
) -> TrackingContext:
    """Resolve where to track, make sure the experiment exists, return a ``TrackingContext``.

    Resolution order for each field: explicit argument > ``config`` > ``credentials``
    block > environment (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
    ``MLFLOW_EXPERIMENT_NAME``) > embedded default (``sqlite:///mlflow.db`` in the
    working directory, experiment ``Default``). Where to track is either a tracking URI
    or an Azure ML workspace (``azure_workspace``, ``ml_client``, ``config.azure_workspace``
    or the block's), whose MLflow tracking URI is asked from Azure
    (``ml_client.workspaces.get(name).mlflow_tracking_uri``; needs
    ``pip install 'tracking-tasks[azure]'``). The experiment is created if missing and
    restored if deleted. The result is cached per flow run by the hash of the resolved
    config. It also points this process's fluent ``mlflow.*`` API at the same URI and
    experiment, and removes injected ``MLFLOW_RUN_ID`` / ``MLFLOW_EXPERIMENT_*`` /
    ``MLFLOW_TRACKING_URI`` values that contradict it (logged by name, never by value).

    A ``credentials`` block's secrets are set as MLflow's own environment variables for
    this process (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or
    ``MLFLOW_TRACKING_TOKEN``): every MLflow request of the process carries them from then
    on. The returned context holds no secret and no live client.

    Args:
        config: A ``TrackingConfig``; None means environment and defaults.
        experiment_name: Experiment name (wins over ``config``).
        tracking_uri: Tracking URI (wins over ``config``).
        registry_uri: Registry URI (wins over ``config``).
        artifact_location: Artifact root used if the experiment is created.
        azure_workspace: An Azure ML workspace to track into (wins over ``config``).
        ml_client: A ready ``azure.ai.ml.MLClient``; its workspace is tracked into and
            the client reads the tracking URI. Never cached nor persisted.
        azure_credential: Azure ``TokenCredential`` for ``azure_workspace`` when no
            ``ml_client`` is given; ``DefaultAzureCredential()`` when None.
        credentials: An ``MlflowCredentials`` block for the tracking server.

    Returns:
        A frozen ``TrackingContext`` to pass to ``create_mlflow_run``.

    Raises:
        TrackingConfigError: invalid settings, e.g. a ``file:`` URI while
            ``MLFLOW_ALLOW_FILE_STORE`` is not true, a password inside the URI, or
            credentials for another server.
        MissingExtraError: an Azure workspace without the azure extra installed.
        AzureAuthenticationError: Azure refused the credential (no token shown).
        AzureWorkspaceError: the workspace cannot be read.
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
        azure_workspace=azure_workspace,
        ml_client=ml_client,
        azure_credential=azure_credential,
        credentials=credentials,
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
