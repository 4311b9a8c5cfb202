"""What the seed-named tracker classes share: one experiment, ``start_*_run`` as a ``with`` block.

``MLflowSweepTracker``, ``MLflowTrainingTracker``, ``MLflowBenchmarkTracker`` and
``MLflowConversionTracker`` (each in its ``trackers.*_tracker`` module, as in the seed)
keep the seed's names and call
shapes so code moved from it runs, but every call goes through this library's tasks
(``setup_mlflow``, ``create_mlflow_run``, ``log_params``, ``log_metrics``,
``upload_artifacts``...), in a flow or outside one. ``start_*_run`` opens the stage's
run and yields its ``RunHandle`` with the run active in this thread (fluent
``mlflow.log_*`` calls land in it); leaving the block ends it FINISHED, an exception
FAILED. Arguments of the seed that mean nothing here are accepted and ignored (each
method's docstring names them); none changes what is written.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from tracking_tasks.config._models import TrackingConfig
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.ops._fluent import RunHandle, enclosing_run
from tracking_tasks.tags import STAGE_TAG, stage_run_name
from tracking_tasks.tasks._runs import create_mlflow_run, log_params
from tracking_tasks.tasks._setup import resolve_context
from tracking_tasks.trackers._core import flatten_params
from tracking_tasks.urls import redact_uri

log = logging.getLogger(__name__)


def note_ignored(where: str, **given: Any) -> None:
    """Log, at debug level, the seed arguments a call was given and does not use."""
    names = sorted(name for name, value in given.items() if value not in (None, False))
    if names:
        log.debug("%s: ignored the seed's %s (they mean nothing here)", where, ", ".join(names))


class StageTracker:
    """What the seed-named trackers share: one experiment, and ``with`` blocks opening runs.

    Args:
        experiment_name: The MLflow experiment the runs go to.
        tracking: Where it is (a ``TrackingConfig`` without experiment, or a ready
            ``TrackingContext`` whose experiment is then used); None: the environment
            and the embedded default, as ``setup_mlflow()`` resolves them.
        stage: The ``stage`` tag of this tracker's runs (default: the tracker's own).

    Example:
        >>> StageTracker("ner", stage="training").stage
        'training'
    """

    #: The stage tag a tracker writes unless given another.
    default_stage = "stage"

    def __init__(
        self,
        experiment_name: str,
        *,
        tracking: TrackingConfig | TrackingContext | None = None,
        stage: str | None = None,
    ) -> None:
        self.experiment_name = experiment_name
        self.tracking = tracking
        self.stage = stage or self.default_stage
        self._context: TrackingContext | None = None
        self._opened = 0

    def context(self) -> TrackingContext:
        """The tracking context (``setup_mlflow`` on first use: cached per flow run)."""
        if isinstance(self.tracking, TrackingContext):
            return self.tracking
        if self._context is None:
            self._context = resolve_context(self.tracking, experiment_name=self.experiment_name)
        return self._context

    def log_tracking_info(self) -> str:
        """Log (and return) where this tracker's runs go, the URI redacted (the seed's method).

        Returns:
            ``"<experiment> on <tracking URI>"``.
        """
        ctx = self.context()
        where = f"{ctx.experiment_name} on {redact_uri(ctx.tracking_uri)}"
        log.info("MLflow tracking: experiment %s", where)
        return where

    def run_ref(self, run_id: str | RunRef) -> RunRef:
        """A handle on a run of this tracker's server, from its id."""
        if isinstance(run_id, RunRef):
            return run_id
        ctx = self.context()
        return RunRef(
            run_id=run_id,
            experiment_id=ctx.experiment_id,
            run_name=run_id,
            tracking_uri=ctx.tracking_uri,
            registry_uri=ctx.registry_uri,
            workspace=ctx.workspace,
        )

    @contextlib.contextmanager
    def start_run(
        self,
        run_name: str | None,
        params: Mapping[str, Any],
        *,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | RunRef | None = None,
    ) -> Iterator[RunHandle]:
        """Open a run of this stage and hold it active for the ``with`` block.

        The run is named by ``stage_run_name``, tagged ``stage``, given ``params`` as
        its config (its ``config_hash``) and its params; nested under ``parent_run_id``,
        else under the enclosing block's run. The n-th run a tracker opens in a flow run
        is found again, not duplicated, when the flow run is retried.

        Yields:
            The run's ``RunHandle``, active in this thread.
        """
        config = {key: value for key, value in params.items() if value is not None}
        self._opened += 1
        run = create_mlflow_run(
            self.context(),
            run_name=stage_run_name(self.stage, run_name),
            config=config,
            tags={STAGE_TAG: self.stage, **(tags or {})},
            parent_run_id=parent_run_id,
            idempotency_key=f"{self.stage}-{self._opened}",
        )
        with run:
            if config:
                log_params(run, flatten_params(config))
            yield run

    def active(self, method: str) -> RunHandle:
        """The run of the enclosing ``start_*_run`` block, or a clear error."""
        run = enclosing_run()
        if not isinstance(run, RunHandle):
            raise InvalidArgumentError(
                f"{type(self).__name__}.{method} logs to the run of the enclosing "
                "`with tracker.start_..._run(...)` block, and this thread is in none: call "
                "it inside the block"
            )
        return run
