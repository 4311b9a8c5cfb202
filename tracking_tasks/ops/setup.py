"""setup_mlflow, plain: resolve where to track and make sure the experiment exists."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tracking_tasks.config.models import AzureMLWorkspace, TrackingConfig
from tracking_tasks.config.resolve import CredentialsLocation, resolve_tracking_config
from tracking_tasks.handles import TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops.environment import (
    apply_credentials,
    neutralise_injected_env,
    point_fluent_api,
)
from tracking_tasks.ops.experiments import ensure_experiment
from tracking_tasks.urls import redact_uri

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = ["setup_mlflow"]

log = logging.getLogger(__name__)


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
    credentials: CredentialsLocation | None = None,
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
    restored if deleted. It also points this process's fluent ``mlflow.*`` API at the
    same URI and experiment, and removes injected ``MLFLOW_RUN_ID`` /
    ``MLFLOW_EXPERIMENT_*`` / ``MLFLOW_TRACKING_URI`` values that contradict it (logged by
    name, never by value): see ``tracking_tasks.ops.environment``.

    A ``credentials`` block's secrets are set as MLflow's own environment variables for
    this process (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or
    ``MLFLOW_TRACKING_TOKEN``): every MLflow request of the process carries them from then
    on. The returned context holds no secret and no live client.

    The Prefect task ``tracking_tasks.setup_mlflow`` wraps this function and caches its
    result per flow run.

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
        >>> import tempfile
        >>> ctx = setup_mlflow(experiment_name="ner",  # doctest: +SKIP
        ...                    tracking_uri=f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    """
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
        log.info(
            "Azure ML workspace %s tracks to %s",
            resolved.azure_workspace.workspace_id,
            redact_uri(uri),
        )
    assert location.tracking_uri is not None and location.experiment_name is not None
    if credentials is not None:
        apply_credentials(credentials, location.tracking_uri)
    experiment_id = ensure_experiment(
        location.tracking_uri,
        location.experiment_name,
        registry_uri=location.registry_uri,
        artifact_location=location.artifact_location,
    )
    context = TrackingContext(
        tracking_uri=location.tracking_uri,
        registry_uri=location.registry_uri,
        experiment_id=experiment_id,
        experiment_name=location.experiment_name,
        config_hash=digest,
        default_tags=location.tags,
    )
    neutralise_injected_env(context)
    point_fluent_api(context)
    log.info(
        "MLflow experiment %r (id %s) on %s",
        context.experiment_name,
        context.experiment_id,
        redact_uri(context.tracking_uri),
    )
    return context
