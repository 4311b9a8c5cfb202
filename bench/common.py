"""Shared bench plumbing: a server, repetitions, and the printed/JSON results table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Importing this module first is every bench script's preamble: no telemetry (no
# internet here), quiet Prefect, a patient ephemeral API on 2 cores, and no MLFLOW_*
# variable from the shell pointing a bench at another server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
for _name in [n for n in os.environ if n.startswith("MLFLOW_")]:
    del os.environ[_name]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class Measure:
    """Repeated samples of one quantity (seconds, or a rate)."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass
class Pair:
    """The library and raw MLflow doing the same work, and how they compare."""

    name: str
    unit: str
    library: Measure
    raw: Measure
    higher_is_better: bool
    goal: str
    note: str = ""
    ratio: float = field(init=False)

    def __post_init__(self) -> None:
        lib, raw = self.library.median, self.raw.median
        self.ratio = lib / raw if raw else float("inf")


def repeat(fn: Callable[[], float], reps: int) -> Measure:
    """Call ``fn`` (which returns its own figure) ``reps`` times."""
    return Measure([fn() for _ in range(reps)])


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "processor": platform.processor() or platform.machine(),
    }


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3f} {unit}"


def report(title: str, pairs: list[Pair], json_name: str) -> None:
    """Print each pair with its ratio, min and max; write the JSON copy."""
    print(f"\n== {title} ({machine()['cpus']} CPUs, Python {machine()['python']}) ==")
    for p in pairs:
        direction = "higher is better" if p.higher_is_better else "lower is better"
        print(f"{p.name}  [{direction}; goal {p.goal}]")
        for label, m in (("library", p.library), ("raw MLflow", p.raw)):
            print(
                f"  {label:<11} median {_fmt(m.median, p.unit):>16}"
                f"   min {_fmt(min(m.samples), p.unit):>16}   max {_fmt(max(m.samples), p.unit):>16}"
                f"   (n={len(m.samples)})"
            )
        print(f"  ratio library/raw = {p.ratio:.2f}x" + (f"   {p.note}" if p.note else ""))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / json_name
    out.write_text(
        json.dumps(
            {
                "title": title,
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": machine(),
                "pairs": [
                    {**asdict(p), "library_median": p.library.median, "raw_median": p.raw.median}
                    for p in pairs
                ],
            },
            indent=2,
        )
    )
    print(f"(written to {out.relative_to(REPO)})")
