"""Ending runs: Prefect final state -> MLflow status, through hooks and end_mlflow_run."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Cancelling

from tests.helpers import experiment_runs
from tracking_tasks import (
    RunRef,
    TrackingConfig,
    create_mlflow_run,
    end_mlflow_run,
    mlflow_state_hooks,
    setup_mlflow,
)
from tracking_tasks.tasks._run_memory import LOCATION_LABEL_PREFIX, RUN_MEMORY, RunMemory

# every test here that uses the server runs on SQLite and on PostgreSQL (conftest.py)
pytestmark = pytest.mark.backends


def _statuses(config: TrackingConfig) -> dict[str, tuple[str, str | None]]:
    return {
        r.info.run_name: (r.info.status, r.data.tags.get("prefect.final_state"))
        for r in experiment_runs(config)
    }


def test_completed_flow_finishes_its_runs(tracking_config: TrackingConfig) -> None:
    @flow(**mlflow_state_hooks())
    def pipeline() -> None:
        ctx = setup_mlflow(tracking_config)
        create_mlflow_run(ctx, run_name="a")
        create_mlflow_run(ctx, run_name="b")

    assert pipeline(return_state=True).is_completed()
    assert _statuses(tracking_config) == {
        "a": ("FINISHED", "Completed"),
        "b": ("FINISHED", "Completed"),
    }


def test_failed_flow_fails_its_runs(tracking_config: TrackingConfig) -> None:
    @flow(**mlflow_state_hooks())
    def pipeline() -> None:
        create_mlflow_run(setup_mlflow(tracking_config), run_name="a")
        raise ValueError("training diverged")

    state = pipeline(return_state=True)
    assert state.is_failed()
    assert _statuses(tracking_config) == {"a": ("FAILED", "Failed")}


def test_crashed_flow_fails_its_runs(tracking_config: TrackingConfig) -> None:
    @flow(**mlflow_state_hooks())
    def pipeline() -> None:
        create_mlflow_run(setup_mlflow(tracking_config), run_name="a")
        raise SystemExit(3)  # not an Exception: Prefect reports the flow run Crashed

    with pytest.raises(SystemExit):
        pipeline(return_state=True)
    assert _statuses(tracking_config) == {"a": ("FAILED", "Crashed")}


def test_cancellation_hook_kills_runs_from_another_process(
    tracking_config: TrackingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect's runner calls on_cancellation hooks in its own process with a Cancelling
    state; that process never saw the runs opened, so the hook finds them through the
    flow run's labels. Here the runs are forgotten in-process to stand for that."""

    @flow(**mlflow_state_hooks())
    def pipeline() -> RunRef:
        return create_mlflow_run(setup_mlflow(tracking_config), run_name="a")

    state = pipeline(return_state=True)
    ref = state.result()
    flow_run_id = state.state_details.flow_run_id
    assert RUN_MEMORY.writer.flush(30)  # the label goes out in the background
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    assert any(k.startswith(LOCATION_LABEL_PREFIX) for k in flow_run.labels)
    MlflowClient(tracking_config.tracking_uri).update_run(ref.run_id, status="RUNNING")
    # a fresh process: nothing remembered, and another name in the labels
    hooks = mlflow_state_hooks(memory=RunMemory())["on_cancellation"]
    for hook in hooks:
        hook(pipeline, flow_run, Cancelling())
    assert _statuses(tracking_config)["a"][0] == "KILLED"


def test_ended_run_is_not_overwritten(tracking_config: TrackingConfig) -> None:
    @flow(**mlflow_state_hooks())
    def pipeline() -> None:
        ctx = setup_mlflow(tracking_config)
        done = create_mlflow_run(ctx, run_name="done")
        assert end_mlflow_run(done) == "FINISHED"
        create_mlflow_run(ctx, run_name="open")
        raise RuntimeError("later stage fails")

    assert pipeline(return_state=True).is_failed()
    statuses = _statuses(tracking_config)
    assert statuses["done"] == ("FINISHED", None)
    assert statuses["open"] == ("FAILED", "Failed")


def test_runs_outside_the_flow_run_are_left_alone(tracking_config: TrackingConfig) -> None:
    ctx = setup_mlflow.fn(tracking_config)
    outsider = create_mlflow_run.fn(ctx, run_name="outsider")

    @flow(**mlflow_state_hooks())
    def pipeline() -> None:
        create_mlflow_run(setup_mlflow(tracking_config), run_name="mine")
        raise RuntimeError("boom")

    pipeline(return_state=True)
    statuses = _statuses(tracking_config)
    assert statuses["mine"] == ("FAILED", "Failed")
    assert statuses["outsider"] == ("RUNNING", None)
    MlflowClient(tracking_config.tracking_uri).set_terminated(outsider.run_id)


def test_end_mlflow_run_keeps_an_existing_end(tracking_config: TrackingConfig) -> None:
    ctx = setup_mlflow.fn(tracking_config)
    ref = create_mlflow_run.fn(ctx, run_name="x")
    assert end_mlflow_run.fn(ref, "KILLED") == "KILLED"
    assert end_mlflow_run.fn(ref, "FINISHED") == "KILLED"
    assert MlflowClient(tracking_config.tracking_uri).get_run(ref.run_id).info.status == "KILLED"
    with pytest.raises(ValueError, match="FINISHED, FAILED, KILLED"):
        end_mlflow_run.fn(ref, "DONE")  # type: ignore[arg-type]


def test_hook_failure_is_reported_and_state_kept(tracking_config: TrackingConfig) -> None:
    """A tracking server that is gone at the end must not turn a Completed flow into
    anything else; the hook's error is logged by Prefect."""
    ctx = setup_mlflow.fn(tracking_config)
    gone = ctx.model_copy(update={"experiment_id": "999999"})

    @flow(**mlflow_state_hooks(gone))
    def pipeline() -> str:
        return "ok"

    state = pipeline(return_state=True)
    assert state.is_completed() and state.result() == "ok"
