"""What the current Prefect run is, read from Prefect's context (None outside a run)."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext


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
            "prefect.flow_run_id": self.flow_run_id,
            "prefect.flow_run_name": self.flow_run_name,
            "prefect.flow_name": self.flow_name,
            "prefect.deployment_id": self.deployment_id,
            "prefect.task_run_id": self.task_run_id,
        }
        return {key: value for key, value in pairs.items() if value}


def current_run_info() -> PrefectRunInfo:
    """Read the current flow run and task run from Prefect's context variables."""
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
    """The deployment of the top-level flow run, also seen from its subflows.

    Prefect sets a context variable for a deployment's top-level flow run that nested
    flows inherit (a subflow's own flow run has no deployment id). Read without an API
    call, unlike ``prefect.runtime.deployment.id`` outside a deployment.
    """
    try:
        from prefect.context import _deployment_id as deployment_var

        if (value := deployment_var.get()) is not None:
            return str(value)
    except ImportError:  # an older or newer Prefect without the variable
        pass
    deployment_id = getattr(flow_run, "deployment_id", None)
    return str(deployment_id) if deployment_id else None


@functools.lru_cache(maxsize=256)
def deployment_name(deployment_id: str | None) -> str | None:
    """Look up a deployment's name (one API call per deployment and process)."""
    if not deployment_id:
        return None
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment(uuid.UUID(deployment_id)).name
