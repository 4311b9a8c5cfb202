"""Reconcile: runs left RUNNING by a dead flow process are ended from their Prefect flow
run's state, against a real `mlflow server` and real Prefect flow runs in each state."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from prefect import flow, states
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests import helpers
from tests.servers import (
    MlflowServer,
    start_fault_proxy,
    start_prefect_server,
    stop_process_group,
)
from tracking_tasks import TrackingConfig
from tracking_tasks.cli import main
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.ops._reconcile import ReconcileReport
from tracking_tasks.ops._reconcile import reconcile_runs as reconcile_as
from tracking_tasks.tags import FINAL_STATE_TAG, FLOW_RUN_TAG, PREFECT_API_TAG, RECONCILED_TAG
from tracking_tasks.tasks._prefect_api import prefect_api_identity
from tracking_tasks.tasks._reconcile import read_flow_run_states

REPO_ROOT = Path(__file__).resolve().parent.parent
#: A Prefect API that is not the suite's: its runs are never ours to end.
OTHER_API = "prefect-db:00000000-0000-4000-8000-000000000000"


def reconcile_runs(lookup: Any, experiments: Any, **options: Any) -> ReconcileReport:
    """A pass as this Prefect API's (its identity), with no grace period: the runs here
    were opened a moment ago (the grace period has tests of its own)."""
    options.setdefault("grace_seconds", 0)
    return reconcile_as(lookup, experiments, prefect_api=prefect_api_identity(), **options)


@flow(name="tt-reconcile-subject")
def subject() -> None:
    """Only a flow object to create flow runs for; never run."""


#: Prefect state -> the MLflow status a RUNNING run of that flow run must end with
#: (None: never touched).
CASES: dict[str, tuple[Callable[[], Any], str | None]] = {
    "Completed": (states.Completed, "FINISHED"),
    "Failed": (states.Failed, "FAILED"),
    "Crashed": (states.Crashed, "FAILED"),
    "Cancelled": (states.Cancelled, "KILLED"),
    "Scheduled": (states.Scheduled, None),
    "Pending": (states.Pending, None),
    "Running": (states.Running, None),
    "Paused": (states.Paused, None),
    "Cancelling": (states.Cancelling, None),
    "AwaitingRetry": (states.AwaitingRetry, None),
}


def flow_run_in(state: Any) -> str:
    """A real flow run on the suite's Prefect API, created in ``state``."""
    with get_client(sync_client=True) as client:
        return str(client.create_flow_run(subject, state=state).id)


class Runs:
    """MLflow runs of one experiment on the real server, opened as the library tags them."""

    def __init__(self, server: MlflowServer, experiment: str) -> None:
        self.uri = server.url
        self.client = MlflowClient(server.url)
        self.experiment = experiment
        self.experiment_id = self.client.create_experiment(experiment)

    def open(self, flow_run_id: str | None, status: str | None = None, api: str | None = "") -> str:
        """A run tagged as the library tags it, under this Prefect API (``api=""``),
        another one, or none (``api=None``: another tool, an older version)."""
        tags = {FLOW_RUN_TAG: flow_run_id} if flow_run_id is not None else {}
        if flow_run_id is not None and api is not None:
            tags[PREFECT_API_TAG] = api or prefect_api_identity()
        run_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
        if status is not None:
            self.client.set_terminated(run_id, status)
        return run_id

    def snapshot(self) -> dict[str, tuple[str, int | None, dict[str, str]]]:
        """run id -> (status, end time, tags) for every run of the experiment."""
        found = self.client.search_runs([self.experiment_id], max_results=1000)
        return {r.info.run_id: (r.info.status, r.info.end_time, dict(r.data.tags)) for r in found}


@pytest.fixture
def runs(mlflow_server: MlflowServer, tracking_config: TrackingConfig) -> Runs:
    assert tracking_config.experiment_name is not None
    return Runs(mlflow_server, tracking_config.experiment_name)


@pytest.fixture
def scenario(runs: Runs) -> dict[str, list[str]]:
    """Two RUNNING runs per flow-run state, plus runs no pass may touch."""
    made: dict[str, list[str]] = {}
    for name, (state, _) in CASES.items():
        flow_run_id = flow_run_in(state())
        made[name] = [runs.open(flow_run_id), runs.open(flow_run_id)]
    gone = flow_run_in(states.Crashed())
    with get_client(sync_client=True) as client:
        client.delete_flow_run(uuid.UUID(gone))
    made["deleted"] = [runs.open(gone), runs.open(str(uuid.uuid4()))]  # deleted, never existed
    crashed = flow_run_in(states.Crashed())
    made["ended before"] = [runs.open(crashed, "FINISHED"), runs.open(crashed, "KILLED")]
    made["no flow-run tag"] = [runs.open(None)]
    made["tag not a uuid"] = [runs.open("not-a-flow-run")]
    # not ours: a flow run of another Prefect API (its id unknown here), and one whose
    # run carries no prefect.api tag (another tool, an older version): never touched
    made["other api"] = [runs.open(str(uuid.uuid4()), api=OTHER_API)]
    made["no api tag"] = [runs.open(flow_run_in(states.Crashed()), api=None)]
    return made


