"""PostgreSQL benchmark: RunLogger vs raw log_batch on an `mlflow server` backed by PostgreSQL.

Run: ``make bench`` (all benchmarks) or ``.venv/bin/python bench/bench_postgres.py``.
Starts PostgreSQL 16 (the pgserver wheel) on loopback and ``mlflow server --workers 1
--backend-store-uri postgresql+psycopg://...`` on a fresh database of it. Each run size
is logged into a new run by ``RunLogger`` and by raw ``MlflowClient.log_batch`` calls of
1,000 points (MLflow's limit per request), interleaved (the side that goes first
alternates), medians over the repetitions.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import Measure, Pair, report, timed

from tests.servers import start_mlflow_server, start_postgres_server

#: (metric keys, steps per key): a short run, a typical training run, a long one
RUN_SIZES = ((1, 1_000), (10, 1_000), (1, 10_000))


def bench_run_sizes(url: str, reps: int) -> list[Pair]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from tracking_tasks import RunLogger, RunRef

    client = MlflowClient(url)
    exp = client.create_experiment("bench-postgres")

    def new_ref() -> RunRef:
        run = client.create_run(exp)
        return RunRef(run_id=run.info.run_id, experiment_id=exp, run_name="b", tracking_uri=url)

    requests = {"library": 0, "raw": 0}  # log_batch requests, over all samples

    def library(keys: int, steps: int) -> float:
        ref = new_ref()

        def work() -> None:
            with RunLogger(ref, flush_interval_seconds=None) as log:
                for step in range(steps):
                    for k in range(keys):
                        log.log_metric(f"m{k}", 1.0 / (step + 1), step)
            requests["library"] += log.requests_sent

        return keys * steps / timed(work)

    def raw(keys: int, steps: int) -> float:
        ref = new_ref()

        def work() -> None:
            buf: list[Metric] = []
            for step in range(steps):
                for k in range(keys):
                    buf.append(Metric(f"m{k}", 1.0 / (step + 1), int(time.time() * 1000), step))
                    if len(buf) == 1000:
                        client.log_batch(ref.run_id, metrics=buf)
                        requests["raw"] += 1
                        buf = []
            if buf:
                client.log_batch(ref.run_id, metrics=buf)
                requests["raw"] += 1

        return keys * steps / timed(work)

    library(1, 1_000), raw(1, 1_000)  # warm both (connections, the server's first writes)
    requests.update(library=0, raw=0)
    measures = {size: (Measure([]), Measure([])) for size in RUN_SIZES}
    for rep in range(reps):  # interleaved, so drift on the server hits both alike
        for size in RUN_SIZES:
            lib, rawm = measures[size]
            sides = [(lib, library), (rawm, raw)]
            for measure, fn in sides if rep % 2 == 0 else sides[::-1]:  # neither always first
                measure.samples.append(fn(*size))
    samples = reps * len(RUN_SIZES)
    points = reps * sum(keys * steps for keys, steps in RUN_SIZES)
    per_10k = {side: n * 10_000 / points for side, n in requests.items()}
    print(f"log_batch requests over {samples} runs a side: {requests}")
    return [
        Pair(
            "log_batch requests per 10,000 points: RunLogger vs raw log_batch",
            "requests",
            Measure([per_10k["library"]]),
            Measure([per_10k["raw"]]),
            False,
            "== 1.0x",
            note="the same requests: any gap in the rates is the server's and the machine's",
        ),
        *(
            Pair(
                f"metric points/s on PostgreSQL, {keys} key(s) x {steps:,} steps: "
                "RunLogger vs raw log_batch",
                "pts/s",
                lib,
                rawm,
                True,
                ">= 0.95x",
            )
            for (keys, steps), (lib, rawm) in measures.items()
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()

    postgres = start_postgres_server()
    try:
        with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
            server = start_mlflow_server(
                Path(tmp), backend_store_uri=postgres.create_database("bench")
            )
            try:
                pairs = bench_run_sizes(server.url, args.reps)
            finally:
                server.stop()
    finally:
        postgres.stop()
    report("tracking-tasks RunLogger on PostgreSQL vs raw MLflow", pairs, "postgres.json")


if __name__ == "__main__":
    main()
