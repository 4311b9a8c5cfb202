"""The seed's tracker classes, on this library's tasks: the migration path from the seed.

``MLflowSweepTracker``, ``MLflowTrainingTracker``, ``MLflowBenchmarkTracker`` and
``MLflowConversionTracker`` keep the seed's names and call shapes, so code moved from
the seed runs with its imports changed to this module. Each class is a thin layer over
the library's setup, stage runs, logging and artifact tasks, and each argument it takes
is honoured (its docstring says how) or refused: given a value, an argument that means
nothing here raises ``InvalidArgumentError`` naming it and what to pass instead, before
anything is written. New code uses the stage trackers (``tracking_tasks.track_sweep``...);
the migration guide puts each seed call beside its form there.
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
