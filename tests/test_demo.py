"""The README's demo: flows/demo.py on the embedded default, in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient


def _run_flow_script(repo_root: Path, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run flows/<script> as a newcomer would: fresh process, no MLflow or Prefect API set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_API"))}
    out = subprocess.run(
        [sys.executable, str(repo_root / "flows" / script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_demo_runs_on_embedded_default(tmp_path: Path, repo_root: Path) -> None:
    out = _run_flow_script(repo_root, "demo.py", tmp_path)
    db = tmp_path / "mlflow.db"
    assert db.exists()
    assert f"sqlite:///{db}" in out.stdout
    assert "mlflow ui --backend-store-uri" in out.stdout
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("tracking-tasks-demo")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id in out.stdout
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "epochs": "50", "seed": "0"}
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 50
    listed = client.list_artifacts(run.info.run_id, "summary")
    assert "summary/summary.json" in [a.path for a in listed]
    summary = client.download_artifacts(run.info.run_id, "summary/summary.json", str(tmp_path))
    assert '"final_loss"' in Path(summary).read_text()


@pytest.mark.timeout(900)  # the whole pipeline, then the nightly benchmark, on 2 busy cores
def test_pipeline_demo_runs_every_stage(
    tmp_path: Path, repo_root: Path, fluent_reset: None
) -> None:
    """`make demo`: the whole pipeline on the embedded default, in a fresh process; then
    the registered champion is what MLflow's own loader reads, and the nightly benchmark
    loads it by alias."""
    out = _run_flow_script(repo_root, "pipeline.py", tmp_path)
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("digits-pipeline")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    stages = {"sweep", "training", "benchmark", "conversion"}
    assert stages | {f"trial-{i}" for i in range(12)} == set(runs)  # Optuna TPE, 12 trials
    assert runs["sweep"].data.params["sampler"] == "TPESampler"
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    for stage in stages:
        assert runs[stage].info.run_id in out.stdout
    assert runs["training"].data.metrics["test_accuracy"] > 0.85  # a real model learned
    assert runs["conversion"].data.metrics["parity_max_abs_diff"] < 1e-6
    (version,) = client.search_model_versions("name = 'digits-sgd'")
    assert version.run_id == runs["conversion"].info.run_id
    assert "mlflow ui --backend-store-uri" in out.stdout

    # the models are MLflow 3 models: the converted one registered, champion by alias
    models = {m.name: m for m in client.search_logged_models([experiment.experiment_id])}
    assert set(models) == {"digits-sgd-sklearn", "digits-sgd-linear"}
    assert {str(m.status) for m in models.values()} == {"READY"}
    assert version.source == f"models:/{models['digits-sgd-linear'].model_id}"
    assert client.get_model_version_by_alias("digits-sgd", "champion").version == version.version
    assert {m.key for m in models["digits-sgd-sklearn"].metrics} >= {"test_accuracy"}
    assert "champion" in runs["conversion"].data.tags["tracking_tasks.promotion.champion"]
    assert "mlflow.pyfunc.load_model('models:/digits-sgd@champion')" in out.stdout
    assert "mlflow models serve -m models:/digits-sgd@champion --env-manager local" in out.stdout
    from flows.pipeline import _data

    x_test = _data(0)["x_test"]
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    champion = mlflow.pyfunc.load_model("models:/digits-sgd@champion")
    trained = mlflow.pyfunc.load_model(f"models:/{models['digits-sgd-sklearn'].model_id}")
    labels = np.asarray(trained.predict(x_test))
    assert np.array_equal(np.asarray(champion.predict(x_test)), labels)
    assert float(np.mean(labels == _data(0)["y_test"])) > 0.85

    # the nightly benchmark loads the champion by alias
    nightly = _run_flow_script(repo_root, "nightly_benchmark.py", tmp_path)
    assert f"'version': '{version.version}'" in nightly.stdout
    assert f"'model_id': '{models['digits-sgd-linear'].model_id}'" in nightly.stdout
