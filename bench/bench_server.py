"""How fast can an `mlflow server` end runs? The floor under a reconcile pass.

    .venv/bin/python bench/bench_server.py                 # 600 runs a configuration, 3 reps
    .venv/bin/python bench/bench_server.py --runs 1000 --reps 5

Raw MLflow only, no tracking-tasks code on the timed path: for each server configuration
(SQLite or PostgreSQL from the pgserver wheel, 1 or 2 uvicorn workers) it creates
``--runs`` RUNNING runs, then ends each from 8 threads of one ``MlflowClient`` the way a
reconcile pass does (one ``log_batch`` with two tags, one status update: the two requests
MLflow's REST API needs to end a run and say why), and reports runs ended a second
(median over the repetitions) and the server's CPU time per request (its process group,
from /proc). ``bench/bench_reconcile.py`` compares the library's pass against raw
``set_terminated``; this one says where both of them stop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from common import RESULTS, machine

os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # set_terminated's get_run

from tests.servers import MlflowServer, start_mlflow_server, start_postgres_server

THREADS = 8
CONFIGS = [("sqlite", 1), ("sqlite", 2), ("postgres", 1), ("postgres", 2)]


def server_cpu_seconds(server: MlflowServer) -> float:
    """User + system CPU seconds of the server and every process under it."""
    root = psutil.Process(server.proc.pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with_times = proc.cpu_times()
        total += with_times.user + with_times.system
    return total


def end_runs_rate(server: MlflowServer, runs: int, experiment: str) -> tuple[float, float]:
    """(runs ended a second, server CPU ms per request) for ``runs`` fresh RUNNING runs."""
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    client = MlflowClient(server.url)
    exp_id = client.create_experiment(experiment)
    with ThreadPoolExecutor(THREADS) as pool:
        ids = list(pool.map(lambda _: client.create_run(exp_id).info.run_id, range(runs)))

    def end(run_id: str) -> None:
        tags = [RunTag("prefect.final_state", "Completed"), RunTag("why", "flow run Completed")]
        client.log_batch(run_id, tags=tags)
        client.set_terminated(run_id, "FINISHED")  # one request: no URL printed (below)

    cpu0, start = server_cpu_seconds(server), time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(end, ids))
    seconds, cpu = time.perf_counter() - start, server_cpu_seconds(server) - cpu0
    return runs / seconds, 1000 * cpu / (2 * runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=600, help="runs ended per repetition")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine(), "runs": args.runs, "configs": {}}
    postgres = start_postgres_server()
    try:
        for backend, workers in CONFIGS:
            root = Path(tempfile.mkdtemp(prefix=f"bench-server-{backend}-{workers}-"))
            uri = postgres.create_database(f"b{workers}") if backend == "postgres" else None
            server = start_mlflow_server(root, workers=workers, backend_store_uri=uri)
            try:
                end_runs_rate(server, 50, "warm-up")
                samples = [end_runs_rate(server, args.runs, f"rep-{r}") for r in range(args.reps)]
            finally:
                server.stop()
            rate = statistics.median(s[0] for s in samples)
            cpu_ms = statistics.median(s[1] for s in samples)
            label = f"{backend}, {workers} worker{'s' if workers > 1 else ''}"
            results["configs"][label] = {"runs_per_s": [s[0] for s in samples], "cpu_ms": cpu_ms}
            print(
                f"{label:22} {rate:6.1f} runs ended/s (min {min(s[0] for s in samples):.1f}, "
                f"max {max(s[0] for s in samples):.1f}); server CPU {cpu_ms:.1f} ms/request; "
                f"10,000 runs: {10_000 / rate:.0f} s",
                flush=True,
            )
    finally:
        postgres.stop()
    out = RESULTS / "server.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
