"""Flow processes for the SIGKILL test: each opens MLflow runs, reaches its kill point,
says so in a marker file, and waits there to be SIGKILLed (its hooks never run).

    python -m tests.orphan_worker SPEC.json

SPEC: ``{"tracking_uri", "experiment", "markers": dir, "workers": [{"name", "point"}]}``
(a worker may name an ``"experiment"`` of its own).
Points: ``setup`` (run just opened), ``logging`` (1,500 points logged through a
RunLogger: 1,000 sent, 500 still buffered), ``upload`` (a 20 MB artifact upload in
flight), ``sweep`` (inside a sweep's trial), ``hook`` (inside an on_completion hook that
runs before the MLflow hooks), ``live`` (a flow still running, never killed by the test
before the reconcile pass).

Importing Prefect, MLflow and the library costs ~12 CPU-seconds a process here, so this
process imports them once and forks one child per worker (``os.fork`` before any thread
or Prefect client exists); each child is its own process group (``os.setsid``), running
its own flow run against ``PREFECT_API_URL``. It writes ``<markers>/<name>.pid`` at once,
and ``<markers>/<name>.json`` (its flow run id) when it reaches its point.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from tracking_tasks import (
    RunLogger,
    TrackingConfig,
    create_mlflow_run,
    mlflow_state_hooks,
    setup_mlflow,
    track_sweep,
    upload_artifacts,
)

HANG_SECONDS = 900


def reached(markers: Path, name: str, **extra: Any) -> None:
    """Say the kill point is reached (atomically: the test polls for the file), then hang."""
    tmp = markers / f".{name}.tmp"
    tmp.write_text(json.dumps({"flow_run_id": str(flow_run.id), **extra}))
    tmp.rename(markers / f"{name}.json")
    time.sleep(HANG_SECONDS)


_HOOKS = mlflow_state_hooks()
_HANG: dict[str, Any] = {}


def hang_in_hook(flow_: Any, flow_run_: Any, state: Any) -> None:
    reached(_HANG["markers"], _HANG["name"], state=state.name)


@flow(
    name="orphan-worker",
    on_completion=[hang_in_hook, *_HOOKS["on_completion"]],
    on_failure=_HOOKS["on_failure"],
    on_crashed=_HOOKS["on_crashed"],
    on_cancellation=_HOOKS["on_cancellation"],
)
def orphan_worker(point: str, name: str, markers: str, tracking_uri: str, experiment: str) -> None:
    """Open runs, then stop at ``point`` (see the module docstring)."""
    where = Path(markers)
    ctx = setup_mlflow(TrackingConfig(experiment_name=experiment, tracking_uri=tracking_uri))
    if point == "sweep":

        def objective(params: dict[str, Any], log: RunLogger) -> dict[str, float]:
            log.log_metric("score", float(params["i"]))
            if params["i"] == 1:
                log.flush()
                reached(where, name, trial_run_id=log.run.run_id)
            return {"score": float(params["i"])}

        track_sweep(objective, [{"i": 0}, {"i": 1}], metric="score", context=ctx)
        return
    run = create_mlflow_run(ctx, run_name=f"{point}-{name}")
    if point == "setup":
        reached(where, name, run_id=run.run_id)
    elif point == "logging":
        with RunLogger(run, flush_interval_seconds=None) as log:
            for step in range(1500):
                log.log_metric("loss", 1.0 / (step + 1), step)
            reached(where, name, run_id=run.run_id, logged=1500, sent=log.points_sent)
    elif point == "upload":
        folder = Path(tempfile.mkdtemp(prefix="orphan-upload-"))
        (folder / "weights.bin").write_bytes(os.urandom(20 * 1024 * 1024))
        upload_artifacts.submit(run, folder, "model")  # in flight on a worker thread
        reached(where, name, run_id=run.run_id)
    elif point == "live":
        with RunLogger(run) as log:
            log.log_metric("loss", 1.0)
        reached(where, name, run_id=run.run_id)
    elif point == "hook":
        _HANG.update(markers=where, name=name)
        with RunLogger(run) as log:
            log.log_metric("loss", 0.5)
    else:
        raise ValueError(f"unknown kill point {point!r}")


def warm_up(tracking_uri: str) -> None:
    """Do once, before forking, the lazy imports every child would repeat (~7 CPU-s each):
    MLflow's client, its stores and plugins, Prefect's engines. No thread, no connection."""
    import mlflow.store.artifact.mlflow_artifacts_repo  # noqa: F401
    import prefect.flow_engine
    import prefect.task_engine
    import prefect.task_runners  # noqa: F401
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    client._tracking_client.store  # noqa: B018  (builds the REST store, loads the plugins)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    markers = Path(spec["markers"])
    warm_up(spec["tracking_uri"])
    assert threading.active_count() == 1, "fork only before any thread exists"
    children = []
    for worker in spec["workers"]:
        pid = os.fork()
        if pid == 0:  # the child: its own process group, its own flow run
            os.setsid()
            code = 0
            try:
                (markers / f"{worker['name']}.pid").write_text(str(os.getpid()))
                orphan_worker(
                    worker["point"],
                    worker["name"],
                    str(markers),
                    spec["tracking_uri"],
                    worker.get("experiment", spec["experiment"]),
                )
            except BaseException as exc:  # a worker that fails says so; the test reports it
                (markers / f"{worker['name']}.error").write_text(repr(exc))
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    print("forked", len(children), flush=True)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
