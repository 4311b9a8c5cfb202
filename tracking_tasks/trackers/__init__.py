"""Stage trackers: sweep, training, benchmark and conversion as Prefect subflows.

Each runs a stage function of yours in its own MLflow run (found again on a retry),
logs what it returns, and is ended by the subflow's state hooks. The seed's tracker
classes live in ``tracking_tasks.compat``.
"""

from tracking_tasks.trackers._benchmark import (
    BenchmarkOutput,
    BenchmarkResult,
    latency_summary,
    track_benchmark,
)
from tracking_tasks.trackers._conversion import (
    ConversionOutput,
    ConversionResult,
    track_conversion,
)
from tracking_tasks.trackers._core import StageContext, StageOutput, StageResult
from tracking_tasks.trackers._sweep import track_sweep
from tracking_tasks.trackers._sweep_results import SweepResult
from tracking_tasks.trackers._training import track_training
from tracking_tasks.trackers._trial import TrialSummary

__all__ = [
    "BenchmarkOutput",
    "BenchmarkResult",
    "ConversionOutput",
    "ConversionResult",
    "StageContext",
    "StageOutput",
    "StageResult",
    "SweepResult",
    "TrialSummary",
    "latency_summary",
    "track_benchmark",
    "track_conversion",
    "track_sweep",
    "track_training",
]
