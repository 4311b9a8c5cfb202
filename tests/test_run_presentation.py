"""How runs and sweeps present themselves: keyed Prefect artifacts, one sweep summary,
MLflow's own context tags, and UI links to MLflow's Model training view."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
import urllib.request
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from prefect import flow, task
from prefect.settings import get_current_settings

from tests.helpers import experiment_runs
from tracking_tasks import (
    RunLogger,
    RunRef,
    TrackingConfig,
    config_hash,
    create_mlflow_run,
    mlflow_state_hooks,
    setup_mlflow,
    track_sweep,
)
from tracking_tasks.tasks._run_memory import RUN_MEMORY

optuna.logging.set_verbosity(optuna.logging.WARNING)

SUMMARY = {"n_trials", "n_completed_trials", "n_failed_trials", "n_pruned_trials"}


def _artifacts_by_key(key: str) -> list[Any]:
    """Every version of the Prefect artifact under ``key`` (after the background writes)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    assert RUN_MEMORY.writer.flush(30), "the background Prefect writes did not finish"
    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        )


def _prefect_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def test_a_runs_link_is_keyed_found_by_name_and_written_once_on_a_retry(
    tracking_config: TrackingConfig,
) -> None:
    attempts: list[str] = []

    @task(retries=1, retry_delay_seconds=0)
    def open_and_fail_once(ctx: Any) -> RunRef:
        run = create_mlflow_run.fn(ctx, run_name="linked")  # inside this task run
        attempts.append(run.run_id)
        if len(attempts) == 1:
            raise ConnectionError("lost the data loader")
        return run

    @flow(**mlflow_state_hooks())
    def pipeline() -> RunRef:
        return open_and_fail_once(setup_mlflow(tracking_config))

    run = pipeline()
    assert attempts == [run.run_id, run.run_id]
    key = f"mlflow-run-{run.run_id}"
    versions = _artifacts_by_key(key)
    assert len(versions) == 1, versions  # the retry did not write it again
    assert versions[0].data == f"[MLflow run linked]({run.url})"
    shown = _prefect_cli("artifact", "inspect", key)  # found by name from the shell
    assert shown.returncode == 0 and f"'key': '{key}'" in shown.stdout, shown.stderr


def test_list_and_optuna_sweeps_summarise_themselves_the_same_way(
    tracking_config: TrackingConfig,
) -> None:
    def listed(params: dict[str, Any], log: RunLogger) -> dict[str, float]:
        if params["C"] < 0:
            raise ValueError("C must be positive")
        return {"acc": 1 - abs(params["C"] - 1)}

    def drawn(trial: optuna.Trial, log: RunLogger) -> float:  # no search space
        c = trial.suggest_float("C", 0.1, 2.0)
        if trial.number == 2:
            raise optuna.TrialPruned()
        return 1 - abs(c - 1)

    @flow(**mlflow_state_hooks())
    def sweeps() -> tuple[Any, Any]:
        ctx = setup_mlflow(tracking_config)
        one = track_sweep(listed, [{"C": 0.5}, {"C": 1.0}, {"C": -1.0}], "acc", context=ctx)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
        two = track_sweep(drawn, metric="acc", context=ctx, study=study, n_trials=3)
        return one, two

    listed_result, optuna_result = sweeps()
    client = MlflowClient(tracking_config.tracking_uri)
    shapes = []
    for result in (listed_result, optuna_result):
        parent = client.get_run(result.run.run_id).data
        assert set(parent.metrics) >= SUMMARY and not SUMMARY & set(parent.params)
        shapes.append({k: parent.metrics[k] for k in sorted(SUMMARY)})
        assert {"metric", "mode"} <= set(parent.params)
        table = _artifacts_by_key(f"mlflow-sweep-{result.run.run_id}")
        assert len(table) == 1 and "ranked by `acc`" in table[0].data
    assert shapes[0] == {
        "n_completed_trials": 2.0,
        "n_failed_trials": 1.0,
        "n_pruned_trials": 0.0,
        "n_trials": 3.0,
    }
    assert shapes[1] == {
        "n_completed_trials": 2.0,
        "n_failed_trials": 0.0,
        "n_pruned_trials": 1.0,
        "n_trials": 3.0,
    }
    # every trial run carries its params' config hash, Optuna's drawn ones too
    trials = [
        r
        for r in experiment_runs(tracking_config)
        if r.data.tags.get("mlflow.parentRunId") == optuna_result.run.run_id
    ]
    assert len(trials) == 3
    for run in trials:
        params = {"C": float(run.data.params["C"])}
        assert run.data.tags["tracking_tasks.config_hash"] == config_hash(params)


def test_runs_carry_mlflows_context_tags_and_links_open_the_model_training_view(
    tracking_config: TrackingConfig,
) -> None:
    @flow(**mlflow_state_hooks())
    def train() -> RunRef:
        return create_mlflow_run(setup_mlflow(tracking_config), run_name="train")

    run = train()
    tags = MlflowClient(tracking_config.tracking_uri).get_run(run.run_id).data.tags
    assert tags["mlflow.user"] == getpass.getuser()  # the UI's "Created by"
    assert tags["mlflow.source.type"] == "LOCAL"  # and "Source"
    # the tags mlflow.start_run would have set here, from MLflow's context providers
    assert resolve_tags({}).items() <= tags.items()
    assert run.url is not None and run.url.endswith("?workflowType=machine_learning")
    ctx = setup_mlflow.fn(tracking_config)
    assert ctx.experiment_url is not None
    assert ctx.experiment_url.endswith(
        f"#/experiments/{ctx.experiment_id}?workflowType=machine_learning"
    )
    with urllib.request.urlopen(run.url, timeout=30) as page:  # the UI serves that address
        assert page.status == 200


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="needs Debian's chromium")
def test_mlflows_own_ui_shows_who_created_the_run_and_its_source(
    tracking_config: TrackingConfig, tmp_path: Any
) -> None:
    run = create_mlflow_run.fn(setup_mlflow.fn(tracking_config), run_name="seen-in-the-ui")
    MlflowClient(run.tracking_uri).set_terminated(run.run_id)
    assert run.url is not None
    dom = subprocess.run(
        [
            "/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=30000",
            "--dump-dom", run.url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout  # fmt: skip
    text = " ".join(re.sub(r"<[^>]+>", " ", dom).split())  # what the page shows
    assert "seen-in-the-ui" in text, text[-2000:]  # the page rendered the run
    created_by = re.search(r"Created by (\S+) Experiment ID", text)
    source = re.search(r"Source (.+?) Logged models", text)
    assert created_by is not None and created_by[1] == getpass.getuser(), text[-3000:]
    tags = MlflowClient(run.tracking_uri).get_run(run.run_id).data.tags
    assert source is not None and source[1] == os.path.basename(tags["mlflow.source.name"])
