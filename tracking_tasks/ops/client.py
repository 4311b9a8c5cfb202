"""One MlflowClient per (tracking URI, registry URI) per process."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["get_client"]


@functools.lru_cache(maxsize=64)
def get_client(tracking_uri: str, registry_uri: str | None = None) -> MlflowClient:
    """Return a cached ``MlflowClient`` bound to an explicit tracking URI.

    The client holds no run state, so one per URI is shared by every thread. MLflow is
    imported on the first call, not when tracking_tasks is imported.

    Args:
        tracking_uri: The tracking URI (resolved: see ``resolve_tracking_uri``).
        registry_uri: The model registry URI, or None for the tracking URI.

    Returns:
        An ``MlflowClient`` for that URI.

    Example:
        >>> get_client("sqlite:///mlflow.db") is get_client("sqlite:///mlflow.db")
        True
    """
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
