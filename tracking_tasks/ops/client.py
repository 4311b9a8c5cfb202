"""One MlflowClient per (tracking URI, registry URI) per process, with its server's credentials."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from tracking_tasks.ops.credentials import (
    Credential,
    is_loaded,
    load_reference,
    mark_loaded,
    scope_credentials,
)
from tracking_tasks.ops.environment import activate_scoped_auth

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["ensure_credentials", "get_client", "use_credentials"]


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
    ensure_credentials(credentials)
    return _client(tracking_uri, registry_uri)


@functools.lru_cache(maxsize=64)
def _client(tracking_uri: str, registry_uri: str | None) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def use_credentials(
    tracking_uri: str, credential: Credential, reference: str | None = None
) -> None:
    """Scope ``credential`` to ``tracking_uri``'s server and route MLflow's requests
    through the plugin that applies it (``MLFLOW_TRACKING_AUTH=tracking-tasks``).

    Args:
        tracking_uri: The server's ``http(s)://`` tracking URI.
        credential: The credential (``BasicAuth``, ``BearerToken``, ``TokenProvider``).
        reference: Its secret-free reference, if it has one.

    Raises:
        TrackingConfigError: not an HTTP(S) URI, or another request-auth plugin is set.

    Example:
        >>> from pydantic import SecretStr
        >>> from tracking_tasks.ops.credentials import BearerToken
        >>> use_credentials("http://127.0.0.1:5000", BearerToken(SecretStr("t")))  # doctest: +SKIP
    """
    activate_scoped_auth()
    scope_credentials(tracking_uri, credential, reference)


def ensure_credentials(reference: str | None) -> None:
    """Load the credentials a handle refers to, once per process, and scope them.

    Nothing happens for None or a reference already loaded here (beyond making sure the
    plugin is still named). This is how a task in a Dask worker process gets the
    credentials of the flow that made its handle: the handle carries only the reference
    (a saved block's name); the secret is fetched where it is used.

    Args:
        reference: A handle's ``credentials``, or None.

    Raises:
        TrackingConfigError: the reference cannot be loaded.

    Example:
        >>> ensure_credentials(None)
    """
    if reference is None:
        return
    if is_loaded(reference):
        activate_scoped_auth()
        return
    loaded = load_reference(reference)
    if loaded is not None:
        use_credentials(loaded[0], loaded[1], reference)
    mark_loaded(reference)
