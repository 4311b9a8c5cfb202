"""Benchmark a sweep on Dask: ``track_sweep`` on a DaskTaskRunner vs threads vs raw calls.

    .venv/bin/python bench/bench_dask.py                  # 32 trials, 3 reps, 200 ms each
    .venv/bin/python bench/bench_dask.py --trials 16 --reps 5 --work-ms 50
    .venv/bin/python bench/bench_dask.py --work-ms 5000 --reps 1 --json dask-5s.json

One real ``mlflow server --workers 1``, one real ``prefect server start`` (Dask worker
processes need an API they can reach), one ``distributed.LocalCluster`` of worker
processes (2 x 2 threads by default), all on loopback. The same sweep each way, per
repetition, interleaved: every trial sleeps ``--work-ms`` (its own work), logs 5 points
of a curve and returns a final metric; its params are logged on its run.

- library on Dask: ``track_sweep.with_options(task_runner=DaskTaskRunner(address=...))``
  called as the top-level flow run: setup, the sweep's run, one nested run and one
  Prefect task run per trial on the cluster, the best trial tagged, the hooks;
- library on threads: the same with ``ThreadPoolTaskRunner(max_workers=<cluster slots>)``
  (the default runner, at the cluster's concurrency), in this process;
- raw on the same cluster: ``client.map`` of a plain function that creates the nested
  run with ``MlflowClient``, sleeps, sends params and metrics in one ``log_batch`` and
  ends the run; the parent run created, tagged with the best trial and ended here;
- raw in Prefect tasks: the same function as a ``@task`` submitted from a flow on the
  same ``DaskTaskRunner``: Prefect's own cost of a task run on a Dask worker, without the
  library, to tell the library's overhead from Prefect's.

It prints and writes bench/results/dask.json: the wall time of each (goal: the library
on Dask at most 1.10x raw on the same cluster), and the library's fixed cost.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Measure, Pair, report

STEPS = 5


def curve(i: int) -> list[float]:
    return [i * 100 + step * 0.5 for step in range(STEPS)]


def raw_trial(
    uri: str, experiment_id: str, parent_id: str, params: dict[str, Any], work_s: float
) -> tuple[float, str]:
    """One trial as raw MLflow client calls: create the nested run, work, one batch, end."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri)
    i = params["i"]
    run = client.create_run(
        experiment_id, run_name=f"trial-{i}", tags={"mlflow.parentRunId": parent_id}
    )
    time.sleep(work_s)
    now = int(time.time() * 1000)
    score = float(i * 10 + params["x"])
    metrics = [Metric("curve", v, now, step) for step, v in enumerate(curve(i))]
    metrics.append(Metric("score", score, now, 0))
    client.log_batch(
        run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()]
    )
    client.set_terminated(run.info.run_id)
    return score, run.info.run_id


