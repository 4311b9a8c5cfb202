"""One MlflowClient per (tracking URI, registry URI) per process, with its server's credentials."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from tracking_tasks.config.resolve import check_credentials_server
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.ops.credentials import (
    Credential,
    is_loaded,
    load_reference,
    mark_loaded,
    scope_credentials,
)
from tracking_tasks.ops.environment import activate_scoped_auth
from tracking_tasks.ops.tokens import TokenProvider
from tracking_tasks.urls import base_scheme, is_http_uri, redact_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from tracking_tasks.config.resolve import CredentialsLocation

__all__ = ["apply_credentials", "ensure_credentials", "get_client", "use_credentials"]


def get_client(
    tracking_uri: str, registry_uri: str | None = None, *, credentials: str | None = None
) -> MlflowClient:
    """Return a cached ``MlflowClient`` bound to an explicit tracking URI.

    The client holds no run state, so one per URI is shared by every thread. MLflow is
    imported on the first call, not when tracking_tasks is imported. ``credentials`` (a
    handle's secret-free reference) is loaded first if this process has not yet done so.

    Args:
        tracking_uri: The tracking URI (resolved: see ``resolve_tracking_uri``).
        registry_uri: The model registry URI, or None for the tracking URI.
        credentials: A handle's ``credentials`` reference, or None.

    Returns:
        An ``MlflowClient`` for that URI.

    Raises:
        TrackingConfigError: the credentials reference cannot be loaded.

    Example:
        >>> get_client("sqlite:///mlflow.db") is get_client("sqlite:///mlflow.db")
        True
    """
    ensure_credentials(credentials, tracking_uri)
    return _client(tracking_uri, registry_uri)


@functools.lru_cache(maxsize=64)
def _client(tracking_uri: str, registry_uri: str | None) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def use_credentials(
    tracking_uri: str, credential: Credential, reference: str | None = None
) -> None:
    """Make ``credential`` the one this process authenticates to ``tracking_uri`` with.

    An ``http(s)://`` server: the credential is scoped to its origin and MLflow's requests
    go through the plugin that applies it (``MLFLOW_TRACKING_AUTH=tracking-tasks``). An
    Azure ML workspace (``azureml://``): a token provider or azure-identity credential
    becomes the workspace's credential for azureml-mlflow
    (:func:`tracking_tasks.azure_ml.use_workspace_credential`).

    Args:
        tracking_uri: The server's ``http(s)://`` or a workspace's ``azureml://`` URI.
        credential: The credential (``BasicAuth``, ``BearerToken``, ``TokenProvider``).
        reference: Its secret-free reference, if it has one.

    Raises:
        TrackingConfigError: not an HTTP(S) or Azure ML URI, basic auth or a fixed token
            for a workspace, or another request-auth plugin is set.

    Example:
        >>> from pydantic import SecretStr
        >>> from tracking_tasks.ops.credentials import BearerToken
        >>> use_credentials("http://127.0.0.1:5000", BearerToken(SecretStr("t")))  # doctest: +SKIP
    """
    if base_scheme(tracking_uri) == "azureml":
        if not isinstance(credential, TokenProvider):
            raise TrackingConfigError(
                f"{redact_uri(tracking_uri)} is an Azure ML workspace: it takes a token "
                f"provider (an azure-identity credential or a callable), not {credential.description}"
            )
        from tracking_tasks.azure_ml import use_workspace_credential

        use_workspace_credential(tracking_uri, credential)
        if reference is not None:
            mark_loaded(reference)
        return
    activate_scoped_auth()
    scope_credentials(tracking_uri, credential, reference)


def ensure_credentials(reference: str | None, tracking_uri: str) -> None:
    """Load the credentials a handle refers to, once per process, and scope them.

    Nothing happens for None or a reference already loaded here (beyond making sure the
    plugin is still named). This is how a task in a Dask worker process gets the
    credentials of the flow that made its handle: the handle carries only the reference
    (a saved block's name); the secret is fetched where it is used.

    Args:
        reference: A handle's ``credentials``, or None.
        tracking_uri: The handle's tracking URI: where a block that names an Azure ML
            workspace instead of a URI authenticates (so it is required: without it such
            a block would be marked loaded and never applied).

    Raises:
        TrackingConfigError: the reference cannot be loaded.

    Example:
        >>> ensure_credentials(None, "sqlite:///mlflow.db")
    """
    if reference is None:
        return
    if is_loaded(reference):
        activate_scoped_auth()
        return
    loaded = load_reference(reference)
    if loaded is not None:
        uri, credential = loaded
        if uri is None and base_scheme(tracking_uri) == "azureml":
            uri = tracking_uri  # a workspace block: the handle holds the workspace's URI
        if uri is not None:
            use_credentials(uri, credential, reference)
    mark_loaded(reference)


def apply_credentials(credentials: CredentialsLocation | None, tracking_uri: str) -> str | None:
    """Use a block's (or ``ServerCredentials``') credential for the resolved server.

    Args:
        credentials: An ``MlflowCredentials`` block or ``ServerCredentials``, or None.
        tracking_uri: The resolved tracking URI the credential is for.

    Returns:
        The credentials' secret-free reference for handles (None if it has none).

    Raises:
        TrackingConfigError: the credentials belong to another server, the tracking URI
            is neither HTTP(S) nor an Azure ML workspace, or the credential does not fit
            it (see ``use_credentials``).

    Example:
        >>> apply_credentials(None, "sqlite:///mlflow.db") is None
        True
    """
    if credentials is None:
        return None
    check_credentials_server(credentials, tracking_uri)
    credential = credentials.scoped_credential()
    if credential is None:
        return None
    if not is_http_uri(tracking_uri) and base_scheme(tracking_uri) != "azureml":
        raise TrackingConfigError(
            f"the credentials are for an HTTP(S) tracking server or an Azure ML workspace, "
            f"but the tracking URI is {redact_uri(tracking_uri)}: a database authenticates "
            "through its own settings"
        )
    reference = credentials.credentials_reference()
    use_credentials(tracking_uri, credential, reference)
    return reference