def _expected(made: dict[str, list[str]]) -> dict[str, str]:
    expected = {}
    for name, run_ids in made.items():
        status = CASES[name][1] if name in CASES else {"deleted": "FAILED"}.get(name)
        for run_id in run_ids:
            expected[run_id] = status or "RUNNING"
    for run_id, status in zip(made["ended before"], ("FINISHED", "KILLED"), strict=True):
        expected[run_id] = status
    return expected


@pytest.mark.backends
def test_reconcile_ends_runs_of_finished_flow_runs_and_never_touches_live(
    runs: Runs, scenario: dict[str, list[str]]
) -> None:
    before = runs.snapshot()
    report = reconcile_runs(read_flow_run_states, runs.experiment, tracking_uri=runs.uri)

    after = runs.snapshot()
    assert {run_id: status for run_id, (status, _, _) in after.items()} == _expected(scenario)
    for name in ("Completed", "Failed", "Crashed", "Cancelled", "deleted"):
        for run_id in scenario[name]:
            tags = after[run_id][2]
            state = "NotFound" if name == "deleted" else name
            assert tags[FINAL_STATE_TAG] == state
            assert tags[RECONCILED_TAG] == (
                "flow run not found" if name == "deleted" else f"flow run {name}"
            )
            assert after[run_id][1] is not None  # an end time
    untouched = [
        run_id
        for name, run_ids in scenario.items()
        if name not in ("Completed", "Failed", "Crashed", "Cancelled", "deleted")
        for run_id in run_ids
    ]
    for run_id in untouched:  # live, already ended, not ours: exactly as before
        assert after[run_id] == before[run_id]

    assert report.finished == tuple(sorted(scenario["Completed"]))
    assert report.killed == tuple(sorted(scenario["Cancelled"]))
    assert set(report.failed) == {*scenario["Failed"], *scenario["Crashed"], *scenario["deleted"]}
    assert set(report.flow_run_missing) == set(scenario["deleted"])
    live = {n for n, (_, status) in CASES.items() if status is None}
    assert set(report.left_running) == {r for n in live for r in scenario[n]}
    assert report.unrecognized == tuple(scenario["tag not a uuid"])
    assert set(report.not_ours) == {*scenario["other api"], *scenario["no api tag"]}
    assert report.running == 2 * len(CASES) + 2 + 1 + 2 and report.errors == ()
    assert report.flow_runs == len(CASES) + 2
    assert report.prefect_api == prefect_api_identity() != OTHER_API

    # a second pass changes nothing: every run as the first pass left it
    again = reconcile_runs(read_flow_run_states, runs.experiment, tracking_uri=runs.uri)
    assert again.ended == () and again.left_running == report.left_running
    assert runs.snapshot() == after


@pytest.mark.backends
def test_reconcile_never_overwrites_a_terminal_status(runs: Runs) -> None:
    crashed = flow_run_in(states.Crashed())
    completed = flow_run_in(states.Completed())
    ended = {
        runs.open(crashed, "FINISHED"): "FINISHED",
        runs.open(completed, "FAILED"): "FAILED",
        runs.open(completed, "KILLED"): "KILLED",
    }
    before = runs.snapshot()

    report = reconcile_runs(read_flow_run_states, runs.experiment, tracking_uri=runs.uri)

    assert report.running == 0 and report.ended == ()
    assert runs.snapshot() == before
    assert {run_id: before[run_id][0] for run_id in ended} == ended


@pytest.mark.backends
def test_dry_run_reports_the_plan_and_writes_nothing(
    runs: Runs, scenario: dict[str, list[str]]
) -> None:
    before = runs.snapshot()
    plan = reconcile_runs(
        read_flow_run_states, runs.experiment, tracking_uri=runs.uri, dry_run=True
    )
    assert runs.snapshot() == before
    assert plan.dry_run and plan.finished == tuple(sorted(scenario["Completed"]))
    assert len(plan.ended) == 2 * 4 + 2
    assert set(plan.not_ours) == {*scenario["other api"], *scenario["no api tag"]}

    done = reconcile_runs(read_flow_run_states, runs.experiment, tracking_uri=runs.uri)
    assert (done.finished, done.failed, done.killed) == (plan.finished, plan.failed, plan.killed)


