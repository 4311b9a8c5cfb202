"""What the current Prefect run is (read from Prefect's context), and where log lines go.

The plain layer logs to the standard ``tracking_tasks`` logger; importing the Prefect
layer attaches :class:`RunLogForwarder` to it, so those lines land in the Prefect run's
logs inside a flow or task run (and in Prefect's console logger outside one).
"""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_logger, get_run_logger

from tracking_tasks._private_apis import prefect_deployment_id
from tracking_tasks.tags import (
    DEPLOYMENT_ID_TAG,
    FLOW_NAME_TAG,
    FLOW_RUN_NAME_TAG,
    FLOW_RUN_TAG,
    TASK_RUN_TAG,
)


@dataclass(frozen=True)
class PrefectRunInfo:
    """Identity of the Prefect flow run and task run the caller is in."""

    flow_run_id: str | None = None
    flow_run_name: str | None = None
    flow_name: str | None = None
    deployment_id: str | None = None
    task_run_id: str | None = None
    task_run_name: str | None = None
    #: False when Prefect counts an earlier run of this task or flow run (a retry), or
    #: when it cannot tell (outside a task run).
    is_first_attempt: bool = False

    def tags(self) -> dict[str, str]:
        """MLflow tags naming this Prefect run (absent values left out)."""
        pairs = {
            FLOW_RUN_TAG: self.flow_run_id,
            FLOW_RUN_NAME_TAG: self.flow_run_name,
            FLOW_NAME_TAG: self.flow_name,
            DEPLOYMENT_ID_TAG: self.deployment_id,
            TASK_RUN_TAG: self.task_run_id,
        }
        return {key: value for key, value in pairs.items() if value}


def current_run_info() -> PrefectRunInfo:
    """Read the current flow run and task run from Prefect's context variables.

    Returns:
        A ``PrefectRunInfo``; every field None outside a run.

    Example:
        >>> current_run_info().flow_run_id is None  # outside a flow run
        True
    """
    flow_ctx = FlowRunContext.get()
    task_ctx = TaskRunContext.get()
    flow_run = flow_ctx.flow_run if flow_ctx else None
    task_run = task_ctx.task_run if task_ctx else None
    flow_run_id = (
        str(flow_run.id)
        if flow_run
        else (str(task_run.flow_run_id) if task_run and task_run.flow_run_id else None)
    )
    return PrefectRunInfo(
        flow_run_id=flow_run_id,
        flow_run_name=flow_run.name if flow_run else None,
        flow_name=flow_ctx.flow.name if flow_ctx and flow_ctx.flow else None,
        deployment_id=_deployment_id(flow_run),
        task_run_id=str(task_run.id) if task_run else None,
        task_run_name=task_run.name if task_run else None,
        is_first_attempt=bool(
            task_run is not None
            and task_run.run_count <= 1
            and (task_run.flow_run_run_count or 0) <= 1
            and (flow_run is None or flow_run.run_count <= 1)
        ),
    )


def _deployment_id(flow_run: Any) -> str | None:
    """The deployment of the top-level flow run, also seen from its subflows (no API call)."""
    deployment_id = prefect_deployment_id() or getattr(flow_run, "deployment_id", None)
    return str(deployment_id) if deployment_id else None


@functools.lru_cache(maxsize=256)
def deployment_name(deployment_id: str | None) -> str | None:
    """Look up a deployment's name (one API call per deployment and process).

    Args:
        deployment_id: The deployment id, or None.

    Returns:
        Its name, or None.

    Example:
        >>> deployment_name(None) is None
        True
    """
    if not deployment_id:
        return None
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment(uuid.UUID(deployment_id)).name


def in_run() -> bool:
    """Tell whether the caller is inside a Prefect flow run or task run.

    Returns:
        True inside a run.

    Example:
        >>> in_run()
        False
    """
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """Prefect's run logger inside a flow run, else Prefect's ``prefect.tracking_tasks`` logger.

    A task run outside any flow run (a task called from a script) has no flow run to
    send its logs to: its lines go to the ``prefect.tracking_tasks`` logger, instead of
    Prefect's warning that it cannot send them.

    Returns:
        A logger.

    Example:
        >>> run_logger().name
        'prefect.tracking_tasks'
    """
    task_ctx = TaskRunContext.get()
    in_flow_run = FlowRunContext.get() is not None or (
        task_ctx is not None and task_ctx.task_run.flow_run_id is not None
    )
    return get_run_logger() if in_flow_run else get_logger("tracking_tasks")


class RunLogForwarder(logging.Handler):
    """Hands the plain layer's log records to :func:`run_logger`.

    Attached once to the ``tracking_tasks`` logger when this module is imported; that
    logger stops propagating, so each line is shown once, by Prefect.
    """

    def emit(self, record: logging.LogRecord) -> None:
        target = run_logger()
        if target.isEnabledFor(record.levelno):
            target.log(record.levelno, record.getMessage(), exc_info=record.exc_info)


def _forward_plain_logs() -> None:
    plain = logging.getLogger("tracking_tasks")
    if not any(isinstance(h, RunLogForwarder) for h in plain.handlers):
        plain.addHandler(RunLogForwarder())
        plain.setLevel(logging.DEBUG)  # the run logger's own level decides
        plain.propagate = False


_forward_plain_logs()
