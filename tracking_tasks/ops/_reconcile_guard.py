"""What keeps reconcile off live runs: quiet for a grace period, unchanged since it was read.

A terminal flow-run state is evidence that a run's process is dead, not proof: Prefect's
zombie detection can mark a live flow run Crashed, and a flow run can be retried (from
the UI, by an automation) between reconcile's read and its write. Three rules, each
cheap, keep such a run alive:

- **quiet**: a run written to (a metric point, or its start) within the grace period is
  left alone; the time of its last write comes with the search, no request more;
- **unchanged**: right before ending a batch of runs, they are read again (one search
  per ``REREAD_BATCH`` runs) and a run that ended, moved, or was written to since the
  first read is left for the next pass;
- **the live process has the last word**: a flow's own hooks overrule a status that
  reconcile wrote (``end_runs(..., overrule_reconciled=True)``), and a retried flow run
  reopens its run (``open_run``), so a run reconcile ended wrongly still ends as its
  flow run really did.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tracking_tasks.errors import RunSearchError, mlflow_errors
from tracking_tasks.ops._client import get_client
from tracking_tasks.ops._filters import run_id_in, tag_equals, tag_exists
from tracking_tasks.ops._scope import Query, Scope, checked_filter, pages
from tracking_tasks.tags import FLOW_RUN_TAG, RECONCILED_TAG
from tracking_tasks.urls import redact_uri

if TYPE_CHECKING:
    from mlflow.entities import Run

#: Seconds a run must have been quiet (no metric point, no start) before reconcile ends
#: it: longer than the gap between two writes of a live run, shorter than the deployed
#: pass's interval (600 s). A run that logs rarer than this and whose flow run Prefect
#: marks Crashed while it lives may be ended: its own hooks then overrule reconcile.
DEFAULT_GRACE_SECONDS = 300.0
#: Runs read again per request right before they are ended (``attributes.run_id IN``).
REREAD_BATCH = 200

#: What a run looked like when read: status, end time, tags, and every metric's latest
#: (key, timestamp, step).
Fingerprint = tuple[Any, ...]


def last_write_ms(run: Run) -> int:
    """When a run was last written to, as far as a search shows: its start, or the
    newest latest-metric point (milliseconds since the epoch, the writer's clock)."""
    stamps = [int(m.timestamp) for m in run.data.to_proto().metrics]
    return max([int(run.info.start_time or 0), *stamps])


def is_quiet(run: Run, grace_seconds: float, now_ms: int | None = None) -> bool:
    """Whether ``run`` has not been written to for ``grace_seconds``."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return now - last_write_ms(run) >= grace_seconds * 1000


def fingerprint(run: Run) -> Fingerprint:
    """What must not change between reconcile's read and its write."""
    metrics = sorted((m.key, m.timestamp, m.step) for m in run.data.to_proto().metrics)
    return (
        run.info.status,
        run.info.end_time,
        run.info.lifecycle_stage,
        tuple(sorted(run.data.tags.items())),
        tuple(metrics),
    )


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def reread(scope: Scope, experiment_ids: Iterable[str], run_ids: Sequence[str]) -> dict[str, Run]:
    """Read runs again by id, in any status (one search request).

    Raises:
        RunSearchError: the server failed or could not be reached.
    """
    from mlflow.entities import ViewType

    client = get_client(
        scope.tracking_uri, credentials=scope.credentials, workspace=scope.workspace
    )
    with mlflow_errors(
        f"reading {len(run_ids)} run(s) again on {redact_uri(scope.tracking_uri)}",
        default=RunSearchError,
    ):
        found = client.search_runs(
            sorted(set(experiment_ids)),
            filter_string=run_id_in(run_ids),
            run_view_type=ViewType.ALL,
            max_results=len(run_ids),
        )
    return {run.info.run_id: run for run in found}


def reconciled_run_ids(scope: Scope, flow_run_id: str) -> list[str]:
    """The runs of a flow run that reconcile has ended (any status), for its hooks.

    Raises:
        RunSearchError: the server failed or could not be reached.
    """
    where = checked_filter(tag_equals(FLOW_RUN_TAG, flow_run_id), tag_exists(RECONCILED_TAG))
    return [run.info.run_id for page in pages(Query(scope, where)) for run in page]
