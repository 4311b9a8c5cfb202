"""The reconcile task: end this Prefect API's MLflow runs orphaned by a dead flow process."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from prefect.cache_policies import NO_CACHE

from tracking_tasks.auth._block import MlflowCredentials, load_block, use_block
from tracking_tasks.ops._reconcile import ReconcileReport, reconcile_runs
from tracking_tasks.ops._reconcile_guard import DEFAULT_GRACE_SECONDS
from tracking_tasks.ops._scope import Experiments
from tracking_tasks.tasks._prefect_api import prefect_api_identity
from tracking_tasks.tasks._task import tracking_task

log = logging.getLogger(__name__)

#: Flow runs read per Prefect API call: the server's largest page
#: (``PREFECT_SERVER_API_DEFAULT_LIMIT``, 200 by default).
FLOW_RUNS_PER_CALL = 200


def read_flow_run_states(
    flow_run_ids: Sequence[str], *, batch_size: int = FLOW_RUNS_PER_CALL
) -> dict[str, str | None]:
    """Read the state type of many flow runs from the Prefect API, ``batch_size`` a call.

    One ``read_flow_runs`` call (a ``FlowRunFilter`` on ``id any_``) per ``batch_size``
    ids: a read of those very ids, so a flow run the API does not return is one it does
    not hold (deleted, or never in this API). It is left out of the answer.

    The API is the one this process is configured for (``PREFECT_API_URL``, a profile,
    Prefect Cloud), or, without one, Prefect's temporary API on this machine's
    ``PREFECT_HOME`` database: that database persists between processes, and it holds
    the flow runs of every flow that ran here on it. Which runs a lookup may speak for
    is decided by the API's identity (``prefect_api_identity``), not here.

    Args:
        flow_run_ids: Flow-run ids (UUID strings).
        batch_size: Ids per call (at most the server's page limit).

    Returns:
        ``{flow run id: state type}`` (``"COMPLETED"``, ``"RUNNING"``...; None for a
        flow run without a state).

    Example:
        >>> read_flow_run_states([flow_run_id]) == {flow_run_id: "COMPLETED"}
        True
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = list(dict.fromkeys(flow_run_ids))
    states: dict[str, str | None] = {}
    if not ids:
        return states
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


@tracking_task(name="reconcile_mlflow_runs", cache_policy=NO_CACHE)  # reads fresh states every time
def reconcile_mlflow_runs(
    experiments: Experiments = None,
    *,
    tracking_uri: str | None = None,
    credentials: MlflowCredentials | str | None = None,
    workspace: str | None = None,
    dry_run: bool = False,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
) -> ReconcileReport:
    """End this Prefect API's MLflow runs left RUNNING whose flow run is over or gone.

    ``reconcile_runs`` with ``read_flow_run_states`` as the lookup and this Prefect API's
    identity (``prefect.api``) as the owner: runs of another Prefect API, or without the
    tag, are reported as not ours and never touched. At most one Prefect API call per
    200 flow runs, plus one per process for the identity. See
    ``tracking_tasks.ops.reconcile_runs`` for the rules (what is ended as what; what is
    never touched; the grace period; the re-read before the write).

    Args:
        experiments: Experiment name(s) or ``TrackingContext``s (default: every active
            experiment on the server, in the workspace).
        tracking_uri: Tracking URI (default: the block's, else ``$MLFLOW_TRACKING_URI``,
            else the embedded default).
        credentials: An ``MlflowCredentials`` block or a saved block's name.
        workspace: The MLflow workspace (default: the contexts', the block's, else
            ``$MLFLOW_WORKSPACE``).
        dry_run: Only report what would be ended.
        grace_seconds: How long a run must have been quiet to be ended.

    Returns:
        A ``ReconcileReport``.

    Raises:
        TrackingConfigError: a block that cannot be loaded, an invalid tracking URI or
            workspace.
        ExperimentNotFoundError: a named experiment does not exist.
        RunSearchError: the tracking server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def cleanup() -> int:
        ...     return len(reconcile_mlflow_runs().ended)
    """
    block = None
    if credentials is not None:
        block = load_block(credentials) if isinstance(credentials, str) else credentials
        tracking_uri = use_block(block, tracking_uri)
    report = reconcile_runs(
        read_flow_run_states,
        experiments,
        prefect_api=prefect_api_identity,
        tracking_uri=tracking_uri,
        workspace=workspace if workspace is not None else getattr(block, "workspace", None),
        dry_run=dry_run,
        grace_seconds=grace_seconds,
    )
    log.info(
        "%s %d MLflow run(s) of %d RUNNING (%s): %s",
        "Would end" if dry_run else "Ended",
        len(report.ended),
        report.running,
        report.prefect_api,
        report.counts(),
    )
    return report
