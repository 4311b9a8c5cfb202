"""Flow runs on several Prefect workers: 4 pipeline runs deployed with prefect.yaml, picked
up by 2 process workers of one work pool, all tracking into one `mlflow server`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests import helpers
from tests.helpers import experiment_runs
from tests.servers import MlflowServer, PrefectServer, stop_process_group
from tracking_tasks import TrackingConfig

# a deploy, two workers, four flow-run processes: minutes on 2 busy cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

N_FLOW_RUNS = 4
STAGES = {"sweep", "trial-0", "trial-1", "training", "benchmark", "conversion"}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _parent_flow_run(api: str, flow_run_id: str) -> str | None:
    """The flow run a subflow run was called from (None for a top-level run)."""
    task_run = helpers.prefect_api(api, f"/flow_runs/{flow_run_id}", method="GET")[
        "parent_task_run_id"
    ]
    if task_run is None:
        return None
    return str(helpers.prefect_api(api, f"/task_runs/{task_run}", method="GET")["flow_run_id"])


def test_four_pipeline_runs_on_two_process_workers_track_every_stage_once(
    prefect_server: PrefectServer,
    mlflow_server: MlflowServer,
    repo_root: Path,
    tracking_config: TrackingConfig,
) -> None:
    env, api = prefect_server.env, prefect_server.api
    helpers.prefect_cli(
        env, repo_root, "work-pool", "create", "tracking-tasks", "--type", "process"
    )
    helpers.prefect_cli(env, repo_root, "--no-prompt", "deploy", "--name", "pipeline")
    (deployment,) = helpers.prefect_api(api, "/deployments/filter")
    assert deployment["name"] == "pipeline" and deployment["work_pool_name"] == "tracking-tasks"

    experiments = [f"{tracking_config.experiment_name}-{k}" for k in range(N_FLOW_RUNS)]
    flow_runs = [
        helpers.prefect_api(
            api,
            f"/deployments/{deployment['id']}/create_flow_run",
            {
                "parameters": {
                    "config": {
                        "experiment_name": name,
                        "n_trials": 2,
                        "startup_trials": 2,
                        "max_concurrency": 2,
                        "sweep_epochs": 2,
                        "train_epochs": 2,
                        "benchmark_calls": 10,
                        "register_as": None,
                    }
                }
            },
        )["id"]
        for name in experiments
    ]

    # two workers of one pool, each holding at most 2 flow runs at once: while one holds
    # 2 (each lasts far longer than a 1 s poll), the other 2 can only go to the other
    worker_env = {
        **env,
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    home = Path(env["PREFECT_HOME"])
    logs = [home / f"worker-{w}.log" for w in range(2)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                "tracking-tasks",
                "--type",
                "process",
                "--limit",
                "2",
                "--name",
                f"worker-{w}",
            ],
            env=worker_env,
            cwd=repo_root,
            stdout=logs[w].open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for w in range(2)
    ]
    try:
        deadline = time.monotonic() + 420
        states: dict[str, Any] = {}
        while time.monotonic() < deadline:
            found = helpers.prefect_api(
                api, "/flow_runs/filter", {"flow_runs": {"id": {"any_": flow_runs}}}
            )
            states = {r["id"]: r["state"] for r in found}
            if all(s and s["type"] in TERMINAL for s in states.values()):
                break
            time.sleep(2)
    finally:
        for worker in workers:
            stop_process_group(worker)
    worker_logs = [log.read_text() for log in logs]
    assert {s["type"] for s in states.values()} == {"COMPLETED"}, f"{states}\n" + "\n".join(
        text[-3000:] for text in worker_logs
    )

    # each flow run was submitted by exactly one worker, and both workers took some
    # (a worker that loses the race for a flow run logs "submitting", then "Aborted")
    submitted = [
        {
            r
            for r in flow_runs
            if f"submitting flow run '{r}'" in t
            and f"Aborted submission of flow run '{r}'" not in t
        }
        for t in worker_logs
    ]
    assert submitted[0] | submitted[1] == set(flow_runs) and not submitted[0] & submitted[1]
    assert submitted[0] and submitted[1], [len(s) for s in submitted]

    for flow_run_id, name in zip(flow_runs, experiments, strict=True):
        config = TrackingConfig(experiment_name=name, tracking_uri=mlflow_server.url)
        runs = experiment_runs(config)
        names = [r.info.run_name for r in runs]
        assert sorted(names) == sorted(STAGES), names  # every stage once
        assert {r.info.status for r in runs} == {"FINISHED"}
        by_name = {r.info.run_name: r for r in runs}
        sweep, training = by_name["sweep"].info.run_id, by_name["training"].info.run_id
        assert by_name["trial-0"].data.tags["mlflow.parentRunId"] == sweep
        assert by_name["trial-1"].data.tags["mlflow.parentRunId"] == sweep
        tags = by_name["training"].data.tags
        assert tags["tracking_tasks.lineage.sweep"] == sweep
        assert tags["tracking_tasks.lineage.trial"] in {
            by_name["trial-0"].info.run_id,
            by_name["trial-1"].info.run_id,
        }
        assert by_name["benchmark"].data.tags["tracking_tasks.lineage.model"] == training
        assert by_name["conversion"].data.tags["tracking_tasks.lineage.source"] == training
        assert {r.data.tags["prefect.deployment_id"] for r in runs} == {deployment["id"]}
        # every stage's run was opened by a subflow of this deployment's flow run
        for stage in ("sweep", "training", "benchmark", "conversion"):
            subflow = by_name[stage].data.tags["prefect.flow_run_id"]
            assert _parent_flow_run(api, subflow) == flow_run_id, stage
