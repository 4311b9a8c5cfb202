"""Demo: one tracked training flow on the embedded default (local SQLite, ephemeral Prefect).

Run it with ``make demo``. It sets up MLflow (a SQLite store ``mlflow.db`` in the working
directory unless MLFLOW_TRACKING_URI says otherwise), opens a run, logs params, per-step
metrics and a small artifact (summary/summary.json), and lets the flow's state hooks end the run FINISHED.
"""

from __future__ import annotations

import math
import os
import random

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import json
import tempfile
from pathlib import Path

from prefect import flow, task

from tracking_tasks import (
    RunLogger,
    RunRef,
    TrackingConfig,
    create_mlflow_run,
    get_run_summary,
    log_params,
    mlflow_state_hooks,
    setup_mlflow,
    upload_artifacts,
)


@task
def train(run: RunRef, lr: float, epochs: int, seed: int) -> float:
    """A tiny real optimisation: gradient descent on a noisy quadratic, logged per step."""
    rng = random.Random(seed)
    weight, loss = 0.0, math.inf
    with RunLogger(run) as log:
        for step in range(epochs):
            target = 3.0 + rng.gauss(0, 0.05)
            grad = 2 * (weight - target)
            weight -= lr * grad
            loss = (weight - target) ** 2
            log.log_metrics({"loss": loss, "weight": weight}, step=step)
    return loss


@task
def write_summary(final_loss: float) -> Path:
    """Write a small JSON summary to a local folder."""
    folder = Path(tempfile.mkdtemp(prefix="demo-summary-"))
    (folder / "summary.json").write_text(
        json.dumps({"final_loss": final_loss, "model": "quadratic"})
    )
    return folder


@flow(name="tracking-tasks-demo", **mlflow_state_hooks())
def demo(lr: float = 0.1, epochs: int = 50, seed: int = 0) -> RunRef:
    """Set up tracking, open a run, log params, per-step metrics and an artifact."""
    ctx = setup_mlflow(TrackingConfig(experiment_name="tracking-tasks-demo"))
    config = {"lr": lr, "epochs": epochs, "seed": seed}
    run = create_mlflow_run(ctx, run_name="demo-train", config=config, tags={"stage": "training"})
    log_params(run, config)
    final_loss = train(run, lr, epochs, seed)
    upload_artifacts(run, write_summary(final_loss), "summary")
    return run


def main() -> None:
    run = demo()
    summary = get_run_summary(run.run_id, tracking_uri=run.tracking_uri)
    print()
    print(f"MLflow run {run.run_id} ({run.run_name}) is {summary.status}")
    print(f"  experiment {run.experiment_id}, tracking URI {run.tracking_uri}")
    if run.url:
        print(f"  open it: {run.url}")
    else:
        print("  open it in the MLflow UI:")
        print(f"    .venv/bin/mlflow ui --backend-store-uri {run.tracking_uri} --port 5000")
        print(
            f"    then http://127.0.0.1:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}?workflowType=machine_learning"
        )


if __name__ == "__main__":
    main()
