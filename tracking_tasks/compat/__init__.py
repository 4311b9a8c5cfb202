"""The seed's tracker classes, on this library's tasks: the migration path from the seed.

``MLflowSweepTracker``, ``MLflowTrainingTracker``, ``MLflowBenchmarkTracker`` and
``MLflowConversionTracker`` keep the seed's names and call shapes, so code moved from
the seed runs with its imports changed to this module. New code uses the stage
trackers (``tracking_tasks.track_sweep``...); the migration guide puts each seed call
beside its form there.
"""

from tracking_tasks.compat._benchmark import MLflowBenchmarkTracker
from tracking_tasks.compat._conversion import MLflowConversionTracker
from tracking_tasks.compat._stage import StageTracker
from tracking_tasks.compat._sweep import MLflowSweepTracker
from tracking_tasks.compat._training import MLflowTrainingTracker

__all__ = [
    "MLflowBenchmarkTracker",
    "MLflowConversionTracker",
    "MLflowSweepTracker",
    "MLflowTrainingTracker",
    "StageTracker",
]