def raw_sweep_flow(uri: str, experiment: str, trials: list[dict[str, Any]], work_s: float) -> None:
    """The raw trials, each a Prefect task, in a flow on the flow's task runner."""
    from mlflow import MlflowClient
    from prefect import task

    trial_task = task(raw_trial, name="raw_trial")
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(experiment)
    parent = client.create_run(experiment_id, run_name="sweep")
    futures = [
        trial_task.submit(uri, experiment_id, parent.info.run_id, params, work_s)
        for params in trials
    ]
    best_score, best_run = max((f.result() for f in futures), key=lambda r: r[0])
    client.set_tag(parent.info.run_id, "best_run_id", best_run)
    client.log_metric(parent.info.run_id, "best.score", best_score)
    client.set_terminated(parent.info.run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work-ms", type=float, default=200.0, help="each trial's own work")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker")
    parser.add_argument("--json", default="dask.json", help="results file in bench/results/")
    args = parser.parse_args()
    work_s = args.work_ms / 1000

    from distributed import Client, LocalCluster
    from mlflow import MlflowClient
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from tests.servers import start_mlflow_server, start_prefect_server
    from tracking_tasks import RunLogger, TrackingConfig, track_sweep

    def objective(params: dict[str, Any], log: RunLogger) -> dict[str, float]:
        time.sleep(work_s)
        for step, value in enumerate(curve(params["i"])):
            log.log_metric("curve", value, step)
        return {"score": float(params["i"] * 10 + params["x"])}

    trials = [{"i": i, "x": (i * 7) % 5} for i in range(args.trials)]
    root = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    (root / "mlflow").mkdir()
    (root / "prefect").mkdir()
    mlflow_server = start_mlflow_server(root / "mlflow")
    prefect_server = start_prefect_server(root / "prefect")
    uri = mlflow_server.url
    try:
        with (
            temporary_settings({PREFECT_API_URL: prefect_server.api}),  # type: ignore[dict-item]
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=args.threads,
                processes=True,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as dask_client,
        ):
            address = cluster.scheduler_address
            slots = args.workers * args.threads

            def library(runner: Any, experiment: str) -> None:
                result = track_sweep.with_options(task_runner=runner)(
                    objective,
                    trials,
                    metric="score",
                    context=TrackingConfig(experiment_name=experiment, tracking_uri=uri),
                )
                assert len(result.trials) == args.trials and result.best is not None

            def raw(experiment: str) -> None:
                client = MlflowClient(uri)
                experiment_id = client.create_experiment(experiment)
                parent = client.create_run(experiment_id, run_name="sweep")
                futures = dask_client.map(
                    raw_trial,
                    [uri] * len(trials),
                    [experiment_id] * len(trials),
                    [parent.info.run_id] * len(trials),
                    trials,
                    [work_s] * len(trials),
                    pure=False,
                )
                results = dask_client.gather(futures)
                best_score, best_run = max(results, key=lambda r: r[0])
                client.set_tag(parent.info.run_id, "best_run_id", best_run)
                client.log_metric(parent.info.run_id, "best.score", best_score)
                client.set_terminated(parent.info.run_id)

            def raw_in_tasks(experiment: str) -> None:
                runner = DaskTaskRunner(address=address)
                flow(name="raw-sweep", task_runner=runner)(raw_sweep_flow)(
                    uri, experiment, trials, work_s
                )

            # warm up: worker imports, Prefect's first flow run, the thread pool
            library(DaskTaskRunner(address=address), "warm-up-dask")
            library(ThreadPoolTaskRunner(max_workers=slots), "warm-up-threads")
            raw("warm-up-raw")
            raw_in_tasks("warm-up-raw-tasks")
            dask_s, threads_s, raw_s, tasks_s = [], [], [], []
            for rep in range(args.reps):
                start = time.perf_counter()
                library(DaskTaskRunner(address=address), f"dask-{rep}")
                dask_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                library(ThreadPoolTaskRunner(max_workers=slots), f"threads-{rep}")
                threads_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                raw(f"raw-{rep}")
                raw_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                raw_in_tasks(f"raw-tasks-{rep}")
                tasks_s.append(time.perf_counter() - start)
                print(f"rep {rep}: dask {dask_s[-1]:.2f} s, threads {threads_s[-1]:.2f} s, "
                      f"raw {raw_s[-1]:.2f} s, raw in tasks {tasks_s[-1]:.2f} s", flush=True)  # fmt: skip
        note = (
            f"{args.trials} trials, {args.workers} worker processes x {args.threads} threads, "
            f"{args.work_ms:g} ms of work each"
        )
        report(
            f"{args.trials}-trial sweep on Dask: track_sweep vs raw MlflowClient on the cluster",
            [
                Pair(
                    "wall time: track_sweep on DaskTaskRunner vs raw client.map",
                    "s",
                    Measure(dask_s),
                    Measure(raw_s),
                    higher_is_better=False,
                    goal="<= 1.10x",
                    note=note,
                ),
                Pair(
                    "wall time: track_sweep on DaskTaskRunner vs raw calls in Prefect tasks "
                    "on the same DaskTaskRunner",
                    "s",
                    Measure(dask_s),
                    Measure(tasks_s),
                    higher_is_better=False,
                    goal="<= 1.10x",
                    note="what the library adds on top of Prefect's own task runs",
                ),
                Pair(
                    "wall time: track_sweep on threads vs raw client.map",
                    "s",
                    Measure(threads_s),
                    Measure(raw_s),
                    higher_is_better=False,
                    goal="for reference",
                    note=f"ThreadPoolTaskRunner(max_workers={args.workers * args.threads})",
                ),
            ],
            args.json,
        )
    finally:
        prefect_server.stop()
        mlflow_server.stop()


if __name__ == "__main__":  # Dask spawns its worker processes: guard the entry point
    main()
