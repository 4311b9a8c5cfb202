"""The end of a run's life: end_mlflow_run, and Prefect state hooks that end runs."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_logger

from tracking_tasks._logging import logger
from tracking_tasks.clients import get_client
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.urls import redact_uri

__all__ = ["end_mlflow_run", "mlflow_state_hooks", "state_to_run_status"]

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
TERMINAL_STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})
FINAL_STATE_TAG = "prefect.final_state"
FLOW_RUN_TAG = "prefect.flow_run_id"

_logger = get_logger("tracking_tasks")
_MAX_REMEMBERED_FLOW_RUNS = 10_000
_Location = tuple[str, str | None, str]  # (tracking_uri, registry_uri, experiment_id)
LOCATION_LABEL_PREFIX = "tracking-tasks.mlflow."
# Names this process in flow-run labels, so a hook can tell whether runs were opened
# elsewhere (and must be searched for) or only here (and are known by id).
PROCESS_TOKEN = uuid.uuid4().hex[:8]


@dataclass
class _FlowRunMemory:
    """What this process opened under one flow run."""

    locations: set[_Location] = field(default_factory=set)
    runs: dict[str, _Location] = field(default_factory=dict)  # run id -> location
    identities: dict[str, str] = field(default_factory=dict)  # identity tag -> run id


_memory: OrderedDict[str, _FlowRunMemory] = OrderedDict()
_memory_lock = threading.Lock()


def _location(where: TrackingContext | RunRef) -> _Location:
    return (where.tracking_uri, where.registry_uri, where.experiment_id)


def _label(location: _Location) -> tuple[str, str]:
    tracking_uri, registry_uri, experiment_id = location
    value = json.dumps(
        {
            "tracking_uri": tracking_uri,
            "registry_uri": registry_uri,
            "experiment_id": experiment_id,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    return f"{LOCATION_LABEL_PREFIX}{digest}.{PROCESS_TOKEN}", value


def _record_on_flow_run(flow_run_id: str, location: _Location) -> None:
    """Label the Prefect flow run with where it tracks, for hooks run in another process.

    The runner runs on_cancellation and on_crashed hooks in its own process, which never
    saw the runs being opened; the label tells it where to look.
    """
    from prefect.client.orchestration import get_client as get_prefect_client

    key, value = _label(location)
    try:
        with get_prefect_client(sync_client=True) as client:
            client.update_flow_run_labels(uuid.UUID(flow_run_id), {key: value})
    except Exception as exc:  # the hooks still have this process's memory of it
        _logger.warning(
            "could not label flow run %s with its MLflow experiment: %s", flow_run_id, exc
        )


def _labelled_locations(flow_run_id: str) -> dict[_Location, set[str]]:
    """Locations named in the flow run's labels, each with the processes that named it."""
    from prefect.client.orchestration import get_client as get_prefect_client

    with get_prefect_client(sync_client=True) as client:
        labels = client.read_flow_run(uuid.UUID(flow_run_id)).labels or {}
    found: dict[_Location, set[str]] = {}
    for key, value in labels.items():
        if key.startswith(LOCATION_LABEL_PREFIX) and isinstance(value, str):
            data = json.loads(value)
            location = (data["tracking_uri"], data["registry_uri"], data["experiment_id"])
            found.setdefault(location, set()).add(key.rsplit(".", 1)[-1])
    return found


def _flow_run_memory(flow_run_id: str) -> _FlowRunMemory:
    # caller holds _memory_lock
    memory = _memory.setdefault(flow_run_id, _FlowRunMemory())
    _memory.move_to_end(flow_run_id)
    while len(_memory) > _MAX_REMEMBERED_FLOW_RUNS:
        _memory.popitem(last=False)
    return memory


def remember_location(flow_run_id: str | None, where: TrackingContext | RunRef) -> None:
    """Record that a flow run tracks into an experiment, for that flow run's state hooks.

    Kept in this process (shared by every thread, so runs opened on task-runner threads
    are found) and, once per flow run, experiment and process, as a label on the Prefect
    flow run (so hooks that the runner runs in another process find them too).
    """
    if flow_run_id is None:
        return
    location = _location(where)
    with _memory_lock:
        known = _flow_run_memory(flow_run_id).locations
        is_new = location not in known
        known.add(location)
    if is_new:
        _record_on_flow_run(flow_run_id, location)


def remember_run(flow_run_id: str | None, ref: RunRef, identity: str | None) -> None:
    """Record a run opened under a flow run, so its hooks can end it by id."""
    if flow_run_id is None:
        return
    remember_location(flow_run_id, ref)
    with _memory_lock:
        memory = _flow_run_memory(flow_run_id)
        memory.runs[ref.run_id] = _location(ref)
        if identity is not None:
            memory.identities[identity] = ref.run_id


def known_run_id(flow_run_id: str | None, identity: str) -> str | None:
    """The run this process already opened for ``identity`` in this flow run, if any."""
    if flow_run_id is None:
        return None
    with _memory_lock:
        memory = _memory.get(flow_run_id)
        return memory.identities.get(identity) if memory else None


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
    if state.is_completed():
        return "FINISHED"
    if state.is_failed() or state.is_crashed():
        return "FAILED"
    if state.is_cancelled() or state.is_cancelling():
        return "KILLED"
    return None


def _search_open_runs(location: _Location, flow_run_id: str) -> list[str]:
    from mlflow.entities import ViewType

    tracking_uri, registry_uri, experiment_id = location
    client = get_client(tracking_uri, registry_uri)
    run_ids: list[str] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}' AND attributes.status = 'RUNNING'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        run_ids.extend(run.info.run_id for run in page)
        token = page.token
        if not token:
            return run_ids


