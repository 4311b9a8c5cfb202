"""The reconcile task: end MLflow runs orphaned by a dead flow process, from Prefect's states."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from tracking_tasks.auth._block import MlflowCredentials, use_block
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.ops._reconcile import ReconcileReport, reconcile_runs
from tracking_tasks.ops._scope import Experiments

log = logging.getLogger(__name__)

#: Flow runs read per Prefect API call: the server's largest page
#: (``PREFECT_SERVER_API_DEFAULT_LIMIT``, 200 by default).
FLOW_RUNS_PER_CALL = 200


def read_flow_run_states(
    flow_run_ids: Sequence[str], *, batch_size: int = FLOW_RUNS_PER_CALL
) -> dict[str, str | None]:
    """Read the state type of many flow runs from the Prefect API, ``batch_size`` a call.

    One ``read_flow_runs`` call (a ``FlowRunFilter`` on ``id any_``) per ``batch_size``
    ids. A flow run the API does not know is left out of the answer.

    It refuses to run without ``PREFECT_API_URL``: an ephemeral API (Prefect's default
    when no server is configured) is a fresh, empty database that knows no flow run, so
    every run would look orphaned and be ended.

    Args:
        flow_run_ids: Flow-run ids (UUID strings).
        batch_size: Ids per call (at most the server's page limit).

    Returns:
        ``{flow run id: state type}`` (``"COMPLETED"``, ``"RUNNING"``...; None for a
        flow run without a state).

    Raises:
        TrackingConfigError: no Prefect API is configured (``PREFECT_API_URL``).

    Example:
        >>> read_flow_run_states([flow_run_id]) == {flow_run_id: "COMPLETED"}
        True
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise TrackingConfigError(
            "reconciling needs the Prefect API the flows ran against, and PREFECT_API_URL "
            "is not set: Prefect's ephemeral API knows no flow run, so every MLflow run "
            "would look orphaned. Set PREFECT_API_URL (or a Prefect profile) to that API"
        )
    ids = list(dict.fromkeys(flow_run_ids))
    states: dict[str, str | None] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), batch_size):
            chunk = [uuid.UUID(i) for i in ids[start : start + batch_size]]
            found = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
            )
            for flow_run in found:
                states[str(flow_run.id)] = (
                    flow_run.state_type.value if flow_run.state_type else None
                )
    return states


@task(name="reconcile_mlflow_runs", cache_policy=NO_CACHE)  # reads fresh states every time
def reconcile_mlflow_runs(
    experiments: Experiments = None,
    *,
    tracking_uri: str | None = None,
    credentials: MlflowCredentials | str | None = None,
    dry_run: bool = False,
) -> ReconcileReport:
    """End the MLflow runs left RUNNING whose Prefect flow run is over or gone.

    ``reconcile_runs`` with ``read_flow_run_states`` as the lookup: at most one Prefect
    API call per 200 flow runs. See ``tracking_tasks.ops._reconcile.reconcile_runs`` for
    the rules (what is ended as what; what is never touched).

    Args:
        experiments: Experiment name(s) or ``TrackingContext``s (default: every active
            experiment on the server).
        tracking_uri: Tracking URI (default: the block's, else ``$MLFLOW_TRACKING_URI``,
            else the embedded default).
        credentials: An ``MlflowCredentials`` block or a saved block's name.
        dry_run: Only report what would be ended.

    Returns:
        A ``ReconcileReport``.

    Raises:
        TrackingConfigError: no Prefect API configured, a block that cannot be loaded, or
            an invalid tracking URI.
        ExperimentNotFoundError: a named experiment does not exist.
        RunSearchError: the tracking server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def cleanup() -> int:
        ...     return len(reconcile_mlflow_runs().ended)
    """
    if credentials is not None:
        tracking_uri = use_block(credentials, tracking_uri)
    report = reconcile_runs(
        read_flow_run_states, experiments, tracking_uri=tracking_uri, dry_run=dry_run
    )
    log.info(
        "%s %d MLflow run(s) of %d RUNNING: %s",
        "Would end" if dry_run else "Ended",
        len(report.ended),
        report.running,
        report.counts(),
    )
    return report
