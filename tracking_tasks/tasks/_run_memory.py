"""The run memory: which MLflow runs each flow run opened in this process, for the hooks.

One object, :data:`RUN_MEMORY`, owned by the Prefect layer: ``create_mlflow_run`` and
``setup_mlflow`` write to it, the state hooks read it. Tests build their own
``RunMemory()``; nothing patches the module.

Finding a flow run's runs from another process (the runner that runs ``on_crashed`` and
``on_cancellation`` hooks) needs the experiments it tracked into: each process labels the
Prefect flow run with them. That label is written by a background thread, never on the
flow's path: Prefect's API can answer a write with 503 while the flow run's own state
writes hold its database, and its client then sleeps before retrying.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tracking_tasks._private_apis import register_exit_before_threads
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.ops._lifecycle import RunLocation

log = logging.getLogger(__name__)

#: A Prefect API write, given a sync client.
Write = Callable[[Any], None]

#: Prefix of the Prefect flow-run labels that name an MLflow experiment tracked into.
LOCATION_LABEL_PREFIX = "tracking-tasks.mlflow."


def location_of(where: TrackingContext | RunRef) -> RunLocation:
    """The location (server, registry, experiment) of a context or a run.

    Args:
        where: A ``TrackingContext`` or ``RunRef``.

    Returns:
        Its ``RunLocation``.

    Example:
        >>> location_of(RunRef(run_id="a", experiment_id="1", run_name="t",
        ...                    tracking_uri="sqlite:///m.db")).experiment_id
        '1'
    """
    return RunLocation(
        where.tracking_uri,
        where.registry_uri,
        where.experiment_id,
        where.credentials,
        where.workspace,
    )


def location_label(location: RunLocation, process: str) -> tuple[str, str]:
    """The flow-run label (key, value) naming a location, written by ``process``.

    Args:
        location: The location.
        process: The writing process's token.

    Returns:
        ``(key, JSON value)``.

    Example:
        >>> key, _ = location_label(RunLocation("sqlite:///m.db", None, "1"), "p1")
        >>> key.startswith(LOCATION_LABEL_PREFIX) and key.endswith(".p1")
        True
    """
    value = json.dumps(
        {
            "tracking_uri": location.tracking_uri,
            "registry_uri": location.registry_uri,
            "experiment_id": location.experiment_id,
            "credentials": location.credentials,
            **({"workspace": location.workspace} if location.workspace else {}),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    return f"{LOCATION_LABEL_PREFIX}{digest}.{process}", value


def parse_location_labels(labels: dict[str, object]) -> dict[RunLocation, set[str]]:
    """The locations named in a flow run's labels, each with the processes that named it.

    Args:
        labels: The flow run's labels.

    Returns:
        ``{location: {process token, ...}}``.

    Example:
        >>> key, value = location_label(RunLocation("sqlite:///m.db", None, "1"), "p1")
        >>> parse_location_labels({key: value, "other": "x"})
        {RunLocation(tracking_uri='sqlite:///m.db', registry_uri=None, experiment_id='1', credentials=None, workspace=None): {'p1'}}
    """
    found: dict[RunLocation, set[str]] = {}
    for key, value in labels.items():
        if key.startswith(LOCATION_LABEL_PREFIX) and isinstance(value, str):
            data = json.loads(value)
            location = RunLocation(
                data["tracking_uri"],
                data["registry_uri"],
                data["experiment_id"],
                data.get("credentials"),  # labels written before it was recorded have none
                data.get("workspace"),
            )
            found.setdefault(location, set()).add(key.rsplit(".", 1)[-1])
    return found


class BackgroundWriter:
    """Runs Prefect API writes on one daemon thread, each with a client of its own.

    A write runs in a copy of the context it was submitted from (the same Prefect
    settings, so the same API) with the writer's own sync client for that API, never
    the flow run's, which may be closed by the time the write runs. A write that fails
    is logged and dropped: what it records is a courtesy (a label, a link artifact),
    never the only copy of anything. When the interpreter shuts down (before its
    ``atexit`` handlers, while Prefect can still send) what is still queued gets up to
    ``EXIT_FLUSH_SECONDS`` to go out.
    """

    EXIT_FLUSH_SECONDS = 5.0

    def __init__(self) -> None:
        # (context, write); a None context marks a flush, which needs no client
        self._queue: queue.Queue[tuple[contextvars.Context | None, Write]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._exit_hook = False
        self._clients: dict[str, Any] = {}  # API URL -> open sync client (writer thread only)

    def submit(self, write: Write) -> None:
        """Queue ``write(client)``; it runs later on the writer thread."""
        self._ensure_thread()
        self._queue.put((contextvars.copy_context(), write))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write has run; return False on timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put((None, lambda client: done.set()))
        return done.wait(timeout)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="tracking-tasks-writer", daemon=True
                )
                self._thread.start()
                if not self._exit_hook:
                    # before threads are joined and before atexit, so a flushed write may
                    # still emit Prefect's events
                    register_exit_before_threads(self.flush, self.EXIT_FLUSH_SECONDS)
                    self._exit_hook = True

    def _work(self) -> None:
        while True:
            context, write = self._queue.get()
            try:
                if context is None:
                    write(None)
                else:
                    context.run(self._run, write)
            except Exception as exc:
                log.warning("a background Prefect API write failed: %s", exc)

    def _run(self, write: Write) -> None:
        from prefect.client.orchestration import get_client
        from prefect.settings import get_current_settings

        api = str(get_current_settings().api.url)
        client = self._clients.get(api)
        if client is None:
            # httpx_settings={} differs from the run context's client's settings, so
            # get_client makes a client of the writer's own instead of the flow run's
            client = get_client(sync_client=True, httpx_settings={})
            client.__enter__()
            self._clients[api] = client
        try:
            write(client)
        except Exception:
            self._clients.pop(api, None)  # a broken connection: a new client next time
            with contextlib.suppress(Exception):
                client.__exit__(None, None, None)
            raise


@dataclass
class _IdentityLock:
    """A run identity's lock and how many callers hold or wait for it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    holders: int = 0


