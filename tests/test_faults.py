"""Faults between the library and its servers, through tests/faultproxy.py (its own
process) and real restarts: what arrives on the MLflow server equals what was logged,
point for point (key, value, step, timestamp), and every run ends."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from mlflow import MlflowClient
from prefect import flow, task
from prefect.client.orchestration import get_client as prefect_client

from tests import fault_flow
from tests.servers import FaultProxy, MlflowServer, start_fault_proxy
from tracking_tasks import (
    RunLogger,
    RunRef,
    TrackingConfig,
    create_mlflow_run,
    mlflow_state_hooks,
    setup_mlflow,
)
from tracking_tasks.errors import ArtifactError, TrackingServerError
from tracking_tasks.ops._artifacts.transport import RETRY_AFTER_MAX_SECONDS
from tracking_tasks.ops._artifacts.upload import upload_artifacts

LOG_BATCH = r"^POST /api/2\.0/mlflow/runs/log-batch"
ARTIFACT_PUTS = r"^PUT /api/2\.0/mlflow-artifacts/artifacts/"
T0 = 1_700_000_000_000
Point = tuple[str, float, int, int]


@pytest.fixture(scope="module")
def proxy(mlflow_server: MlflowServer) -> Iterator[FaultProxy]:
    """One fault proxy in front of the session's mlflow server; each test sets its fault."""
    started = start_fault_proxy(mlflow_server.url)
    try:
        yield started
    finally:
        started.stop()


def _set(proxy: FaultProxy, **options: Any) -> None:
    """Configure every option (unnamed ones back to harmless defaults); counters reset."""
    proxy.set(**options)


def _via(config: TrackingConfig, proxy: FaultProxy) -> TrackingConfig:
    return config.model_copy(update={"tracking_uri": proxy.url})


def _points(n: int, key: str = "loss", offset: float = 0.0) -> list[Point]:
    return [(key, offset + i / 7, i, T0 + i) for i in range(n)]


def _log(run: RunRef, points: list[Point]) -> RunLogger:
    with RunLogger(run, flush_interval_seconds=None) as log:
        for key, value, step, ts in points:
            log.log_metric(key, value, step, timestamp=ts)
    return log


def _history(uri: str, run_id: str, *keys: str) -> list[Point]:
    """The server's full metric histories of ``keys``, as sorted points."""
    client = MlflowClient(uri)
    return sorted(
        (m.key, m.value, m.step, m.timestamp)
        for key in keys
        for m in client.get_metric_history(run_id, key)
    )


