"""Prefect state hooks that end a flow run's MLflow runs as its final state says."""

from __future__ import annotations

import contextvars
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict

from tracking_tasks.errors import RunEndError
from tracking_tasks.handles import TrackingContext
from tracking_tasks.ops.lifecycle import RunLocation, end_runs
from tracking_tasks.ops.query import Scope
from tracking_tasks.ops.runs import TERMINAL_FLOW_RUN_STATES, RunStatus
from tracking_tasks.ops.search import open_run_ids
from tracking_tasks.tasks.registry import (
    RUN_REGISTRY,
    RunRegistry,
    location_of,
    parse_location_labels,
)
from tracking_tasks.urls import redact_uri

__all__ = ["FlowStateHooks", "end_open_runs", "mlflow_state_hooks", "state_to_run_status"]

log = logging.getLogger(__name__)


def state_to_run_status(state: Any) -> RunStatus | None:
    """Map a final Prefect state to the MLflow run status it implies.

    Args:
        state: A Prefect ``State``.

    Returns:
        ``FINISHED`` for Completed, ``FAILED`` for Failed and Crashed, ``KILLED`` for
        Cancelled/Cancelling, None for a state that is not final.

    Example:
        >>> from prefect.states import Completed, Crashed
        >>> state_to_run_status(Completed()), state_to_run_status(Crashed())
        ('FINISHED', 'FAILED')
    """
    if state.is_cancelling():  # Prefect calls on_cancellation hooks here, before Cancelled
        return "KILLED"
    return TERMINAL_FLOW_RUN_STATES.get(state.type.value)


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
    registry: RunRegistry = RUN_REGISTRY,
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
        registry: Where this process's runs are remembered.

    Returns:
        The ids of the runs ended.

    Raises:
        RunEndError: a run could not be ended or a location not searched (every other
            run is still ended); the message lists each failure.

    Example:
        >>> end_open_runs(str(flow_run.id), "FINISHED", "Completed")  # doctest: +SKIP
        ['800cabaf0fee4093b26abc644953ed53']
    """
    locations, known_runs = registry.forget(flow_run_id)
    with ThreadPoolExecutor(1, "tt-labels") as pool:
        # the labels are read while this process's own runs are ended
        labels = pool.submit(contextvars.copy_context().run, _labelled_locations, flow_run_id)
        ended, errors = end_runs(
            [(run_id, location, False) for run_id, location in known_runs.items()],
            status,
            state_name,
        )
        to_search: set[RunLocation] = set(extra)
        try:
            for location, processes in labels.result().items():
                if processes - {registry.process_token}:
                    to_search.add(location)
        except Exception as exc:
            errors.append(f"reading the labels of Prefect flow run {flow_run_id}: {exc}")
            to_search |= locations  # cannot tell who else tracked: search what we know

    found: dict[str, RunLocation] = {}
    for location in sorted(to_search, key=str):
        scope = Scope(location.tracking_uri, (location.experiment_id,), location.credentials)
        try:
            found.update(dict.fromkeys(open_run_ids(scope, flow_run_id), location))
        except Exception as exc:
            errors.append(
                f"{redact_uri(location.tracking_uri)} experiment {location.experiment_id}: {exc}"
            )
    more, failures = end_runs(
        [(run_id, location, True) for run_id, location in found.items()], status, state_name
    )
    ended += more
    errors += failures
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
    context: TrackingContext | None = None, *, registry: RunRegistry = RUN_REGISTRY
) -> FlowStateHooks:
    """Return ``@flow`` keyword arguments whose hooks end the flow run's MLflow runs.

    On the flow run's final state, every MLflow run still RUNNING that was opened under
    that flow run (by ``create_mlflow_run``, on any thread) is ended: Completed ->
    FINISHED, Failed and Crashed -> FAILED, Cancelled -> KILLED. A run already ended is
    never overwritten. The Prefect state name is tagged on the run as
    ``prefect.final_state``.

    The hooks find the runs through the experiments the flow run tracked into: this
    process remembers them, and every process that opened runs labels the Prefect flow
    run with them, so hooks that Prefect's runner runs in another process
    (cancellation, a crash) find them too.

    Args:
        context: An extra ``TrackingContext`` whose experiment is always searched.
        registry: What this process remembers of its runs (the default, except in tests
            that stand for another process with a fresh ``RunRegistry()``).

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
            str(flow_run.id), status, state.name or state.type.value, extra, registry=registry
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
