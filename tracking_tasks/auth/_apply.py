"""Using credentials: for a server or a workspace, from a block, by reference in another process.

The entry points the rest of the library calls:

- :func:`apply_credentials`: a block's (or ``ServerCredentials``') credential for the
  server a call resolved; the check that it is the credentials' own server first;
- :func:`ensure_credentials`: a handle's secret-free reference, loaded again once per
  process (a Dask worker, a retried flow run in a new process);
- :func:`use_credentials`: the one switch between an HTTP(S) server (scoped per origin,
  sent through the request-auth plugin) and an Azure ML workspace (given to
  azureml-mlflow);
- :func:`register_loader` / :func:`load_reference`: how a reference's kind is loaded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracking_tasks._private_apis import set_azureml_workspace_credential
from tracking_tasks.auth._kinds import Credential
from tracking_tasks.auth._scope import scope_credentials
from tracking_tasks.auth._tokens import TokenProvider, TokenSource, as_token_credential
from tracking_tasks.config._resolve import check_credentials_server
from tracking_tasks.errors import MissingExtraError, TrackingConfigError
from tracking_tasks.urls import azureml_workspace_parts, base_scheme, is_http_uri, redact_uri

if TYPE_CHECKING:
    from tracking_tasks.config._resolve import CredentialsLocation

log = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded_refs: set[str] = set()
_loaders: dict[str, Callable[[str], Any]] = {}


def use_credentials(
    tracking_uri: str, credential: Credential, reference: str | None = None
) -> None:
    """Make ``credential`` the one this process authenticates to ``tracking_uri`` with.

    An ``http(s)://`` server: the credential is scoped to its origin and MLflow's requests
    go through the plugin that applies it (``MLFLOW_TRACKING_AUTH=tracking-tasks``). An
    Azure ML workspace (``azureml://``): a token provider or azure-identity credential
    becomes the workspace's credential for azureml-mlflow (:func:`use_workspace_credential`).

    Args:
        tracking_uri: The server's ``http(s)://`` or a workspace's ``azureml://`` URI.
        credential: The credential (``BasicAuth``, ``BearerToken``, ``TokenProvider``).
        reference: Its secret-free reference, if it has one.

    Raises:
        TrackingConfigError: not an HTTP(S) or Azure ML URI, basic auth or a fixed token
            for a workspace, or another request-auth plugin is set.

    Example:
        >>> from pydantic import SecretStr
        >>> from tracking_tasks.auth import BearerToken
        >>> use_credentials("sqlite:///m.db", BearerToken(SecretStr("t")))
        Traceback (most recent call last):
        ...
        tracking_tasks.errors.TrackingConfigError: credentials are for HTTP(S) tracking servers; sqlite:///m.db is not one
    """
    if base_scheme(tracking_uri) == "azureml":
        if not isinstance(credential, TokenProvider):
            raise TrackingConfigError(
                f"{redact_uri(tracking_uri)} is an Azure ML workspace: it takes a token "
                f"provider (an azure-identity credential or a callable), not {credential.description}"
            )
        use_workspace_credential(tracking_uri, credential)
    else:
        scope_credentials(tracking_uri, credential, reference)
        _activate_plugin()
    if reference is not None:
        mark_loaded(reference)


def _activate_plugin() -> None:
    """Name the request-auth plugin for MLflow (imported here: it imports MLflow)."""
    from tracking_tasks.auth._plugin import activate_scoped_auth

    activate_scoped_auth()


def use_workspace_credential(tracking_uri: str, credential: TokenSource | TokenProvider) -> None:
    """Authenticate this process's MLflow tracking of an Azure ML workspace with ``credential``.

    azureml-mlflow asks the workspace's credential for a token on every request it sends
    to the workspace (Azure ML tracking uses the Resource Manager scope), so a token
    provider keeps a flow longer than one token's life logging. Without this, the plugin
    builds its own chain (``DefaultAzureCredential`` then interactive logins). The
    credential is registered for the workspace the URI names, in this process: set it up
    before the first MLflow call to that workspace (``setup_mlflow`` does).

    Args:
        tracking_uri: The workspace's ``azureml://`` tracking URI.
        credential: An azure-identity credential, a ``TokenProvider``, or a callable.

    Raises:
        TrackingConfigError: the URI names no Azure ML workspace.
        MissingExtraError: the azure extra is not installed.

    Example:
        >>> use_workspace_credential("http://127.0.0.1:5000", lambda: "t0k")
        Traceback (most recent call last):
        ...
        tracking_tasks.errors.TrackingConfigError: http://127.0.0.1:5000 names no Azure ML workspace: an azure credential authenticates azureml://.../workspaces/<name> tracking URIs
    """
    parts = azureml_workspace_parts(tracking_uri)
    if parts is None:
        raise TrackingConfigError(
            f"{redact_uri(tracking_uri)} names no Azure ML workspace: an azure credential "
            "authenticates azureml://.../workspaces/<name> tracking URIs"
        )
    from urllib.parse import urlsplit

    subscription_id, resource_group, workspace_name = parts
    try:
        set_azureml_workspace_credential(
            tracking_uri,
            host_url="https://" + urlsplit(tracking_uri).netloc,
            subscription_id=subscription_id,
            resource_group=resource_group,
            workspace_name=workspace_name,
            credential=as_token_credential(credential),
        )
    except ImportError as exc:
        raise MissingExtraError(
            f"Azure ML tracking (azureml-mlflow) needs the azure extra, which is not "
            f"installed ({exc}). Install it with: pip install 'tracking-tasks[azure]'"
        ) from exc
    log.info(
        "Azure ML workspace %s tracks with %s in this process",
        workspace_name,
        getattr(credential, "description", type(credential).__name__),
    )


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


def ensure_credentials(reference: str | None, tracking_uri: str) -> None:
    """Load the credentials a handle refers to, once per process, and use them.

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
        if is_http_uri(tracking_uri):
            _activate_plugin()
        return
    loaded = load_reference(reference)
    if loaded is not None:
        uri, credential = loaded
        if uri is None and base_scheme(tracking_uri) == "azureml":
            uri = tracking_uri  # a workspace block: the handle holds the workspace's URI
        if uri is not None:
            use_credentials(uri, credential, reference)
    mark_loaded(reference)


def register_loader(kind: str, loader: Callable[[str], Any]) -> None:
    """Register how a reference ``"<kind>/<name>"`` is loaded in another process.

    ``loader(name)`` returns an object with ``tracking_uri``, ``scoped_credential()``
    and ``credentials_reference()`` (a ``ServerCredentials``, an ``MlflowCredentials``).

    Example:
        >>> register_loader("doc-example", lambda name: None)
    """
    _loaders[kind] = loader


def load_reference(reference: str) -> tuple[str | None, Credential] | None:
    """Load the credentials a reference names, with the loader registered for its kind.

    Returns:
        ``(tracking URI, credential)`` (the URI None for a block naming an Azure ML
        workspace), or None when the reference holds no credential.

    Raises:
        TrackingConfigError: the reference's kind has no loader, or the loader failed
            (its own error, which names the fix).

    Example:
        >>> load_reference("unknown-kind/x")
        Traceback (most recent call last):
        ...
        tracking_tasks.errors.TrackingConfigError: credentials 'unknown-kind/x' cannot be loaded in this process: nothing loads 'unknown-kind' references here (import tracking_tasks to load MlflowCredentials blocks)
    """
    kind, _, name = reference.partition("/")
    loader = _loaders.get(kind)
    if loader is None:
        raise TrackingConfigError(
            f"credentials {reference!r} cannot be loaded in this process: nothing loads "
            f"{kind!r} references here (import tracking_tasks to load MlflowCredentials blocks)"
        )
    creds = loader(name)
    credential = creds.scoped_credential()
    if credential is None:
        return None
    return (None if creds.tracking_uri is None else str(creds.tracking_uri)), credential


def is_loaded(reference: str) -> bool:
    """True when ``reference`` was used in this process already."""
    with _lock:
        return reference in _loaded_refs


def mark_loaded(reference: str) -> None:
    """Remember that ``reference`` needs no loading again in this process."""
    with _lock:
        _loaded_refs.add(reference)


def forget_loaded() -> None:
    """Forget which references this process loaded (they are loaded again on next use)."""
    with _lock:
        _loaded_refs.clear()


def clear_scoped_credentials() -> None:
    """Forget every credential this process scoped or loaded (tests, long-lived workers).

    Example:
        >>> clear_scoped_credentials()
    """
    from tracking_tasks.auth._scope import clear_scoped_origins

    clear_scoped_origins()
    forget_loaded()
