"""Nightly benchmark: time the latest registered digits model, tracked as a benchmark stage.

Deployed on a cron schedule by prefect.yaml. Finds the newest version of the registered
model the pipeline publishes, downloads its converted form (a JSON linear model) with
the library's verified download, and benchmarks it with ``track_benchmark``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import numpy as np
from prefect import flow
from sklearn.datasets import load_digits

from tracking_tasks import (
    BenchmarkOutput,
    StageContext,
    TrackingConfig,
    download_artifacts,
    get_run_summary,
    mlflow_state_hooks,
    setup_mlflow,
    track_benchmark,
)
from tracking_tasks.tasks import latest_model_version


@flow(name="nightly-benchmark", **mlflow_state_hooks())
def nightly_benchmark(
    model_name: str = "digits-sgd",
    experiment_name: str = "digits-pipeline",
    calls: int = 200,
    batch: int = 32,
) -> dict[str, Any]:
    """Benchmark the newest version of ``model_name`` and record it under the experiment."""
    ctx = setup_mlflow(TrackingConfig(experiment_name=experiment_name))
    latest = latest_model_version(
        model_name, tracking_uri=ctx.tracking_uri, registry_uri=ctx.registry_uri
    )
    source = get_run_summary(latest.run_id, tracking_uri=ctx.tracking_uri).to_ref()
    folder = Path(
        download_artifacts(
            source, latest.artifact_path or "converted", tempfile.mkdtemp(prefix="nightly-")
        )
    )
    spec = json.loads(next(folder.rglob("linear_model.json")).read_text())
    coef, intercept = np.array(spec["coef"]), np.array(spec["intercept"])
    x, y = load_digits(return_X_y=True)
    x = x * spec["input_scale"]

    def bench(stage: StageContext) -> BenchmarkOutput:
        latencies = []
        for call in range(calls):
            start = (call * batch) % (len(x) - batch)
            t0 = time.perf_counter()
            np.argmax(x[start : start + batch] @ coef.T + intercept, axis=1)
            latencies.append(time.perf_counter() - t0)
        predictions = np.array(spec["classes"])[np.argmax(x @ coef.T + intercept, axis=1)]
        return BenchmarkOutput(
            latencies_s=latencies,
            batch_size=batch,
            metrics={"accuracy_all_digits": float(np.mean(predictions == y))},
        )

    result = track_benchmark(
        bench,
        {"model_name": model_name, "model_version": latest.version, "calls": calls, "batch": batch},
        ctx,
        model_run=source,
        run_name=f"nightly-benchmark-v{latest.version}",
    )
    return {"run_id": result.run.run_id, "p99_ms": result.p99_ms, "version": latest.version}


if __name__ == "__main__":
    print(nightly_benchmark())
