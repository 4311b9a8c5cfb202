"""Reconcile: end the MLflow runs left RUNNING after their Prefect flow run was over."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from tracking_tasks._status import TERMINAL_FLOW_RUN_STATES, RunStatus
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.ops._filters import tag_exists
from tracking_tasks.ops._lifecycle import RunLocation, end_runs
from tracking_tasks.ops._model_lifecycle import fail_pending_models
from tracking_tasks.ops._scope import Experiments, Query, checked_filter, pages, resolve_scope
from tracking_tasks.tags import FLOW_RUN_TAG, RECONCILED_TAG, parse_flow_run_id

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
    tracking_uri: str | None = None,
    dry_run: bool = False,
    max_workers: int = 8,
) -> ReconcileReport:
    """End the RUNNING runs this library opened whose Prefect flow run is over or gone.

    A flow run's hooks end its runs in the flow's own process; a SIGKILL, an OOM kill or
    a lost node never runs them, and the runs stay RUNNING. This finds the RUNNING runs
    that carry the ``prefect.flow_run_id`` tag, looks their flow runs up in one call of
    ``flow_run_states`` (which batches as it likes), and ends them as the hooks would
    have: Completed -> FINISHED, Failed and Crashed -> FAILED, Cancelled -> KILLED, and
    a flow run that no longer exists -> FAILED (see ``MISSING_FLOW_RUN_STATUS``). Each
    run ended is tagged ``prefect.final_state`` (the state) and
    ``tracking_tasks.reconciled`` (why). A run whose flow run is in any other state
    (Scheduled, Pending, Running, Paused, Cancelling...) is never touched, and a run
    already ended is never searched, so a second pass changes nothing.

    Nothing is written before every flow run has been looked up: if the lookup fails,
    no run is touched. A run the hooks end between the search and the write gets the
    same status from both.

    Args:
        flow_run_states: Flow-run ids -> ``{id: state type}``; the Prefect task
            ``reconcile_mlflow_runs`` passes one reading the Prefect API in batches.
        experiments: Experiment name(s) or ``TrackingContext``s to search (default: every
            active experiment on the server).
        tracking_uri: Tracking URI (wins over a context's and the environment).
        dry_run: Only report what would be ended; write nothing.
        max_workers: MLflow requests in flight at once while ending runs.

    Returns:
        A ``ReconcileReport``.

    Raises:
        InvalidArgumentError: ``flow_run_states`` is not callable or answered with
            something other than a mapping.
        ExperimentNotFoundError: a named experiment does not exist.
        RunSearchError: the tracking server failed or could not be reached.

    Example:
        >>> def states(ids):  # every flow run Crashed
        ...     return dict.fromkeys(ids, "CRASHED")
        >>> reconcile_runs(states, "doctests", dry_run=True).dry_run
        True
    """
    if not callable(flow_run_states):
        raise InvalidArgumentError(
            "flow_run_states must be a callable taking flow-run ids and returning "
            f"{{id: state type}}, not {type(flow_run_states).__name__}"
        )
    scope = resolve_scope(experiments, tracking_uri=tracking_uri, all_when_unnamed=True)
    query = Query(scope, checked_filter(tag_exists(FLOW_RUN_TAG), status="RUNNING"))
    by_flow_run: dict[str, list[tuple[str, str]]] = defaultdict(list)
    unrecognized: list[str] = []
    running = 0
    for page in pages(query):
        for run in page:
            running += 1
            flow_run_id = parse_flow_run_id(run.data.tags.get(FLOW_RUN_TAG, ""))
            if flow_run_id is None:
                unrecognized.append(run.info.run_id)
            else:
                by_flow_run[flow_run_id].append((run.info.run_id, run.info.experiment_id))

    states = flow_run_states(sorted(by_flow_run)) if by_flow_run else {}
    if not isinstance(states, Mapping):
        raise InvalidArgumentError(
            f"flow_run_states answered with {type(states).__name__}, not a mapping of "
            "flow-run id -> state type"
        )
    states = {str(key): value for key, value in states.items()}

    plan: dict[tuple[RunStatus, str, str], list[tuple[str, RunLocation]]] = defaultdict(list)
    left_running: list[str] = []
    for flow_run_id, runs in sorted(by_flow_run.items()):
        decision = _decide(states.get(flow_run_id), flow_run_id in states)
        if decision is None:
            left_running += [run_id for run_id, _ in runs]
            continue
        plan[decision] += [
            (run_id, RunLocation(scope.tracking_uri, None, experiment_id, scope.credentials))
            for run_id, experiment_id in runs
        ]

    ended: dict[RunStatus, list[str]] = defaultdict(list)
    missing: list[str] = []
    errors: list[str] = []
    for (status, state, reason), planned in sorted(plan.items()):
        if dry_run:
            done = [run_id for run_id, _ in planned]
        else:
            done, failures = end_runs(
                [(run_id, where, True) for run_id, where in planned],
                status,
                state,
                tags={RECONCILED_TAG: reason},
                max_workers=max_workers,
            )
            errors += failures
            errors += fail_pending_models(done, dict(planned), reason)
        ended[status] += done
        if state == FLOW_RUN_MISSING:
            missing += done

    return ReconcileReport(
        tracking_uri=scope.tracking_uri,
        dry_run=dry_run,
        running=running,
        flow_runs=len(by_flow_run),
        finished=tuple(sorted(ended["FINISHED"])),
        failed=tuple(sorted(ended["FAILED"])),
        killed=tuple(sorted(ended["KILLED"])),
        flow_run_missing=tuple(sorted(missing)),
        left_running=tuple(sorted(left_running)),
        unrecognized=tuple(sorted(unrecognized)),
        errors=tuple(errors),
    )