def end_open_runs(
    flow_run_id: str,
    status: RunStatus,
    state_name: str,
    extra: tuple[_Location, ...] = (),
) -> list[str]:
    """End every still-RUNNING MLflow run opened under ``flow_run_id``; return their ids.

    Runs this process opened are checked by id (one request each); experiments where
    another process opened runs (per the flow run's labels), and ``extra``, are searched
    by the ``prefect.flow_run_id`` tag. Runs already ended are left as they are.
    """
    with _memory_lock:
        memory = _memory.pop(flow_run_id, _FlowRunMemory())
    errors: list[str] = []
    to_search: set[_Location] = set(extra)
    try:
        for location, processes in _labelled_locations(flow_run_id).items():
            if processes - {PROCESS_TOKEN}:
                to_search.add(location)
    except Exception as exc:
        errors.append(f"reading the labels of Prefect flow run {flow_run_id}: {exc}")
        to_search |= memory.locations  # cannot tell who else tracked: search what we know

    candidates: dict[str, _Location] = {}
    for location in sorted(to_search, key=str):
        try:
            candidates.update(dict.fromkeys(_search_open_runs(location, flow_run_id), location))
        except Exception as exc:
            errors.append(f"{redact_uri(location[0])} experiment {location[2]}: {exc}")
    searched = set(candidates)
    for run_id, location in memory.runs.items():
        candidates.setdefault(run_id, location)

    ended: list[str] = []
    for run_id, (tracking_uri, registry_uri, _) in candidates.items():
        client = get_client(tracking_uri, registry_uri)
        try:
            if run_id not in searched and client.get_run(run_id).info.status != "RUNNING":
                continue  # ended already: never overwritten
            client.set_tag(run_id, FINAL_STATE_TAG, state_name)
            client.set_terminated(run_id, status=status)
            ended.append(run_id)
        except Exception as exc:
            errors.append(f"run {run_id} on {redact_uri(tracking_uri)}: {exc}")
    if errors:
        raise RuntimeError(
            f"could not end the MLflow runs of flow run {flow_run_id} as {status}: "
            + "; ".join(errors)
            + ". End them with end_mlflow_run or the MLflow UI; check the tracking server."
        )
    return ended


def _locations_of(target: TrackingContext | RunRef | None) -> tuple[_Location, ...]:
    if target is None:
        return ()
    return ((target.tracking_uri, target.registry_uri, target.experiment_id),)


class FlowStateHooks(TypedDict):
    """The ``@flow`` keyword arguments ``mlflow_state_hooks`` returns."""

    on_completion: list[Any]
    on_failure: list[Any]
    on_crashed: list[Any]
    on_cancellation: list[Any]


def mlflow_state_hooks(context: TrackingContext | None = None) -> FlowStateHooks:
    """Return ``@flow`` keyword arguments whose hooks end the flow run's MLflow runs.

    On the flow run's final state, every MLflow run still RUNNING that was opened under
    that flow run (by ``create_mlflow_run``, on any thread) is ended: Completed ->
    FINISHED, Failed and Crashed -> FAILED, Cancelled -> KILLED. A run already ended is
    never overwritten. The Prefect state name is tagged on the run as
    ``prefect.final_state``.

    The hooks find the runs through the experiments the flow run tracked into: this
    process remembers them, and ``create_mlflow_run`` labels the Prefect flow run with
    them, so hooks that Prefect's runner runs in another process (cancellation, a
    crash) find them too.

    Args:
        context: An extra ``TrackingContext`` whose experiment is always searched.

    Returns:
        ``{"on_completion": [...], "on_failure": [...], "on_crashed": [...],
        "on_cancellation": [...]}``, to unpack into ``@flow(...)``.

    Example:
        >>> from prefect import flow
        >>> @flow(**mlflow_state_hooks())
        ... def train():
        ...     ...
    """
    extra = _locations_of(context)

    def end_mlflow_runs_hook(flow: Any, flow_run: Any, state: Any) -> None:
        status = state_to_run_status(state)
        if status is None:
            return
        ended = end_open_runs(str(flow_run.id), status, state.name or state.type.value, extra)
        if ended:
            _logger.info(
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


@task(name="end_mlflow_run", cache_policy=NO_CACHE)  # ends a run: must act every time
def end_mlflow_run(run: RunRef, status: RunStatus = "FINISHED") -> str:
    """End an MLflow run with ``status``, unless it has already ended.

    Args:
        run: The run handle from ``create_mlflow_run``.
        status: ``FINISHED`` (default), ``FAILED`` or ``KILLED``.

    Returns:
        The run's status afterwards: ``status``, or the status it already had.

    Raises:
        ValueError: ``status`` is not one of FINISHED, FAILED, KILLED.
        RunNotFoundError: the run does not exist on its tracking server.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def train(ctx):
        ...     run = create_mlflow_run(ctx, run_name="train")
        ...     end_mlflow_run(run, "FINISHED")
    """
    from tracking_tasks.runs import get_run_info

    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status {status!r} is not one of FINISHED, FAILED, KILLED")
    current = get_run_info(run).status
    if current in TERMINAL_STATUSES:
        logger().info("MLflow run %s already %s; left as is", run.run_id, current)
        return str(current)
    get_client(run.tracking_uri, run.registry_uri).set_terminated(run.run_id, status=status)
    return status
