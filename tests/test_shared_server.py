"""One MLflow server, several Prefect APIs: reconcile ends only its own API's orphans, and
no race ends a live run. Real `prefect server` processes, real flow processes (SIGKILLed,
retried, marked Crashed while they log), and a laptop's temporary Prefect API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from prefect import flow, states
from prefect.client.orchestration import get_client

from tests import helpers
from tests.servers import MlflowServer, PrefectServer, start_prefect_server, stop_process_group
from tracking_tasks import TrackingConfig
from tracking_tasks.ops import ReconcileReport, reconcile_runs
from tracking_tasks.tags import (
    FINAL_STATE_TAG,
    PREFECT_API_TAG,
    RECONCILE_OVERRULED_TAG,
    RECONCILED_TAG,
)
from tracking_tasks.tasks import prefect_api_identity, read_flow_run_states, reconcile_mlflow_runs

# prefect servers, a temporary API migrating a fresh database, flow processes that each
# import Prefect and MLflow: minutes on 2 busy cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parent.parent
QUIET = {"PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started in the block, each stopped with its group on the way out."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            stop_process_group(proc)


def spawn(
    started: list[subprocess.Popen[bytes]],
    module: str,
    args: Sequence[str],
    env: dict[str, str],
    log: Path,
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=REPO_ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started.append(proc)
    return proc


def wait_json(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {path.name} (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return json.loads(path.read_text())


def spec(tmp_path: Path, name: str, uri: str, experiments: list[str], **extra: Any) -> Path:
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    path = tmp_path / f"{name}.json"
    values = {"tracking_uri": uri, "experiments": experiments, "markers": str(markers)}
    path.write_text(json.dumps({**values, "name": name, **extra}))
    return path


def mark(api: str, flow_run_id: str, state: Any) -> None:
    """Set a flow run's state through the API, as Prefect's zombie automation or the
    UI's Retry button would."""
    with helpers.on_prefect_api(api), get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(flow_run_id), state, force=True)


def tags_of(client: MlflowClient, run_id: str) -> dict[str, str]:
    return dict(client.get_run(run_id).data.tags)


# --- Several Prefect APIs on one MLflow server ------------------------------------------


