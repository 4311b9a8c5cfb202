"""Flow processes for the shared-server tests (tests/test_shared_server.py).

    python -m tests.shared_worker ROLE SPEC.json

SPEC: ``{"tracking_uri", "experiments": [...], "markers": dir, "name"}`` (plus
``"flow_run_id"`` for ``retry``). Roles:

- ``laptop``: a flow on whatever Prefect API the environment gives (the tests give it a
  PREFECT_HOME of its own and no PREFECT_API_URL: Prefect's temporary API, as on an
  engineer's laptop) opens one run in each experiment, logs a point, says so in
  ``<markers>/<name>.json`` and waits, writing nothing, until ``<markers>/<name>.stop``;
- ``live``: a flow opens a run and logs a point every 0.2 s (none while
  ``<markers>/<name>.quiet`` exists) until ``<name>.stop``;
- ``first``: a flow opens its run, logs a point, says so and waits to be SIGKILLed;
- ``retry``: runs the flow run ``flow_run_id`` of a ``first`` again in this process, as a
  Prefect worker does for a retried flow run: its run is found again (reopened if it was
  ended), a point is logged, it says so (``<name>.retry.json``) and waits for ``<name>.stop``.

Every flow ends through its own state hooks (``mlflow_state_hooks``).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from tracking_tasks import create_mlflow_run, log_metrics, mlflow_state_hooks, ops, setup_mlflow
from tracking_tasks.tasks import prefect_api_identity

WAIT_SECONDS = 600


def say(markers: Path, name: str, **extra: Any) -> None:
    """Write ``<markers>/<name>.json`` atomically (the test polls for it)."""
    tmp = markers / f".{name}.tmp"
    tmp.write_text(json.dumps({"flow_run_id": str(flow_run.id), **extra}))
    tmp.rename(markers / f"{name}.json")


def wait_for_stop(markers: Path, name: str, log: Any = None) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    step = 1
    while not (markers / f"{name}.stop").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {name}.stop within {WAIT_SECONDS} s")
        if log is not None and not (markers / f"{name}.quiet").exists():
            log(step)
            step += 1
        time.sleep(0.2)


@flow(name="shared-laptop", **mlflow_state_hooks())
def laptop(tracking_uri: str, experiments: list[str], markers: str, name: str) -> None:
    where = Path(markers)
    runs = []
    for experiment in experiments:
        run = create_mlflow_run(setup_mlflow(experiment_name=experiment, tracking_uri=tracking_uri))
        log_metrics(run, {"loss": 1.0}, step=0)
        runs.append(run.run_id)
    say(where, name, run_ids=runs, prefect_api=prefect_api_identity())
    wait_for_stop(where, name)


@flow(name="shared-live", **mlflow_state_hooks())
def live(tracking_uri: str, experiments: list[str], markers: str, name: str) -> None:
    where = Path(markers)
    ctx = setup_mlflow(experiment_name=experiments[0], tracking_uri=tracking_uri)
    run = create_mlflow_run(ctx, "live")
    log_metrics(run, {"loss": 1.0}, step=0)
    say(where, name, run_id=run.run_id)
    wait_for_stop(where, name, lambda step: ops.log_metrics(run, {"loss": 1.0 / step}, step=step))


@flow(name="shared-retried", **mlflow_state_hooks())
def retried(tracking_uri: str, experiments: list[str], markers: str, name: str) -> None:
    where = Path(markers)
    ctx = setup_mlflow(experiment_name=experiments[0], tracking_uri=tracking_uri)
    run = create_mlflow_run(ctx, "train")
    attempt = flow_run.run_count
    log_metrics(run, {"attempt": float(attempt)}, step=attempt)
    if attempt <= 1:
        say(where, name, run_id=run.run_id)
        time.sleep(WAIT_SECONDS)  # SIGKILLed here
    say(where, f"{name}.retry", run_id=run.run_id, attempt=attempt)
    wait_for_stop(where, name)


def main() -> None:
    role, spec = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    args = {k: spec[k] for k in ("tracking_uri", "experiments", "markers", "name")}
    if role == "laptop":
        laptop(**args)
    elif role == "live":
        live(**args)
    elif role == "first":
        retried(**args)
    elif role == "retry":
        from prefect.client.orchestration import get_client
        from prefect.flow_engine import run_flow

        with get_client(sync_client=True) as client:
            again = client.read_flow_run(uuid.UUID(spec["flow_run_id"]))
        run_flow(retried, flow_run=again, parameters=args)
    else:
        raise ValueError(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
