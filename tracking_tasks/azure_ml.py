"""Azure ML workspaces: the MLClient, and the workspace's MLflow tracking URI (lazy import)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tracking_tasks.config.models import AzureMLWorkspace
from tracking_tasks.errors import (
    AzureAuthenticationError,
    AzureWorkspaceError,
    MissingExtraError,
    TrackingConfigError,
)
from tracking_tasks.ops.tokens import TokenProvider, TokenSource
from tracking_tasks.urls import azureml_workspace_parts, redact_uri

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

__all__ = [
    "as_token_credential",
    "get_azure_tracking_uri",
    "make_ml_client",
    "use_workspace_credential",
    "workspace_of",
]

AZURE_EXTRA_INSTALL = "pip install 'tracking-tasks[azure]'"
log = logging.getLogger(__name__)


def _missing_extra(feature: str, exc: ImportError) -> MissingExtraError:
    return MissingExtraError(
        f"{feature} needs the azure extra, which is not installed ({exc}). "
        f"Install it with: {AZURE_EXTRA_INSTALL}"
    )


def workspace_of(ml_client: Any) -> AzureMLWorkspace:
    """Return the workspace an ``MLClient`` is bound to, as plain identifiers.

    Args:
        ml_client: An ``azure.ai.ml.MLClient`` built with a workspace name.

    Returns:
        The client's ``AzureMLWorkspace`` (subscription, resource group, workspace).

    Raises:
        TrackingConfigError: the object is not an MLClient bound to a workspace.

    Example:
        >>> from azure.ai.ml import MLClient  # doctest: +SKIP
        >>> workspace_of(MLClient(cred, "sub", "rg", "ws")).workspace_name  # doctest: +SKIP
        'ws'
    """
    parts = {
        "subscription_id": getattr(ml_client, "subscription_id", None),
        "resource_group": getattr(ml_client, "resource_group_name", None),
        "workspace_name": getattr(ml_client, "workspace_name", None),
    }
    missing = sorted(name for name, value in parts.items() if not value)
    if missing:
        raise TrackingConfigError(
            f"ml_client must be an azure.ai.ml.MLClient bound to a workspace; "
            f"{type(ml_client).__name__} has no {', '.join(missing)}: build it as "
            "MLClient(credential, subscription_id, resource_group_name, workspace_name)"
        )
    return AzureMLWorkspace(
        subscription_id=str(parts["subscription_id"]),
        resource_group=str(parts["resource_group"]),
        workspace_name=str(parts["workspace_name"]),
    )


def make_ml_client(
    workspace: AzureMLWorkspace, credential: TokenCredential | None = None
) -> MLClient:
    """Build an ``MLClient`` for a workspace; no network call happens until it is used.

    Args:
        workspace: The workspace to bind the client to.
        credential: An Azure ``TokenCredential``; ``DefaultAzureCredential()`` when None
            (environment, workload or managed identity, Azure CLI login...).

    Returns:
        An ``azure.ai.ml.MLClient``.

    Raises:
        MissingExtraError: the azure extra is not installed.

    Example:
        >>> ws = AzureMLWorkspace(subscription_id="0000", resource_group="ml-rg",
        ...                       workspace_name="ml-ws")
        >>> client = make_ml_client(ws)  # doctest: +SKIP
    """
    try:
        from azure.ai.ml import MLClient
    except ImportError as exc:
        raise _missing_extra("Azure ML tracking (MLClient)", exc) from exc
    if credential is None:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise _missing_extra("Azure ML tracking (DefaultAzureCredential)", exc) from exc
        credential = DefaultAzureCredential()
    return MLClient(
        credential,
        subscription_id=workspace.subscription_id,
        resource_group_name=workspace.resource_group,
        workspace_name=workspace.workspace_name,
    )


def get_azure_tracking_uri(
    workspace: AzureMLWorkspace | None = None,
    *,
    ml_client: Any = None,
    credential: TokenCredential | None = None,
) -> str:
    """Ask Azure ML for a workspace's MLflow tracking URI (``azureml://...``).

    One call: ``ml_client.workspaces.get(name).mlflow_tracking_uri`` (a token from the
    credential, then a GET on the Azure Resource Manager endpoint).

    Args:
        workspace: The workspace; taken from ``ml_client`` when None.
        ml_client: A ready ``azure.ai.ml.MLClient``; built from ``workspace`` and
            ``credential`` when None.
        credential: Used only when ``ml_client`` is None; ``DefaultAzureCredential()``
            when None.

    Returns:
        The workspace's MLflow tracking URI.

    Raises:
        MissingExtraError: the azure extra is not installed.
        TrackingConfigError: neither a workspace nor a client was given, or they name
            different workspaces.
        AzureAuthenticationError: no token could be had, or Azure refused it (the
            message never shows the token).
        AzureWorkspaceError: the workspace does not exist, Azure is unreachable, or it
            has no MLflow tracking URI.

    Example:
        >>> ws = AzureMLWorkspace(subscription_id="0000", resource_group="ml-rg",
        ...                       workspace_name="ml-ws")
        >>> get_azure_tracking_uri(ws)  # doctest: +SKIP
        'azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/0000/...'
    """
    if ml_client is None and workspace is None:
        raise TrackingConfigError("give an AzureMLWorkspace or an MLClient")
    if ml_client is not None:
        bound = workspace_of(ml_client)
        if workspace is not None and workspace != bound:
            raise TrackingConfigError(
                f"ml_client is bound to {bound.workspace_id} but the workspace given is "
                f"{workspace.workspace_id}: pass one of them"
            )
        workspace = bound
    assert workspace is not None
    client = ml_client if ml_client is not None else make_ml_client(workspace, credential)
    try:
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
        )
    except ImportError as exc:  # pragma: no cover - azure-ai-ml depends on azure-core
        raise _missing_extra("Azure ML tracking", exc) from exc

    where = workspace.workspace_id
    try:
        found = client.workspaces.get(workspace.workspace_name)
    except ClientAuthenticationError as exc:
        raise AzureAuthenticationError(_auth_message(where, exc)) from None
    except ResourceNotFoundError:
        raise AzureWorkspaceError(
            f"Azure ML workspace {where} does not exist, or the credential cannot see it: "
            "check the subscription, resource group and workspace name"
        ) from None
    except HttpResponseError as exc:
        code = getattr(getattr(exc, "error", None), "code", None) or exc.reason
        raise AzureWorkspaceError(
            f"Azure refused to read workspace {where}: HTTP {exc.status_code} ({code})"
        ) from None
    except AzureError as exc:
        raise AzureWorkspaceError(
            f"could not reach Azure to read workspace {where}: {type(exc).__name__}. Check "
            "the network (outbound access to Azure Resource Manager)"
        ) from None
    uri = getattr(found, "mlflow_tracking_uri", None)
    if not uri:
        raise AzureWorkspaceError(f"Azure ML workspace {where} reports no MLflow tracking URI")
    return str(uri)


def _auth_message(where: str, exc: Exception) -> str:
    """Say why authentication failed without repeating anything the service echoed."""
    status = getattr(exc, "status_code", None)
    if status is not None:  # the service answered 401/403: show its error code only
        code = getattr(getattr(exc, "error", None), "code", None) or "no error code"
        return (
            f"Azure refused the credential for workspace {where}: HTTP {status} ({code}). "
            "Check that the identity is signed in (az login, managed identity, "
            "AZURE_CLIENT_ID/AZURE_TENANT_ID...) and has access to the workspace"
        )
    # raised by the credential itself (azure-identity): it says which sources it tried
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"no Azure credential could get a token for workspace {where}: {first_line}. "
        "Sign in (az login), or set up a managed identity or AZURE_CLIENT_ID/AZURE_TENANT_ID"
    )


def as_token_credential(source: TokenSource | TokenProvider) -> TokenCredential:
    """Return an azure-core ``TokenCredential`` for a credential or a token provider.

    An object with ``get_token`` (an azure-identity credential, a ``TokenProvider``) is
    returned as it is: azure-identity credentials cache and renew their tokens per scope.
    A callable or an import path ``"package.module:name"`` is wrapped in a
    ``TokenProvider``, which asks it again before the token expires.

    Args:
        source: An azure-identity credential, a ``TokenProvider``, a callable returning
            a token (or ``(token, expires_at)``), or an import path of one.

    Returns:
        An object ``MLClient`` and the workspace's MLflow tracking accept as a credential.

    Raises:
        TrackingConfigError: ``source`` is none of those.

    Example:
        >>> cred = as_token_credential(lambda: ("t0k", 2e9))
        >>> cred.get_token("https://management.azure.com/.default").token  # doctest: +SKIP
        't0k'
    """
    if hasattr(source, "get_token"):
        if isinstance(source, TokenProvider):
            return source.token_credential()  # type: ignore[no-any-return]
        return source  # type: ignore[return-value]
    if callable(source) or isinstance(source, str):
        return TokenProvider(source)  # type: ignore[return-value]
    raise TrackingConfigError(
        f"azure_credential is a {type(source).__name__}: give an azure-identity credential, "
        "a callable returning a token, or a TokenProvider"
    )


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
        credential: See :func:`as_token_credential`.

    Raises:
        TrackingConfigError: the URI names no Azure ML workspace.
        MissingExtraError: the azure extra is not installed.

    Example:
        >>> use_workspace_credential(uri, DefaultAzureCredential())  # doctest: +SKIP
    """
    parts = azureml_workspace_parts(tracking_uri)
    if parts is None:
        raise TrackingConfigError(
            f"{redact_uri(tracking_uri)} names no Azure ML workspace: an azure credential "
            "authenticates azureml://.../workspaces/<name> tracking URIs"
        )
    token_credential = as_token_credential(credential)
    try:
        from azureml.mlflow._internal.service_context_loader import (
            _AzureMLServiceContextLoader,
        )
        from azureml.mlflow._internal.utils import ServiceContext
    except ImportError as exc:
        raise _missing_extra("Azure ML tracking (azureml-mlflow)", exc) from exc
    from urllib.parse import urlsplit

    subscription_id, resource_group, workspace_name = parts
    # the way azureml-core's Workspace.get_mlflow_tracking_uri hands its own auth to the
    # plugin: a service context cached per workspace URI, read by each store it builds.
    # MLflow caches stores per URI, so a context already in use gets the new credential.
    if _AzureMLServiceContextLoader.has_service_context(tracking_uri):
        _AzureMLServiceContextLoader.get_service_context(tracking_uri)._auth = token_credential
    else:
        _AzureMLServiceContextLoader.add_service_context(
            tracking_uri,
            ServiceContext(
                host_url="https://" + urlsplit(tracking_uri).netloc,
                subscription_id=subscription_id,
                workspace_name=workspace_name,
                resource_group_name=resource_group,
                auth=token_credential,
            ),
        )
    log.info(
        "Azure ML workspace %s tracks with %s in this process",
        workspace_name,
        getattr(credential, "description", type(credential).__name__),
    )
