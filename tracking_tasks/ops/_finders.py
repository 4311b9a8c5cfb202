"""Finding runs: paged search, the best run, a run by config hash, a flow run's runs.

Every finder checks its arguments with MLflow's own grammar and resolves the server and
experiments before the first search request. The tasks of the same names wrap them and
ask the server on every call too (``tasks.allow_stale`` opts in to a cache).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from tracking_tasks._status import RunStatusName
from tracking_tasks._validation import check_key
from tracking_tasks.auth._apply import apply_credentials
from tracking_tasks.config._resolve import (
    CredentialsLocation,
    resolve_tracking_uri,
    resolve_workspace,
)
from tracking_tasks.errors import (
    InvalidSearchError,
    RunNotFoundError,
    RunSearchError,
    TrackingTasksError,
    mlflow_errors,
)
from tracking_tasks.handles import RunSummary
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops._client import get_client
from tracking_tasks.ops._filters import check_order_by, tag_equals
from tracking_tasks.ops._scope import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Experiments,
    Query,
    Scope,
    check_positive,
    checked_filter,
    pages,
    resolve_scope,
    search,
)
from tracking_tasks.ops._setup import check_reachable
from tracking_tasks.ops._workspaces import place_of
from tracking_tasks.tags import CONFIG_HASH_TAG, FLOW_RUN_TAG, STAGE_TAG, parse_flow_run_id

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)


def find_mlflow_runs(
    experiments: Experiments = None,
    filter_string: str = "",
    *,
    experiment_name: str | Sequence[str] | None = None,
    tracking_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
    order_by: str | Sequence[str] | None = None,
    status: RunStatusName | None = None,
    max_results: int | None = None,
    include_deleted: bool = False,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> list[RunSummary]:
    """Search runs in one or more experiments, following page tokens to the end.

    The filter string and ``order_by`` are checked with MLflow's own search grammar and
    the experiments looked up before any run is searched. The tracking URI is resolved
    like ``setup_mlflow``'s: ``tracking_uri`` > the ``TrackingContext``'s >
    ``$MLFLOW_TRACKING_URI`` > the embedded default; with no experiment named,
    ``$MLFLOW_EXPERIMENT_NAME`` or ``Default``. Deleted runs are left out unless
    ``include_deleted``. Without ``order_by`` MLflow's order applies: newest first.

    As a Prefect task (``tracking_tasks.find_mlflow_runs``) it asks the server on every
    call, like this function; ``tracking_tasks.tasks.allow_stale`` opts in to a cache.

    Args:
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        filter_string: MLflow search filter, e.g. ``"tags.stage = 'hpo' AND metrics.f1 > 0.8"``.
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        tracking_uri: Tracking URI to search (wins over a context's and the environment).
        credentials: An ``MlflowCredentials`` block for the server; by default the
            contexts' (their saved block's name, loaded where the finder runs).
        workspace: The MLflow workspace (default: the contexts', the block's, the env's).
        order_by: MLflow order-by clause(s), e.g. ``"metrics.f1 DESC"``.
        status: Only runs in this status (``FINISHED``, ``FAILED``, ``RUNNING``...).
        max_results: At most this many runs; None means all.
        include_deleted: Also return deleted runs.
        page_size: Runs per ``search_runs`` request (at most 50,000).

    Returns:
        Frozen ``RunSummary`` values in the search order.

    Raises:
        InvalidSearchError: a malformed filter, order_by, status or limit (no request sent).
        ExperimentNotFoundError: an experiment does not exist on that server.
        TrackingConfigError: the tracking URI is invalid (e.g. carries a password).
        RunSearchError: the server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def report() -> int:
        ...     runs = find_mlflow_runs(experiment_name="ner",
        ...                             filter_string="tags.stage='hpo' AND metrics.f1 > 0.8")
        ...     return len(runs)
    """
    where = checked_filter(filter_string, status=status)
    clauses = check_order_by(order_by)
    limit = check_positive(max_results, "max_results")
    size = check_positive(page_size, "page_size", MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
    scope = resolve_scope(
        experiments, experiment_name, tracking_uri, credentials=credentials, workspace=workspace
    )
    return search(Query(scope, where, clauses, bool(include_deleted), limit, size))


def _check_metric(metric: str) -> str:
    try:
        return check_key(metric, "metric")
    except TrackingTasksError as exc:
        raise InvalidSearchError(str(exc)) from exc


def find_best_run(
    metric: str,
    experiments: Experiments = None,
    *,
    experiment_name: str | Sequence[str] | None = None,
    mode: Literal["max", "min"] = "max",
    filter_string: str = "",
    status: RunStatusName | None = "FINISHED",
    include_deleted: bool = False,
    tracking_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
    page_size: int = 100,
) -> RunSummary | None:
    """Return the run with the highest (or lowest) value of ``metric``, or None.

    The server orders the runs by the metric; runs without the metric, or with NaN,
    are ignored. Ties are broken deterministically: among runs with the best value,
    the one that started first wins, then the smallest run id, so later runs reaching
    the same value never change the answer. Only FINISHED runs count unless ``status``
    says otherwise (None: any status). When no run matches, the result is None (not
    an error), so a flow can fall back, e.g. on its first run.

    As a Prefect task it asks the server on every call, like ``find_mlflow_runs``.

    Args:
        metric: The metric to rank by, e.g. ``"f1"``.
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        mode: ``"max"`` (default) or ``"min"``.
        filter_string: An extra MLflow filter, e.g. ``"tags.stage = 'hpo'"``.
        status: Only runs in this status; None for any.
        include_deleted: Also consider deleted runs.
        tracking_uri: Tracking URI to search (wins over a context's and the environment).
        credentials: An ``MlflowCredentials`` block for the server; by default the
            contexts' (their saved block's name, loaded where the finder runs).
        workspace: The MLflow workspace (default: the contexts', the block's, the env's).
        page_size: Runs per request while reading the ranked runs.

    Returns:
        The best run's ``RunSummary``, or None when no run has the metric.

    Raises:
        InvalidSearchError: a malformed metric name, mode, filter or status (no request
            sent).
        ExperimentNotFoundError: an experiment does not exist on that server.
        RunSearchError: the server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def pick() -> str | None:
        ...     best = find_best_run("f1", experiment_name="ner", filter_string="tags.stage='hpo'")
        ...     return best.run_id if best else None
    """
    name = _check_metric(metric)
    if mode not in ("max", "min"):
        raise InvalidSearchError(f"mode {mode!r} must be 'max' or 'min'")
    direction = "DESC" if mode == "max" else "ASC"
    where = checked_filter(filter_string, status=status)
    size = check_positive(page_size, "page_size", MAX_PAGE_SIZE) or 100
    scope = resolve_scope(
        experiments, experiment_name, tracking_uri, credentials=credentials, workspace=workspace
    )
    query = Query(
        scope, where, (f"metrics.`{name}` {direction}",), bool(include_deleted), None, size
    )
    best_value: float | None = None
    tied: list[Run] = []
    for run in (run for page in pages(query) for run in page):
        value = run.data.metrics.get(metric)
        if value is None or math.isnan(value):
            continue  # runs without the metric (or NaN) never win
        if best_value is not None and value != best_value:
            break  # ranked by the metric: the first other value ends the ties, and the paging
        best_value = value
        tied.append(run)
    if not tied:
        return None
    winner = min(tied, key=lambda r: (r.info.start_time or 0, r.info.run_id))
    return RunSummary.from_run(winner, scope.tracking_uri, scope.workspace)


def _hash_of(config: Any) -> str:
    if isinstance(config, str):
        text = config.strip().lower()
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
            return text
        raise InvalidSearchError(
            f"{config!r:.80} is not a config hash (64 hex digits): pass the full "
            "config_hash(...) or the config itself (a dict, pydantic model or dataclass)"
        )
    return config_hash(config)


def find_run_by_config_hash(
    config: Any,
    experiments: Experiments = None,
    *,
    experiment_name: str | Sequence[str] | None = None,
    stage: str | None = None,
    status: RunStatusName | None = "FINISHED",
    include_deleted: bool = False,
    tracking_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
) -> RunSummary | None:
    """Return the latest run created for a config (tag ``tracking_tasks.config_hash``).

    ``create_mlflow_run(..., config=cfg)`` tags each run with ``config_hash(cfg)``; this
    finds the most recently started such run, FINISHED by default, optionally only
    with the tag ``stage`` equal to ``stage``. None when there is none.

    As a Prefect task it asks the server on every call, like ``find_mlflow_runs``.

    Args:
        config: The config (dict, pydantic model, dataclass) or its 64-digit hash.
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        stage: Only runs tagged ``stage=<stage>``.
        status: Only runs in this status (default FINISHED); None for any.
        include_deleted: Also consider deleted runs.
        tracking_uri: Tracking URI to search (wins over a context's and the environment).
        credentials: An ``MlflowCredentials`` block for the server; by default the
            contexts' (their saved block's name, loaded where the finder runs).
        workspace: The MLflow workspace (default: the contexts', the block's, the env's).

    Returns:
        The latest matching run's ``RunSummary``, or None.

    Raises:
        InvalidSearchError: a string that is not a 64-digit hash, or a bad status.
        ConfigHashError: the config cannot be hashed.
        ExperimentNotFoundError: an experiment does not exist on that server.
        RunSearchError: the server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def reuse(cfg: dict) -> str | None:
        ...     done = find_run_by_config_hash(cfg, experiment_name="ner", stage="training")
        ...     return done.run_id if done else None
    """
    clauses = [tag_equals(CONFIG_HASH_TAG, _hash_of(config))]
    if stage is not None:
        clauses.append(tag_equals(STAGE_TAG, str(stage)))
    where = checked_filter(*clauses, status=status)
    scope = resolve_scope(
        experiments, experiment_name, tracking_uri, credentials=credentials, workspace=workspace
    )
    found = search(
        Query(scope, where, ("attributes.start_time DESC",), bool(include_deleted), 1, 1)
    )
    return found[0] if found else None


def _flow_run_id(flow_run_id: str | uuid.UUID) -> str:
    parsed = parse_flow_run_id(flow_run_id)
    if parsed is None:
        raise InvalidSearchError(
            f"flow_run_id {flow_run_id!r} is not a Prefect flow run id (a UUID)"
        )
    return parsed


def find_runs_for_flow_run(
    flow_run_id: str | uuid.UUID,
    experiments: Experiments = None,
    *,
    experiment_name: str | Sequence[str] | None = None,
    include_deleted: bool = False,
    tracking_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
) -> list[RunSummary]:
    """Return the MLflow runs opened under a Prefect flow run (tag ``prefect.flow_run_id``).

    With no experiment named, every active experiment on the server is searched, since
    a flow run may track into several. Oldest first.

    As a Prefect task it asks the server on every call, like ``find_mlflow_runs``.

    Args:
        flow_run_id: The Prefect flow run id.
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        include_deleted: Also return deleted runs.
        tracking_uri: Tracking URI to search (wins over a context's and the environment).
        credentials: An ``MlflowCredentials`` block for the server; by default the
            contexts' (their saved block's name, loaded where the finder runs).
        workspace: The MLflow workspace (default: the contexts', the block's, the env's).

    Returns:
        The runs' ``RunSummary`` values, oldest first.

    Raises:
        InvalidSearchError: ``flow_run_id`` is not a UUID.
        ExperimentNotFoundError: a named experiment does not exist on that server.
        RunSearchError: the server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> from prefect.runtime import flow_run
        >>> @flow
        ... def audit() -> int:
        ...     return len(find_runs_for_flow_run(flow_run.id))
    """
    where = checked_filter(tag_equals(FLOW_RUN_TAG, _flow_run_id(flow_run_id)))
    scope = resolve_scope(
        experiments,
        experiment_name,
        tracking_uri,
        credentials=credentials,
        all_when_unnamed=True,
        workspace=workspace,
    )
    return search(Query(scope, where, ("attributes.start_time ASC",), bool(include_deleted)))


def open_run_ids(scope: Scope, flow_run_id: str) -> list[str]:
    """The ids of runs still RUNNING that were opened under a Prefect flow run.

    Args:
        scope: Where to search.
        flow_run_id: The Prefect flow run id.

    Returns:
        The run ids.

    Raises:
        InvalidSearchError: ``flow_run_id`` is not a UUID.
        RunSearchError: the server failed or could not be reached.

    Example:
        >>> open_run_ids(Scope(ctx.tracking_uri, (ctx.experiment_id,)), flow_run_id)
        []
    """
    where = checked_filter(tag_equals(FLOW_RUN_TAG, _flow_run_id(flow_run_id)), status="RUNNING")
    return [run.info.run_id for page in pages(Query(scope, where)) for run in page]


def get_run_summary(
    run_id: str,
    *,
    tracking_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
) -> RunSummary:
    """Fetch one run by id as a ``RunSummary`` (not cached: one request).

    Args:
        run_id: The MLflow run id.
        tracking_uri: Tracking URI (default: ``$MLFLOW_TRACKING_URI``, else the embedded
            default).
        credentials: An ``MlflowCredentials`` block for the server, if it needs one.
        workspace: The run's MLflow workspace (default: the block's, ``$MLFLOW_WORKSPACE``).

    Returns:
        The run's ``RunSummary``.

    Raises:
        RunNotFoundError: no run with that id on the server.
        TrackingConfigError: the tracking URI is invalid.
        RunSearchError: the server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def show(run_id: str) -> str:
        ...     return get_run_summary(run_id).status
    """
    uri = resolve_tracking_uri(tracking_uri, credentials=credentials)
    apply_credentials(credentials, uri)
    space = resolve_workspace(workspace, credentials=credentials, tracking_uri=uri)
    place = place_of(uri, space)
    check_reachable(uri, f"could not read run {run_id!r} on {place}", error=RunSearchError)
    try:
        with mlflow_errors(
            f"could not read run {run_id!r} on {place}",
            default=RunSearchError,
            not_found=RunNotFoundError,
            invalid=RunNotFoundError,
        ):
            run = get_client(uri, workspace=space).get_run(run_id)
    except RunNotFoundError as exc:
        raise RunNotFoundError(
            f"MLflow run {run_id!r} does not exist on {place}: check the run id, the "
            "tracking URI and the workspace"
        ) from exc.__cause__
    return RunSummary.from_run(run, uri, space)