@pytest.mark.timeout(1800)  # two Prefect APIs, a worker and seven flow processes, loaded
def test_a_laptop_flow_survives_every_reconcile_of_a_prefect_server_that_ends_its_own_orphans(
    mlflow_server: MlflowServer, tracking_config: TrackingConfig, tmp_path: Path
) -> None:
    """A flow on an engineer's laptop (its own PREFECT_HOME, Prefect's temporary API)
    tracks to the shared MLflow server and is alive, writing nothing; a `prefect server`'s
    flows were SIGKILLed. Each way of running reconcile on that server (the command line,
    the task in a flow, the deployed flow run by a worker) ends the server's orphan and
    leaves the laptop's run alone: "flow run not found" there says nothing about a flow
    run of another API. The laptop's own hooks then end its runs."""
    uri, base = mlflow_server.url, str(tracking_config.experiment_name)
    experiments = [f"{base}-cli", f"{base}-task", f"{base}-deployed"]
    markers = tmp_path / "markers"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    (tmp_path / "server-home").mkdir()
    server = start_prefect_server(tmp_path / "server-home")
    with processes() as started:
        started.append(server.proc)
        (tmp_path / "laptop-home").mkdir()
        laptop_env = {
            **clean,
            **QUIET,
            "PREFECT_HOME": str(tmp_path / "laptop-home"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
        }
        laptop_log = tmp_path / "laptop.log"
        laptop = spawn(
            started,
            "tests.shared_worker",
            ["laptop", str(spec(tmp_path, "laptop", uri, experiments))],
            laptop_env,
            laptop_log,
        )
        orphan_spec = tmp_path / "orphans.json"
        workers = [
            {"name": f"orphan-{i}", "point": "setup", "experiment": e}
            for i, e in enumerate(experiments)
        ]
        orphan_spec.write_text(
            json.dumps(
                {
                    "tracking_uri": uri,
                    "experiment": base,
                    "markers": str(markers),
                    "workers": workers,
                }
            )
        )
        orphans_log = tmp_path / "orphans.log"
        zygote = spawn(
            started, "tests.orphan_worker", [str(orphan_spec)], {**server.env, **QUIET}, orphans_log
        )
        orphan_runs, pids = [], []
        for worker in workers:
            reached = wait_json(markers / f"{worker['name']}.json", zygote, orphans_log)
            pid = int((markers / f"{worker['name']}.pid").read_text())
            pids.append(pid)
            os.killpg(pid, signal.SIGKILL)
            mark(server.api, reached["flow_run_id"], states.Crashed(message="no heartbeat"))
            orphan_runs.append(reached["run_id"])
        on_laptop = wait_json(markers / "laptop.json", laptop, laptop_log, timeout=600)
        laptop_runs = on_laptop["run_ids"]
        with helpers.on_prefect_api(server.api):
            ours = prefect_api_identity()
        assert ours.startswith("prefect-db:") and on_laptop["prefect_api"].startswith("prefect-db:")
        assert ours != on_laptop["prefect_api"]

        client = MlflowClient(uri)
        for run_id in [*orphan_runs, *laptop_runs]:
            assert client.get_run(run_id).info.status == "RUNNING"
        assert tags_of(client, laptop_runs[0])[PREFECT_API_TAG] == on_laptop["prefect_api"]

        # 1. the command line, as an operator runs it on the server's machine
        cli = [
            sys.executable,
            "-m",
            "tracking_tasks.cli",
            "runs",
            "reconcile",
            "--tracking-uri",
            uri,
            "-e",
            experiments[0],
            "--grace-seconds",
            "0",
        ]
        env = {**server.env, **QUIET}
        dry = subprocess.run([*cli, "--dry-run"], env=env, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
        assert f"not ours: {laptop_runs[0]}" in dry.stdout
        assert f"would end {orphan_runs[0]} FAILED" in dry.stdout
        done = subprocess.run(cli, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert f"ended {orphan_runs[0]} FAILED" in done.stdout
        assert client.get_run(orphan_runs[0]).info.status == "FAILED"
        assert client.get_run(laptop_runs[0]).info.status == "RUNNING"

        # 2. the task, in a flow run of the server
        @flow
        def cleanup() -> ReconcileReport:
            return reconcile_mlflow_runs([experiments[1]], tracking_uri=uri, grace_seconds=0)

        with helpers.on_prefect_api(server.api):
            report = cleanup()
        assert isinstance(report, ReconcileReport)
        assert report.failed == (orphan_runs[1],) and report.not_ours == (laptop_runs[1],)
        assert report.prefect_api == ours
        assert client.get_run(laptop_runs[1]).info.status == "RUNNING"

        # 3. the deployed flow (prefect.yaml), run by a worker of the server
        helpers.prefect_cli(
            env, REPO_ROOT, "work-pool", "create", "tracking-tasks", "--type", "process"
        )
        helpers.prefect_cli(env, REPO_ROOT, "--no-prompt", "deploy", "--name", "reconcile")
        (deployment,) = helpers.prefect_api(server.api, "/deployments/filter")
        worker_log = tmp_path / "worker.log"
        spawn(started, "prefect", ["worker", "start", "--pool", "tracking-tasks"], env, worker_log)
        parameters = {"experiments": [experiments[2]], "tracking_uri": uri, "grace_seconds": 0}
        run = helpers.prefect_api(
            server.api,
            f"/deployments/{deployment['id']}/create_flow_run",
            {"parameters": parameters},
        )
        state = wait_terminal(server.api, run["id"], worker_log)
        assert state == "COMPLETED"
        assert client.get_run(orphan_runs[2]).info.status == "FAILED"
        assert client.get_run(laptop_runs[2]).info.status == "RUNNING"

        # the laptop's flow was alive all along: its own hooks end its runs
        (markers / "laptop.stop").touch()
        assert laptop.wait(timeout=300) == 0, laptop_log.read_text()[-3000:]
        for run_id in laptop_runs:
            after = client.get_run(run_id)
            assert after.info.status == "FINISHED"
            assert after.data.tags[FINAL_STATE_TAG] == "Completed"
            assert RECONCILED_TAG not in after.data.tags
        for run_id in orphan_runs:
            assert tags_of(client, run_id)[RECONCILED_TAG] == "flow run Crashed"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def wait_terminal(api: str, flow_run_id: str, log: Path, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (found,) = helpers.prefect_api(
            api, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}}
        )
        kind = (found.get("state") or {}).get("type")
        if kind in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return str(kind)
        time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} did not end:\n{log.read_text()[-3000:]}")


# --- No race ends a live run ----------------------------------------------------------


def test_a_flow_run_marked_crashed_while_its_process_logs_ends_as_it_really_did(
    prefect_server: PrefectServer,
    mlflow_server: MlflowServer,
    tracking_config: TrackingConfig,
    tmp_path: Path,
) -> None:
    """Prefect's zombie detection marks a live flow run Crashed (prefect#18653). A run
    still written to is left alone (the grace period); once it goes quiet, reconcile
    ends it FAILED; the process then completes and its own hooks overrule that status."""
    uri, experiment = mlflow_server.url, str(tracking_config.experiment_name)
    markers = tmp_path / "markers"
    log = tmp_path / "live.log"
    client = MlflowClient(uri)
    with processes() as started:
        proc = spawn(
            started,
            "tests.shared_worker",
            ["live", str(spec(tmp_path, "live", uri, [experiment]))],
            {**prefect_server.env, **QUIET},
            log,
        )
        reached = wait_json(markers / "live.json", proc, log)
        run_id = reached["run_id"]
        mark(prefect_server.api, reached["flow_run_id"], states.Crashed(message="no heartbeat"))
        with helpers.on_prefect_api(prefect_server.api):
            ours = prefect_api_identity()
            first = reconcile_runs(
                read_flow_run_states, experiment, prefect_api=ours, tracking_uri=uri
            )
        assert first.recently_active == (run_id,) and first.ended == ()
        assert client.get_run(run_id).info.status == "RUNNING"

        # it goes quiet (a long epoch, say) past any grace period: reconcile ends it
        (markers / "live.quiet").touch()
        time.sleep(1.0)
        with helpers.on_prefect_api(prefect_server.api):
            second = reconcile_runs(
                read_flow_run_states,
                experiment,
                prefect_api=ours,
                tracking_uri=uri,
                grace_seconds=0.5,
            )
        assert second.failed == (run_id,)
        assert tags_of(client, run_id)[RECONCILED_TAG] == "flow run Crashed"

        (markers / "live.stop").touch()  # the flow completes after all
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED"
    assert after.data.tags[FINAL_STATE_TAG] == "Completed"
    assert after.data.tags[RECONCILE_OVERRULED_TAG] == "flow run Crashed"
    assert RECONCILED_TAG not in after.data.tags


def pass_on(server: PrefectServer, lookup: Any, experiment: str, uri: str) -> ReconcileReport:
    """One reconcile pass as the server's own (its identity), with no grace period."""
    with helpers.on_prefect_api(server.api):
        return reconcile_runs(
            lookup,
            experiment,
            prefect_api=prefect_api_identity(),
            tracking_uri=uri,
            grace_seconds=0,
        )


def start_first_attempt(
    started: list[subprocess.Popen[bytes]],
    server: PrefectServer,
    spec_path: Path,
    markers: Path,
    name: str,
    log: Path,
) -> dict[str, Any]:
    """Run the first attempt of a flow to its run, SIGKILL it, mark its flow run Crashed."""
    proc = spawn(
        started, "tests.shared_worker", ["first", str(spec_path)], {**server.env, **QUIET}, log
    )
    reached: dict[str, Any] = wait_json(markers / f"{name}.json", proc, log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    mark(server.api, reached["flow_run_id"], states.Crashed(message="no heartbeat"))
    return reached


def start_retry(
    started: list[subprocess.Popen[bytes]],
    server: PrefectServer,
    tmp_path: Path,
    name: str,
    uri: str,
    experiment: str,
    flow_run_id: str,
    log: Path,
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Retry the flow run (as the UI's Retry and a worker do) in a new process; wait until
    it has found its run again and written to it."""
    mark(server.api, flow_run_id, states.AwaitingRetry())
    path = spec(tmp_path, name, uri, [experiment], flow_run_id=flow_run_id)
    proc = spawn(started, "tests.shared_worker", ["retry", str(path)], {**server.env, **QUIET}, log)
    return proc, wait_json(tmp_path / "markers" / f"{name}.retry.json", proc, log)


def test_a_flow_run_retried_between_reconciles_read_and_write_keeps_its_run(
    prefect_server: PrefectServer,
    mlflow_server: MlflowServer,
    tracking_config: TrackingConfig,
    tmp_path: Path,
) -> None:
    """Reconcile reads the flow run Crashed; before it writes, the flow run is retried in
    a new process, which finds its run again and writes to it. The re-read right before
    the write sees the run changed: reconcile leaves it, and the retry ends it."""
    uri, experiment = mlflow_server.url, str(tracking_config.experiment_name)
    markers, log = tmp_path / "markers", tmp_path / "retried.log"
    client = MlflowClient(uri)
    with processes() as started:
        path = spec(tmp_path, "raced", uri, [experiment])
        reached = start_first_attempt(started, prefect_server, path, markers, "raced", log)
        run_id, flow_run_id = reached["run_id"], reached["flow_run_id"]
        retry: list[Any] = []

        def retried_meanwhile(ids: Sequence[str]) -> dict[str, str | None]:
            found = read_flow_run_states(ids)  # Crashed: the first attempt died
            retry.append(
                start_retry(
                    started, prefect_server, tmp_path, "raced", uri, experiment, flow_run_id, log
                )
            )
            return found  # reconcile goes on with what it read

        report = pass_on(prefect_server, retried_meanwhile, experiment, uri)
        assert report.changed == (run_id,) and report.ended == ()
        ((proc, again),) = retry
        assert again["run_id"] == run_id and again["attempt"] == 2  # the same run, reused
        assert client.get_run(run_id).info.status == "RUNNING"
        assert RECONCILED_TAG not in tags_of(client, run_id)

        (markers / "raced.stop").touch()
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED" and after.data.tags[FINAL_STATE_TAG] == "Completed"
    assert RECONCILED_TAG not in after.data.tags


def test_a_run_reconcile_ended_is_reopened_by_its_retry_and_ends_as_the_retry_did(
    prefect_server: PrefectServer,
    mlflow_server: MlflowServer,
    tracking_config: TrackingConfig,
    tmp_path: Path,
) -> None:
    """A retry that starts after reconcile's write reopens the run it finds ended; its
    hooks end it as the retry ended, and reconcile's reason is kept only as overruled."""
    uri, experiment = mlflow_server.url, str(tracking_config.experiment_name)
    markers, log = tmp_path / "markers", tmp_path / "reopened.log"
    client = MlflowClient(uri)
    with processes() as started:
        path = spec(tmp_path, "late", uri, [experiment])
        reached = start_first_attempt(started, prefect_server, path, markers, "late", log)
        run_id = reached["run_id"]
        report = pass_on(prefect_server, read_flow_run_states, experiment, uri)
        assert report.failed == (run_id,)
        assert client.get_run(run_id).info.status == "FAILED"

        proc, again = start_retry(
            started, prefect_server, tmp_path, "late", uri, experiment, reached["flow_run_id"], log
        )
        assert again["run_id"] == run_id
        assert client.get_run(run_id).info.status == "RUNNING"  # reopened by the retry
        (markers / "late.stop").touch()
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED" and after.data.tags[FINAL_STATE_TAG] == "Completed"
    assert after.data.tags[RECONCILE_OVERRULED_TAG] == "flow run Crashed"
    assert RECONCILED_TAG not in after.data.tags
