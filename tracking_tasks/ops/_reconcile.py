"""Reconcile: end this Prefect API's MLflow runs left RUNNING after their flow run was over."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from tracking_tasks._status import TERMINAL_FLOW_RUN_STATES, RunStatus
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.ops._filters import tag_exists
from tracking_tasks.ops._lifecycle import RunLocation, end_runs
from tracking_tasks.ops._model_lifecycle import fail_pending_models
from tracking_tasks.ops._reconcile_guard import (
    DEFAULT_GRACE_SECONDS,
    REREAD_BATCH,
    batches,
    fingerprint,
    is_quiet,
    reread,
)
from tracking_tasks.ops._scope import (
    Experiments,
    Query,
    Scope,
    checked_filter,
    pages,
    resolve_scope,
)
from tracking_tasks.tags import FLOW_RUN_TAG, PREFECT_API_TAG, RECONCILED_TAG, parse_flow_run_id

if TYPE_CHECKING:
    from mlflow.entities import Run

#: Looks flow runs up: flow-run ids -> ``{id: Prefect state type}`` (``"COMPLETED"``,
#: ``"RUNNING"``...; None for a flow run without a state). An id left out of the answer
#: is a flow run that no longer exists.
FlowRunStates = Callable[[Sequence[str]], Mapping[str, str | None]]

#: What a run whose flow run no longer exists (deleted) ends with. FAILED, not KILLED:
#: the library keeps KILLED for a stop someone chose and it saw (Cancelled, a pruned
#: trial); of a vanished flow run nothing is known but that its run never finished, and
#: FAILED keeps the run out of every "best FINISHED run" lookup as clearly as KILLED.
MISSING_FLOW_RUN_STATUS: RunStatus = "FAILED"
#: The ``prefect.final_state`` tagged on a run whose flow run no longer exists.
FLOW_RUN_MISSING = "NotFound"


class ReconcileReport(BaseModel):
    """What one reconcile pass ended (or, in a dry run, would end), by outcome.

    Attributes:
        tracking_uri: The tracking server searched.
        dry_run: True if nothing was written.
        running: RUNNING runs found that carry a Prefect flow-run tag.
        flow_runs: Distinct flow runs looked up.
        finished: Runs ended FINISHED (flow run Completed).
        failed: Runs ended FAILED (flow run Failed, Crashed, or gone).
        killed: Runs ended KILLED (flow run Cancelled).
        flow_run_missing: Of ``failed``, the runs whose flow run no longer exists.
        left_running: Runs left alone: their flow run is not over.
        unrecognized: Runs left alone: their flow-run tag is not a UUID.
        errors: Runs that could not be ended, one message each (they stay RUNNING; the
            next pass tries again).
        workspace: The MLflow workspace searched (None: the server's default).
        prefect_api: This pass's own Prefect API (the ``prefect.api`` value it ends).
        not_ours: Runs left alone: made under another Prefect API, or without the
            ``prefect.api`` tag (another tool, an older version of this library).
        recently_active: Runs left alone: written to within the grace period.
        changed: Runs left alone: changed (written to, ended) between the read and the
            write; the next pass looks again.
    """

    model_config = ConfigDict(frozen=True)

    tracking_uri: str
    dry_run: bool
    running: int
    flow_runs: int
    finished: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    killed: tuple[str, ...] = ()
    flow_run_missing: tuple[str, ...] = ()
    left_running: tuple[str, ...] = ()
    unrecognized: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    workspace: str | None = None
    prefect_api: str = ""
    not_ours: tuple[str, ...] = ()
    recently_active: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def ended(self) -> tuple[str, ...]:
        """Every run ended (or that a dry run would end)."""
        return self.finished + self.failed + self.killed

    def counts(self) -> dict[str, int]:
        """How many runs per outcome.

        Returns:
            ``{"FINISHED": n, "FAILED": n, "KILLED": n, "left running": n, ...}``.

        Example:
            >>> report = ReconcileReport(tracking_uri="x", dry_run=True, running=0, flow_runs=0)
            >>> report.counts()["FINISHED"]
            0
        """
        return {
            "FINISHED": len(self.finished),
            "FAILED": len(self.failed),
            "KILLED": len(self.killed),
            "flow run missing": len(self.flow_run_missing),
            "left running": len(self.left_running),
            "not ours": len(self.not_ours),
            "recently active": len(self.recently_active),
            "changed since read": len(self.changed),
            "unrecognized": len(self.unrecognized),
            "errors": len(self.errors),
        }


def _decide(state_type: str | None, found: bool) -> tuple[RunStatus, str, str] | None:
    """(MLflow status, tagged final state, reason) for a flow run's runs, or None: leave."""
    if not found:
        return MISSING_FLOW_RUN_STATUS, FLOW_RUN_MISSING, "flow run not found"
    status = TERMINAL_FLOW_RUN_STATES.get((state_type or "").upper())
    if status is None:
        return None
    state = str(state_type).capitalize()
    return status, state, f"flow run {state}"


def reconcile_runs(
    flow_run_states: FlowRunStates,
    experiments: Experiments = None,
    *,
    prefect_api: str | Callable[[], str],
    tracking_uri: str | None = None,
    workspace: str | None = None,
    dry_run: bool = False,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    max_workers: int = 8,
) -> ReconcileReport:
    """End the RUNNING runs of this Prefect API whose flow run is over or gone.

    A flow run's hooks end its runs in the flow's own process; a SIGKILL, an OOM kill or
    a lost node never runs them, and the runs stay RUNNING. This ends such a run as the
    hooks would have (Completed -> FINISHED, Failed and Crashed -> FAILED, Cancelled ->
    KILLED, a flow run that no longer exists -> FAILED: see ``MISSING_FLOW_RUN_STATUS``),
    tagged ``prefect.final_state`` (the state) and ``tracking_tasks.reconciled`` (why),
    only when all of these hold:

    - it is **ours**: its ``prefect.api`` tag is ``prefect_api``, the Prefect API the
      lookup reads. A run of another API (a laptop's temporary API, another server or
      Cloud workspace) or without the tag (another tool, an older version) is only
      reported (``not_ours``): its flow run is not in this API, so "not found" here
      would say nothing about it;
    - its flow run is over: terminal in that API, or absent from its answer to a read
      of that very id (``flow_run_states`` reads by id: deleted);
    - it has been **quiet** for ``grace_seconds`` (no metric point, no start), at the
      first read and again right before the write;
    - it is **unchanged** between the first read and a second read right before the
      write (one search per ``REREAD_BATCH`` runs); else it is reported (``changed``).

    A run whose flow run is in any other state (Scheduled, Pending, Running, Paused,
    Cancelling...) is never touched, and a run already ended is never searched, so a
    second pass changes nothing. If a live process's flow run was marked over anyway
    and its run ended here, the flow's own hooks overrule the status written here, and a
    retried flow run reopens its run. Nothing is written before every flow run has been
    looked up: if the lookup fails, no run is touched.

    Cost: one search request per 1,000 RUNNING runs, one more per ``REREAD_BATCH`` runs
    to end, two writes per run ended (its tags, its end); the lookup is called once.

    Args:
        flow_run_states: Flow-run ids -> ``{id: state type}``; the Prefect task
            ``reconcile_mlflow_runs`` passes one reading the Prefect API in batches.
        experiments: Experiment name(s) or ``TrackingContext``s to search (default: every
            active experiment on the server, in the workspace).
        prefect_api: The ``prefect.api`` value of the runs this pass may end: the
            identity of the API ``flow_run_states`` reads (``reconcile_mlflow_runs`` and
            the command line compute it), or a function giving it, called once the
            tracking server has answered (so a dead server fails before Prefect starts).
        tracking_uri: Tracking URI (wins over a context's and the environment).
        workspace: MLflow workspace (default: the contexts', else ``$MLFLOW_WORKSPACE``).
        dry_run: Only report what would be ended; write nothing.
        grace_seconds: How long a run must have been quiet to be ended (0: no wait).
        max_workers: MLflow requests in flight at once while ending runs.

    Returns:
        A ``ReconcileReport``.

    Raises:
        InvalidArgumentError: ``flow_run_states`` is not callable or answered with
            something other than a mapping; ``prefect_api`` is empty; ``grace_seconds``
            is negative.
        ExperimentNotFoundError: a named experiment does not exist.
        RunSearchError: the tracking server failed or could not be reached.

    Example:
        >>> def states(ids):  # every flow run Crashed
        ...     return dict.fromkeys(ids, "CRASHED")
        >>> reconcile_runs(states, "doctests", prefect_api="prefect-db:0000", dry_run=True).dry_run
        True
    """
    _check_arguments(flow_run_states, prefect_api, grace_seconds)
    scope = resolve_scope(
        experiments, tracking_uri=tracking_uri, all_when_unnamed=True, workspace=workspace
    )
    if callable(prefect_api):
        prefect_api = prefect_api()
        _check_arguments(flow_run_states, prefect_api, grace_seconds)
    query = Query(scope, checked_filter(tag_exists(FLOW_RUN_TAG), status="RUNNING"))
    by_flow_run: dict[str, list[Run]] = defaultdict(list)
    left: dict[str, list[str]] = defaultdict(list)  # why -> run ids
    running = 0
    for page in pages(query):
        now = int(time.time() * 1000)
        for run in page:
            running += 1
            flow_run_id = parse_flow_run_id(run.data.tags.get(FLOW_RUN_TAG, ""))
            if run.data.tags.get(PREFECT_API_TAG) != prefect_api:
                left["not_ours"].append(run.info.run_id)
            elif flow_run_id is None:
                left["unrecognized"].append(run.info.run_id)
            elif not is_quiet(run, grace_seconds, now):
                left["recently_active"].append(run.info.run_id)
            else:
                by_flow_run[flow_run_id].append(run)

    states = flow_run_states(sorted(by_flow_run)) if by_flow_run else {}
    if not isinstance(states, Mapping):
        raise InvalidArgumentError(
            f"flow_run_states answered with {type(states).__name__}, not a mapping of "
            "flow-run id -> state type"
        )
    states = {str(key): value for key, value in states.items()}

    plan: list[tuple[Run, tuple[RunStatus, str, str]]] = []
    for flow_run_id, runs in sorted(by_flow_run.items()):
        decision = _decide(states.get(flow_run_id), flow_run_id in states)
        if decision is None:
            left["left_running"] += [run.info.run_id for run in runs]
        else:
            plan += [(run, decision) for run in runs]

    ended: dict[RunStatus, list[str]] = defaultdict(list)
    missing: list[str] = []
    errors: list[str] = []
    for batch in batches(plan, REREAD_BATCH):
        if dry_run:
            steady = list(batch)
        else:
            steady = _unchanged(scope, batch, grace_seconds, left["changed"])
        by_decision: dict[tuple[RunStatus, str, str], list[str]] = defaultdict(list)
        where: dict[str, RunLocation] = {}
        for run, decision in steady:
            by_decision[decision].append(run.info.run_id)
            where[run.info.run_id] = RunLocation(
                scope.tracking_uri,
                None,
                str(run.info.experiment_id),
                scope.credentials,
                scope.workspace,
            )
        for (status, state, reason), run_ids in sorted(by_decision.items()):
            if dry_run:
                done = run_ids
            else:
                done, failures = end_runs(
                    [(run_id, where[run_id], True) for run_id in run_ids],
                    status,
                    state,
                    tags={RECONCILED_TAG: reason},
                    max_workers=max_workers,
                )
                errors += failures
                errors += fail_pending_models(done, where, reason)
            ended[status] += done
            if state == FLOW_RUN_MISSING:
                missing += done

    return ReconcileReport(
        tracking_uri=scope.tracking_uri,
        workspace=scope.workspace,
        prefect_api=prefect_api,
        dry_run=dry_run,
        running=running,
        flow_runs=len(by_flow_run),
        finished=tuple(sorted(ended["FINISHED"])),
        failed=tuple(sorted(ended["FAILED"])),
        killed=tuple(sorted(ended["KILLED"])),
        flow_run_missing=tuple(sorted(missing)),
        errors=tuple(errors),
        **{why: tuple(sorted(run_ids)) for why, run_ids in left.items()},
    )


def _check_arguments(flow_run_states: object, prefect_api: object, grace_seconds: object) -> None:
    if not callable(flow_run_states):
        raise InvalidArgumentError(
            "flow_run_states must be a callable taking flow-run ids and returning "
            f"{{id: state type}}, not {type(flow_run_states).__name__}"
        )
    if not callable(prefect_api) and (not isinstance(prefect_api, str) or not prefect_api.strip()):
        raise InvalidArgumentError(
            "prefect_api must name the Prefect API whose runs this pass may end (the "
            "prefect.api tag's value, e.g. from tracking_tasks.tasks.prefect_api_identity())"
        )
    if (
        isinstance(grace_seconds, bool)
        or not isinstance(grace_seconds, int | float)
        or not math.isfinite(grace_seconds)
        or grace_seconds < 0
    ):
        raise InvalidArgumentError(
            f"grace_seconds must be a number of seconds, 0 or more, not {grace_seconds!r}"
        )


def _unchanged(
    scope: Scope,
    batch: Sequence[tuple[Run, tuple[RunStatus, str, str]]],
    grace_seconds: float,
    changed: list[str],
) -> list[tuple[Run, tuple[RunStatus, str, str]]]:
    """The runs of ``batch`` still as first read and still quiet (read again now);
    the others' ids go to ``changed``."""
    fresh = reread(
        scope,
        {str(run.info.experiment_id) for run, _ in batch},
        [run.info.run_id for run, _ in batch],
    )
    now = int(time.time() * 1000)
    steady = []
    for run, decision in batch:
        again = fresh.get(run.info.run_id)
        if (
            again is not None
            and fingerprint(again) == fingerprint(run)
            and is_quiet(again, grace_seconds, now)
        ):
            steady.append((run, decision))
        else:
            changed.append(run.info.run_id)
    return steady
