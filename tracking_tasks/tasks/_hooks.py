"""Prefect state hooks that end a flow run's MLflow runs as its final state says."""

from __future__ import annotations

import contextvars
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict

from tracking_tasks._status import RunStatus, state_to_run_status
from tracking_tasks.errors import RunEndError
from tracking_tasks.handles import TrackingContext
from tracking_tasks.ops._finders import open_run_ids
from tracking_tasks.ops._lifecycle import RunLocation, end_runs
from tracking_tasks.ops._model_lifecycle import fail_pending_models
from tracking_tasks.ops._reconcile_guard import reconciled_run_ids
from tracking_tasks.ops._scope import Scope
from tracking_tasks.tasks._run_memory import (
    RUN_MEMORY,
    RunMemory,
    location_of,
    parse_location_labels,
)
from tracking_tasks.urls import redact_uri

log = logging.getLogger(__name__)


def _labelled_locations(flow_run_id: str) -> dict[RunLocation, set[str]]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        labels = client.read_flow_run(uuid.UUID(flow_run_id)).labels or {}
    return parse_location_labels(dict(labels))


def end_open_runs(
    flow_run_id: str,
    status: RunStatus,
    state_name: str,
    extra: tuple[RunLocation, ...] = (),
    *,
    memory: RunMemory = RUN_MEMORY,
) -> list[str]:
    """End every still-RUNNING MLflow run opened under ``flow_run_id``; return their ids.

    Runs this process opened are checked by id and ended while the flow run's labels
    are read; then experiments where another process opened runs (per the labels), and
    ``extra``, are searched by the ``prefect.flow_run_id`` tag. Runs already ended are
    left as they are.

    Args:
        flow_run_id: The Prefect flow run.
        status: The MLflow status to end them with.
        state_name: The Prefect state's name, tagged as ``prefect.final_state``.
        extra: Locations to search whatever the labels say.
        memory: Where this process's runs are remembered.

    Returns:
        The ids of the runs ended.

    Raises:
        RunEndError: a run could not be ended or a location not searched (every other
            run is still ended); the message lists each failure.

    Example:
        >>> end_open_runs(flow_run_id, "FINISHED", "Completed", (location_of(ctx),))
        []
    """
    locations, known_runs = memory.forget(flow_run_id)
    with ThreadPoolExecutor(1, "tt-labels") as pool:
        # the labels are read while this process's own runs are ended
        labels = pool.submit(contextvars.copy_context().run, _labelled_locations, flow_run_id)
        ended, errors = end_runs(
            [(run_id, location, False) for run_id, location in known_runs.items()],
            status,
            state_name,
            overrule_reconciled=True,  # this process lived: it knows better than reconcile
        )
        to_search: set[RunLocation] = set(extra)
        try:
            for location, processes in labels.result().items():
                if processes - {memory.process_token}:
                    to_search.add(location)
        except Exception as exc:
            errors.append(f"reading the labels of Prefect flow run {flow_run_id}: {exc}")
            to_search |= locations  # cannot tell who else tracked: search what we know

    found: dict[str, tuple[RunLocation, bool]] = {}
    for location in sorted(to_search, key=str):
        scope = Scope(
            location.tracking_uri,
            (location.experiment_id,),
            location.credentials,
            location.workspace,
        )
        try:
            # runs reconcile ended are checked (and overruled); RUNNING ones just ended
            found.update(dict.fromkeys(reconciled_run_ids(scope, flow_run_id), (location, False)))
            for run_id in open_run_ids(scope, flow_run_id):
                found.setdefault(run_id, (location, True))
        except Exception as exc:
            errors.append(
                f"{redact_uri(location.tracking_uri)} experiment {location.experiment_id}: {exc}"
            )
    more, failures = end_runs(
        [(run_id, location, running) for run_id, (location, running) in found.items()],
        status,
        state_name,
        overrule_reconciled=True,
    )
    ended += more
    errors += failures
    if status != "FINISHED":  # a Completed flow run's models are done: no request
        where = {**known_runs, **{run_id: location for run_id, (location, _) in found.items()}}
        errors += fail_pending_models(ended, where, f"flow run {state_name}")
    if errors:
        raise RunEndError(
            f"could not end the MLflow runs of flow run {flow_run_id} as {status}: "
            + "; ".join(errors)
            + ". End them with end_mlflow_run or the MLflow UI; check the tracking server."
        )
    return ended


class FlowStateHooks(TypedDict):
    """The ``@flow`` keyword arguments ``mlflow_state_hooks`` returns."""

    on_completion: list[Any]
    on_failure: list[Any]
    on_crashed: list[Any]
    on_cancellation: list[Any]


def mlflow_state_hooks(
    context: TrackingContext | None = None, *, memory: RunMemory = RUN_MEMORY
) -> FlowStateHooks:
    """Return ``@flow`` keyword arguments whose hooks end the flow run's MLflow runs.

    On the flow run's final state, every MLflow run still RUNNING that was opened under
    that flow run (by ``create_mlflow_run``, on any thread) is ended: Completed ->
    FINISHED, Failed and Crashed -> FAILED, Cancelled -> KILLED. A run already ended is
    never overwritten, except a status reconcile wrote (it saw the flow run over while
    this process still lived: marked Crashed by mistake, or retried): the hooks know how
    the flow run really ended, and their status replaces reconcile's. The Prefect state
    name is tagged on the run as ``prefect.final_state``. On Failed, Crashed and
    Cancelled, the logged models of the runs ended that were left PENDING (an upload cut
    short) are finalised FAILED, with the reason in their ``tracking_tasks.failure_reason``
    tag; a READY model is never touched.

    The hooks find the runs through the experiments the flow run tracked into: this
    process remembers them, and every process that opened runs labels the Prefect flow
    run with them, so hooks that Prefect's runner runs in another process
    (cancellation, a crash) find them too.

    Args:
        context: An extra ``TrackingContext`` whose experiment is always searched.
        memory: What this process remembers of its runs (the default, except in tests
            that stand for another process with a fresh ``RunMemory()``).

    Returns:
        ``{"on_completion": [...], "on_failure": [...], "on_crashed": [...],
        "on_cancellation": [...]}``, to unpack into ``@flow(...)``.

    Example:
        >>> from prefect import flow
        >>> @flow(**mlflow_state_hooks())
        ... def train():
        ...     ...
    """
    extra = (location_of(context),) if context is not None else ()

    def end_mlflow_runs_hook(flow: Any, flow_run: Any, state: Any) -> None:
        status = state_to_run_status(state)
        if status is None:
            return
        ended = end_open_runs(
            str(flow_run.id), status, state.name or state.type.value, extra, memory=memory
        )
        if ended:
            log.info(
                "Flow run %s ended %s: %d MLflow run(s) marked %s",
                flow_run.name,
                state.name,
                len(ended),
                status,
            )

    return FlowStateHooks(
        on_completion=[end_mlflow_runs_hook],
        on_failure=[end_mlflow_runs_hook],
        on_crashed=[end_mlflow_runs_hook],
        on_cancellation=[end_mlflow_runs_hook],
    )
