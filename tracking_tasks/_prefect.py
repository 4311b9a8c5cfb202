"""What the current Prefect run is, read from Prefect's context (None outside a run)."""

from __future__ import annotations

from dataclasses import dataclass

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
        deployment_id=str(flow_run.deployment_id) if flow_run and flow_run.deployment_id else None,
        task_run_id=str(task_run.id) if task_run else None,
        task_run_name=task_run.name if task_run else None,
        is_first_attempt=bool(
            task_run is not None
            and task_run.run_count <= 1
            and (task_run.flow_run_run_count or 0) <= 1
            and (flow_run is None or flow_run.run_count <= 1)
        ),
    )


def deployment_name(deployment_id: str | None) -> str | None:
    """Look up a deployment's name through Prefect's runtime module (one API call)."""
    if not deployment_id:
        return None
    from prefect.runtime import deployment

    name = deployment.name
    return str(name) if name else None
