"""Stage trackers: sweep, training, benchmark and conversion as Prefect subflows."""

from tracking_tasks.trackers.benchmark import (
    BenchmarkOutput,
    BenchmarkResult,
    latency_summary,
    track_benchmark,
)
from tracking_tasks.trackers.conversion import (
    ConversionOutput,
    ConversionResult,
    register_model_version,
    track_conversion,
)
from tracking_tasks.trackers.core import StageContext, StageOutput, StageResult
from tracking_tasks.trackers.sweep import SweepResult, TrialSummary, run_trial, track_sweep
from tracking_tasks.trackers.training import track_training

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
    "register_model_version",
    "run_trial",
    "track_benchmark",
    "track_conversion",
    "track_sweep",
    "track_training",
]
