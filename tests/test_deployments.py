"""prefect.yaml on a real `prefect server`: deploy, check schedules, run the pipeline."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests import helpers
from tests.helpers import experiment_runs
from tests.servers import MlflowServer, start_prefect_server, stop_process_group
from tracking_tasks import TrackingConfig


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real `prefect server start` on loopback, with its own PREFECT_HOME."""
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-server-home"))
    try:
        yield server.env
    finally:
        server.stop()


def test_deploy_all_and_run_pipeline_through_a_worker(
    prefect_server: dict[str, str],
    mlflow_server: MlflowServer,
    repo_root: Path,
    tracking_config: TrackingConfig,
) -> None:
    env = prefect_server
    api = env["PREFECT_API_URL"]
    helpers.prefect_cli(
        env, repo_root, "work-pool", "create", "tracking-tasks", "--type", "process"
    )
    helpers.prefect_cli(env, repo_root, "--no-prompt", "deploy", "--all")

    deployments = {d["name"]: d for d in helpers.prefect_api(api, "/deployments/filter")}
    assert set(deployments) == {"pipeline", "nightly-benchmark", "demo", "reconcile"}
    nightly = deployments["nightly-benchmark"]
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    reconcile = deployments["reconcile"]
    assert [s["schedule"]["interval"] for s in reconcile["schedules"]] == [600.0]
    automations = {a["name"]: a for a in helpers.prefect_api(api, "/automations/filter")}
    on_crashed = automations["reconcile-on-crashed"]
    assert on_crashed["trigger"]["expect"] == ["prefect.flow-run.Crashed"]
    assert on_crashed["actions"][0]["deployment_id"] == reconcile["id"]
    assert deployments["pipeline"]["parameters"]["config"]["register_as"] == "digits-sgd"
    assert {d["work_pool_name"] for d in deployments.values()} == {"tracking-tasks"}

    worker_env = {**env, "MLFLOW_TRACKING_URI": mlflow_server.url}
    worker_log = Path(env["PREFECT_HOME"]) / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "tracking-tasks"],
        env=worker_env, cwd=repo_root, stdout=worker_log.open("wb"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        params = {
            "config": {
                "experiment_name": tracking_config.experiment_name,
                "n_trials": 2,
                "sweep_epochs": 2,
                "train_epochs": 3,
                "benchmark_calls": 20,
                "register_as": None,
            }
        }
        flow_run = helpers.prefect_api(
            api,
            f"/deployments/{deployments['pipeline']['id']}/create_flow_run",
            {"parameters": params},
        )
        deadline = time.monotonic() + 300
        state = None
        while time.monotonic() < deadline:
            state = helpers.prefect_api(
                api, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}}
            )[0]["state"]
            if state and state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                break
            time.sleep(2)
        assert state is not None and state["type"] == "COMPLETED", (
            f"{state}\n{worker_log.read_text()[-4000:]}"
        )
    finally:
        stop_process_group(worker)

    runs = {r.info.run_name: r for r in experiment_runs(tracking_config)}
    assert set(runs) == {"sweep", "trial-0", "trial-1", "training", "benchmark", "conversion"}
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    sweep_id = runs["sweep"].info.run_id
    assert runs["trial-0"].data.tags["mlflow.parentRunId"] == sweep_id
    assert runs["trial-1"].data.tags["mlflow.parentRunId"] == sweep_id
    assert runs["training"].data.tags["tracking_tasks.lineage.sweep"] == sweep_id
    deployment_id = deployments["pipeline"]["id"]
    assert {r.data.tags.get("prefect.deployment_id") for r in runs.values()} == {deployment_id}
    assert runs["training"].data.tags["prefect.deployment_name"] == "pipeline"
    client = MlflowClient(mlflow_server.url)
    assert client.list_artifacts(runs["conversion"].info.run_id, "converted")
