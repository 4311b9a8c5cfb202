"""create_mlflow_run: tags, nesting, link artifact, idempotency under retries, threads."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from tests.helpers import experiment_runs, flow_run_artifacts, task_run_states
from tracking_tasks import (
    RunRef,
    TrackingConfig,
    config_hash,
    create_mlflow_run,
    log_metrics,
    mlflow_state_hooks,
    setup_mlflow,
)
from tracking_tasks.errors import InvalidLogDataError

# every test here that uses the server runs on SQLite and on PostgreSQL (conftest.py)
pytestmark = pytest.mark.backends


def test_run_is_tagged_with_prefect_identity_and_config_hash(
    tracking_config: TrackingConfig,
) -> None:
    config = {"lr": 0.1, "layers": [2, 3]}
    cfg = tracking_config.model_copy(update={"tags": {"team": "nlp"}})

    @flow(name="tagged-flow", **mlflow_state_hooks())
    def pipeline() -> RunRef:
        ctx = setup_mlflow(cfg)
        return create_mlflow_run(ctx, run_name="train", config=config, tags={"stage": "training"})

    state = pipeline(return_state=True)
    ref = state.result()
    run = MlflowClient(tracking_config.tracking_uri).get_run(ref.run_id)
    tags = run.data.tags
    assert run.info.run_name == ref.run_name == "train"
    assert tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    assert tags["prefect.flow_name"] == "tagged-flow"
    assert tags["prefect.flow_run_name"]
    assert tags["prefect.task_run_id"]
    assert tags["tracking_tasks.config_hash"] == config_hash(config) == ref.config_hash
    assert tags["stage"] == "training" and tags["team"] == "nlp"
    assert "prefect.deployment_id" not in tags  # no deployment here
    assert run.info.status == "FINISHED"


def test_link_artifact_points_at_the_run_page(tracking_config: TrackingConfig) -> None:
    @flow(**mlflow_state_hooks())
    def pipeline() -> RunRef:
        return create_mlflow_run(setup_mlflow(tracking_config), run_name="linked")

    state = pipeline(return_state=True)
    ref = state.result()
    # Prefect 3.9 stores a link artifact as markdown: [text](url)
    links = [a.data for a in flow_run_artifacts(state.state_details.flow_run_id)]
    assert links == [f"[MLflow run linked]({ref.url})"]
    assert ref.url == (
        f"{tracking_config.tracking_uri}/#/experiments/{ref.experiment_id}/runs/{ref.run_id}?workflowType=machine_learning"
    )


def test_no_link_for_a_local_store(tmp_path, fluent_reset) -> None:  # type: ignore[no-untyped-def]
    @flow(**mlflow_state_hooks())
    def pipeline() -> RunRef:
        ctx = setup_mlflow(tracking_uri=f"sqlite:///{tmp_path / 'local.db'}", experiment_name="l")
        return create_mlflow_run(ctx, run_name="local")

    state = pipeline(return_state=True)
    assert state.result().url is None
    assert flow_run_artifacts(state.state_details.flow_run_id) == []
    status = MlflowClient(f"sqlite:///{tmp_path / 'local.db'}").get_run(state.result().run_id)
    assert status.info.status == "FINISHED"


def test_nested_run(tracking_config: TrackingConfig) -> None:
    @flow(**mlflow_state_hooks())
    def pipeline() -> tuple[RunRef, RunRef]:
        ctx = setup_mlflow(tracking_config)
        parent = create_mlflow_run(ctx, run_name="sweep")
        child = create_mlflow_run(ctx, run_name="trial-0", parent_run_id=parent)
        return parent, child

    parent, child = pipeline()
    run = MlflowClient(tracking_config.tracking_uri).get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert child.parent_run_id == parent.run_id
    assert {r.info.status for r in experiment_runs(tracking_config)} == {"FINISHED"}


def test_task_retry_gets_the_same_run(tracking_config: TrackingConfig) -> None:
    attempts: list[str] = []

    @task(retries=2, retry_delay_seconds=0)
    def open_and_fail_twice(ctx):  # type: ignore[no-untyped-def]
        ref = create_mlflow_run.fn(ctx, run_name="flaky", config={"seed": 1})
        attempts.append(ref.run_id)
        if len(attempts) < 3:
            raise ConnectionResetError("network blip after the run was created")
        return ref

    @flow(**mlflow_state_hooks())
    def pipeline() -> RunRef:
        return open_and_fail_twice(setup_mlflow(tracking_config))

    state = pipeline(return_state=True)
    assert state.is_completed()
    assert len(set(attempts)) == 1 and len(attempts) == 3
    runs = experiment_runs(tracking_config)
    assert [r.info.run_id for r in runs] == [attempts[0]]
    assert runs[0].info.status == "FINISHED"
    histories = task_run_states(state.state_details.flow_run_id, "open_and_fail_twice")
    assert histories[0].count("Retrying") == 2


@pytest.mark.parametrize("new_process", [False, True], ids=["same-process", "new-process"])
def test_flow_retry_gets_the_same_run_and_reopens_it(
    tracking_config: TrackingConfig, new_process: bool
) -> None:
    """The retry finds the run from this process's memory, or (as a retry in a fresh
    process would) by searching the server for the run's identity tag."""
    from prefect.runtime import flow_run

    from tracking_tasks import end_mlflow_run
    from tracking_tasks.tasks._run_memory import RUN_MEMORY

    seen: list[str] = []

    @flow(retries=1, retry_delay_seconds=0, **mlflow_state_hooks())
    def pipeline() -> RunRef:
        ctx = setup_mlflow(tracking_config)
        ref = create_mlflow_run(ctx, run_name="train", config={"lr": 0.1})
        log_metrics(ref, {"attempt": len(seen)}, step=len(seen))
        seen.append(ref.run_id)
        if len(seen) == 1:
            end_mlflow_run(ref, "FAILED")  # the first attempt even ended it
            if new_process:
                RUN_MEMORY.forget(str(flow_run.id))  # as a fresh process knows nothing
            raise RuntimeError("first attempt fails")
        return ref

    state = pipeline(return_state=True)
    assert state.is_completed()
    runs = experiment_runs(tracking_config)
    assert len(runs) == 1 and seen == [runs[0].info.run_id] * 2
    assert runs[0].info.status == "FINISHED"
    history = MlflowClient(tracking_config.tracking_uri).get_metric_history(seen[0], "attempt")
    assert sorted(m.step for m in history) == [0, 1]


