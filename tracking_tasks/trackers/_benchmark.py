"""track_benchmark: latency samples -> p50/p90/p99 and throughput, with the machine."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks.config._models import TrackingConfig
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.tags import MACHINE_TAG_PREFIX
from tracking_tasks.tasks._hooks import mlflow_state_hooks
from tracking_tasks.tasks._runs import log_metrics, set_tags
from tracking_tasks.trackers._core import (
    StageResult,
    config_dict,
    lineage_tags,
    open_stage_run,
)
from tracking_tasks.trackers._training import run_stage_function


class BenchmarkOutput(BaseModel):
    """What a benchmark function returns: latency samples and the batch size they served.

    A benchmark function may also return a plain sequence of latencies in seconds.

    Args:
        latencies_s: One latency per call, in seconds (at least two).
        batch_size: Items served per call, for throughput.
        metrics: Extra metrics to log (accuracy on the benchmark set...).

    Example:
        >>> BenchmarkOutput(latencies_s=[0.01, 0.02], batch_size=8).batch_size
        8
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    latencies_s: list[float] = Field(min_length=2, description="Latency per call, seconds.")
    batch_size: int = Field(default=1, ge=1, description="Items per call.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Extra metrics.")


class BenchmarkResult(StageResult):
    """``StageResult`` of a benchmark, with its latency summary.

    Args:
        p50_ms: Median latency in milliseconds.
        p90_ms: 90th percentile latency in milliseconds.
        p99_ms: 99th percentile latency in milliseconds.
        throughput_per_s: Items per second over all calls.

    Example:
        >>> BenchmarkResult.model_fields["p99_ms"].description
        '99th percentile latency, ms.'
    """

    p50_ms: float = Field(description="Median latency, ms.")
    p90_ms: float = Field(description="90th percentile latency, ms.")
    p99_ms: float = Field(description="99th percentile latency, ms.")
    throughput_per_s: float = Field(description="Items per second.")


def latency_summary(latencies_s: Sequence[float], batch_size: int = 1) -> dict[str, float]:
    """Percentiles (linear interpolation between samples) and throughput of latencies.

    Args:
        latencies_s: Latencies in seconds, at least two, none negative.
        batch_size: Items per call.

    Returns:
        ``{"latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput_per_s",
        "samples"}``.

    Raises:
        InvalidArgumentError: fewer than two samples, or a negative one.

    Example:
        >>> latency_summary([0.010, 0.020, 0.030])["latency_p50_ms"]
        20.0
    """
    samples = [float(x) for x in latencies_s]
    if len(samples) < 2:
        raise InvalidArgumentError(
            f"a benchmark needs at least 2 latency samples, got {len(samples)}: time more calls"
        )
    if min(samples) < 0:
        raise InvalidArgumentError("latency samples must not be negative: give seconds per call")
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    total = sum(samples)
    return {
        "latency_p50_ms": round(cuts[49] * 1000, 6),
        "latency_p90_ms": round(cuts[89] * 1000, 6),
        "latency_p99_ms": round(cuts[98] * 1000, 6),
        "throughput_per_s": (len(samples) * batch_size / total) if total > 0 else float("inf"),
        "samples": float(len(samples)),
    }


def machine_tags() -> dict[str, str]:
    """Where the benchmark ran: Python, platform, CPU count, processor."""
    return {
        f"{MACHINE_TAG_PREFIX}python": platform.python_version(),
        f"{MACHINE_TAG_PREFIX}platform": platform.platform(),
        f"{MACHINE_TAG_PREFIX}cpu_count": str(os.cpu_count()),
        f"{MACHINE_TAG_PREFIX}processor": platform.processor() or platform.machine(),
    }


@flow(name="track_benchmark", **mlflow_state_hooks())
def track_benchmark(
    bench_fn: Callable[[Any], Any],
    config: Any = None,
    context: TrackingContext | TrackingConfig | None = None,
    *,
    model_run: RunRef | str | None = None,
    run_name: str = "benchmark",
) -> BenchmarkResult:
    """Track a benchmark stage as a subflow: latency percentiles, throughput, machine.

    ``bench_fn(stage)`` returns a ``BenchmarkOutput`` or a plain sequence of latencies in
    seconds; the run gets ``latency_p50_ms``, ``latency_p90_ms``, ``latency_p99_ms``,
    ``throughput_per_s``, the machine as ``machine.*`` tags, and lineage to the model's
    run.

    Args:
        bench_fn: The benchmark function; gets a ``StageContext``.
        config: Benchmark config (pydantic model or mapping), logged as params.
        context: Where to track: a ``TrackingContext`` or ``TrackingConfig``.
        model_run: The run of the model under test (tagged as lineage).
        run_name: The MLflow run name.

    Returns:
        A frozen ``BenchmarkResult``.

    Raises:
        InvalidArgumentError: fewer than two latency samples.
        Exception: whatever ``bench_fn`` raised (run FAILED, subflow Failed).

    Example:
        >>> import time
        >>> def bench(stage):
        ...     out = []
        ...     for _ in range(20):
        ...         t = time.perf_counter(); sum(range(1000)); out.append(time.perf_counter() - t)
        ...     return out
    """
    cfg = config_dict(config)
    lineage = lineage_tags({"model": model_run})
    run = open_stage_run("benchmark", context, cfg, run_name, tags=lineage)
    value: Any = run_stage_function("benchmark", bench_fn, run, cfg, lineage)
    out = value if isinstance(value, BenchmarkOutput) else BenchmarkOutput(latencies_s=list(value))
    summary = latency_summary(out.latencies_s, out.batch_size)
    metrics = {**summary, **out.metrics}
    log_metrics(run, metrics)
    set_tags(run, machine_tags())
    return BenchmarkResult(
        stage="benchmark",
        run=run,
        metrics=metrics,
        p50_ms=summary["latency_p50_ms"],
        p90_ms=summary["latency_p90_ms"],
        p99_ms=summary["latency_p99_ms"],
        throughput_per_s=summary["throughput_per_s"],
    )