@dataclass
class _FlowRunMemory:
    """What this process opened under one flow run."""

    context: TrackingContext | None = None  # the last setup_mlflow's
    locations: set[RunLocation] = field(default_factory=set)
    runs: dict[str, RunLocation] = field(default_factory=dict)  # run id -> location
    identities: dict[str, str] = field(default_factory=dict)  # identity tag -> run id


class RunMemory:
    """The MLflow runs this process opened, per Prefect flow run, and their identity locks.

    Shared by every thread of the process (runs opened on task-runner threads are
    found by the flow's hooks). Bounded: the oldest flow runs are forgotten past
    ``max_flow_runs``.

    Args:
        max_flow_runs: How many flow runs to remember.
        label_writer: Sends a flow-run label to Prefect (None: no labels, for tests
            and plain use); called on a background thread.

    Example:
        >>> memory = RunMemory()
        >>> ref = RunRef(run_id="r1", experiment_id="1", run_name="t",
        ...              tracking_uri="sqlite:///m.db")
        >>> memory.remember_run("flow-run-1", ref, identity="abc")
        >>> memory.known_run_id("flow-run-1", "abc")
        'r1'
    """

    def __init__(
        self,
        *,
        max_flow_runs: int = 10_000,
        label_writer: Callable[[Any, str, str, str], None] | None = None,
    ) -> None:
        self.max_flow_runs = max_flow_runs
        #: Names this process in flow-run labels, so a hook can tell whether runs were
        #: opened elsewhere (and must be searched for) or only here (known by id).
        self.process_token = uuid.uuid4().hex[:8]
        self.writer = BackgroundWriter()
        self._label_writer = label_writer
        self._memory: OrderedDict[str, _FlowRunMemory] = OrderedDict()
        self._lock = threading.Lock()
        self._identity_locks: dict[str, _IdentityLock] = {}
        self._identity_guard = threading.Lock()
        self._last_context: TrackingContext | None = None  # the process's last setup

    def __reduce__(self) -> str:
        """Pickle the process's memory as a name: the receiving process uses its own.

        A flow object sent to another process (prefect-dask ships the running flow, with
        its state hooks, to each Dask worker) carries hooks that name ``RUN_MEMORY``;
        what one process remembers is never another's.
        """
        if self is not RUN_MEMORY:
            raise TypeError(
                "only tracking_tasks' RUN_MEMORY can be pickled (as a reference to the "
                "receiving process's own); a RunMemory() of a test stays in its process"
            )
        return "RUN_MEMORY"

    @contextlib.contextmanager
    def identity_lock(self, identity: str | None) -> Iterator[None]:
        """Hold the lock of one run identity (no lock for None).

        The lock lives while any caller holds or waits for it, and is dropped after the
        last one leaves: it is never replaced while held.
        """
        if identity is None:
            yield
            return
        with self._identity_guard:
            entry = self._identity_locks.setdefault(identity, _IdentityLock())
            entry.holders += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._identity_guard:
                entry.holders -= 1
                if entry.holders == 0:
                    del self._identity_locks[identity]

    def held_identities(self) -> int:
        """How many identity locks exist now (held or waited for)."""
        with self._identity_guard:
            return len(self._identity_locks)

    def _flow_run(self, flow_run_id: str) -> _FlowRunMemory:
        # caller holds self._lock
        memory = self._memory.setdefault(flow_run_id, _FlowRunMemory())
        self._memory.move_to_end(flow_run_id)
        while len(self._memory) > self.max_flow_runs:
            self._memory.popitem(last=False)
        return memory

    def remember_location(self, flow_run_id: str | None, where: TrackingContext | RunRef) -> None:
        """Record that a flow run tracks into an experiment.

        The first time per flow run, experiment and process, the flow run is labelled
        with it (in the background), for hooks run in another process.
        """
        if flow_run_id is None:
            return
        location = location_of(where)
        with self._lock:
            known = self._flow_run(flow_run_id).locations
            is_new = location not in known
            known.add(location)
        if is_new and self._label_writer is not None:
            key, value = location_label(location, self.process_token)
            writer = self._label_writer
            self.writer.submit(lambda client: writer(client, flow_run_id, key, value))

    def remember_context(self, flow_run_id: str | None, context: TrackingContext) -> None:
        """Record the context the last ``setup_mlflow`` of a flow run (and of the process) gave."""
        with self._lock:
            self._last_context = context
            if flow_run_id is not None:
                self._flow_run(flow_run_id).context = context

    def last_context(self, flow_run_id: str | None) -> TrackingContext | None:
        """The last ``setup_mlflow`` context of this flow run, else of this process, else None.

        Example:
            >>> RunMemory().last_context("flow-run-1") is None
            True
        """
        with self._lock:
            memory = self._memory.get(flow_run_id) if flow_run_id is not None else None
            if memory is not None and memory.context is not None:
                return memory.context
            return self._last_context

    def remember_run(self, flow_run_id: str | None, ref: RunRef, identity: str | None) -> None:
        """Record a run opened under a flow run, so its hooks can end it by id."""
        if flow_run_id is None:
            return
        self.remember_location(flow_run_id, ref)
        with self._lock:
            memory = self._flow_run(flow_run_id)
            memory.runs[ref.run_id] = location_of(ref)
            if identity is not None:
                memory.identities[identity] = ref.run_id

    def release_run(self, flow_run_id: str | None, run_id: str) -> None:
        """Forget a run its opener has ended itself: the flow run's hooks need not check it.

        Its identity is kept, so a retry still finds the run again.
        """
        if flow_run_id is None:
            return
        with self._lock:
            memory = self._memory.get(flow_run_id)
            if memory is not None:
                memory.runs.pop(run_id, None)

    def known_run_id(self, flow_run_id: str | None, identity: str | None) -> str | None:
        """The run this process already opened for ``identity`` in this flow run, if any."""
        if flow_run_id is None or identity is None:
            return None
        with self._lock:
            memory = self._memory.get(flow_run_id)
            return memory.identities.get(identity) if memory else None

    def forget(self, flow_run_id: str) -> tuple[set[RunLocation], dict[str, RunLocation]]:
        """Drop what is known of a flow run; return its locations and runs."""
        with self._lock:
            memory = self._memory.pop(flow_run_id, _FlowRunMemory())
        return memory.locations, memory.runs


def _write_label(client: Any, flow_run_id: str, key: str, value: str) -> None:
    client.update_flow_run_labels(uuid.UUID(flow_run_id), {key: value})


#: The process's memory of its runs, used by the tasks and hooks of tracking_tasks.
RUN_MEMORY = RunMemory(label_writer=_write_label)
