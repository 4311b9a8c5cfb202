"""Concurrency soak: 16 flow runs at once, each opening 8 runs from 8 threads and logging
10,000 metric points in all, against one real `mlflow server`.

The 16 flow runs are threads of this process, not processes: what is soaked is the
library's shared state under concurrent writers (the per-URI MlflowClient, the run
registry's identity locks, RunLogger buffers, the background Prefect writer) and the one
server behind them. Sixteen processes would each import Prefect and MLflow (~5 CPU-s
each on this 2-core machine) and would share none of that state; flow runs in other
processes are the Dask, worker and reconcile tiers' subject.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from mlflow import MlflowClient
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from tests.helpers import experiment_runs
from tests.servers import MlflowServer, start_mlflow_server
from tracking_tasks import RunLogger, TrackingConfig, TrackingContext, mlflow_state_hooks
from tracking_tasks.ops._setup import setup_mlflow
from tracking_tasks.tags import CONFIG_HASH_TAG, FLOW_RUN_TAG, IDENTITY_TAG
from tracking_tasks.tasks._runs import open_mlflow_run

FLOW_RUNS = 16
THREADS = 8
POINTS_PER_FLOW_RUN = 10_000
POINTS_PER_RUN = POINTS_PER_FLOW_RUN // THREADS
T0 = 1_700_000_000_000


def _expected(flow_index: int, worker: int) -> list[tuple[str, float, int, int]]:
    base = flow_index * 100.0 + worker
    return [("loss", base + i / POINTS_PER_RUN, i, T0 + i) for i in range(POINTS_PER_RUN)]


@task
def open_and_log(context: TrackingContext, flow_index: int, worker: int) -> int:
    run = open_mlflow_run(
        context, f"soak-{flow_index}-{worker}", config={"flow": flow_index, "worker": worker}
    )
    with RunLogger(run, flush_interval_seconds=None) as log:
        for key, value, step, ts in _expected(flow_index, worker):
            log.log_metric(key, value, step, timestamp=ts)
    return log.points_sent


@flow(task_runner=ThreadPoolTaskRunner(max_workers=THREADS), **mlflow_state_hooks())
def soak(context: TrackingContext, flow_index: int) -> int:
    futures = [open_and_log.submit(context, flow_index, w) for w in range(THREADS)]
    return sum(f.result() for f in futures)


@pytest.fixture(scope="module")
def soak_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """An `mlflow server` sized for 128 concurrent writers.

    With MLflow's default SQLAlchemy pool (5 connections + 10 overflow, 30 s wait) the
    session's server answered many of the 128 writers ``400 BAD_REQUEST: QueuePool limit
    of size 5 overflow 10 reached`` on this loaded machine: a 400, so MLflow's client does
    not retry it. A server for this many writers needs a pool as large as its request
    threads (uvicorn's thread pool: 40).
    """
    server = start_mlflow_server(
        tmp_path_factory.mktemp("mlflow-soak"),
        env_extra={
            "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "40",
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "0",
        },
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_16_concurrent_flow_runs_of_8_threads_lose_no_point_and_duplicate_no_run(
    soak_server: MlflowServer, fluent_reset: None
) -> None:
    tracking_config = TrackingConfig(experiment_name="soak", tracking_uri=soak_server.url)
    context = setup_mlflow(tracking_config)

    def start(index: int) -> Any:
        # 0.5 s apart: sixteen flow runs created in the same instant made the test
        # harness's Prefect server (SQLite) answer 503 past the client's retries here
        time.sleep(index * 0.5)
        return soak(context, index, return_state=True)

    with ThreadPoolExecutor(FLOW_RUNS) as pool:
        states = list(pool.map(start, range(FLOW_RUNS)))
    assert [s.type.value for s in states] == ["COMPLETED"] * FLOW_RUNS, [s.message for s in states]
    assert [s.result() for s in states] == [POINTS_PER_FLOW_RUN] * FLOW_RUNS

    runs = experiment_runs(tracking_config)
    assert len(runs) == FLOW_RUNS * THREADS
    identities = Counter((r.data.tags[FLOW_RUN_TAG], r.data.tags[IDENTITY_TAG]) for r in runs)
    assert max(identities.values()) == 1  # no run opened twice
    assert len({r.data.tags[CONFIG_HASH_TAG] for r in runs}) == FLOW_RUNS * THREADS
    assert len({r.data.tags[FLOW_RUN_TAG] for r in runs}) == FLOW_RUNS
    assert {r.info.status for r in runs} == {"FINISHED"}

    client = MlflowClient(tracking_config.tracking_uri)
    for run in runs:
        _, flow_index, worker = str(run.info.run_name).split("-")
        history = sorted(
            (m.key, m.value, m.step, m.timestamp)
            for m in client.get_metric_history(run.info.run_id, "loss")
        )
        assert history == _expected(int(flow_index), int(worker)), run.info.run_name
