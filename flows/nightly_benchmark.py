"""Nightly benchmark: time the champion digits model, tracked as a benchmark stage.

Deployed on a cron schedule by prefect.yaml. Reads which version of the registered model
the pipeline publishes is its ``champion`` (the current model is read by alias), loads it
as MLflow's pyfunc (with the library's verified download, no global tracking URI) and
benchmarks its ``predict`` with ``track_benchmark``; the latency is also linked to the
champion's logged model.
"""

from __future__ import annotations

import os
import time
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
    get_run_summary,
    mlflow_state_hooks,
    setup_mlflow,
    track_benchmark,
)
from tracking_tasks.ops import get_model_summary, load_model
from tracking_tasks.tasks import get_model_version, log_model_metrics


@flow(name="nightly-benchmark", **mlflow_state_hooks())
def nightly_benchmark(
    model_name: str = "digits-sgd",
    experiment_name: str = "digits-pipeline",
    calls: int = 200,
    batch: int = 32,
    alias: str = "champion",
) -> dict[str, Any]:
    """Benchmark ``model_name@alias`` and record it under the experiment."""
    ctx = setup_mlflow(TrackingConfig(experiment_name=experiment_name))
    champion = get_model_version(
        model_name, alias=alias, tracking_uri=ctx.tracking_uri, registry_uri=ctx.registry_uri
    )
    model = load_model(
        champion.uri,  # the version read above, even if the alias moves meanwhile
        tracking_uri=ctx.tracking_uri,
        registry_uri=ctx.registry_uri,
    )
    logged = get_model_summary(f"models:/{champion.model_id}", tracking_uri=ctx.tracking_uri)
    source = get_run_summary(champion.run_id, tracking_uri=ctx.tracking_uri).to_ref()
    x, y = load_digits(return_X_y=True)
    x = x / 16.0  # the pipeline's input scaling (flows/pipeline.py)

    def bench(stage: StageContext) -> BenchmarkOutput:
        latencies = []
        for call in range(calls):
            start = (call * batch) % (len(x) - batch)
            t0 = time.perf_counter()
            model.predict(x[start : start + batch])
            latencies.append(time.perf_counter() - t0)
        predictions = np.asarray(model.predict(x))
        return BenchmarkOutput(
            latencies_s=latencies,
            batch_size=batch,
            metrics={"accuracy_all_digits": float(np.mean(predictions == y))},
        )

    result = track_benchmark(
        bench,
        {
            "model_name": model_name,
            "model_version": champion.version,
            "calls": calls,
            "batch": batch,
        },
        ctx,
        model_run=source,
        run_name=f"nightly-benchmark-v{champion.version}",
    )
    # what the nightly run measured belongs to the champion's logged model too
    log_model_metrics(logged.to_ref(), result.metrics, run=result.run)
    return {
        "run_id": result.run.run_id,
        "p99_ms": result.p99_ms,
        "version": champion.version,
        "model_id": model.model_id,
        "accuracy_all_digits": result.metrics["accuracy_all_digits"],
    }


if __name__ == "__main__":
    print(nightly_benchmark())