def _task_states(flow_run_id: str, name: str) -> list[str]:
    """The current state name of each task run ``name`` of a flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(str(t.state_name) for t in task_runs if t.name.startswith(name))


def _plain_run(config: TrackingConfig, name: str) -> RunRef:
    from tracking_tasks.ops._runs import create_mlflow_run as plain_create

    return plain_create(setup_mlflow.fn(config), run_name=name)


# --- RunLogger delivery -------------------------------------------------------------


def test_run_logger_flush_failing_after_its_first_batch_resends_only_the_rest(
    tracking_config: TrackingConfig, proxy: FaultProxy
) -> None:
    run = _plain_run(_via(tracking_config, proxy), "partial-flush")
    # 2,500 keys at one step: one flush of three log_batch requests; the second is refused
    metrics = {f"m{i:04d}": float(i) for i in range(2500)}
    _set(proxy, fault="403", after=1, first=1, match=LOG_BATCH)
    log = RunLogger(run, flush_interval_seconds=None)
    with pytest.raises(TrackingServerError, match="403"):
        log.log_metrics(metrics, step=3)
    assert log.points_sent == 1000  # the first request landed and left the buffer
    _set(proxy, match=LOG_BATCH)
    log.flush()
    assert proxy.stats()["candidates"] == 2  # only the 1,500 points still buffered
    assert log.requests_sent == 3 and log.points_sent == 2500
    client = MlflowClient(tracking_config.tracking_uri)
    assert client.get_run(run.run_id).data.metrics == metrics
    for key in ("m0000", "m0999", "m1000", "m2499"):  # one point each, none twice
        (point,) = client.get_metric_history(run.run_id, key)
        assert (point.value, point.step) == (metrics[key], 3)


@pytest.mark.parametrize(
    ("fault", "options"),
    [("stall", {"stall_seconds": 1}), ("reset", {})],
    ids=["reply-lost", "request-cut"],
)
def test_log_batch_with_lost_reply_or_cut_request_is_resent_and_stored_once(
    tracking_config: TrackingConfig, proxy: FaultProxy, fault: str, options: dict[str, Any]
) -> None:
    run = _plain_run(_via(tracking_config, proxy), f"lost-{fault}")
    points = _points(2500)
    _set(proxy, fault=fault, after=1, first=1, match=LOG_BATCH, **options)
    log = _log(run, points)
    stats = proxy.stats()
    # MLflow's client sent the faulted batch again; the server keeps a point once
    assert stats["injected"] == 1 and stats["candidates"] == log.requests_sent + 1 == 4, stats
    assert _history(str(tracking_config.tracking_uri), run.run_id, "loss") == points


# --- Retry-After --------------------------------------------------------------------


@pytest.mark.parametrize("status", ["429", "503"])
def test_mlflow_client_honours_retry_after_and_the_points_arrive_complete(
    tracking_config: TrackingConfig, proxy: FaultProxy, status: str
) -> None:
    run = _plain_run(_via(tracking_config, proxy), f"retry-after-{status}")
    points = _points(2100)
    _set(proxy, fault=status, first=2, retry_after="1", match=LOG_BATCH)
    log = _log(run, points)
    stats = proxy.stats()
    assert stats["injected"] == 2 and stats["candidates"] == log.requests_sent + 2, stats
    assert _history(str(tracking_config.tracking_uri), run.run_id, "loss") == points


def _tree(root: Path) -> dict[str, bytes]:
    files = {"a.txt": b"a" * 10, "nested/b.bin": os.urandom(3000), "big.bin": os.urandom(1 << 21)}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


@pytest.mark.parametrize(
    ("status", "target"),
    [("429", r"big\.bin"), ("503", r"a\.txt")],
    ids=["429-streamed-file", "503-small-file"],
)
def test_artifact_upload_waits_out_retry_after_in_place_and_lands_complete(
    tracking_config: TrackingConfig, proxy: FaultProxy, tmp_path: Path, status: str, target: str
) -> None:
    run = _plain_run(_via(tracking_config, proxy), f"artifacts-{status}")
    files = _tree(tmp_path / "src")
    # one file is answered with Retry-After as often as a request waits in place (3)
    _set(proxy, fault=status, first=3, retry_after="1", match=ARTIFACT_PUTS + ".*" + target)
    manifest = upload_artifacts(run, tmp_path / "src", "ckpt")  # the plain call: no retries
    stats = proxy.stats()
    assert stats["injected"] == 3 and stats["candidates"] == 4, stats
    assert {e.path: e.size for e in manifest.files} == {k: len(v) for k, v in files.items()}
    client = MlflowClient(tracking_config.tracking_uri)
    for name, data in files.items():
        local = client.download_artifacts(run.run_id, f"ckpt/{name}", str(tmp_path / "dl"))
        assert Path(local).read_bytes() == data


def test_artifact_retry_after_over_the_cap_fails_at_once_naming_the_server(
    tracking_config: TrackingConfig, proxy: FaultProxy, tmp_path: Path
) -> None:
    run = _plain_run(_via(tracking_config, proxy), "artifacts-long-wait")
    _tree(tmp_path / "src")
    wait = int(RETRY_AFTER_MAX_SECONDS) + 1
    _set(proxy, fault="429", first=100, retry_after=str(wait), match=ARTIFACT_PUTS)
    with pytest.raises(ArtifactError, match=rf"127\.0\.0\.1:\d+.*Retry-After {wait} s") as info:
        upload_artifacts(run, tmp_path / "src", "ckpt")
    assert type(info.value) is ArtifactError  # not transient: the task does not retry it
    assert proxy.stats()["injected"] == 1  # refused at the first answer, no waiting


# --- slow responses -----------------------------------------------------------------


def test_slow_responses_delay_the_flow_but_every_point_and_file_arrives(
    tracking_config: TrackingConfig, proxy: FaultProxy, tmp_path: Path
) -> None:
    files = _tree(tmp_path / "src")
    points = _points(1500)
    config = _via(tracking_config, proxy)

    @flow(**mlflow_state_hooks())
    def slow_pipeline() -> str:
        run = create_mlflow_run(setup_mlflow(config), run_name="slow")
        _log(run, points)
        upload_artifacts(run, tmp_path / "src", "ckpt")
        return run.run_id

    _set(proxy, fault="slow", slow_seconds=1, first=6, match=r"^(POST|PUT|GET) /api/")
    state = slow_pipeline(return_state=True)
    assert state.is_completed(), state.message
    assert proxy.stats()["injected"] == 6
    run_id = state.result()
    uri = str(tracking_config.tracking_uri)
    assert _history(uri, run_id, "loss") == points
    listed = {a.path for a in MlflowClient(uri).list_artifacts(run_id, "ckpt")}
    assert {"ckpt/a.txt", "ckpt/big.bin", "ckpt/nested"} <= listed and len(files) == 3
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"


# --- the MLflow server restarted mid-flow -------------------------------------------


@pytest.mark.slow
def test_mlflow_server_restarted_mid_flow_loses_no_point_and_the_hooks_end_the_runs(
    mlflow_server: MlflowServer,
    tracking_config: TrackingConfig,
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # shorter backoff, more retries than MLflow's default (0, 2, 4, ... 120 s: ~6 min)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "10")
    config = _via(tracking_config, proxy)
    halfway, down = threading.Event(), threading.Event()
    first, second = _points(1200), _points(900, offset=100.0)

    def restart() -> None:
        if halfway.wait(300):
            mlflow_server.stop()
            down.set()
            mlflow_server.restart(down_seconds=1)

    restarter = threading.Thread(target=restart, daemon=True)
    restarter.start()

    @task
    def train(run: RunRef, points: list[Point], kill_midway: bool) -> int:
        with RunLogger(run, flush_interval_seconds=None) as log:
            for i, (key, value, step, ts) in enumerate(points):
                log.log_metric(key, value, step, timestamp=ts)
                if kill_midway and i == len(points) // 2:
                    log.flush()
                    halfway.set()
                    assert down.wait(300)  # the rest is sent to a dead server, retried
        return log.points_sent

    @flow(**mlflow_state_hooks())
    def pipeline() -> list[str]:
        ctx = setup_mlflow(config)
        runs = [create_mlflow_run(ctx, run_name=f"restart-{k}") for k in range(2)]
        assert train(runs[0], first, True) == len(first)
        assert train(runs[1], second, False) == len(second)
        return [r.run_id for r in runs]

    _set(proxy, match=LOG_BATCH)
    state = pipeline(return_state=True)
    restarter.join(timeout=300)
    assert state.is_completed(), state.message
    assert mlflow_server.log_path.read_text().count("Uvicorn running on") >= 2  # restarted
    # the batch sent while the server was down went more than once through the proxy
    assert proxy.stats()["candidates"] > 3
    uri = str(tracking_config.tracking_uri)
    client = MlflowClient(uri)
    ids = state.result()
    assert _history(uri, ids[0], "loss") == first
    assert _history(uri, ids[1], "loss") == second
    assert [client.get_run(i).info.status for i in ids] == ["FINISHED", "FINISHED"]


# --- the Prefect API unavailable for a few seconds ----------------------------------


@pytest.mark.slow
def test_prefect_api_outage_mid_flow_keeps_tracking_complete_and_the_flow_completed(
    tracking_config: TrackingConfig, tmp_path: Path, repo_root: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value())
    parts = urlsplit(api)
    gate = start_fault_proxy(f"{parts.scheme}://{parts.netloc}")
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"{gate.url}{parts.path}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    marker = tmp_path / "started"
    experiment = f"{tracking_config.experiment_name}-outage"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_flow", str(tracking_config.tracking_uri),
         experiment, str(marker)],
        cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the flow did not start"
        # every API request answered 503, open websockets cut, for 4 s
        gate.configure(fault="503", fraction=1.0, cut_tunnels=True)
        time.sleep(4)
        during = gate.stats()
        gate.configure(fault="none")
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            from tests.servers import stop_process_group

            stop_process_group(proc)
        gate.stop()
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert during["injected"] >= 1, during  # the flow did call the API during the outage
    (result,) = [line for line in text.splitlines() if line.startswith("flow-run ")]
    flow_run_id, state_name = result.split()[1:]
    assert state_name == "Completed"
    with prefect_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run_id).state.is_completed()  # type: ignore[union-attr]
    # task run states travel as events over the websocket the outage cut: all recorded
    deadline = time.monotonic() + 60
    while (states := _task_states(flow_run_id, "log_chunk")) != ["Completed"] * fault_flow.CHUNKS:
        assert time.monotonic() < deadline, states
        time.sleep(1)

    client = MlflowClient(tracking_config.tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id  # type: ignore[union-attr]
    runs = client.search_runs([experiment_id], max_results=100)
    assert sorted(r.info.run_name for r in runs) == sorted(
        f"chunk-{c}" for c in range(fault_flow.CHUNKS)
    )
    for run in runs:
        chunk = int(str(run.info.run_name).split("-")[1])
        assert run.info.status == "FINISHED"
        assert _history(str(tracking_config.tracking_uri), run.info.run_id, "loss") == [
            (k, v, s, t) for k, v, s, t in fault_flow.expected_points(chunk)
        ]
