"""Azure ML workspaces: the MLClient, and the workspace's MLflow tracking URI (lazy import)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tracking_tasks.config._models import AzureMLWorkspace, workspace_of
from tracking_tasks.errors import (
    AzureAuthenticationError,
    AzureWorkspaceError,
    MissingExtraError,
    TrackingConfigError,
)

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

__all__ = ["get_azure_tracking_uri", "make_ml_client", "workspace_of"]

AZURE_EXTRA_INSTALL = "pip install 'tracking-tasks[azure]'"
log = logging.getLogger(__name__)


def _missing_extra(feature: str, exc: ImportError) -> MissingExtraError:
    return MissingExtraError(
        f"{feature} needs the azure extra, which is not installed ({exc}). "
        f"Install it with: {AZURE_EXTRA_INSTALL}"
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
        >>> make_ml_client(ws).workspace_name  # no request yet
        'ml-ws'
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
        >>> get_azure_tracking_uri()  # a workspace or a client is needed
        Traceback (most recent call last):
        ...
        tracking_tasks.errors.TrackingConfigError: give an AzureMLWorkspace or an MLClient
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
