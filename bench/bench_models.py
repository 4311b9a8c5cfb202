"""Logging a model: the ``log_model`` task against raw ``mlflow.sklearn.log_model``, inside
a Prefect flow, same model, same server.

    .venv/bin/python bench/bench_models.py             # 15 repetitions each
    .venv/bin/python bench/bench_models.py --reps 25

One `mlflow server --workers 1` on loopback (SQLite, served artifacts) with the fault
proxy (``tests/faultproxy.py``, no fault) in front of it, which counts the requests each
side sends. The model is scikit-learn's SGD classifier on the digits data set (what the
demo pipeline trains), logged with a 5-row input example (the signature inferred from
it), skops serialisation and the same requirements on both sides (the flavour's
defaults: raw MLflow is given them, since left to itself it runs its requirement
inference, a subprocess of about 10 s here). Each repetition is one flow run per side,
interleaved; what is timed is the call inside the flow: for the library the task run
(Prefect's task machinery included), for raw MLflow the ``log_model`` call inside
``mlflow.start_run(run_id=...)`` (opening and closing the run not counted). Each logs a
new model (a new name) into the same run. The library does more: it looks its model up
first (a retry gets it back), stores a manifest and lists the files back before READY;
raw MLflow validates the serving example by loading the model and copies the run's
metrics onto the model. Two warm-up calls per side are not counted. Median, min and max
are printed with the ratio (goal: at most 1.10x) and written to
``bench/results/models.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import Measure, Pair, report

from tests.servers import start_fault_proxy, start_mlflow_server
from tracking_tasks import RunRef, log_model, ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions per side")
    args = parser.parse_args()

    import mlflow
    import mlflow.sklearn
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness
    from sklearn.datasets import load_digits
    from sklearn.linear_model import SGDClassifier

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    model = SGDClassifier(loss="log_loss", random_state=0).fit(x, y)
    example = x[:5]
    requirements = mlflow.sklearn.get_default_pip_requirements(include_skops=True)

    root = Path(tempfile.mkdtemp(prefix="bench-models-"))
    server = start_mlflow_server(root)
    proxy = start_fault_proxy(server.url, "--fault", "none")
    try:
        uri = proxy.url
        mlflow.set_tracking_uri(uri)  # raw MLflow's log_model reads the global URI

        def count_from_now() -> None:
            proxy.configure(fault="none", match=".*")  # resets the counters

        def requests() -> int:
            return int(proxy.stats()["candidates"])

        @flow(name="bench-models-library")
        def with_library(run: RunRef, name: str) -> tuple[float, int]:
            count_from_now()
            start = time.perf_counter()
            log_model(run, model, name, input_example=example)
            seconds = time.perf_counter() - start
            return seconds, requests()

        @flow(name="bench-models-raw")
        def with_raw(run_id: str, name: str) -> tuple[float, int]:
            with mlflow.start_run(run_id=run_id):
                count_from_now()
                start = time.perf_counter()
                mlflow.sklearn.log_model(
                    model,
                    name=name,
                    input_example=example,
                    serialization_format="skops",
                    pip_requirements=requirements,
                )
                seconds = time.perf_counter() - start
                sent = requests()
            return seconds, sent

        with prefect_test_harness(server_startup_timeout=120):
            ctx = ops.setup_mlflow(experiment_name="bench-models", tracking_uri=uri)
            lib_run = ops.create_mlflow_run(ctx, "library", idempotency_key="library")
            raw_run = ops.create_mlflow_run(ctx, "raw", idempotency_key="raw")
            lib_s: list[float] = []
            raw_s: list[float] = []
            lib_n: list[int] = []
            raw_n: list[int] = []
            for i in range(args.reps + 2):  # two warm-up rounds, not counted
                seconds, sent = with_library(lib_run, f"lib-{i}")
                if i >= 2:
                    lib_s.append(seconds)
                    lib_n.append(sent)
                seconds, sent = with_raw(raw_run.run_id, f"raw-{i}")
                if i >= 2:
                    raw_s.append(seconds)
                    raw_n.append(sent)
            client = mlflow.MlflowClient(uri)
            statuses = {
                str(m.status)
                for m in client.search_logged_models([ctx.experiment_id], max_results=200)
            }
            assert statuses == {"READY"}, statuses
    finally:
        mlflow.set_tracking_uri(None)
        proxy.stop()
        server.stop()

    note = (
        f"requests per model: library {statistics.median(lib_n):.0f}, "
        f"raw {statistics.median(raw_n):.0f}"
    )
    pair = Pair(
        name="log a scikit-learn model inside a flow (task vs mlflow.sklearn.log_model)",
        unit="s",
        library=Measure(lib_s),
        raw=Measure(raw_s),
        higher_is_better=False,
        goal="<= 1.10x",
        note=note,
    )
    report("Logging a model", [pair], "models.json")
    print(f"  library requests: {lib_n}")
    print(f"  raw requests:     {raw_n}")


if __name__ == "__main__":
    main()
