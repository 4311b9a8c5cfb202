"""Small helpers the tests share: reading what landed in MLflow and Prefect."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from prefect.client.orchestration import get_client

from tracking_tasks import TrackingConfig


def experiment_runs(config: TrackingConfig) -> list[Run]:
    """Every run (active or deleted) in the config's experiment, oldest first."""
    assert config.tracking_uri is not None
    client = MlflowClient(config.tracking_uri)
    experiment = client.get_experiment_by_name(str(config.experiment_name))
    if experiment is None:
        return []
    return list(
        client.search_runs(
            [experiment.experiment_id],
            run_view_type=ViewType.ALL,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
        )
    )


def flow_run_artifacts(flow_run_id: UUID | str) -> list[Any]:
    """Prefect artifacts created under a flow run (after the background writes land)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tracking_tasks.tasks.registry import RUN_REGISTRY

    assert RUN_REGISTRY.writer.flush(30), "the background Prefect writes did not finish"

    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run_id))])
                )
            )
        )


def task_run_states(flow_run_id: UUID | str, task_name_prefix: str) -> list[list[str]]:
    """The state names each task run of a flow run went through, oldest first."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))]))
        )
        histories = []
        for task_run in task_runs:
            if task_run.name.startswith(task_name_prefix):
                states = client.read_task_run_states(task_run.id)
                histories.append([s.name for s in sorted(states, key=lambda s: s.timestamp)])
        return histories
