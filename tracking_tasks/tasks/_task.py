"""The library's tasks outside a flow run: their plain function, no Prefect start-up.

A Prefect task called outside any flow run starts Prefect's temporary API server (about
10 s in a fresh process), records a task run there, and warns on every log line that it
cannot send logs without a flow run. The library's tasks are thin wrappers of plain
functions, so outside a flow run a call of one is the call of its function: no server,
no task run, no caching; the retries the task declares still apply (same count, delays
and condition). Inside a flow or task run, Prefect runs it as a task, as always.

The MLflow runs opened there have no flow-run hooks to end them: :func:`end_at_exit`
remembers them, and at interpreter exit the ones still RUNNING are ended (FINISHED, or
FAILED / KILLED when the interpreter exits on an uncaught exception) with a warning
naming each run.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from prefect import Task
from prefect.states import Failed

from tracking_tasks._private_apis import register_exit_before_threads
from tracking_tasks._status import exit_status
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._filters import and_, run_id_in, status_equals
from tracking_tasks.ops._lifecycle import RunLocation, end_runs
from tracking_tasks.ops._model_lifecycle import fail_pending_models
from tracking_tasks.tasks._run_memory import location_of
from tracking_tasks.tasks._runtime import current_run_info, in_run

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State
    from prefect.futures import PrefectFuture

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: Called with a task's result and the caller's flow run id (None outside one), in the
#: caller (after a call) or when a submitted run is done.
AfterCall = Callable[[Any, str | None], None]


class TrackingTask(Task[P, R]):
    """A Prefect task that is its plain function when called outside a flow run.

    Args:
        *args: ``prefect.Task``'s.
        after_call: Run after each call with its result (see :data:`AfterCall`), inside
            a flow run and out: what a completion hook would do, without Prefect's two
            INFO lines per hook.
        **kwargs: ``prefect.Task``'s.

    Example:
        >>> def double(x: int) -> int:
        ...     return 2 * x
        >>> TrackingTask(fn=double, name="double")(21)  # outside a flow run: no API
        42
    """

    def __init__(self, *args: Any, after_call: AfterCall | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_call = after_call

    @overload  # type: ignore[override]
    def __call__(
        self,
        *args: Any,
        return_state: Literal[False] = False,
        wait_for: Any = None,
        **kwargs: Any,
    ) -> R: ...

    @overload
    def __call__(
        self, *args: Any, return_state: Literal[True], wait_for: Any = None, **kwargs: Any
    ) -> State[R]: ...

    def __call__(
        self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any
    ) -> Any:
        if not in_run() and not return_state and wait_for is None:
            result: Any = self._plain_call(*args, **kwargs)
        else:
            prefect_call: Any = super().__call__  # Prefect's overloads, chosen at run time
            result = prefect_call(*args, return_state=return_state, wait_for=wait_for, **kwargs)
        if self.after_call is not None:
            state: Any = result if return_state else None
            if state is None or state.is_completed():
                value = state.result(raise_on_failure=False) if state is not None else result
                self.after_call(value, current_run_info().flow_run_id)
        return result

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Prefect's ``submit``; ``after_call`` runs when the task run is done."""
        future: PrefectFuture[R] = super().submit(*args, **kwargs)  # type: ignore[call-overload]
        if self.after_call is not None:
            after, flow_run_id = self.after_call, current_run_info().flow_run_id

            def done(finished: PrefectFuture[R]) -> None:
                if finished.state.is_completed():
                    after(finished.result(raise_on_failure=False), flow_run_id)

            future.add_done_callback(done)
        return future

    def with_options(self, **kwargs: Any) -> TrackingTask[P, R]:
        """Prefect's ``with_options``, keeping this class and its ``after_call``."""
        copy = super().with_options(**kwargs)
        copy.__class__ = type(self)
        copy.after_call = self.after_call  # type: ignore[attr-defined]
        return copy  # type: ignore[return-value]

    def _plain_call(self, *args: Any, **kwargs: Any) -> R:
        """The function itself, retried as the task declares (count, delays, condition)."""
        attempt = 0
        while True:
            try:
                return self.fn(*args, **kwargs)
            except Exception as exc:
                if attempt >= self.retries or not self._retry(exc):
                    raise
                delay = self._delay(attempt)
                attempt += 1
                log.warning(
                    "%s failed (%s: %s); retry %d of %d in %.1f s",
                    self.name,
                    type(exc).__name__,
                    exc,
                    attempt,
                    self.retries,
                    delay,
                )
                time.sleep(delay)

    def _retry(self, exc: Exception) -> bool:
        if self.retry_condition_fn is None:
            return True
        return bool(self.retry_condition_fn(self, None, Failed(data=exc)))  # type: ignore[arg-type]

    def _delay(self, attempt: int) -> float:
        delays = self.retry_delay_seconds
        base = float(
            (delays[min(attempt, len(delays) - 1)] if delays else 0)
            if isinstance(delays, list)
            else (delays or 0)
        )
        jitter = self.retry_jitter_factor
        return base * (1 + random.uniform(0, jitter)) if jitter else base


