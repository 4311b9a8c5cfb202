"""What the seed-named tracker classes share: one experiment, ``start_*_run`` as a ``with`` block.

``MLflowSweepTracker``, ``MLflowTrainingTracker``, ``MLflowBenchmarkTracker`` and
``MLflowConversionTracker`` keep the seed's names and call shapes so code moved from it
runs, but hold no tracking logic of their own: every call goes through this library's
setup (``resolve_context``), stage runs (``open_stage_run``), logging and artifact
tasks, in a flow or outside one. ``start_*_run`` opens the stage's run and yields its
``RunHandle`` with the run active in this thread (fluent ``mlflow.log_*`` calls land in
it); leaving the block ends it FINISHED, an exception FAILED.

Each argument of the seed is honoured (each method's docstring says how) or refused:
an argument that means nothing here, given a value, raises ``InvalidArgumentError``
naming it, why, and what to pass instead, before anything is written. None, False or
an empty value (what seed code passes positionally when it means nothing) is accepted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sized
from typing import Any

from tracking_tasks.config._models import TrackingConfig
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.ops._fluent import RunHandle, enclosing_run
from tracking_tasks.tags import GROUP_TAG
from tracking_tasks.tasks._runs import log_params
from tracking_tasks.tasks._setup import resolve_context
from tracking_tasks.trackers._core import flatten_params, open_stage_run
from tracking_tasks.urls import redact_uri

log = logging.getLogger(__name__)

#: Why the seed's ``context`` (its NamingContext) is refused wherever it is taken.
CONTEXT_REFUSED = (
    "the seed's NamingContext made run names and tags from a naming scheme; here "
    "run_name= names the run, and stage= (on the tracker), group_id= and the lineage "
    "arguments tag it: leave context out"
)
#: Why a seed output folder is refused wherever it is taken.
OUTPUT_DIR_REFUSED = (
    "nothing is looked for in, or inferred from, local folders here: name what to upload "
    "(log_training_artifacts(checkpoint_dir), log_best_checkpoint(checkpoint_dir=..., "
    "config_dir=...)) and leave output_dir out"
)


def _given(value: Any) -> bool:
    """Whether seed code meant something by an argument (None, False, "" and [] say not)."""
    if value is None or value is False:
        return False
    return not (isinstance(value, Sized) and len(value) == 0)


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
        """The tracking context: ``resolve_context`` on first use (cached per flow run).

        Returns:
            The ``TrackingContext`` given as ``tracking``, else the one set up for
            ``experiment_name``.
        """
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
        """A handle on a run of this tracker's server, from its id.

        Args:
            run_id: The run's id (a ``RunRef`` is returned as it is).

        Returns:
            A ``RunRef`` on this tracker's server and experiment.
        """
        if isinstance(run_id, RunRef):
            return run_id
        ctx = self.context()
        return RunRef(
            run_id=run_id,
            experiment_id=ctx.experiment_id,
            run_name=run_id,
            tracking_uri=ctx.tracking_uri,
            registry_uri=ctx.registry_uri,
            credentials=ctx.credentials,
            workspace=ctx.workspace,
        )

    def refuse(self, method: str, **given: tuple[Any, str]) -> None:
        """Refuse the seed's arguments that mean nothing here, before anything is written.

        Args:
            method: The method called (named in the error).
            **given: ``name=(value, why and what to pass instead)`` for each refused
                argument; a value of None, False or empty is accepted.

        Raises:
            InvalidArgumentError: the first argument given a value, named with the reason.
        """
        for name, (value, why) in given.items():
            if _given(value):
                raise InvalidArgumentError(f"{type(self).__name__}.{method} refuses {name}: {why}")

    def refuse_start(
        self, method: str, context: Any, output_dir: Any, **more: tuple[Any, str]
    ) -> None:
        """Refuse the seed's ``context`` and ``output_dir`` of a ``start_*_run``, and ``more``.

        Args:
            method: The method called (named in the error).
            context: The seed's NamingContext: refused (``run_name`` names the run).
            output_dir: Refused: nothing is inferred from folders.
            **more: Other refused arguments, as ``refuse`` takes them.

        Raises:
            InvalidArgumentError: one of them given a value.
        """
        self.refuse(
            method,
            context=(context, CONTEXT_REFUSED),
            output_dir=(output_dir, OUTPUT_DIR_REFUSED),
            **more,
        )

    @contextlib.contextmanager
    def start_run(
        self,
        run_name: str | None,
        params: Mapping[str, Any],
        *,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | RunRef | None = None,
        group_id: str | None = None,
    ) -> Iterator[RunHandle]:
        """Open a run of this stage and hold it active for the ``with`` block.

        The stage's run as the stage trackers open it (``open_stage_run``): named by
        ``stage_run_name``, tagged ``stage``, given ``params`` (None values left out) as
        its config (its ``config_hash``) and, nested keys dotted, as its params; nested
        under ``parent_run_id``, else under the enclosing block's run. The n-th run a
        tracker opens in a flow run is found again, not duplicated, when the flow run is
        retried.

        Args:
            run_name: The run's name (None: the stage's).
            params: The run's config, logged as params.
            tags: More tags.
            parent_run_id: The run to nest under.
            group_id: Tagged ``tracking_tasks.group_id`` (the seed's ``group_id``).

        Yields:
            The run's ``RunHandle``, active in this thread.
        """
        config = {key: value for key, value in params.items() if value is not None}
        if group_id:
            tags = {**(tags or {}), GROUP_TAG: str(group_id)}
        self._opened += 1
        run = open_stage_run(
            self.stage,
            self.context(),
            config,
            run_name,
            parent_run_id=parent_run_id,
            tags=tags,
            idempotency_key=f"{self.stage}-{self._opened}",
            log_config=False,  # inside the block: a failed write ends the run FAILED
        )
        with run:
            if config:
                log_params(run, flatten_params(config))
            yield run

    def active(self, method: str) -> RunHandle:
        """The run of the enclosing ``start_*_run`` block, or a clear error.

        Args:
            method: The method asking (named in the error).

        Returns:
            The block's ``RunHandle``.

        Raises:
            InvalidArgumentError: this thread is in no ``start_*_run`` block.
        """
        run = enclosing_run()
        if not isinstance(run, RunHandle):
            raise InvalidArgumentError(
                f"{type(self).__name__}.{method} logs to the run of the enclosing "
                "`with tracker.start_..._run(...)` block, and this thread is in none: call "
                "it inside the block"
            )
        return run
