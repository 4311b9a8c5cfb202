"""Coming from the seed: its README's calls as written, and create_mlflow_run as a with block."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from prefect import flow

from tests.helpers import experiment_runs
from tests.servers import MlflowServer
from tracking_tasks import (
    RunRef,
    TrackingConfig,
    create_mlflow_run,
    find_mlflow_runs,
    mlflow_state_hooks,
    setup_mlflow,
)
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.ops._fluent import RunHandle


def test_the_seed_readme_as_written_gets_the_file_store_error(fluent_reset: None) -> None:
    with pytest.raises(TrackingConfigError, match=r"sqlite:///") as caught:
        setup_mlflow(experiment_name="my_experiment", tracking_uri="file:./mlruns")
    assert "file store" in str(caught.value)


def test_the_seed_readme_on_a_server_outside_a_flow(
    tracking_config: TrackingConfig,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    experiment = str(tracking_config.experiment_name)
    # the server in the environment, as a seed user has it: setup_mlflow no longer writes
    # its tracking_uri there for the finders below to inherit
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tracking_config.tracking_uri))
    setup_mlflow(experiment_name=experiment, tracking_uri=tracking_config.tracking_uri)

    # the seed's README, with only the import path changed (and this server's URI)
    with create_mlflow_run(
        run_name="my_training_run", tags={"stage": "training", "backbone": "distilbert"}
    ) as run:
        import mlflow

        mlflow.log_metric("f1", 0.85)
        mlflow.log_param("learning_rate", 2e-5)

    runs = find_mlflow_runs(
        experiment_name=experiment, filter_string="tags.stage='hpo' AND metrics.f1 > 0.8"
    )
    for run in runs:
        print(f"Run: {run.info.run_name}, F1: {run.data.metrics.get('f1')}")

    assert runs == []  # the README's run is a training run, not an hpo one
    (found,) = find_mlflow_runs(
        experiment_name=experiment, filter_string="tags.stage='training' AND metrics.f1 > 0.8"
    )
    assert found.info.run_name == "my_training_run" and found.info.status == "FINISHED"
    assert found.data.metrics == {"f1": 0.85}
    assert found.data.params == {"learning_rate": "2e-05"}
    assert found.data.tags["backbone"] == "distilbert"
    assert pickle.loads(pickle.dumps(found)) == found
    assert found.info.run_id == found.run_id
    assert mlflow.active_run() is None


def test_with_blocks_nest_fail_and_restore_inside_a_flow(tracking_config: TrackingConfig) -> None:
    seen: dict[str, Any] = {}

    @flow(**mlflow_state_hooks())
    def pipeline() -> dict[str, RunRef]:
        ctx = setup_mlflow(tracking_config)
        with create_mlflow_run(run_name="outer") as outer:  # the context: setup_mlflow's
            assert isinstance(outer, RunHandle)
            mlflow.log_metric("outer_metric", 1.0)
            other = threading.Thread(target=lambda: seen.setdefault("thread", mlflow.active_run()))
            other.start()
            other.join()
            with create_mlflow_run(ctx, run_name="inner") as inner:
                mlflow.log_metric("inner_metric", 2.0)
                seen["inner_active"] = mlflow.active_run().info.run_id
            seen["after_inner"] = mlflow.active_run().info.run_id
            try:
                with create_mlflow_run(run_name="broken") as broken:
                    mlflow.log_param("about_to", "fail")
                    raise KeyError("bad batch")
            except KeyError:
                seen["error_propagated"] = True
            seen["after_broken"] = mlflow.active_run().info.run_id
        seen["after_outer"] = mlflow.active_run()
        return {"outer": outer, "inner": inner, "broken": broken}

    refs = pipeline()
    client = MlflowClient(tracking_config.tracking_uri)
    outer, inner, broken = (client.get_run(refs[k].run_id) for k in ("outer", "inner", "broken"))
    assert seen["thread"] is None  # active in the block's thread only
    assert seen["inner_active"] == inner.info.run_id
    assert seen["after_inner"] == seen["after_broken"] == outer.info.run_id
    assert seen["after_outer"] is None and seen["error_propagated"]
    assert outer.info.status == inner.info.status == "FINISHED"
    assert broken.info.status == "FAILED" and broken.data.params == {"about_to": "fail"}
    assert inner.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert broken.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert "mlflow.parentRunId" not in outer.data.tags
    assert outer.data.metrics == {"outer_metric": 1.0} and inner.data.metrics == {
        "inner_metric": 2.0
    }
    assert {r.info.run_id for r in experiment_runs(tracking_config)} == {
        outer.info.run_id,
        inner.info.run_id,
        broken.info.run_id,
    }


def test_an_exception_ends_the_run_failed_outside_a_flow(
    mlflow_server: MlflowServer, tracking_config: TrackingConfig
) -> None:
    ctx = setup_mlflow(tracking_config)
    with pytest.raises(ZeroDivisionError), create_mlflow_run(ctx, run_name="oops") as run:
        mlflow.log_metric("before", 1.0)
        _ = 1 / 0
    assert mlflow.active_run() is None
    got = MlflowClient(mlflow_server.url).get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.metrics == {"before": 1.0}
    # the task form keeps working: a RunRef to pass around, ended by whoever owns it
    plain = create_mlflow_run(ctx, run_name="task-form")
    assert isinstance(plain, RunRef)
    assert MlflowClient(mlflow_server.url).get_run(plain.run_id).info.status == "RUNNING"
    from tracking_tasks import end_mlflow_run

    assert end_mlflow_run(plain) == "FINISHED"


def test_an_omitted_context_falls_back_to_the_environment(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, fluent_reset: None
) -> None:
    from tracking_tasks.handles import TrackingContext
    from tracking_tasks.tasks._run_memory import RunMemory
    from tracking_tasks.tasks._setup import resolve_context

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "omitted-context")
    fresh = RunMemory()  # a process where setup_mlflow never ran
    ctx = resolve_context(None, flow_run_id=None, memory=fresh)
    assert (ctx.tracking_uri, ctx.experiment_name) == (mlflow_server.url, "omitted-context")
    assert fresh.last_context(None) is ctx  # outside a flow too, the process's last setup
    last = TrackingContext(
        tracking_uri="sqlite:///elsewhere.db", experiment_id="9", experiment_name="x",
        config_hash="0" * 64,
    )  # fmt: skip
    fresh.remember_context(None, last)
    assert resolve_context(None, flow_run_id="some-flow-run", memory=fresh) is last
    mine = last.model_copy(update={"experiment_id": "10"})
    fresh.remember_context("some-flow-run", mine)
    assert resolve_context(None, flow_run_id="some-flow-run", memory=fresh) is mine
    # another flow run with no setup of its own: the process's last
    assert resolve_context(None, flow_run_id="another-flow-run", memory=fresh) is mine
    assert resolve_context(last, flow_run_id="some-flow-run", memory=fresh) is last


def test_with_blocks_in_threads_of_two_experiments_never_trip_on_each_others_setup(
    mlflow_server: MlflowServer, tracking_config: TrackingConfig
) -> None:
    """Two experiments' setups point MLflow's process-wide fluent state in turn while
    threads enter run blocks in both: ``mlflow.start_run`` checks the active experiment,
    so a setup landing between a handle's pointing and its resume used to fail it with
    "active experiment ID does not match"."""
    base = str(tracking_config.experiment_name)
    contexts = [
        setup_mlflow(tracking_config.model_copy(update={"experiment_name": f"{base}-{i}"}))
        for i in range(2)
    ]
    stop = threading.Event()
    errors: list[BaseException] = []
    logged: list[tuple[str, str]] = []

    def repoint() -> None:
        from tracking_tasks._environment import point_fluent_api

        while not stop.is_set():
            for ctx in contexts:
                point_fluent_api(ctx)

    def blocks(ctx: Any) -> None:
        try:
            for i in range(15):
                with create_mlflow_run(ctx, run_name=f"b{i}") as run:
                    mlflow.log_metric("i", float(i))
                logged.append((ctx.experiment_id, run.run_id))
        except BaseException as exc:  # the test reports every failure
            errors.append(exc)

    pointer = threading.Thread(target=repoint)
    pointer.start()
    workers = [threading.Thread(target=blocks, args=(ctx,)) for ctx in contexts for _ in range(2)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        stop.set()
        pointer.join()
    assert errors == []
    client = MlflowClient(mlflow_server.url)
    assert len(logged) == 60
    for experiment_id, run_id in logged:
        got = client.get_run(run_id)
        assert got.info.experiment_id == experiment_id and got.info.status == "FINISHED"
        assert got.data.metrics["i"] >= 0
