"""The end of a run's life: end one run, or every run of a flow run, never overwriting."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tracking_tasks._private_apis import end_run_in_one_request
from tracking_tasks._status import TERMINAL_STATUSES, RunStatus
from tracking_tasks.errors import (
    InvalidArgumentError,
    RunEndError,
    RunNotFoundError,
    TrackingServerError,
    mlflow_errors,
)
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._client import client_for
from tracking_tasks.ops._logging import now_ms
from tracking_tasks.ops._runs import get_run_info
from tracking_tasks.tags import FINAL_STATE_TAG, RECONCILE_OVERRULED_TAG, RECONCILED_TAG
from tracking_tasks.urls import redact_uri

log = logging.getLogger(__name__)


def end_mlflow_run(run: RunRef, status: RunStatus = "FINISHED") -> str:
    """End an MLflow run with ``status``, unless it has already ended.

    Args:
        run: The run handle from ``create_mlflow_run``.
        status: ``FINISHED`` (default), ``FAILED`` or ``KILLED``.

    Returns:
        The run's status afterwards: ``status``, or the status it already had.

    Raises:
        InvalidArgumentError: ``status`` is not one of FINISHED, FAILED, KILLED.
        RunNotFoundError: the run does not exist on its tracking server.
        RunEndError: the server refused to end the run, or could not be reached.

    Example:
        >>> end_mlflow_run(run, "FINISHED")
        'FINISHED'
    """
    _check_terminal(status)
    current = get_run_info(run).status
    if current in TERMINAL_STATUSES:
        log.info("MLflow run %s already %s; left as is", run.run_id, current)
        return str(current)
    return terminate_run(run, status)


@dataclass(frozen=True)
class RunLocation:
    """Where a run lives: its tracking server, registry, experiment and MLflow workspace,
    and the secret-free credentials reference requests there carry (loaded where it is
    used)."""

    tracking_uri: str
    registry_uri: str | None
    experiment_id: str
    credentials: str | None = None
    workspace: str | None = None


def end_runs(
    runs: Iterable[tuple[str, RunLocation, bool]],
    status: RunStatus,
    final_state: str,
    *,
    tags: Mapping[str, str] | None = None,
    max_workers: int = 8,
    overrule_reconciled: bool = False,
) -> tuple[list[str], list[str]]:
    """End runs still RUNNING as ``status``, tagging the state that ended them.

    A run already ended is never overwritten, with one exception the flow's own hooks
    ask for (``overrule_reconciled``): a status ``reconcile_runs`` wrote (the run carries
    ``tracking_tasks.reconciled``) is replaced, since a live process knows better how
    its flow run ended than a reconcile pass that saw it Crashed; the reason reconcile
    gave moves to ``tracking_tasks.reconcile_overruled``. Every run is tried; failures
    are collected, not raised, so one unreachable server does not leave the others open.
    The requests go out concurrently: the status checks first, then each run's tags and
    end together, so ending one run or twenty costs about two round trips. A run costs
    two requests (its tags, its end) plus the status check unless ``known_running``
    (and one more to remove the tag of a status it overrules).

    Args:
        runs: ``(run id, location, known_running)``; ``known_running`` skips the status
            check for a run a search has just found RUNNING.
        status: ``FINISHED``, ``FAILED`` or ``KILLED``.
        final_state: The name of what ended them, tagged as ``prefect.final_state``.
        tags: More tags to set on each run ended, in the same request.
        max_workers: Requests in flight at once.
        overrule_reconciled: Also end (again) a checked run whose status reconcile wrote.

    Returns:
        ``(ended run ids, error messages)``.

    Example:
        >>> end_runs([], "FINISHED", "Completed")
        ([], [])
    """
    items = list(runs)
    if not items:
        return [], []
    errors: list[str] = []
    to_tag = {FINAL_STATE_TAG: final_state, **(tags or {})}

    def attempt(run_id: str, where: RunLocation, method: str, *args: Any) -> Any:
        client = client_for(where)
        with mlflow_errors(
            f"run {run_id} on {redact_uri(where.tracking_uri)}", default=TrackingServerError
        ):
            if method == "end":
                return _set_status(client, run_id, status)
            if method == "tag":
                from mlflow.entities import RunTag

                (extra,) = args
                pairs = {**to_tag, **extra}
                return client.log_batch(run_id, tags=[RunTag(k, v) for k, v in pairs.items()])
            return getattr(client, method)(run_id, *args)

    def outcome(future: Future[Any]) -> tuple[bool, Any]:
        try:
            return True, future.result()
        except TrackingServerError as exc:
            errors.append(str(exc))
            return False, None

    with ThreadPoolExecutor(min(max_workers, 2 * len(items)), "tt-end-runs") as pool:
        checks = {
            run_id: pool.submit(attempt, run_id, where, "get_run")
            for run_id, where, known_running in items
            if not known_running
        }

        def endable(run_id: str) -> tuple[bool, str | None]:
            """(end it?, the reconciled reason it overrules); an ended run stays ended."""
            if run_id not in checks:
                return True, None
            ok, run = outcome(checks[run_id])
            if not ok:
                return False, None
            reason = run.data.tags.get(RECONCILED_TAG) if overrule_reconciled else None
            return run.info.status == "RUNNING" or reason is not None, reason

        plan = [(run_id, where, *endable(run_id)) for run_id, where, _ in items]
        writes = [
            (
                run_id,
                pool.submit(
                    attempt,
                    run_id,
                    where,
                    "tag",
                    {RECONCILE_OVERRULED_TAG: reason} if reason else {},
                ),
                pool.submit(attempt, run_id, where, "end"),
                pool.submit(attempt, run_id, where, "delete_tag", RECONCILED_TAG)
                if reason
                else None,
            )
            for run_id, where, end, reason in plan
            if end
        ]
        ended = [
            run_id
            for run_id, *sent in writes
            if all([outcome(future)[0] for future in sent if future is not None])
        ]
    overruled = [(run_id, reason) for run_id, _, end, reason in plan if end and reason]
    for run_id, reason in overruled:
        log.warning(
            "MLflow run %s: its flow run's hooks ended it %s (%s), over the status reconcile "
            "had written (%s)",
            run_id,
            status,
            final_state,
            reason,
        )
    return ended, errors


def terminate_run(run: RunRef, status: RunStatus = "FINISHED") -> str:
    """End a run the caller opened and still holds, in one request (no status check, no URL printed).

    ``end_mlflow_run`` first reads the status so it never overwrites a run something
    else has ended; a caller that opened the run and has not let it go (a sweep's trial)
    knows it is still RUNNING and saves that read.

    Args:
        run: The run handle.
        status: ``FINISHED`` (default), ``FAILED`` or ``KILLED``.

    Returns:
        ``status``.

    Raises:
        InvalidArgumentError: ``status`` is not one of FINISHED, FAILED, KILLED.
        RunNotFoundError: the run does not exist on its tracking server.
        RunEndError: the server refused to end the run, or could not be reached.

    Example:
        >>> terminate_run(run, "KILLED")
        'KILLED'
    """
    _check_terminal(status)
    with mlflow_errors(
        f"could not end MLflow run {run.run_id} on {redact_uri(run.tracking_uri)}",
        default=RunEndError,
        not_found=RunNotFoundError,
    ):
        client = client_for(run)
        _set_status(client, run.run_id, status)
    return status


def _check_terminal(status: str) -> None:
    if status not in TERMINAL_STATUSES:
        raise InvalidArgumentError(
            f"status {status!r} is not one of FINISHED, FAILED, KILLED: pass one of them"
        )


def _set_status(client: Any, run_id: str, status: str) -> None:
    """End a run in one request, without the ``get_run`` ``set_terminated`` makes."""
    end_run_in_one_request(client, run_id, status, now_ms())
