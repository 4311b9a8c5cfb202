"""A run handle that is also a ``with`` block making the run MLflow's active run here.

The library itself never uses MLflow's fluent "active run": every call names its run.
Code written for MLflow's fluent API (``mlflow.log_metric(...)`` inside
``with mlflow.start_run():``) needs one, and :class:`RunHandle` gives it for the length
of a ``with`` block, in the calling thread only::

    with create_mlflow_run(ctx, run_name="train") as run:
        mlflow.log_metric("f1", 0.85)       # lands in run.run_id

Leaving the block ends the run FINISHED; an exception ends it FAILED (KILLED for a
``KeyboardInterrupt`` or another ``BaseException``) and propagates; the run that was
active before the block (if any) is active again after it. A run opened inside the
block, in the same thread, with no explicit parent is nested under it
(:func:`enclosing_run`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from types import TracebackType

from tracking_tasks._environment import (
    FLUENT_LOCK,
    RUN_ID_VAR,
    kept_env,
    point_fluent_api,
    quiet_run_links,
)
from tracking_tasks._private_apis import fluent_experiment_id
from tracking_tasks._status import exit_status
from tracking_tasks.errors import RunEndError, RunNotFoundError, TrackingServerError, mlflow_errors
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.ops._workspaces import workspace_scope
from tracking_tasks.urls import redact_uri, same_server

log = logging.getLogger(__name__)

_entered = threading.local()


def _stack() -> list[RunRef]:
    stack: list[RunRef] | None = getattr(_entered, "stack", None)
    if stack is None:
        stack = _entered.stack = []
    return stack


def _scopes() -> list[contextlib.AbstractContextManager[str | None]]:
    """The workspace scopes of this thread's open blocks, innermost last."""
    scopes: list[contextlib.AbstractContextManager[str | None]] | None = getattr(
        _entered, "scopes", None
    )
    if scopes is None:
        scopes = _entered.scopes = []
    return scopes


def enclosing_run() -> RunRef | None:
    """The innermost run whose ``with`` block this thread is in, or None.

    Returns:
        That run's handle, or None outside every block (or on another thread).

    Example:
        >>> enclosing_run() is None
        True
    """
    stack = _stack()
    return stack[-1] if stack else None


class RunHandle(RunRef):
    """A ``RunRef`` that can also be used as a ``with`` block (``create_mlflow_run`` returns one).

    As a value it is a ``RunRef``: frozen, small, picklable, passed to the logging tasks.
    As a ``with`` block it makes the run MLflow's active run in the calling thread, so
    fluent ``mlflow.log_*`` calls land in it, and ends it on the way out (see the module
    docstring). Entering points this process's fluent API at the run's server and
    experiment first when it points elsewhere (as ``setup_mlflow`` does). The block's
    bookkeeping lives in the thread, never in the value.

    Example:
        >>> import mlflow
        >>> from tracking_tasks.ops import create_mlflow_run
        >>> with RunHandle.model_validate(create_mlflow_run(ctx, "fluent").model_dump()) as run:
        ...     mlflow.log_metric("f1", 0.85)
        >>> mlflow.MlflowClient(ctx.tracking_uri).get_run(run.run_id).data.metrics
        {'f1': 0.85}
    """

    def __enter__(self) -> RunHandle:
        # the block's fluent calls (and MLflow's own, below) go to the run's workspace
        scope = workspace_scope(self.workspace)
        scope.__enter__()
        try:
            self._activate()
        except BaseException:
            scope.__exit__(*sys.exc_info())
            raise
        _scopes().append(scope)
        _stack().append(self)
        return self

    def _activate(self) -> None:
        import mlflow

        with FLUENT_LOCK:  # another thread's setup must not re-point between the two steps
            experiment = fluent_experiment_id()
            if not same_server(mlflow.get_tracking_uri(), self.tracking_uri) or experiment not in (
                None,
                self.experiment_id,
            ):
                point_fluent_api(
                    TrackingContext(
                        tracking_uri=self.tracking_uri,
                        registry_uri=self.registry_uri,
                        experiment_id=self.experiment_id,
                        experiment_name=self.experiment_id,  # not read when pointing
                        config_hash=self.config_hash or "",
                    )
                )
            with mlflow_errors(
                f"could not make MLflow run {self.run_id} on {redact_uri(self.tracking_uri)} "
                "the active run",
                default=TrackingServerError,
                not_found=RunNotFoundError,
            ):
                # nested=True only allows a run to be active already (an enclosing block's):
                # with run_id given, MLflow resumes this run and sets no parent of its own
                mlflow.start_run(run_id=self.run_id, nested=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        status = exit_status(exc_type)
        stack = _stack()
        if self in stack:
            stack.remove(self)
        scopes = _scopes()
        try:
            self._end(status)
        finally:
            if scopes:
                scopes.pop().__exit__(None, None, None)

    def _end(self, status: str) -> None:
        import mlflow

        with (
            mlflow_errors(
                f"could not end MLflow run {self.run_id} on {redact_uri(self.tracking_uri)}",
                default=RunEndError,
                not_found=RunNotFoundError,
            ),
            # mlflow.end_run prints "View run" lines to stdout and removes MLFLOW_RUN_ID
            quiet_run_links(),
            kept_env(RUN_ID_VAR),
        ):
            # runs the block's code started with mlflow.start_run() and left open are
            # above this one on MLflow's stack: they end the way the block ended
            while (active := mlflow.active_run()) is not None and active.info.run_id != self.run_id:
                log.warning(
                    "MLflow run %s, started inside the block of run %s, was left active: ended %s",
                    active.info.run_id,
                    self.run_id,
                    status,
                )
                mlflow.end_run(status)
            if active is not None:
                mlflow.end_run(status)  # pops it: the run active before the block is again