def test_a_failing_lookup_writes_nothing(runs: Runs) -> None:
    flow_run_id = flow_run_in(states.Crashed())
    run_id = runs.open(flow_run_id)

    def unreachable(ids: Sequence[str]) -> dict[str, str]:
        raise ConnectionError("Prefect API unreachable")

    with pytest.raises(ConnectionError):
        reconcile_runs(unreachable, runs.experiment, tracking_uri=runs.uri)
    with pytest.raises(InvalidArgumentError, match="mapping"):
        reconcile_runs(lambda ids: list(ids), runs.experiment, tracking_uri=runs.uri)  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidArgumentError, match="callable"):
        reconcile_runs("CRASHED", runs.experiment, tracking_uri=runs.uri)  # type: ignore[arg-type]
    assert runs.client.get_run(run_id).info.status == "RUNNING"


def test_lookup_reads_200_flow_runs_per_prefect_call() -> None:
    known = {flow_run_in(states.Completed()): "COMPLETED", flow_run_in(states.Running()): "RUNNING"}
    unknown = [str(uuid.uuid4()) for _ in range(399)]
    proxy = start_fault_proxy(PREFECT_API_URL.value().rsplit("/api", 1)[0], "--fault", "none")
    try:
        proxy.configure(fault="none", match=r"^POST /api/flow_runs/filter")
        with temporary_settings({PREFECT_API_URL: f"{proxy.url}/api"}):
            found = read_flow_run_states([*known, *unknown])
        assert found == known  # a flow run the API does not know is left out
        assert proxy.stats()["candidates"] == 3  # 401 ids: 200 + 200 + 1
    finally:
        proxy.stop()


