"""Benchmark an Optuna sweep: ``track_sweep`` against Optuna's own ``MLflowCallback``.

    .venv/bin/python bench/bench_sweep.py                 # 50 trials, 4 in parallel
    .venv/bin/python bench/bench_sweep.py --trials 20 --reps 3 --work-ms 20

One real ``mlflow server --workers 1`` on loopback; the sweeps are timed straight to it,
and run once more each through ``tests/faultproxy.py`` with no fault, which counts the
requests it forwards (its own latency is never timed). In one process run, the same study
(TPE, same seed, same cheap objective: ``--work-ms`` of sleep, then ``(x - 2)^2``):

- the library: ``track_sweep(objective, study=..., n_trials=N, max_concurrency=4)``
  called as the top-level flow run: setup, one parent run, one nested run per trial,
  each trial a Prefect task (the flow run's fixed cost included; Prefect's temporary
  API is warmed up first);
- raw: ``study.optimize(objective, n_trials=N, n_jobs=4,
  callbacks=[MLflowCallback(...)])`` (optuna-integration): one flat run per trial,
  logged by the callback after the trial (under its lock).

It prints and writes to bench/results/sweep.json: the wall time of the sweep (goal: the
library at most 1.0x the callback's) and the MLflow requests per trial of each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

from common import REPO, Measure, Pair, report

from tests.servers import start_mlflow_server, stop_process_group

PARALLEL = 4


def _proxy(upstream: str) -> tuple[str, subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "faultproxy.py"), "--upstream", upstream],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    assert line[:1] == ["listening"], line
    return f"http://127.0.0.1:{line[1]}", proc


def _forwarded(proxy: str, reset: bool = False) -> int:
    import json

    request = urllib.request.Request(
        f"{proxy}/__faultproxy__", data=b"{}" if reset else None, method="POST" if reset else "GET"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(json.loads(resp.read())["forwarded"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work-ms", type=float, default=20.0, help="each trial's own work")
    args = parser.parse_args()

    import mlflow
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    from tracking_tasks import RunLogger, TrackingConfig, track_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # MLflowCallback's deprecation

    def value(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10.0, 10.0)
        time.sleep(args.work_ms / 1000)
        return (x - 2.0) ** 2

    def objective(trial: optuna.Trial, log: RunLogger) -> float:
        return value(trial)

    def study() -> optuna.Study:
        return optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))

    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    (root / "server").mkdir()
    server = start_mlflow_server(root / "server")
    proxy, proxy_proc = _proxy(server.url)
    try:

        def library_sweep(n_trials: int, experiment: str, uri: str) -> int:
            # track_sweep is itself a flow: called as the top-level flow run, as a
            # script would; setup_mlflow runs inside it (TrackingConfig)
            result = track_sweep(
                objective,
                metric="value",
                context=TrackingConfig(experiment_name=experiment, tracking_uri=uri),
                study=study(),
                n_trials=n_trials,
                max_concurrency=PARALLEL,
            )
            return len(result.trials)

        def callback_sweep(n_trials: int, experiment: str, uri: str) -> None:
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment(experiment)
            callback = MLflowCallback(
                tracking_uri=uri, metric_name="value", create_experiment=False
            )
            study().optimize(value, n_trials=n_trials, n_jobs=PARALLEL, callbacks=[callback])

        # Prefect's temporary API starts here, not in the timing
        library_sweep(4, "warm-up", server.url)
        callback_sweep(4, "callback-warm-up", server.url)
        ours_s, raw_s = [], []
        for rep in range(args.reps):  # timed straight to the server, interleaved
            start = time.perf_counter()
            assert library_sweep(args.trials, f"library-{rep}", server.url) == args.trials
            ours_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            callback_sweep(args.trials, f"callback-{rep}", server.url)
            raw_s.append(time.perf_counter() - start)
        # counted once each through the proxy (it adds latency: never timed)
        _forwarded(proxy, reset=True)
        library_sweep(args.trials, "library-counted", proxy)
        ours_req = [_forwarded(proxy) / args.trials]
        _forwarded(proxy, reset=True)
        callback_sweep(args.trials, "callback-counted", proxy)
        raw_req = [_forwarded(proxy) / args.trials]
        note = f"{args.trials} trials, {PARALLEL} in parallel, {args.work_ms:g} ms of work each"
        report(
            "Optuna sweep: track_sweep vs Optuna's MLflowCallback",
            [
                Pair(
                    f"wall time of a {args.trials}-trial sweep",
                    "s",
                    Measure(ours_s),
                    Measure(raw_s),
                    higher_is_better=False,
                    goal="<= 1.0x",
                    note=note,
                ),
                Pair(
                    "MLflow requests per trial",
                    "req",
                    Measure(ours_req),
                    Measure(raw_req),
                    higher_is_better=False,
                    goal="fewer",
                    note="the library's include the sweep's own run, setup and best-trial tags",
                ),
            ],
            "sweep.json",
        )
    finally:
        mlflow.set_tracking_uri(None)
        stop_process_group(proxy_proc)
        server.stop()


if __name__ == "__main__":
    main()
