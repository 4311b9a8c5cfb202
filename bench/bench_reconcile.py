"""Benchmark a reconcile pass over RUNNING runs whose Prefect flow runs are finished.

    .venv/bin/python bench/bench_reconcile.py                  # 10,000 runs, 1 rep
    .venv/bin/python bench/bench_reconcile.py --runs 2000 --reps 3
    .venv/bin/python bench/bench_reconcile.py --runs 1000 --out reconcile-1000.json

It starts a real `mlflow server --workers 1` and a real `prefect server start`, each
behind tests/faultproxy.py with ``--fault none`` (which forwards everything and counts
the requests), then for each rep:

- creates ``--runs`` flow runs' worth of work: flow runs created directly in a terminal
  state through the Prefect REST API (1 to 5 MLflow runs each, about 3 on average:
  60% Completed, 20% Failed, 15% Crashed, 5% Cancelled), and two sets of ``--runs``
  RUNNING MLflow runs tagged with those flow runs (concurrent ``MlflowClient.create_run``);
- times ``reconcile_runs`` with the Prefect lookup over the first set, counting MLflow
  and Prefect requests (goals: under 60 s, at most 1 Prefect call per 100 runs, at most
  2 MLflow requests per run ended); the runs carry this Prefect API's ``prefect.api``
  tag as the library writes it, and the pass computes its own (one Prefect call) and
  reads each batch of runs again before ending it, with no grace period (every run was
  just created);
- times raw MLflow doing the same end-of-run work on the second set: ``set_terminated``
  for each run id, from 8 threads (the reconcile pass's concurrency), with no search,
  no lookup and no tag: what a script that already knew the ids and states would do.

Both go through the same proxy, so the proxy's cost (a new upstream connection per
request) is in both. Results: bench/results/reconcile.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import RESULTS, Measure, Pair, report

from tests.helpers import prefect_api
from tests.servers import (
    start_fault_proxy,
    start_mlflow_server,
    start_prefect_server,
)

STATES = [("COMPLETED", "Completed", 60), ("FAILED", "Failed", 20)]
STATES += [("CRASHED", "Crashed", 15), ("CANCELLED", "Cancelled", 5)]
THREADS = 8  # MLflow client connection pool: 10


def make_flow_runs(api: str, runs: int, rng: random.Random) -> list[tuple[str, str]]:
    """Flow runs in terminal states, with 1-5 MLflow runs each: ``runs`` (flow run, state)
    slots, one per MLflow run to create."""
    flow_id = prefect_api(api, "/flows/", {"name": "bench-reconcile"})["id"]
    sizes: list[int] = []
    while sum(sizes) < runs:
        sizes.append(min(rng.randint(1, 5), runs - sum(sizes)))
    weights = [w for _, _, w in STATES]
    picked = rng.choices(STATES, weights, k=len(sizes))

    def create(state: tuple[str, str, int]) -> str:
        body = {"flow_id": flow_id, "state": {"type": state[0], "name": state[1]}}
        return str(prefect_api(api, "/flow_runs/", body)["id"])

    with ThreadPoolExecutor(4) as pool:  # Prefect's SQLite store: few writers at once
        ids = list(pool.map(create, picked))
    return [(fr, s[0]) for fr, s, n in zip(ids, picked, sizes, strict=True) for _ in range(n)]


def make_runs(url: str, experiment: str, slots: list[tuple[str, str]], api: str) -> list[str]:
    from mlflow import MlflowClient

    from tracking_tasks.tags import FLOW_RUN_TAG, PREFECT_API_TAG

    client = MlflowClient(url)
    exp_id = client.create_experiment(experiment)

    def make(slot: tuple[str, str]) -> str:
        tags = {FLOW_RUN_TAG: slot[0], PREFECT_API_TAG: api}
        return str(client.create_run(exp_id, tags=tags).info.run_id)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(make, slots))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="RUNNING runs a pass (10,000)")
    parser.add_argument("--reps", type=int, default=1, help="repetitions (fresh runs each)")
    parser.add_argument("--out", default="reconcile.json", help="results file in bench/results")
    args = parser.parse_args()

    from mlflow import MlflowClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tracking_tasks.ops._reconcile import reconcile_runs
    from tracking_tasks.tasks._prefect_api import _read_database_identity, prefect_api_identity
    from tracking_tasks.tasks._reconcile import read_flow_run_states

    root = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    (root / "prefect").mkdir()
    (root / "mlflow").mkdir()
    mlflow_server = start_mlflow_server(root / "mlflow")
    prefect_server = start_prefect_server(root / "prefect")
    mlflow_proxy = start_fault_proxy(mlflow_server.url, "--fault", "none")
    prefect_proxy = start_fault_proxy(prefect_server.api.rsplit("/api", 1)[0], "--fault", "none")
    rng = random.Random(0)
    lib_s, raw_s, build_s = [], [], []
    counts: list[dict[str, Any]] = []
    try:
        client = MlflowClient(mlflow_proxy.url)
        with temporary_settings({PREFECT_API_URL: prefect_server.api}):
            api = prefect_api_identity()  # as a flow on this server tags its runs
        for rep in range(args.reps):
            start = time.perf_counter()
            slots = make_flow_runs(prefect_server.api, args.runs, rng)
            lib_exp, raw_exp = f"bench-reconcile-{rep}", f"bench-raw-{rep}"
            lib_ids = make_runs(mlflow_server.url, lib_exp, slots, api)
            raw_ids = make_runs(mlflow_server.url, raw_exp, slots, api)
            build_s.append(time.perf_counter() - start)
            flow_runs = len({fr for fr, _ in slots})
            print(
                f"rep {rep}: {flow_runs} flow runs, 2 x {len(lib_ids)} RUNNING runs "
                f"built in {build_s[-1]:.1f}s",
                flush=True,
            )

            mlflow_proxy.configure(fault="none")
            prefect_proxy.configure(fault="none")
            _read_database_identity.cache_clear()  # each pass asks once, as a fresh process
            with temporary_settings({PREFECT_API_URL: f"{prefect_proxy.url}/api"}):
                start = time.perf_counter()
                result = reconcile_runs(
                    read_flow_run_states,
                    lib_exp,
                    prefect_api=prefect_api_identity(),
                    tracking_uri=mlflow_proxy.url,
                    grace_seconds=0,
                )
                lib_s.append(time.perf_counter() - start)
            assert result.prefect_api == api and not result.not_ours
            mlflow_requests = mlflow_proxy.stats()["seen"]
            prefect_requests = prefect_proxy.stats()["seen"]
            assert len(result.ended) == args.runs and not result.errors, result.counts()

            mlflow_proxy.configure(fault="none")
            states = dict(slots)
            status = {"COMPLETED": "FINISHED", "CANCELLED": "KILLED"}
            raw_status = [status.get(states[fr], "FAILED") for fr, _ in slots]
            start = time.perf_counter()
            with (
                contextlib.redirect_stdout(io.StringIO()),  # set_terminated prints each URL
                ThreadPoolExecutor(8) as pool,
            ):
                list(pool.map(client.set_terminated, raw_ids, raw_status))
            raw_s.append(time.perf_counter() - start)
            raw_requests = mlflow_proxy.stats()["seen"]
            counts.append(
                {
                    "runs": args.runs,
                    "flow_runs": flow_runs,
                    "library_mlflow_requests": mlflow_requests,
                    "library_prefect_requests": prefect_requests,
                    "raw_mlflow_requests": raw_requests,
                    "outcomes": result.counts(),
                }
            )
            ended = client.search_runs(
                [client.get_experiment_by_name(lib_exp).experiment_id],  # type: ignore[union-attr]
                "attributes.status = 'RUNNING'",
                max_results=10,
            )
            assert not ended, "a run is still RUNNING after the pass"
            print(
                f"rep {rep}: reconcile {lib_s[-1]:.1f}s ({mlflow_requests} MLflow, "
                f"{prefect_requests} Prefect requests); raw set_terminated {raw_s[-1]:.1f}s "
                f"({raw_requests} MLflow requests)",
                flush=True,
            )
    finally:
        for proc in (mlflow_proxy, prefect_proxy, mlflow_server, prefect_server):
            proc.stop()

    last = counts[-1]
    per_run = {
        "mlflow_per_run": last["library_mlflow_requests"] / args.runs,
        "prefect_per_100_runs": 100 * last["library_prefect_requests"] / args.runs,
        "raw_mlflow_per_run": last["raw_mlflow_requests"] / args.runs,
    }
    note = (
        f"{per_run['mlflow_per_run']:.3f} MLflow req/run (raw {per_run['raw_mlflow_per_run']:.2f}), "
        f"{per_run['prefect_per_100_runs']:.2f} Prefect calls/100 runs (goal <= 1); "
        + (
            f"goal < 60 s: {'met' if max(lib_s) < 60 else 'MISSED'}"
            if args.runs == 10_000
            else "(the < 60 s goal is for 10,000 runs)"
        )
    )
    pair = Pair(
        f"reconcile {args.runs:,} RUNNING runs of finished flow runs (vs raw set_terminated)",
        "s",
        Measure(lib_s),
        Measure(raw_s),
        higher_is_better=False,
        goal="< 60 s, <= 1 Prefect call per 100 runs",
        note=note,
    )
    report("Reconcile", [pair], args.out)
    out = RESULTS / args.out
    data = json.loads(out.read_text())
    data.update(requests=counts, per_run=per_run, build_seconds=build_s)
    out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