@pytest.mark.backends
def test_flow_and_cli_reconcile(
    runs: Runs,
    mlflow_server: MlflowServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.reconcile import reconcile

    completed, running = flow_run_in(states.Completed()), flow_run_in(states.Running())
    done, live = runs.open(completed), runs.open(running)
    theirs = runs.open(flow_run_in(states.Crashed()), api=OTHER_API)
    args = ["runs", "reconcile", "--tracking-uri", mlflow_server.url, "-e", runs.experiment]
    args += ["--grace-seconds", "0"]

    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would end {done} FINISHED" in out and live not in out
    assert f"not ours: {theirs}" in out and f"({prefect_api_identity()})" in out
    assert runs.client.get_run(done).info.status == "RUNNING"

    report = reconcile(
        [runs.experiment], tracking_uri=mlflow_server.url, dry_run=True, grace_seconds=0
    )
    assert isinstance(report, ReconcileReport) and report.finished == (done,)
    assert report.not_ours == (theirs,)

    assert main([*args, "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["finished"] == [done] and printed["left_running"] == [live]
    assert printed["not_ours"] == [theirs]
    assert runs.client.get_run(done).info.status == "FINISHED"
    assert runs.client.get_run(live).info.status == "RUNNING"
    assert runs.client.get_run(theirs).info.status == "RUNNING"

    assert main(args) == 0  # the second pass: nothing left to end
    assert "ended 0" in capsys.readouterr().out


# --- The SIGKILL tier: real flow processes killed at varied points ----------------------

#: Kill point -> how many flow processes are SIGKILLed there (20 in all).
KILL_POINTS = {"setup": 4, "logging": 4, "upload": 4, "sweep": 4, "hook": 4}
LIVE_WORKERS = 3


def _wait_for(path: Path, errors: Path, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while not path.exists():
        failed = sorted(errors.glob("*.error"))
        if failed:
            raise AssertionError(f"worker failed: {failed[0].name}: {failed[0].read_text()}")
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {path.name} (zygote exit code {proc.poll()})")
        time.sleep(0.1)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(600)  # a `prefect server` and 23 flow processes on a loaded machine
def test_one_pass_ends_the_runs_of_sigkilled_flow_processes_and_no_live_run(
    mlflow_server: MlflowServer, tracking_config: TrackingConfig, tmp_path: Path
) -> None:
    """20 flow processes under a real `prefect server`, SIGKILLed at varied points, leave
    RUNNING runs; 3 more are still running. Prefect leaves a killed process's flow run
    Running (no heartbeats or zombie automation here), so the test marks those Crashed
    through the Prefect API, as the zombie-detection automation would; one reconcile pass
    then ends every orphan as its flow run's state says, and no run of a live flow run."""
    assert tracking_config.experiment_name is not None
    experiment, uri = tracking_config.experiment_name, mlflow_server.url
    home, markers = tmp_path / "prefect-home", tmp_path / "markers"
    home.mkdir()
    markers.mkdir()
    workers = [
        {"name": f"{point}-{i}", "point": point}
        for point, n in KILL_POINTS.items()
        for i in range(n)
    ] + [{"name": f"live-{i}", "point": "live"} for i in range(LIVE_WORKERS)]
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "tracking_uri": uri,
                "experiment": experiment,
                "markers": str(markers),
                "workers": workers,
            }
        )
    )
    server = start_prefect_server(home)
    zygote = subprocess.Popen(
        [sys.executable, "-m", "tests.orphan_worker", str(spec)],
        env={**server.env, "PREFECT_LOGGING_LEVEL": "WARNING"},
        cwd=REPO_ROOT,
        stdout=(tmp_path / "workers.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 240
        reached: dict[str, dict[str, Any]] = {}
        for worker in workers:  # SIGKILL each process as soon as it reaches its point
            name = worker["name"]
            _wait_for(markers / f"{name}.json", markers, zygote, deadline)
            pid = int((markers / f"{name}.pid").read_text())
            pids.append(pid)
            reached[name] = json.loads((markers / f"{name}.json").read_text())
            if worker["point"] != "live":
                os.killpg(pid, signal.SIGKILL)
        live_flow_runs = {reached[w["name"]]["flow_run_id"] for w in workers[-LIVE_WORKERS:]}

        client = MlflowClient(uri)
        exp_id = client.get_experiment_by_name(experiment).experiment_id
        with helpers.on_prefect_api(server.api):
            before = {r.info.run_id: r for r in client.search_runs([exp_id], max_results=1000)}
            flow_runs = {r.data.tags[FLOW_RUN_TAG] for r in before.values()}
            orphaned = read_flow_run_states(sorted(flow_runs - live_flow_runs))
            assert set(orphaned) == flow_runs - live_flow_runs
            with get_client(sync_client=True) as prefect:
                for flow_run_id, state in orphaned.items():
                    if state not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                        prefect.set_flow_run_state(
                            uuid.UUID(flow_run_id),
                            states.Crashed(
                                message="no heartbeat: marked as the zombie automation would"
                            ),
                            force=True,
                        )
            final = read_flow_run_states(sorted(flow_runs))

            report = reconcile_runs(read_flow_run_states, experiment, tracking_uri=uri)
            again = reconcile_runs(read_flow_run_states, experiment, tracking_uri=uri)

        after = {r.info.run_id: r for r in client.search_runs([exp_id], max_results=1000)}
        expected_status = {"COMPLETED": "FINISHED", "CRASHED": "FAILED"}
        live_runs = set()
        for run_id, run in after.items():
            flow_run_id = run.data.tags[FLOW_RUN_TAG]
            if flow_run_id in live_flow_runs:
                live_runs.add(run_id)
                assert run.info.status == "RUNNING" and RECONCILED_TAG not in run.data.tags
                assert run.info.end_time is None
            elif before[run_id].info.status == "RUNNING":  # an orphan: ended once, tagged why
                assert run.info.status == expected_status[str(final[flow_run_id])], run_id
                assert (
                    run.data.tags[RECONCILED_TAG] == f"flow run {final[flow_run_id].capitalize()}"
                )
            else:  # ended before the kill (a sweep's finished trial): as it was
                assert run.info.status == before[run_id].info.status
                assert RECONCILED_TAG not in run.data.tags
        orphans = {r for r in before if before[r].info.status == "RUNNING"} - live_runs
        # every kill point left orphans: 20 processes, at least 20 runs (sweeps leave 2)
        assert len(orphans) >= sum(KILL_POINTS.values()) + KILL_POINTS["sweep"]
        assert set(report.ended) == orphans and report.errors == ()
        assert set(report.left_running) == live_runs and len(live_runs) == LIVE_WORKERS
        hooked = [reached[w["name"]] for w in workers if w["point"] == "hook"]
        assert {h["state"] for h in hooked} == {"Completed"}  # killed inside the hook
        assert {final[h["flow_run_id"]] for h in hooked} == {"COMPLETED"}
        # a second pass changes nothing
        assert again.ended == () and again.left_running == report.left_running
        assert {
            r.info.run_id: (r.info.status, r.info.end_time)
            for r in client.search_runs([exp_id], max_results=1000)
        } == {run_id: (r.info.status, r.info.end_time) for run_id, r in after.items()}
        # what a SIGKILL loses: the RunLogger's unflushed buffer (500 of 1,500 points)
        for w in workers:
            if w["point"] == "logging":
                sent = reached[w["name"]]["sent"]
                history = client.get_metric_history(reached[w["name"]]["run_id"], "loss")
                assert (sent, len(history)) == (1000, 1000)
    finally:
        for pid in pids:
            _kill_group(pid)
        stop_process_group(zygote)
        server.stop()
