"""One MlflowClient per (tracking URI, registry URI) per process; a handle's workspace scopes it."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Protocol

from tracking_tasks.auth._apply import ensure_credentials
from tracking_tasks.ops._workspaces import scoped
from tracking_tasks.urls import base_scheme

if TYPE_CHECKING:
    from mlflow import MlflowClient


def get_client(
    tracking_uri: str,
    registry_uri: str | None = None,
    *,
    credentials: str | None = None,
    workspace: str | None = None,
) -> MlflowClient:
    """Return a cached ``MlflowClient`` bound to an explicit tracking URI.

    The client holds no run state, so one per URI is shared by every thread. MLflow is
    imported on the first call, not when tracking_tasks is imported. ``credentials`` (a
    handle's secret-free reference) is loaded first if this process has not yet done so.
    With a ``workspace``, every call made through the client goes to that MLflow
    workspace, from whichever thread (a scoped view of the same client: MLflow picks the
    workspace per request, not per client).

    Args:
        tracking_uri: The tracking URI (resolved: see ``resolve_tracking_uri``).
        registry_uri: The model registry URI, or None for the tracking URI.
        credentials: A handle's ``credentials`` reference, or None.
        workspace: A handle's MLflow workspace, or None.

    Returns:
        An ``MlflowClient`` for that URI (in that workspace).

    Raises:
        TrackingConfigError: the credentials reference cannot be loaded.

    Example:
        >>> get_client("sqlite:///mlflow.db") is get_client("sqlite:///mlflow.db")
        True
    """
    ensure_credentials(credentials, tracking_uri)
    if registry_uri is None and base_scheme(tracking_uri) != "databricks":
        # MLflow's own default, said outright: left None, MlflowClient would take the
        # fluent API's registry (or $MLFLOW_REGISTRY_URI) of whatever ran before
        registry_uri = tracking_uri
    client = _client(tracking_uri, registry_uri)
    return client if workspace is None else scoped(client, workspace)  # type: ignore[no-any-return]


class Located(Protocol):
    """What a handle (``RunRef``, ``TrackingContext``, ``ModelRef``, ``RunLocation``) says
    about where its requests go."""

    @property
    def tracking_uri(self) -> str: ...
    @property
    def registry_uri(self) -> str | None: ...
    @property
    def credentials(self) -> str | None: ...
    @property
    def workspace(self) -> str | None: ...


def client_for(handle: Located) -> MlflowClient:
    """The client a handle's requests go through: its server and registry, with its
    credentials loaded, in its MLflow workspace (``get_client`` with the handle's fields).

    Example:
        >>> client_for(ctx) is get_client(ctx.tracking_uri, ctx.registry_uri)
        True
    """
    return get_client(
        handle.tracking_uri,
        handle.registry_uri,
        credentials=handle.credentials,
        workspace=handle.workspace,
    )


@functools.lru_cache(maxsize=64)
def _client(tracking_uri: str, registry_uri: str | None) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