def test_same_identity_shares_a_run_unless_keyed_apart(tracking_config: TrackingConfig) -> None:
    @flow(**mlflow_state_hooks())
    def pipeline() -> list[str]:
        ctx = setup_mlflow(tracking_config)
        a = create_mlflow_run(ctx, run_name="trial", config={"x": 1})
        b = create_mlflow_run(ctx, run_name="trial", config={"x": 1})
        c = create_mlflow_run(ctx, run_name="trial", config={"x": 1}, idempotency_key="2")
        d = create_mlflow_run(ctx, run_name="trial", config={"x": 2})
        return [a.run_id, b.run_id, c.run_id, d.run_id]

    a, b, c, d = pipeline()
    assert a == b
    assert len({a, c, d}) == 3
    assert len(experiment_runs(tracking_config)) == 3


def test_another_flow_run_gets_a_new_run(tracking_config: TrackingConfig) -> None:
    @flow(**mlflow_state_hooks())
    def pipeline() -> str:
        return create_mlflow_run(setup_mlflow(tracking_config), run_name="nightly").run_id

    assert pipeline() != pipeline()
    assert [r.info.status for r in experiment_runs(tracking_config)] == ["FINISHED"] * 2


def test_eight_threads_get_eight_runs_all_ended(tracking_config: TrackingConfig) -> None:
    @flow(task_runner=ThreadPoolTaskRunner(max_workers=8), **mlflow_state_hooks())
    def pipeline() -> list[RunRef]:
        ctx = setup_mlflow(tracking_config)
        futures = [create_mlflow_run.submit(ctx, run_name=f"trial-{i}") for i in range(8)]
        refs = [f.result() for f in futures]
        logged = [log_metrics.submit(r, {"trial": i}) for i, r in enumerate(refs)]
        for f in logged:
            f.result()
        return refs

    refs = pipeline()
    runs = {r.info.run_id: r for r in experiment_runs(tracking_config)}
    assert len(runs) == 8 == len({r.run_id for r in refs})
    for i, ref in enumerate(refs):
        run = runs[ref.run_id]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"trial-{i}"
        assert run.data.metrics == {"trial": float(i)}


def test_outside_a_flow_each_call_is_a_new_run(tracking_config: TrackingConfig) -> None:
    ctx = setup_mlflow.fn(tracking_config)
    a = create_mlflow_run.fn(ctx, run_name="adhoc")
    b = create_mlflow_run.fn(ctx, run_name="adhoc")
    assert a.run_id != b.run_id
    client = MlflowClient(tracking_config.tracking_uri)
    for ref in (a, b):
        assert client.get_run(ref.run_id).info.status == "RUNNING"
        client.set_terminated(ref.run_id)


def test_bad_tag_fails_before_any_run_is_created(tracking_config: TrackingConfig) -> None:
    ctx = setup_mlflow.fn(tracking_config)
    with pytest.raises(InvalidLogDataError, match="must be strings"):
        create_mlflow_run.fn(ctx, run_name="x", tags={1: "one"})  # type: ignore[dict-item]
    with pytest.raises(InvalidLogDataError, match="8000"):
        create_mlflow_run.fn(ctx, run_name="x", tags={"k": "v" * 9000})
    assert experiment_runs(tracking_config) == []