def tracking_task(
    *, after_call: AfterCall | None = None, **options: Any
) -> Callable[[Callable[P, R]], TrackingTask[P, R]]:
    """``@task(...)`` for the library's tasks: a :class:`TrackingTask` with these options.

    Args:
        after_call: See :class:`TrackingTask`.
        **options: ``prefect.task``'s options (``name=``, ``cache_policy=``, ``retries=``...).

    Returns:
        A decorator.

    Example:
        >>> @tracking_task(name="triple")
        ... def triple(x: int) -> int:
        ...     return 3 * x
        >>> triple(2), triple.fn(2)
        (6, 6)
    """

    def decorate(fn: Callable[P, R]) -> TrackingTask[P, R]:
        return TrackingTask(fn=fn, after_call=after_call, **options)

    return decorate


#: Runs opened outside a flow run in this process, ended at exit if still RUNNING.
_MAX_OUTSIDE_RUNS = 10_000
_outside_lock = threading.Lock()
_outside: OrderedDict[str, RunLocation] = OrderedDict()
_exit_registered = False


def end_at_exit(ref: RunRef) -> None:
    """Remember a run opened outside a flow run, to end it at exit if still RUNNING.

    Args:
        ref: The run.

    Example:
        >>> from tracking_tasks.ops import create_mlflow_run
        >>> left = create_mlflow_run(ctx, "left-open")
        >>> end_at_exit(left)
        >>> left.run_id in end_left_open()  # what interpreter exit does (others too)
        True
    """
    global _exit_registered
    with _outside_lock:
        _outside[ref.run_id] = location_of(ref)  # its workspace included
        while len(_outside) > _MAX_OUTSIDE_RUNS:
            _outside.popitem(last=False)
        if not _exit_registered:
            register_exit_before_threads(end_left_open)
            _exit_registered = True


def _still_there(tracking_uri: str) -> bool:
    """Whether a store can still be asked at exit, without MLflow's minutes of retries."""
    from tracking_tasks.ops._setup import check_reachable

    if tracking_uri.startswith("sqlite:///"):  # a file gone is nothing to end (a temp dir)
        path = tracking_uri.removeprefix("sqlite:///")
        return path == ":memory:" or Path(path).exists()
    try:
        check_reachable(tracking_uri, again=True)
    except Exception as exc:
        log.warning("runs opened outside a flow run could not be checked at exit: %s", exc)
        return False
    return True


def end_left_open() -> list[str]:
    """End the runs opened outside a flow run that are still RUNNING (at exit).

    Their status follows how the interpreter exits: FINISHED, or FAILED (KILLED for a
    ``KeyboardInterrupt``) when an uncaught exception ends it. A search per experiment
    finds the ones still RUNNING (a hundred ids a request); each one ended is named in a
    warning.

    Returns:
        The ids of the runs ended.

    Example:
        >>> isinstance(end_left_open(), list)
        True
    """
    with _outside_lock:
        remembered = list(_outside.items())
        _outside.clear()
    if not remembered:
        return []
    from tracking_tasks.ops._scope import Query, Scope, pages

    failure = getattr(sys, "last_value", None)
    status = exit_status(type(failure) if isinstance(failure, BaseException) else None)
    by_location: dict[RunLocation, list[str]] = {}
    for run_id, where in remembered:
        by_location.setdefault(where, []).append(run_id)
    running: list[tuple[str, RunLocation, bool]] = []
    for where, run_ids in by_location.items():
        if not _still_there(where.tracking_uri):
            continue
        scope = Scope(
            where.tracking_uri, (where.experiment_id,), where.credentials, where.workspace
        )
        for start in range(0, len(run_ids), 100):
            chunk = run_ids[start : start + 100]
            query = Query(scope, and_(run_id_in(chunk), status_equals("RUNNING")))
            try:
                running += [(r.info.run_id, where, True) for page in pages(query) for r in page]
            except Exception as exc:  # at exit: say it, never raise
                log.warning("could not check the runs opened outside a flow run: %s", exc)
    reason = "process exit (outside a flow run)"
    ended, errors = end_runs(running, status, reason)
    # the process is ending: a model still PENDING in these runs will never be finished
    errors += fail_pending_models(ended, {run_id: where for run_id, where, _ in running}, reason)
    for run_id in ended:
        log.warning(
            "Ended MLflow run %s %s at interpreter exit: it was opened outside a Prefect flow "
            "run, where no flow hook ends it. End it yourself with end_mlflow_run(run) or "
            "open it with `with create_mlflow_run(...) as run:`",
            run_id,
            status,
        )
    for error in errors:
        log.warning("could not end a run opened outside a flow run: %s", error)
    return ended
