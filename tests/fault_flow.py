"""A tracked flow run as its own process, for tests/test_faults.py's Prefect API outage.

``python -m tests.fault_flow TRACKING_URI EXPERIMENT MARKER`` opens one MLflow run per
chunk, logs ``POINTS`` deterministic points into each (see :func:`expected_points`), and
writes MARKER when it starts its loop, so the test knows when to cut the Prefect API.
It prints ``flow-run <id> <state name>`` on a line of its own at the end.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

CHUNKS = 8
POINTS = 300
T0 = 1_700_000_000_000


def expected_points(chunk: int) -> list[tuple[str, float, int, int]]:
    """(key, value, step, timestamp) of every point chunk ``chunk``'s run gets."""
    return [("loss", chunk * 1000.0 + i, i, T0 + i) for i in range(POINTS)]


def main(tracking_uri: str, experiment: str, marker: Path) -> int:
    from prefect import flow, get_run_logger, task

    from tracking_tasks import (
        RunLogger,
        RunRef,
        TrackingConfig,
        create_mlflow_run,
        mlflow_state_hooks,
        setup_mlflow,
    )

    @task
    def log_chunk(run: RunRef, chunk: int) -> int:
        with RunLogger(run, flush_interval_seconds=None) as log:
            for key, value, step, ts in expected_points(chunk):
                log.log_metric(key, value, step, timestamp=ts)
        get_run_logger().info("chunk %d logged", chunk)  # log lines go to the API too
        return log.points_sent

    @flow(**mlflow_state_hooks())
    def outage() -> int:
        ctx = setup_mlflow(TrackingConfig(tracking_uri=tracking_uri, experiment_name=experiment))
        marker.write_text("started")
        sent = 0
        for chunk in range(CHUNKS):
            run = create_mlflow_run(ctx, run_name=f"chunk-{chunk}")
            sent += log_chunk(run, chunk)
            time.sleep(0.5)
        return sent

    state = outage(return_state=True)
    print(f"flow-run {state.state_details.flow_run_id} {state.name}", flush=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
