"""track_sweep's trials on a real Dask LocalCluster of worker processes, real Prefect API."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import dask
import pytest
from distributed import LocalCluster
from mlflow import MlflowClient
from prefect import flow
from prefect_dask import DaskTaskRunner

from tests.helpers import experiment_runs, on_prefect_api
from tests.servers import MlflowServer, PrefectServer
from tracking_tasks import (
    RunLogger,
    TrackingConfig,
    mlflow_state_hooks,
    setup_mlflow,
    track_sweep,
)
from tracking_tasks.errors import InvalidArgumentError

# a cluster start and worker processes that import Prefect and MLflow: minutes on 2 busy cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

N_TRIALS = 32
STEPS = 5


@pytest.fixture(scope="module")
def dask_cluster(prefect_server: PrefectServer) -> Iterator[LocalCluster]:
    """Two worker processes (two threads each) and a scheduler that fails a task at the
    first worker it kills (the default retries it on another worker three times)."""
    # only while the cluster starts: this module's fixtures outlive its tests (the
    # backends marker groups every module's sqlite tests first), and a setting held
    # here would point the tests run in between at this server
    with (
        on_prefect_api(prefect_server.api),
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
    ):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def on_dask(dask_cluster: LocalCluster, prefect_server: PrefectServer) -> Iterator[str]:
    """The test process on the real Prefect API the workers use; yields the scheduler."""
    with on_prefect_api(prefect_server.api):
        yield dask_cluster.scheduler_address


def objective(params: dict[str, Any], log: RunLogger) -> dict[str, float]:
    """A module-level objective: pickled by reference, imported by the workers."""
    i = params["i"]
    for step in range(STEPS):
        log.log_metric("curve", i * 100 + step * 0.5, step)
    return {"score": float(i * 10 + params["x"]), "pid": float(os.getpid())}


@pytest.mark.backends
def test_dask_sweep_32_trials_each_run_holds_exactly_its_own_params_and_metrics(
    on_dask: str, tracking_config: TrackingConfig
) -> None:
    trials = [{"i": i, "x": (i * 7) % 5, "opt": {"lr": i / 100}} for i in range(N_TRIALS)]
    sweep = track_sweep.with_options(task_runner=DaskTaskRunner(address=on_dask))

    @flow(**mlflow_state_hooks())
    def hpo() -> Any:
        return sweep(objective, trials, metric="score", context=setup_mlflow(tracking_config))

    state = hpo(return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    runs = experiment_runs(tracking_config)
    parents = [r for r in runs if r.info.run_name == "sweep"]
    children = [r for r in runs if r.info.run_name != "sweep"]
    assert len(parents) == 1 and len(children) == N_TRIALS
    parent = parents[0]
    indexes = sorted(int(r.data.tags["tracking_tasks.trial_index"]) for r in children)
    assert indexes == list(range(N_TRIALS))  # none lost, none twice
    client = MlflowClient(tracking_config.tracking_uri)
    pids = set()
    for child in children:
        i = int(child.data.tags["tracking_tasks.trial_index"])
        assert child.info.run_name == f"trial-{i}"
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params == {"i": str(i), "x": str((i * 7) % 5), "opt.lr": str(i / 100)}
        assert child.data.metrics["score"] == i * 10 + (i * 7) % 5
        history = client.get_metric_history(child.info.run_id, "curve")
        assert sorted((m.step, m.value) for m in history) == [
            (s, i * 100 + s * 0.5) for s in range(STEPS)
        ]
        pids.add(int(child.data.metrics["pid"]))
    workers = set(worker_pids(on_dask).values())
    assert pids <= workers and os.getpid() not in pids  # trials ran in the worker processes
    assert parent.info.status == "FINISHED"
    assert parent.info.end_time >= max(c.info.end_time for c in children)
    assert result.best.index == N_TRIALS - 1  # score i*10 + x: the last trial is best
    assert parent.data.tags["tracking_tasks.best_run_id"] == result.best.run_id


def worker_pids(address: str) -> dict[str, int]:
    from distributed import Client

    with Client(address) as client:
        return dict(client.run(os.getpid))


def test_dask_sweep_that_fails_ends_every_run_opened_on_the_workers(
    on_dask: str, tracking_config: TrackingConfig
) -> None:
    killer = 0  # a closure objective (pickled by value): trial 0 kills its worker process

    def doomed(params: dict[str, Any], log: RunLogger) -> dict[str, float]:
        log.log_metric("started", 1.0, 0)
        log.flush()
        if params["i"] == killer:
            os._exit(1)  # the worker dies with the trial's run open: no hook of it runs
        raise ValueError(f"trial {params['i']} diverged")

    sweep = track_sweep.with_options(task_runner=DaskTaskRunner(address=on_dask))

    @flow(**mlflow_state_hooks())
    def hpo() -> Any:
        trials = [{"i": i} for i in range(4)]
        return sweep(doomed, trials, metric="score", context=setup_mlflow(tracking_config))

    state = hpo(return_state=True)
    assert state.is_failed()
    assert "SweepFailedError" in str(state.message) or "every trial" in str(state.message)
    runs = experiment_runs(tracking_config)
    assert [r.info.status for r in runs] == ["FAILED"] * len(runs)
    children = [r for r in runs if r.info.run_name != "sweep"]
    indexes = [int(r.data.tags["tracking_tasks.trial_index"]) for r in children]
    assert len(indexes) == len(set(indexes)) and set(indexes) <= {0, 1, 2, 3}
    dead = [r for r in children if r.info.run_name == f"trial-{killer}"]
    # ended by the sweep when the trial's task failed, with no final Prefect state (the
    # task run died with its worker): the hooks would have tagged the flow's "Failed"
    assert len(dead) == 1 and dead[0].data.tags["prefect.final_state"] == "Crashed"


def test_dask_sweep_refuses_an_objective_that_cannot_travel_before_writing(
    on_dask: str, tracking_config: TrackingConfig
) -> None:
    lock = threading.Lock()

    def holds_a_lock(params: dict[str, Any], log: RunLogger) -> dict[str, float]:
        with lock:
            return {"score": 1.0}

    sweep = track_sweep.with_options(task_runner=DaskTaskRunner(address=on_dask))

    @flow
    def hpo() -> Any:
        return sweep(holds_a_lock, [{"i": 0}], metric="score", context=tracking_config)

    with pytest.raises(InvalidArgumentError, match="cannot be pickled") as info:
        hpo()
    assert "module level" in str(info.value)
    assert experiment_runs(tracking_config) == []


def test_dask_sweep_in_an_mlflow_workspace_writes_every_trial_there(
    on_dask: str, workspace_mlflow_server: MlflowServer, fluent_reset: None
) -> None:
    """Trials run in worker processes that never saw the flow's workspace: each handle
    carries it, so every trial's requests (runs, metrics, hooks) go to team-b."""
    url, name = workspace_mlflow_server.url, f"dask-workspace-{os.getpid()}"
    sweep = track_sweep.with_options(task_runner=DaskTaskRunner(address=on_dask))
    trials = [{"i": i, "x": i % 3} for i in range(8)]

    @flow(**mlflow_state_hooks())
    def hpo() -> Any:
        ctx = setup_mlflow(experiment_name=name, tracking_uri=url, workspace="team-b")
        return sweep(objective, trials, metric="score", context=ctx)

    state = hpo(return_state=True)
    assert state.is_completed(), state.message
    for workspace, expected in (("team-b", 9), ("team-a", 0), ("default", 0)):
        runs = runs_of(url, workspace, name)
        assert len(runs) == expected, workspace
        assert {r.info.status for r in runs} <= {"FINISHED"}
    metrics = [r.data.metrics for r in runs_of(url, "team-b", name)]
    pids = {int(m["pid"]) for m in metrics if "pid" in m}
    assert pids and os.getpid() not in pids  # the trials ran in the Dask workers


def runs_of(url: str, workspace: str, name: str) -> list[Any]:
    from tracking_tasks.ops import workspace_scope

    with workspace_scope(workspace):
        client = MlflowClient(url)
        found = client.get_experiment_by_name(name)
        return list(client.search_runs([found.experiment_id])) if found is not None else []
