"""A flow process for the SIGKILL-mid-upload test: it logs a model whose upload the fault
proxy holds up, says so, and waits there to be SIGKILLed (its hooks never run).

    python -m tests.model_worker TRACKING_URI EXPERIMENT MARKER

TRACKING_URI is the fault proxy in front of the session's `mlflow server`, told to hold
the model's files for minutes after the first two (``--fault slow``): the model is
PENDING with files missing. The worker writes MARKER (JSON: flow run id, run id) once the model exists,
from a thread, since the flow itself is stuck in the upload. It runs its flow against
``PREFECT_API_URL`` (the suite's Prefect API).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from mlflow import MlflowClient
from prefect import flow
from prefect.runtime import flow_run
from sklearn.linear_model import LogisticRegression

from tracking_tasks import (
    TrackingConfig,
    create_mlflow_run,
    log_model,
    mlflow_state_hooks,
    setup_mlflow,
)


def _announce(tracking_uri: str, experiment_id: str, marker: Path, ids: dict[str, str]) -> None:
    """Write the marker once the run's model exists on the server (PENDING)."""
    client = MlflowClient(tracking_uri)
    while not client.search_logged_models([experiment_id]):
        time.sleep(0.2)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(ids))
    tmp.rename(marker)


@flow(name="model-worker", **mlflow_state_hooks())
def model_worker(tracking_uri: str, experiment: str, marker: str) -> None:
    """Log a model whose upload never finishes (the proxy holds it)."""
    ctx = setup_mlflow(TrackingConfig(experiment_name=experiment, tracking_uri=tracking_uri))
    run = create_mlflow_run(ctx, run_name="killed-mid-upload")
    ids = {"flow_run_id": str(flow_run.id), "run_id": run.run_id}
    threading.Thread(
        target=_announce,
        args=(tracking_uri, ctx.experiment_id, Path(marker), ids),
        daemon=True,
    ).start()
    clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    log_model(run, clf, "killed", input_example=[[0.5]])


if __name__ == "__main__":
    model_worker(sys.argv[1], sys.argv[2], sys.argv[3])
