"""Resuming a retried attempt's metric history: is this a retry, and what is stored."""

from __future__ import annotations

from collections.abc import Callable

from tracking_tasks.errors import RunNotFoundError, TrackingServerError, mlflow_errors
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._client import client_for
from tracking_tasks.urls import redact_uri


def _never_retried() -> bool:
    return False


#: Tells whether the caller is a retried attempt; the Prefect layer installs its own
#: (a task run after its first try), since this layer imports no Prefect.
_retry_probe: Callable[[], bool] = _never_retried


def set_retry_probe(probe: Callable[[], bool]) -> None:
    """Install what tells a ``RunLogger`` it runs in a retried attempt (``resume=None``).

    Args:
        probe: Returns True inside a retried attempt.

    Example:
        >>> set_retry_probe(_retry_probe)  # keep the one installed
    """
    global _retry_probe
    _retry_probe = probe


def retried_attempt() -> bool:
    """Tell whether the caller runs in a retried attempt (the installed probe decides).

    Returns:
        True inside a retried attempt; always False without the Prefect layer.

    Example:
        >>> retried_attempt()  # outside a task run
        False
    """
    return _retry_probe()


def stored_steps(run: RunRef, key: str) -> set[int]:
    """The steps of a metric's history already stored on a run (one request a page).

    Args:
        run: The run handle.
        key: The metric's name.

    Returns:
        The steps of every stored point of ``key``.

    Raises:
        RunNotFoundError: the run does not exist.
        TrackingServerError: the server failed or could not be reached.

    Example:
        >>> stored_steps(run, "no-such-metric")
        set()
    """
    with mlflow_errors(
        f"reading metric {key!r} of MLflow run {run.run_id} on {redact_uri(run.tracking_uri)}",
        default=TrackingServerError,
        not_found=RunNotFoundError,
    ):
        client = client_for(run)
        return {int(m.step) for m in client.get_metric_history(run.run_id, key)}
