"""setup_mlflow, plain: resolve where to track and make sure the experiment exists."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from tracking_tasks._environment import point_fluent_api, warn_injected_run
from tracking_tasks._private_apis import ml_client_credential
from tracking_tasks.auth._apply import apply_credentials, use_workspace_credential
from tracking_tasks.auth._scope import Origin, authorization_for
from tracking_tasks.auth._tokens import TokenProvider, TokenSource, as_token_credential
from tracking_tasks.config._models import AzureMLWorkspace, TrackingConfig
from tracking_tasks.config._resolve import CredentialsLocation, resolve_tracking_config
from tracking_tasks.errors import ExperimentSetupError, TrackingTasksError, mlflow_errors
from tracking_tasks.handles import TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops._experiments import ensure_experiment
from tracking_tasks.urls import base_scheme, is_http_uri, redact_uri

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)

#: Seconds the first contact with a server may take to connect, then to answer: a
#: refused connection, an unknown host or a refused certificate fails within them.
PROBE_CONNECT_TIMEOUT = 5.0
PROBE_READ_TIMEOUT = 8.0

_answered_lock = threading.Lock()
_answered: set[Origin] = set()


def check_reachable(
    tracking_uri: str,
    action: str | None = None,
    *,
    error: type[TrackingTasksError] = ExperimentSetupError,
    again: bool = False,
) -> bool:
    """Fail fast when an HTTP(S) tracking server cannot be reached at all.

    The one first-contact probe of every entry point: ``setup_mlflow``, the finders (and
    the command line through them), ``get_run_summary`` and reconcile.

    The first time this process sets up a server, one ``HEAD`` request goes to the
    tracking URI, sent once (no retries), with MLflow's own TLS and proxy settings
    (``MLFLOW_TRACKING_SERVER_CERT_PATH``, ``MLFLOW_TRACKING_INSECURE_TLS``,
    ``MLFLOW_TRACKING_CLIENT_CERT_PATH``, ``REQUESTS_CA_BUNDLE``, ``HTTPS_PROXY``...).
    Connection refused, an unknown host, a connect timeout or a TLS failure raise at once,
    instead of after MLflow's retries and backoff (about four minutes by default). Any
    HTTP answer, even 401 or 404, means the server is there; a server that answered once
    is not probed again, so a later blip gets MLflow's bounded retries.

    Args:
        tracking_uri: The resolved tracking URI.
        action: What the probe is for, to start the error message with.
        error: The class raised (``RunSearchError`` for a search).
        again: Probe even if the server answered before (at interpreter exit, say).

    Returns:
        True when a probe was sent, False when none was needed (not HTTP, or answered before).

    Raises:
        ExperimentSetupError: the server cannot be reached (or ``error``); the message
            names the URI.

    Example:
        >>> check_reachable("sqlite:///mlflow.db")
        False
    """
    if not is_http_uri(tracking_uri):
        return False
    origin = Origin.of(tracking_uri)
    with _answered_lock:
        if origin in _answered and not again:
            return False
    import requests
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(tracking_uri)  # type: ignore[no-untyped-call]
    scoped = authorization_for(tracking_uri)  # the server's own credential, if it has one
    with mlflow_errors(
        action or f"first contact with the tracking server at {redact_uri(tracking_uri)}",
        default=error,
    ):
        try:
            requests.head(
                tracking_uri,
                timeout=(PROBE_CONNECT_TIMEOUT, PROBE_READ_TIMEOUT),
                allow_redirects=False,
                headers={"Authorization": scoped} if scoped else None,
                verify=creds.verify,
                cert=creds.client_cert_path,
            ).close()
        except requests.exceptions.ReadTimeout:
            # connected, but slow to answer: not a dead end; MLflow's retries decide
            log.info("%s was slow to answer a first probe", redact_uri(tracking_uri))
    with _answered_lock:
        _answered.add(origin)
    return True


def setup_mlflow(
    config: TrackingConfig | None = None,
    *,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    artifact_location: str | None = None,
    azure_workspace: AzureMLWorkspace | None = None,
    ml_client: Any = None,
    azure_credential: TokenCredential | TokenSource | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
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
    same URI and experiment (MLflow's in-process globals). The environment is never
    changed: a later call resolves from the same variables, whatever this one resolved
    to. An injected ``MLFLOW_RUN_ID``, which steers only your own ``mlflow.start_run()``,
    is left alone and named once in a warning: see ``tracking_tasks._environment``.

    A ``credentials`` block's secret is scoped to its tracking server: this process's
    MLflow requests to that origin (scheme, host, port, path prefix) carry it, requests
    to any other server do not, and nothing is written to ``os.environ`` but the name of
    the request-auth plugin that applies it (``MLFLOW_TRACKING_AUTH=tracking-tasks``).
    The returned context holds no secret and no live client: only a saved block's name,
    so a task in another process loads the block again.

    ``workspace`` names the MLflow workspace to track in (a server started with
    ``mlflow server --enable-workspaces``): argument > ``config.workspace`` > the block's
    > ``$MLFLOW_WORKSPACE``. It is checked before anything is written (a malformed name,
    a workspace the server does not have, a server without workspaces: each a
    ``TrackingConfigError``) and carried by the context and every handle made from it,
    so every request for them goes there whatever thread, process or Dask worker makes
    it. The process environment is never changed for it (``mlflow.set_workspace`` would
    move every flow of the process).

    The first contact with an HTTP(S) server is a probe sent once
    (:func:`check_reachable`): a refused connection, an unknown host or a TLS failure
    raises within seconds instead of after MLflow's retries.

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
        azure_credential: The workspace's credential: an azure-identity
            ``TokenCredential``, or a token provider (a callable returning a token or
            ``(token, expires_at)``, a ``TokenProvider``). It reads the workspace's
            tracking URI when no ``ml_client`` is given, and authenticates this process's
            MLflow tracking to the workspace (asked for a fresh token before expiry, so a
            flow longer than a token's life keeps logging). When None: the ``ml_client``'s
            credential, else ``DefaultAzureCredential()``; azureml-mlflow's own chain
            then authenticates tracking.
        credentials: An ``MlflowCredentials`` block for the tracking server.
        workspace: The MLflow workspace (wins over ``config`` and the block).

    Returns:
        A frozen ``TrackingContext`` to pass to ``create_mlflow_run``.

    Raises:
        TrackingConfigError: invalid settings, e.g. a ``file:`` URI while
            ``MLFLOW_ALLOW_FILE_STORE`` is not true, a password inside the URI,
            credentials for another server, or a workspace that is malformed, unknown to
            the server, or on a server without workspaces.
        MissingExtraError: an Azure workspace without the azure extra installed.
        AzureAuthenticationError: Azure refused the credential (no token shown).
        AzureWorkspaceError: the workspace cannot be read.
        ExperimentSetupError: the server cannot be reached (refused, unknown host, TLS
            failure: raised within ``PROBE_CONNECT_TIMEOUT + PROBE_READ_TIMEOUT``
            seconds), or it refuses the experiment.

    Example:
        >>> context = setup_mlflow(experiment_name="ner", tracking_uri="sqlite:///mlflow.db")
        >>> context.experiment_name, context.tracking_uri.startswith("sqlite:////")
        ('ner', True)
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
        workspace=workspace,
    )
    if resolved.azure_workspace is not None:
        # a block's token provider is the workspace's credential; a callable becomes one
        # TokenProvider, shared by MLClient and tracking
        azure_credential = azure_credential or _block_token_provider(credentials)
        if azure_credential is not None:
            azure_credential = as_token_credential(azure_credential)
    location = _locate(resolved, ml_client, azure_credential)
    assert location.tracking_uri is not None and location.experiment_name is not None
    reference = _authenticate(location.tracking_uri, credentials, ml_client, azure_credential)
    check_reachable(
        location.tracking_uri,
        f"could not set up experiment {location.experiment_name!r} on "
        f"{redact_uri(location.tracking_uri)}",
    )
    experiment_id = ensure_experiment(
        location.tracking_uri,
        location.experiment_name,
        registry_uri=location.registry_uri,
        artifact_location=location.artifact_location,
        workspace=location.workspace,
    )
    context = TrackingContext(
        tracking_uri=location.tracking_uri,
        registry_uri=location.registry_uri,
        experiment_id=experiment_id,
        experiment_name=location.experiment_name,
        config_hash=config_hash(resolved),
        default_tags=location.tags,
        credentials=reference,
        workspace=location.workspace,
    )
    warn_injected_run(context)
    point_fluent_api(context)
    log.info(
        "MLflow experiment %r (id %s) on %s%s",
        context.experiment_name,
        context.experiment_id,
        redact_uri(context.tracking_uri),
        f", workspace {context.workspace!r}" if context.workspace else "",
    )
    return context


def _block_token_provider(credentials: CredentialsLocation | None) -> TokenProvider | None:
    """A block's token provider, which is the credential of the workspace it names."""
    credential = credentials.scoped_credential() if credentials is not None else None
    return credential if isinstance(credential, TokenProvider) else None


