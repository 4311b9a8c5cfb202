"""Stage trackers: sweep, training, benchmark and conversion as Prefect subflows.

Also the seed's tracker classes (``MLflowSweepTracker``, ``MLflowTrainingTracker``,
``MLflowBenchmarkTracker``, ``MLflowConversionTracker``), built on the same tasks.
"""

from tracking_tasks.trackers.benchmark import (
    BenchmarkOutput,
    BenchmarkResult,
    latency_summary,
    track_benchmark,
)
from tracking_tasks.trackers.benchmark_tracker import MLflowBenchmarkTracker
from tracking_tasks.trackers.conversion import (
    ConversionOutput,
    ConversionResult,
    register_model_version,
    track_conversion,
)
from tracking_tasks.trackers.conversion_tracker import MLflowConversionTracker
from tracking_tasks.trackers.core import StageContext, StageOutput, StageResult
from tracking_tasks.trackers.stage_tracker import StageTracker
from tracking_tasks.trackers.sweep import SweepResult, TrialSummary, run_trial, track_sweep
from tracking_tasks.trackers.sweep_tracker import MLflowSweepTracker
from tracking_tasks.trackers.training import track_training
from tracking_tasks.trackers.training_tracker import MLflowTrainingTracker

__all__ = [
    "BenchmarkOutput",
    "BenchmarkResult",
    "ConversionOutput",
    "ConversionResult",
    "MLflowBenchmarkTracker",
    "MLflowConversionTracker",
    "MLflowSweepTracker",
    "MLflowTrainingTracker",
    "StageContext",
    "StageOutput",
    "StageResult",
    "StageTracker",
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
