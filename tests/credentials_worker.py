"""One process of the two-process credentials test: a handle from the parent, a flow, a
plain server, all at once with the other process.

Usage: ``python -m tests.credentials_worker '<json>'`` with ``ref`` (a RunRef made by the
parent with a saved block: it carries the block's name, never its secret), ``context``
(the parent's TrackingContext, searched first: a finder loads the block too), ``block``,
``plain_uri``, ``experiment`` and ``artifact_dir``. Prints one JSON line of results.
"""

from __future__ import annotations

import json
import sys

from tests.helpers import credentials_flow
from tracking_tasks import RunRef, TrackingContext
from tracking_tasks.ops._finders import find_mlflow_runs
from tracking_tasks.ops._lifecycle import end_mlflow_run
from tracking_tasks.ops._logging import log_params as plain_log_params


def main(raw: str) -> None:
    args = json.loads(raw)
    ref = RunRef.model_validate_json(args["ref"])
    # no setup_mlflow here: the handles' reference loads the block where it is used; the
    # first request of this process is a search with the parent's context
    found = [
        run.run_id for run in find_mlflow_runs(TrackingContext.model_validate_json(args["context"]))
    ]
    plain_log_params(ref, {"logged_by": "worker"})
    end_mlflow_run(ref)
    results: dict[str, object] = {"ref_run_id": ref.run_id, "found": found, "flow_runs": []}
    for block, uri in ((args["block"], None), (None, args["plain_uri"]), (args["block"], None)):
        state = credentials_flow(
            block, uri, args["experiment"], args["artifact_dir"], return_state=True
        )
        assert state.is_completed(), state
        flow_runs = results["flow_runs"]
        assert isinstance(flow_runs, list)
        flow_runs.append(
            {"id": str(state.state_details.flow_run_id), "run_id": state.result()["run_id"]}
        )
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
