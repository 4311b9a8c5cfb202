"""Foundation benchmarks: batched logging, a tracked training flow, import time.

Run: ``make bench`` (all benchmarks) or ``.venv/bin/python bench/bench_foundation.py``.
Starts its own ``mlflow server --workers 1`` on loopback and a temporary Prefect API.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, Measure, Pair, report, timed

from tests.servers import start_mlflow_server, start_prefect_server


def bench_metrics(url: str, reps: int, points: int, per_point: int) -> list[Pair]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from tracking_tasks import RunLogger, RunRef

    client = MlflowClient(url)
    exp = client.create_experiment("bench-metrics")

    def new_ref() -> RunRef:
        run = client.create_run(exp)
        return RunRef(run_id=run.info.run_id, experiment_id=exp, run_name="b", tracking_uri=url)

    def library() -> float:
        ref = new_ref()

        def work() -> None:
            with RunLogger(ref, flush_interval_seconds=None) as log:
                for i in range(points):
                    log.log_metric("loss", 1.0 / (i + 1), i)

        return points / timed(work)

    def raw_batch() -> float:
        ref = new_ref()

        def work() -> None:
            buf = []
            for i in range(points):
                buf.append(Metric("loss", 1.0 / (i + 1), int(time.time() * 1000), i))
                if len(buf) == 1000:
                    client.log_batch(ref.run_id, metrics=buf)
                    buf = []
            if buf:
                client.log_batch(ref.run_id, metrics=buf)

        return points / timed(work)

    def raw_per_point() -> float:
        ref = new_ref()

        def work() -> None:
            for i in range(per_point):
                client.log_metric(ref.run_id, "loss", 1.0 / (i + 1), step=i)

        return per_point / timed(work)

    library(), raw_batch()  # warm both (connections, the server's first writes)
    lib, batch, single = Measure([]), Measure([]), Measure([])
    for _ in range(reps):  # interleaved, so drift on the server hits all alike
        lib.samples.append(library())
        batch.samples.append(raw_batch())
        single.samples.append(raw_per_point())
    return [
        Pair(f"metric points/s, {points:,} points: RunLogger vs raw log_batch", "pts/s",
             lib, batch, True, ">= 0.95x"),
        Pair(f"metric points/s: RunLogger ({points:,}) vs raw per-point log_metric ({per_point})",
             "pts/s", lib, single, True, ">= 20x",
             note="per-point rate measured on fewer points (one request each)"),
    ]  # fmt: skip


def bench_training_flow(
    url: str, reps: int, api: str, heartbeats: tuple[int | None, ...] = (None, 180)
) -> list[Pair]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from prefect import flow, task

    from tracking_tasks import (
        RunLogger,
        RunRef,
        TrackingConfig,
        create_mlflow_run,
        log_params,
        mlflow_state_hooks,
        setup_mlflow,
    )

    steps, per_step = 100, 10
    cfg = TrackingConfig(experiment_name=f"bench-training-{api.split()[0]}", tracking_uri=url)

    @task
    def train_tracked(run: RunRef) -> None:
        with RunLogger(run) as log:
            for step in range(steps):
                log.log_metrics({f"m{k}": step * 0.1 + k for k in range(per_step)}, step)

    @flow(**mlflow_state_hooks())
    def tracked() -> None:
        ctx = setup_mlflow(cfg)
        run = create_mlflow_run(ctx, run_name="train", config={"lr": 0.1})
        log_params(run, {"lr": 0.1})
        train_tracked(run)

    @task
    def raw_setup() -> str:
        client = MlflowClient(url)
        name = f"bench-training-raw-{api.split()[0]}"
        exp = client.get_experiment_by_name(name)
        return exp.experiment_id if exp else client.create_experiment(name)

    @task
    def raw_create(exp_id: str) -> str:
        return MlflowClient(url).create_run(exp_id, run_name="train").info.run_id

    @task
    def raw_params(run_id: str) -> None:
        from mlflow.entities import Param

        MlflowClient(url).log_batch(run_id, params=[Param("lr", "0.1")])

    @task
    def raw_train(run_id: str) -> None:
        client = MlflowClient(url)
        buf: list[Metric] = []
        for step in range(steps):
            ts = int(time.time() * 1000)
            buf.extend(Metric(f"m{k}", step * 0.1 + k, ts, step) for k in range(per_step))
            if len(buf) >= 1000:
                client.log_batch(run_id, metrics=buf)
                buf = []
        if buf:
            client.log_batch(run_id, metrics=buf)

    @task
    def raw_end(run_id: str) -> None:
        MlflowClient(url).set_terminated(run_id, "FINISHED")

    @flow
    def raw() -> None:
        run_id = raw_create(raw_setup())
        raw_params(run_id)
        raw_train(run_id)
        raw_end(run_id)

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    tracked(), raw()  # warm both (imports, experiment creation)
    pairs = []
    # Prefect's flow heartbeat thread sleeps in 1 s steps and is joined at the end of the
    # flow run, which rounds every flow run's wall time up to about a whole second. With
    # heartbeats off the figures show the work itself; with them on, what a user sees.
    for heartbeat in heartbeats:
        label = f"{api}, " + ("heartbeat off" if heartbeat is None else "Prefect defaults")
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: heartbeat}):
            lib_samples, raw_samples = [], []
            for _ in range(reps):  # interleaved, so drift hits both alike
                lib_samples.append(timed(tracked))
                raw_samples.append(timed(raw))
        pairs.append(
            Pair(f"tracked training flow ({steps} steps x {per_step} metrics) vs raw-client "
                 f"flow, {label}", "s", Measure(lib_samples), Measure(raw_samples), False,
                 "<= 1.10x", note="wall time of a whole flow run")
        )  # fmt: skip
    return pairs


def bench_import(reps: int) -> list[Pair]:
    probe = (
        "import sys, time; t = time.perf_counter(); import {mods}; "
        "print(time.perf_counter() - t); "
        "assert {check} or not any(m.split('.')[0] in ('azure', 'azureml') for m in sys.modules)"
    )

    def run(mods: str) -> float:
        # only the library is held to "azure never imported": with the [azure] extra
        # installed, `import mlflow` itself loads azure through azureml-mlflow's plugin
        check = "False" if mods == "tracking_tasks" else "True"
        out = subprocess.run(
            [sys.executable, "-c", probe.format(mods=mods, check=check)],
            capture_output=True, text=True, check=True, cwd=REPO,
        )  # fmt: skip
        return float(out.stdout.strip())

    run("tracking_tasks"), run("prefect, mlflow")  # warm the OS file cache
    lib, raw = [], []
    for _ in range(reps):
        lib.append(run("tracking_tasks"))
        raw.append(run("prefect, mlflow"))
    return [
        Pair("import tracking_tasks vs import prefect, mlflow (fresh process)", "s",
             Measure(lib), Measure(raw), False, "<= 1.05x",
             note="azure never imported (asserted); tracking_tasks imports mlflow lazily")
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--per-point", type=int, default=200, help="points for raw log_metric")
    args = parser.parse_args()

    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    pairs: list[Pair] = []
    pairs += bench_import(args.reps)
    # a fresh server (and SQLite store) per section: one section's rows never slow another
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        server = start_mlflow_server(Path(tmp))
        try:
            pairs += bench_metrics(server.url, args.reps, args.points, args.per_point)
        finally:
            server.stop()
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        server = start_mlflow_server(Path(tmp))
        try:
            # the embedded default: Prefect's temporary server, as a first flow starts it
            with prefect_test_harness(server_startup_timeout=120):
                pairs += bench_training_flow(server.url, args.reps, "temporary server")
            # a `prefect server start` process, as deployments use
            home = Path(tmp) / "prefect-home"
            home.mkdir()
            prefect = start_prefect_server(home)
            try:
                with temporary_settings({PREFECT_API_URL: prefect.api}):
                    pairs += bench_training_flow(server.url, args.reps, "prefect server", (180,))
            finally:
                prefect.stop()
        finally:
            server.stop()
    report("tracking-tasks foundation vs raw MLflow", pairs, "foundation.json")


if __name__ == "__main__":
    main()
