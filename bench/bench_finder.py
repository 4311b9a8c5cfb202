"""Benchmark the finders against raw MLflow on one real `mlflow server --workers 1`.

    .venv/bin/python bench/bench_finder.py            # 10,000 runs
    .venv/bin/python bench/bench_finder.py --runs 2000

It builds a SQLite store through MLflow's own store API (SqlAlchemyStore, in this
process, before the server starts: much faster than one HTTP request per run), starts
`mlflow server --workers 1` on loopback over it, and then compares, in one process run:

- a full ``find_mlflow_runs`` (every page, RunSummary values) against a raw paginated
  ``MlflowClient.search_runs`` loop fetching the same runs (goal: within 1.1x);
- inside a flow, the finder tasks as they are (they ask the server every call: never
  a stale answer) against the opt-in cache ``allow_stale(finder, max_age)`` answering
  from Prefect's cache (``Cached`` state): the full ``find_mlflow_runs`` (goal: >= 100x
  faster cached) and ``find_best_run``, whose fresh form is one small ranked page.

Median, min and max of --reps repetitions (>= 5) are printed and written to
bench/results/finder.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import REPO, machine
from common import RESULTS as RESULTS_DIR

from tests.servers import start_mlflow_server

RESULTS = RESULTS_DIR / "finder.json"
EXPERIMENT = "bench-finder"


def populate(db: Path, runs: int) -> None:
    """Create ``runs`` FINISHED runs with a metric, a param and a tag each."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{db}", str(db.parent / "artifacts"))
    exp = store.create_experiment(EXPERIMENT)
    t0 = 1_700_000_000_000
    for i in range(runs):
        run = store.create_run(exp, "bench", t0 + i, [RunTag("stage", "hpo")], f"trial-{i}")
        store.log_batch(
            run.info.run_id,
            metrics=[Metric("f1", (i % 997) / 1000, t0 + i, 0)],
            params=[Param("i", str(i))],
            tags=[],
        )
        store.update_run_info(run.info.run_id, RunStatus.FINISHED, t0 + i + 1, None)
    store.engine.dispose()


def stats(times: list[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "reps": len(times),
    }


def interleaved(cases: dict[str, Callable[[], Any]], reps: int) -> dict[str, Any]:
    """Time the cases in turn, rep by rep, so load on a shared machine hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: stats(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs to create (10,000)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per case (>= 5)")
    args = parser.parse_args()

    import datetime as dt

    from mlflow import MlflowClient
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from tracking_tasks import find_best_run, find_mlflow_runs
    from tracking_tasks import ops as search
    from tracking_tasks.tasks import allow_stale

    root = Path(tempfile.mkdtemp(prefix="bench-finder-"))
    started = time.perf_counter()
    populate(root / "mlflow.db", args.runs)
    build_s = time.perf_counter() - started
    print(f"built {args.runs} runs through MLflow's SQLAlchemy store in {build_s:.1f}s")
    server = start_mlflow_server(root)
    try:
        url = server.url
        client = MlflowClient(url)
        exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id  # type: ignore[union-attr]

        def raw() -> int:
            token, count = None, 0
            while True:
                page = client.search_runs([exp_id], max_results=1000, page_token=token)
                count += len(page)
                token = page.token
                if not token:
                    return count

        def finder() -> int:
            return len(search.find_mlflow_runs(EXPERIMENT, tracking_uri=url))

        assert raw() == finder() == args.runs  # warm both paths, and check they agree
        full = interleaved({"raw_search_runs": raw, "find_mlflow_runs": finder}, args.reps)
        full["ratio_finder_over_raw"] = (
            full["find_mlflow_runs"]["median_s"] / full["raw_search_runs"]["median_s"]
        )
        print(
            f"full search of {args.runs} runs: raw {full['raw_search_runs']['median_s']:.3f}s, "
            f"find_mlflow_runs {full['find_mlflow_runs']['median_s']:.3f}s, "
            f"ratio {full['ratio_finder_over_raw']:.3f} (goal <= 1.1)"
        )

        with prefect_test_harness(server_startup_timeout=120):

            @flow
            def lookups(reps: int) -> dict[str, list[float]]:
                def call(task: Any, args: tuple[Any, ...], expect: str) -> float:
                    start = time.perf_counter()
                    state = task(*args, tracking_uri=url, return_state=True)
                    elapsed = time.perf_counter() - start
                    assert state.name == expect, state
                    return elapsed

                out: dict[str, list[float]] = {}
                for label, task, args in [
                    ("find_mlflow_runs", find_mlflow_runs, (EXPERIMENT,)),
                    ("find_best_run", find_best_run, ("f1", EXPERIMENT)),
                ]:
                    stale_ok = allow_stale(task, dt.timedelta(minutes=5))
                    call(stale_ok.with_options(refresh_cache=True), args, "Completed")  # entry
                    out[f"{label}_uncached"] = [call(task, args, "Completed") for _ in range(reps)]
                    out[f"{label}_cached"] = [call(stale_ok, args, "Cached") for _ in range(reps)]
                return out

            out = lookups(args.reps)

        cache: dict[str, Any] = {key: stats(times) for key, times in out.items()}
        for label in ("find_mlflow_runs", "find_best_run"):
            speedup = cache[f"{label}_uncached"]["median_s"] / cache[f"{label}_cached"]["median_s"]
            cache[f"{label}_speedup"] = speedup
            print(
                f"{label} in a flow over {args.runs} runs: the task (fresh) "
                f"{cache[f'{label}_uncached']['median_s'] * 1000:.1f}ms, allow_stale cached "
                f"{cache[f'{label}_cached']['median_s'] * 1000:.1f}ms, speedup {speedup:.1f}x"
                + (" (goal >= 100x)" if label == "find_mlflow_runs" else "")
            )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)  # the store of 10,000 runs is not kept

    result = {
        "runs": args.runs,
        "build_seconds": build_s,
        "machine": machine(),
        "full_search": full,
        "cached_lookup": cache,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