def _locate(resolved: TrackingConfig, ml_client: Any, azure_credential: Any) -> TrackingConfig:
    """The resolved config with a tracking URI: an Azure ML workspace's is asked from Azure."""
    if resolved.azure_workspace is None:
        return resolved
    from tracking_tasks.azure_ml import get_azure_tracking_uri

    uri = get_azure_tracking_uri(
        resolved.azure_workspace, ml_client=ml_client, credential=azure_credential
    )
    log.info(
        "Azure ML workspace %s tracks to %s", resolved.azure_workspace.workspace_id, redact_uri(uri)
    )
    return resolved.model_copy(update={"tracking_uri": uri})


def _authenticate(
    tracking_uri: str,
    credentials: CredentialsLocation | None,
    ml_client: Any,
    azure_credential: Any,
) -> str | None:
    """Use the credentials for the server; return their secret-free reference.

    Without a block's reference, a workspace's tracking authenticates with the Azure
    credential given, else the ``MLClient``'s own.
    """
    reference = apply_credentials(credentials, tracking_uri)
    workspace_credential = azure_credential or ml_client_credential(ml_client)
    if (
        reference is None
        and workspace_credential is not None
        and base_scheme(tracking_uri) == "azureml"
    ):
        use_workspace_credential(tracking_uri, workspace_credential)
    return reference
