"""Run and model statuses, and every mapping onto them: Prefect states, Optuna trial states, a ``with`` block's exit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

#: Every MLflow run status.
RunStatusName = Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]
RUN_STATUSES: tuple[str, ...] = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")

#: The statuses of an ended run.
RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"FINISHED", "FAILED", "KILLED"})

#: The statuses of an MLflow 3 ``LoggedModel``. A search filter cannot compare them
#: (MLflow 3.17's server binds the value as text against an integer column: on SQLite
#: ``status = 'READY'`` matches nothing, on PostgreSQL any status clause fails), so the
#: finders filter by status on the client.
ModelStatusName = Literal["PENDING", "READY", "FAILED"]
MODEL_STATUSES: tuple[str, ...] = ("PENDING", "READY", "FAILED")

#: The Prefect state types of a flow or task run that is over, and the MLflow status its
#: runs end with: the one mapping the state hooks, reconcile and a sweep's failed trials
#: use. Every other state type (Scheduled, Pending, Running, Paused, AwaitingRetry...)
#: means the run may still write: reconcile never touches it. (Cancelling is not over:
#: only the hooks, which Prefect calls in it, end runs KILLED there.)
TERMINAL_FLOW_RUN_STATES: Mapping[str, RunStatus] = {
    "COMPLETED": "FINISHED",
    "FAILED": "FAILED",
    "CRASHED": "FAILED",
    "CANCELLED": "KILLED",
}

#: An Optuna trial's final state (``TrialState.name``) and the status of its MLflow run.
OPTUNA_TRIAL_STATUSES: Mapping[str, RunStatus] = {
    "COMPLETE": "FINISHED",
    "PRUNED": "KILLED",
    "FAIL": "FAILED",
}


def state_to_run_status(state: Any) -> RunStatus | None:
    """Map a final Prefect state to the MLflow run status it implies.

    Args:
        state: A Prefect ``State``.

    Returns:
        ``FINISHED`` for Completed, ``FAILED`` for Failed and Crashed, ``KILLED`` for
        Cancelled/Cancelling, None for a state that is not final.

    Example:
        >>> from prefect.states import Completed, Crashed
        >>> state_to_run_status(Completed()), state_to_run_status(Crashed())
        ('FINISHED', 'FAILED')
    """
    if state.is_cancelling():  # Prefect calls on_cancellation hooks here, before Cancelled
        return "KILLED"
    return TERMINAL_FLOW_RUN_STATES.get(state.type.value)


def exit_status(exc_type: type[BaseException] | None) -> RunStatus:
    """The status a ``with`` block ends its run with, given how the block ended.

    Args:
        exc_type: The exception type leaving the block, or None.

    Returns:
        ``FINISHED`` (no exception), ``FAILED`` (an ``Exception``) or ``KILLED``
        (``KeyboardInterrupt``, ``SystemExit`` and other ``BaseException``).

    Example:
        >>> exit_status(None), exit_status(ValueError), exit_status(KeyboardInterrupt)
        ('FINISHED', 'FAILED', 'KILLED')
    """
    if exc_type is None:
        return "FINISHED"
    return "FAILED" if issubclass(exc_type, Exception) else "KILLED"
