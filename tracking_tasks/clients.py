"""One MlflowClient per (tracking URI, registry URI) per process, and error translation."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient


@functools.lru_cache(maxsize=64)
def get_client(tracking_uri: str, registry_uri: str | None = None) -> MlflowClient:
    """Return a cached ``MlflowClient`` bound to an explicit tracking URI.

    The client holds no run state, so one per URI is shared by every thread.
    """
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def error_code(exc: BaseException) -> str | None:
    """Return MLflow's error code (``RESOURCE_DOES_NOT_EXIST``...) of an exception, if any."""
    return getattr(exc, "error_code", None)
