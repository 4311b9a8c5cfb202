"""Find MLflow runs: paged search, the best run, a run by config hash, a flow run's runs."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks._logging import logger
from tracking_tasks.clients import error_code, get_client
from tracking_tasks.exceptions import (
    ExperimentNotFoundError,
    InvalidSearchError,
    RunNotFoundError,
    RunSearchError,
    TrackingTasksError,
)
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.lifecycle import FLOW_RUN_TAG
from tracking_tasks.runs import CONFIG_HASH_TAG, PARENT_RUN_TAG
from tracking_tasks.setup import resolve_tracking_config
from tracking_tasks.urls import redact_uri, run_url
from tracking_tasks.validation import check_key

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = [
    "DEFAULT_CACHE_EXPIRATION",
    "LookupCachePolicy",
    "RunSummary",
    "find_best_run",
    "find_mlflow_runs",
    "find_run_by_config_hash",
    "find_runs_for_flow_run",
    "get_run_summary",
]

RunStatusName = Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]
RUN_STATUSES: tuple[str, ...] = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
#: What one lookup may name: an experiment name, a ``TrackingContext``, or a list of them.
Experiments = str | TrackingContext | Sequence[str | TrackingContext] | None

#: Runs asked for per ``search_runs`` request (MLflow's own default page size).
DEFAULT_PAGE_SIZE = 1000
#: The largest page MLflow's server accepts (``SEARCH_MAX_RESULTS_THRESHOLD``).
MAX_PAGE_SIZE = 50_000
#: How long a cached lookup is reused; override with ``.with_options(cache_expiration=...)``.
DEFAULT_CACHE_EXPIRATION = dt.timedelta(minutes=5)
STAGE_TAG = "stage"


class RunSummary(BaseModel):
    """One MLflow run as a finder returns it: a frozen, picklable value.

    Args:
        run_id: MLflow run id.
        run_name: The run's name.
        status: ``RUNNING``, ``SCHEDULED``, ``FINISHED``, ``FAILED`` or ``KILLED``.
        lifecycle_stage: ``active``, or ``deleted`` for a deleted run.
        start_time: When the run started (UTC), if known.
        end_time: When the run ended (UTC), None while it runs.
        experiment_id: The run's experiment id.
        tracking_uri: Tracking URI the run lives on (never carries credentials).
        parent_run_id: The parent of a nested run, else None.
        params: Param name -> value.
        metrics: Metric name -> latest value.
        tags: Tag name -> value, MLflow's own ``mlflow.*`` tags included.
        url: The run's UI page, or None for a local store (see ``run_url``).

    Example:
        >>> summary = RunSummary(run_id="abc", run_name="train", status="FINISHED",
        ...                      experiment_id="1", tracking_uri="http://127.0.0.1:5000")
        >>> summary.to_ref().run_id
        'abc'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str = Field(description="MLflow run id.")
    run_name: str = Field(description="The run's name.")
    status: str = Field(description="The run's MLflow status.")
    lifecycle_stage: str = Field(default="active", description="'active' or 'deleted'.")
    start_time: dt.datetime | None = Field(default=None, description="Start time, UTC.")
    end_time: dt.datetime | None = Field(default=None, description="End time, UTC.")
    experiment_id: str = Field(description="The run's experiment id.")
    tracking_uri: str = Field(description="Tracking URI the run lives on.")
    parent_run_id: str | None = Field(default=None, description="Parent run of a nested run.")
    params: dict[str, str] = Field(default_factory=dict, description="Params.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Latest metric values.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags.")
    url: str | None = Field(default=None, description="The run's UI page, or None.")

    def to_ref(self) -> RunRef:
        """Return a ``RunRef`` for this run, to log to it with the logging tasks.

        Returns:
            A ``RunRef`` naming the same run on the same server.

        Example:
            >>> RunSummary(run_id="abc", run_name="t", status="FINISHED", experiment_id="1",
            ...            tracking_uri="sqlite:///mlflow.db").to_ref().experiment_id
            '1'
        """
        return RunRef(
            run_id=self.run_id,
            experiment_id=self.experiment_id,
            run_name=self.run_name,
            tracking_uri=self.tracking_uri,
            parent_run_id=self.parent_run_id,
            config_hash=self.tags.get(CONFIG_HASH_TAG),
        )


def _time(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _summary(run: Run, tracking_uri: str) -> RunSummary:
    info, data = run.info, run.data
    return RunSummary(
        run_id=info.run_id,
        run_name=info.run_name or info.run_id,
        status=info.status,
        lifecycle_stage=info.lifecycle_stage,
        start_time=_time(info.start_time),
        end_time=_time(info.end_time),
        experiment_id=str(info.experiment_id),
        tracking_uri=tracking_uri,
        parent_run_id=data.tags.get(PARENT_RUN_TAG),
        params=dict(data.params),
        metrics=dict(data.metrics),
        tags=dict(data.tags),
        url=run_url(tracking_uri, str(info.experiment_id), info.run_id),
    )


# ---------------------------------------------------------------------------------------
# The query: everything checked and resolved before the first search request
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Query:
    """A checked, resolved search: one server, experiment ids, MLflow search arguments."""

    tracking_uri: str
    experiment_ids: tuple[str, ...]
    filter_string: str
    order_by: tuple[str, ...]
    include_deleted: bool
    max_results: int | None
    page_size: int

    def key_data(self) -> dict[str, Any]:
        """What identifies the answer (page size does not change it)."""
        return {
            "tracking_uri": self.tracking_uri,
            "experiment_ids": sorted(self.experiment_ids),
            "filter_string": self.filter_string,
            "order_by": list(self.order_by),
            "include_deleted": self.include_deleted,
            "max_results": self.max_results,
        }


def quote_value(value: str) -> str:
    """Quote a string for an MLflow filter string (single quotes unless it holds one)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise InvalidSearchError(
        f"value {value!r} holds both quote characters; MLflow's filter syntax cannot express it"
    )


def check_filter(filter_string: str) -> str:
    """Parse ``filter_string`` with MLflow's own search grammar; return it stripped.

    Raises:
        InvalidSearchError: the filter is not a string or MLflow's parser refuses it.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchUtils

    if filter_string is None:
        return ""
    if not isinstance(filter_string, str):
        raise InvalidSearchError(
            f'filter_string must be a string such as "metrics.f1 > 0.8", not '
            f"{type(filter_string).__name__}"
        )
    text = filter_string.strip()
    try:
        SearchUtils.parse_search_filter(text)  # type: ignore[no-untyped-call]
    except MlflowException as exc:
        raise InvalidSearchError(
            f"malformed filter string {text!r}: {exc.message}. Write clauses such as "
            "\"metrics.f1 > 0.8 AND tags.stage = 'hpo'\" (only AND; quote string values; "
            "backquote keys with dots or spaces: tags.`my.key`)"
        ) from exc
    return text


def check_order_by(order_by: str | Sequence[str] | None) -> tuple[str, ...]:
    """Parse each ``order_by`` clause with MLflow's grammar; return them as a tuple.

    Raises:
        InvalidSearchError: a clause is malformed or a field is ordered twice.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchUtils

    if order_by is None:
        return ()
    clauses = [order_by] if isinstance(order_by, str) else list(order_by)
    seen: set[tuple[str, str]] = set()
    for clause in clauses:
        if not isinstance(clause, str):
            raise InvalidSearchError(f"order_by clause {clause!r} is not a string")
        try:
            key_type, key, _ = SearchUtils.parse_order_by_for_search_runs(clause)  # type: ignore[no-untyped-call]
        except MlflowException as exc:
            raise InvalidSearchError(
                f"malformed order_by clause {clause!r}: {exc.message}. Write e.g. "
                '"metrics.f1 DESC" or "attributes.start_time ASC"'
            ) from exc
        if (key_type, key) in seen:
            raise InvalidSearchError(f"order_by names {key_type} {key!r} twice: {clauses}")
        seen.add((key_type, key))
    return tuple(c.strip() for c in clauses)


def check_status(status: str | None) -> str | None:
    """Return ``status`` upper-cased if it is an MLflow run status, else raise."""
    if status is None:
        return None
    if not isinstance(status, str) or status.strip().upper() not in RUN_STATUSES:
        raise InvalidSearchError(
            f"status {status!r} is not an MLflow run status: use one of {', '.join(RUN_STATUSES)}"
        )
    return status.strip().upper()


def _check_positive(value: int | None, name: str, upper: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSearchError(f"{name} must be a positive integer or None, not {value!r}")
    if upper is not None and value > upper:
        raise InvalidSearchError(f"{name} {value} is over MLflow's limit of {upper} a request")
    return value


def _join_filters(*clauses: str) -> str:
    return " AND ".join(c for c in clauses if c)


def _split_experiments(
    experiments: Experiments, experiment_name: str | Sequence[str] | None
) -> tuple[list[str], list[TrackingContext]]:
    if experiments is not None and experiment_name is not None:
        raise InvalidSearchError(
            "give the experiments either positionally or as experiment_name=, not both"
        )
    given: Any = experiments if experiments is not None else experiment_name
    if given is None:
        return [], []
    items = [given] if isinstance(given, str | TrackingContext) else list(given)
    if not items:
        raise InvalidSearchError("the list of experiments to search is empty")
    names, contexts = [], []
    for item in items:
        if isinstance(item, TrackingContext):
            contexts.append(item)
        elif isinstance(item, str):
            names.append(item)
        else:
            raise InvalidSearchError(
                f"an experiment is given by name or TrackingContext, not {type(item).__name__}"
            )
    return names, contexts


def _resolve_uri(tracking_uri: str | None, contexts: Sequence[TrackingContext]) -> str:
    """Explicit > the contexts' URI > ``$MLFLOW_TRACKING_URI`` > the embedded default."""
    context_uris = {c.tracking_uri for c in contexts}
    if len(context_uris) > 1:
        raise InvalidSearchError(
            "the TrackingContexts point at different tracking servers "
            f"({', '.join(sorted(redact_uri(u) for u in context_uris))}): search one at a time"
        )
    if tracking_uri is not None and context_uris and {tracking_uri} != context_uris:
        raise InvalidSearchError(
            f"tracking_uri {redact_uri(tracking_uri)!r} differs from the TrackingContext's "
            f"{redact_uri(next(iter(context_uris)))!r}: drop one of them"
        )
    chosen = tracking_uri if tracking_uri is not None else next(iter(context_uris), None)
    # validated like setup_mlflow's (a password in the URI is refused here too)
    resolved = resolve_tracking_config(tracking_uri=chosen).tracking_uri
    assert resolved is not None
    return resolved


def _experiment_ids(tracking_uri: str, names: Sequence[str]) -> list[str]:
    """Look each name up (one request each); unknown or deleted names raise."""
    from mlflow.exceptions import MlflowException

    client = get_client(tracking_uri)
    ids = []
    for name in names:
        checked = resolve_tracking_config(tracking_uri=tracking_uri, experiment_name=name)
        assert checked.experiment_name is not None
        try:
            experiment = client.get_experiment_by_name(checked.experiment_name)
        except MlflowException as exc:
            raise RunSearchError(
                f"could not look up experiment {name!r} on {redact_uri(tracking_uri)}: "
                f"{exc.message}"
            ) from exc
        except OSError as exc:
            raise RunSearchError(
                f"could not reach the MLflow tracking store {redact_uri(tracking_uri)}: {exc}"
            ) from exc
        if experiment is None or experiment.lifecycle_stage == "deleted":
            state = "is deleted" if experiment is not None else "does not exist"
            raise ExperimentNotFoundError(
                f"experiment {checked.experiment_name!r} {state} on {redact_uri(tracking_uri)}: "
                "check the name (setup_mlflow creates it) and the tracking URI"
            )
        ids.append(str(experiment.experiment_id))
    return ids


def _all_experiment_ids(tracking_uri: str) -> list[str]:
    """Every active experiment on the server (paged)."""
    from mlflow.exceptions import MlflowException

    client = get_client(tracking_uri)
    ids: list[str] = []
    token: str | None = None
    try:
        while True:
            page = client.search_experiments(max_results=DEFAULT_PAGE_SIZE, page_token=token)
            ids.extend(str(e.experiment_id) for e in page)
            token = page.token
            if not token:
                return ids
    except MlflowException as exc:
        raise RunSearchError(
            f"could not list the experiments on {redact_uri(tracking_uri)}: {exc.message}"
        ) from exc
    except OSError as exc:
        raise RunSearchError(
            f"could not reach the MLflow tracking store {redact_uri(tracking_uri)}: {exc}"
        ) from exc


def _resolve(
    experiments: Experiments,
    experiment_name: str | Sequence[str] | None,
    tracking_uri: str | None,
    *,
    filters: Sequence[str],
    order_by: str | Sequence[str] | None = None,
    status: str | None = None,
    include_deleted: bool = False,
    max_results: int | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    all_when_unnamed: bool = False,
) -> _Query:
    """Check every argument (no request), then resolve the server and experiment ids.

    With no experiment named, the experiment is ``$MLFLOW_EXPERIMENT_NAME`` or
    ``Default`` (as for ``setup_mlflow``), or every experiment if ``all_when_unnamed``.
    """
    checked_status = check_status(status)
    status_clause = f"attributes.status = {quote_value(checked_status)}" if checked_status else ""
    filter_string = check_filter(_join_filters(*filters, status_clause))
    clauses = check_order_by(order_by)
    limit = _check_positive(max_results, "max_results")
    size = _check_positive(page_size, "page_size", MAX_PAGE_SIZE)
    assert size is not None
    names, contexts = _split_experiments(experiments, experiment_name)
    uri = _resolve_uri(tracking_uri, contexts)
    ids = [c.experiment_id for c in contexts]
    if not names and not contexts:
        if all_when_unnamed:
            ids = _all_experiment_ids(uri)
        else:
            default = resolve_tracking_config(tracking_uri=uri).experiment_name
            assert default is not None
            names = [default]
    ids += _experiment_ids(uri, names)
    return _Query(
        tracking_uri=uri,
        experiment_ids=tuple(dict.fromkeys(ids)),
        filter_string=filter_string,
        order_by=clauses,
        include_deleted=bool(include_deleted),
        max_results=limit,
        page_size=size,
    )


def _pages(query: _Query) -> Iterator[list[Run]]:
    """Yield pages of runs, following page tokens, up to ``query.max_results`` runs."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    client = get_client(query.tracking_uri)
    view = ViewType.ALL if query.include_deleted else ViewType.ACTIVE_ONLY
    token: str | None = None
    remaining = query.max_results
    while remaining is None or remaining > 0:
        size = query.page_size if remaining is None else min(query.page_size, remaining)
        try:
            page = client.search_runs(
                list(query.experiment_ids),
                filter_string=query.filter_string,
                run_view_type=view,
                max_results=size,
                order_by=list(query.order_by) or None,
                page_token=token,
            )
        except MlflowException as exc:
            if error_code(exc) == "INVALID_PARAMETER_VALUE":
                raise InvalidSearchError(
                    f"the tracking server refused the search {query.filter_string!r}: {exc.message}"
                ) from exc
            raise RunSearchError(
                f"searching runs on {redact_uri(query.tracking_uri)} failed: {exc.message}"
            ) from exc
        except OSError as exc:
            raise RunSearchError(
                f"could not reach the MLflow tracking store {redact_uri(query.tracking_uri)}: {exc}"
            ) from exc
        runs = list(page)
        if remaining is not None:
            runs = runs[:remaining]
            remaining -= len(runs)
        if runs:
            yield runs
        token = page.token
        if not token:
            return


def _search(query: _Query) -> list[RunSummary]:
    return [_summary(run, query.tracking_uri) for page in _pages(query) for run in page]


# ---------------------------------------------------------------------------------------
# Caching
# ---------------------------------------------------------------------------------------


@dataclass
class LookupCachePolicy(CachePolicy):
    """Cache a finder task by what it would look up: task, server, experiments, query.

    ``key_data`` maps the task's inputs to the data that identifies the answer: the
    resolved tracking URI and experiment ids are always part of it, so an entry is
    never shared between tracking servers or experiments, and the task's key (its
    name and source) is too, so two finder tasks with equal inputs never share one.
    Resolving experiment names costs one request each. Inputs the lookup refuses give
    no key: the task body runs and raises the clear error.

    Args:
        key_data: The task's resolver: its keyword inputs -> plain data to hash.

    Example:
        >>> from prefect import task
        >>> @task(cache_policy=LookupCachePolicy(key_data=lambda **kw: kw))
        ... def lookup(x: int) -> int:
        ...     return x
    """

    key_data: Callable[..., dict[str, Any]] | None = None

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        if self.key_data is None:
            return None
        try:
            data = self.key_data(**inputs)
        except TrackingTasksError:
            return None
        name = task_ctx.task.name
        digest = config_hash({"task": task_ctx.task.task_key, "lookup": data})
        return f"tracking-tasks-{name}-{digest}"


# ---------------------------------------------------------------------------------------
# find_mlflow_runs
# ---------------------------------------------------------------------------------------


def _find_runs_query(
    experiments: Experiments = None,
    filter_string: str = "",
    *,
    experiment_name: str | Sequence[str] | None = None,
    tracking_uri: str | None = None,
    order_by: str | Sequence[str] | None = None,
    status: str | None = None,
    max_results: int | None = None,
    include_deleted: bool = False,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> _Query:
    return _resolve(
        experiments,
        experiment_name,
        tracking_uri,
        filters=[filter_string] if filter_string else [],
        order_by=order_by,
        status=status,
        include_deleted=include_deleted,
        max_results=max_results,
        page_size=page_size,
    )


@task(
    name="find_mlflow_runs",
    cache_policy=LookupCachePolicy(key_data=lambda **kw: _find_runs_query(**kw).key_data()),
    cache_expiration=DEFAULT_CACHE_EXPIRATION,
)
def find_mlflow_runs(
    experiments: Experiments = None,
    filter_string: str = "",
    *,
    experiment_name: str | Sequence[str] | None = None,
    tracking_uri: str | None = None,
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

    The result is Prefect-cached for ``DEFAULT_CACHE_EXPIRATION`` (5 minutes) by the
    query, the tracking URI and the experiment ids; use
    ``find_mlflow_runs.with_options(refresh_cache=True)`` for a fresh answer, or
    ``with_options(cache_expiration=...)`` to change how long it is reused.

    Args:
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        filter_string: MLflow search filter, e.g. ``"tags.stage = 'hpo' AND metrics.f1 > 0.8"``.
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        tracking_uri: Tracking URI to search (wins over a context's and the environment).
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
    query = _find_runs_query(
        experiments,
        filter_string,
        experiment_name=experiment_name,
        tracking_uri=tracking_uri,
        order_by=order_by,
        status=status,
        max_results=max_results,
        include_deleted=include_deleted,
        page_size=page_size,
    )
    found = _search(query)
    logger().info(
        "Found %d MLflow run(s) in experiment(s) %s on %s",
        len(found),
        ", ".join(query.experiment_ids),
        redact_uri(query.tracking_uri),
    )
    return found


# ---------------------------------------------------------------------------------------
# find_best_run
# ---------------------------------------------------------------------------------------


def _check_mode(mode: str) -> str:
    if mode not in ("max", "min"):
        raise InvalidSearchError(f"mode {mode!r} must be 'max' or 'min'")
    return mode


def _check_metric(metric: str) -> str:
    try:
        return check_key(metric, "metric")
    except TrackingTasksError as exc:
        raise InvalidSearchError(str(exc)) from exc


def _best_run_query(
    metric: str,
    experiments: Experiments = None,
    *,
    experiment_name: str | Sequence[str] | None = None,
    mode: str = "max",
    filter_string: str = "",
    status: str | None = "FINISHED",
    include_deleted: bool = False,
    tracking_uri: str | None = None,
    page_size: int = 100,
) -> _Query:
    name = _check_metric(metric)
    direction = "DESC" if _check_mode(mode) == "max" else "ASC"
    return _resolve(
        experiments,
        experiment_name,
        tracking_uri,
        filters=[filter_string] if filter_string else [],
        order_by=[f"metrics.`{name}` {direction}"],
        status=status,
        include_deleted=include_deleted,
        page_size=page_size,
    )


@task(
    name="find_best_run",
    cache_policy=LookupCachePolicy(key_data=lambda *a, **kw: _best_run_query(*a, **kw).key_data()),
    cache_expiration=DEFAULT_CACHE_EXPIRATION,
)
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
    page_size: int = 100,
) -> RunSummary | None:
    """Return the run with the highest (or lowest) value of ``metric``, or None.

    The server orders the runs by the metric; runs without the metric, or with NaN,
    are ignored. Ties are broken deterministically: among runs with the best value,
    the one that started first wins, then the smallest run id, so later runs reaching
    the same value never change the answer. Only FINISHED runs count unless ``status``
    says otherwise (None: any status). When no run matches, the result is None (not
    an error), so a flow can fall back, e.g. on its first run.

    Cached like ``find_mlflow_runs`` (5 minutes; ``.with_options(refresh_cache=True)``
    for a fresh answer).

    Args:
        metric: The metric to rank by, e.g. ``"f1"``.
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        mode: ``"max"`` (default) or ``"min"``.
        filter_string: An extra MLflow filter, e.g. ``"tags.stage = 'hpo'"``.
        status: Only runs in this status; None for any.
        include_deleted: Also consider deleted runs.
        tracking_uri: Tracking URI to search (wins over a context's and the environment).
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
    query = _best_run_query(
        metric,
        experiments,
        experiment_name=experiment_name,
        mode=mode,
        filter_string=filter_string,
        status=status,
        include_deleted=include_deleted,
        tracking_uri=tracking_uri,
        page_size=page_size,
    )
    best_value: float | None = None
    tied: list[Run] = []
    for run in (run for page in _pages(query) for run in page):
        value = run.data.metrics.get(metric)
        if value is None or math.isnan(value):
            continue  # runs without the metric (or NaN) never win
        if best_value is not None and value != best_value:
            break  # ranked by the metric: the first other value ends the ties, and the paging
        best_value = value
        tied.append(run)
    if not tied:
        logger().info("No run with metric %r in experiment(s) %s", metric, query.experiment_ids)
        return None
    winner = min(tied, key=lambda r: (r.info.start_time or 0, r.info.run_id))
    return _summary(winner, query.tracking_uri)


# ---------------------------------------------------------------------------------------
# find_run_by_config_hash
# ---------------------------------------------------------------------------------------


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


def _config_hash_query(
    config: Any,
    experiments: Experiments = None,
    *,
    experiment_name: str | Sequence[str] | None = None,
    stage: str | None = None,
    status: str | None = "FINISHED",
    include_deleted: bool = False,
    tracking_uri: str | None = None,
) -> _Query:
    filters = [f"tags.`{CONFIG_HASH_TAG}` = {quote_value(_hash_of(config))}"]
    if stage is not None:
        filters.append(f"tags.`{STAGE_TAG}` = {quote_value(str(stage))}")
    return _resolve(
        experiments,
        experiment_name,
        tracking_uri,
        filters=filters,
        order_by=["attributes.start_time DESC"],
        status=status,
        include_deleted=include_deleted,
        max_results=1,
        page_size=1,
    )


@task(
    name="find_run_by_config_hash",
    cache_policy=LookupCachePolicy(
        key_data=lambda *a, **kw: _config_hash_query(*a, **kw).key_data()
    ),
    cache_expiration=DEFAULT_CACHE_EXPIRATION,
)
def find_run_by_config_hash(
    config: Any,
    experiments: Experiments = None,
    *,
    experiment_name: str | Sequence[str] | None = None,
    stage: str | None = None,
    status: RunStatusName | None = "FINISHED",
    include_deleted: bool = False,
    tracking_uri: str | None = None,
) -> RunSummary | None:
    """Return the latest run created for a config (tag ``tracking_tasks.config_hash``).

    ``create_mlflow_run(..., config=cfg)`` tags each run with ``config_hash(cfg)``; this
    finds the most recently started such run, FINISHED by default, optionally only
    with the tag ``stage`` equal to ``stage``. None when there is none.

    Cached like ``find_mlflow_runs`` (5 minutes; ``.with_options(refresh_cache=True)``
    for a fresh answer).

    Args:
        config: The config (dict, pydantic model, dataclass) or its 64-digit hash.
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        stage: Only runs tagged ``stage=<stage>``.
        status: Only runs in this status (default FINISHED); None for any.
        include_deleted: Also consider deleted runs.
        tracking_uri: Tracking URI to search (wins over a context's and the environment).

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
    query = _config_hash_query(
        config,
        experiments,
        experiment_name=experiment_name,
        stage=stage,
        status=status,
        include_deleted=include_deleted,
        tracking_uri=tracking_uri,
    )
    found = _search(query)
    return found[0] if found else None


# ---------------------------------------------------------------------------------------
# find_runs_for_flow_run
# ---------------------------------------------------------------------------------------


def _flow_run_query(
    flow_run_id: str | uuid.UUID,
    experiments: Experiments = None,
    *,
    experiment_name: str | Sequence[str] | None = None,
    include_deleted: bool = False,
    tracking_uri: str | None = None,
) -> _Query:
    try:
        flow_run = str(uuid.UUID(str(flow_run_id)))
    except ValueError as exc:
        raise InvalidSearchError(
            f"flow_run_id {flow_run_id!r} is not a Prefect flow run id (a UUID)"
        ) from exc
    return _resolve(
        experiments,
        experiment_name,
        tracking_uri,
        filters=[f"tags.`{FLOW_RUN_TAG}` = {quote_value(flow_run)}"],
        order_by=["attributes.start_time ASC"],
        include_deleted=include_deleted,
        all_when_unnamed=True,
    )


@task(
    name="find_runs_for_flow_run",
    cache_policy=LookupCachePolicy(key_data=lambda *a, **kw: _flow_run_query(*a, **kw).key_data()),
    cache_expiration=DEFAULT_CACHE_EXPIRATION,
)
def find_runs_for_flow_run(
    flow_run_id: str | uuid.UUID,
    experiments: Experiments = None,
    *,
    experiment_name: str | Sequence[str] | None = None,
    include_deleted: bool = False,
    tracking_uri: str | None = None,
) -> list[RunSummary]:
    """Return the MLflow runs opened under a Prefect flow run (tag ``prefect.flow_run_id``).

    With no experiment named, every active experiment on the server is searched, since
    a flow run may track into several. Oldest first.

    Cached like ``find_mlflow_runs`` (5 minutes; ``.with_options(refresh_cache=True)``
    for a fresh answer; a flow run still running may open more runs).

    Args:
        flow_run_id: The Prefect flow run id.
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        include_deleted: Also return deleted runs.
        tracking_uri: Tracking URI to search (wins over a context's and the environment).

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
    query = _flow_run_query(
        flow_run_id,
        experiments,
        experiment_name=experiment_name,
        include_deleted=include_deleted,
        tracking_uri=tracking_uri,
    )
    return _search(query)


# ---------------------------------------------------------------------------------------
# One run by id
# ---------------------------------------------------------------------------------------


def get_run_summary(run_id: str, *, tracking_uri: str | None = None) -> RunSummary:
    """Fetch one run by id as a ``RunSummary`` (not cached: one request).

    Args:
        run_id: The MLflow run id.
        tracking_uri: Tracking URI (default: ``$MLFLOW_TRACKING_URI``, else the embedded
            default).

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
    from mlflow.exceptions import MlflowException

    uri = _resolve_uri(tracking_uri, ())
    try:
        run = get_client(uri).get_run(run_id)
    except MlflowException as exc:
        if error_code(exc) in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            raise RunNotFoundError(
                f"MLflow run {run_id!r} does not exist on {redact_uri(uri)}"
            ) from exc
        raise RunSearchError(
            f"could not read run {run_id!r} on {redact_uri(uri)}: {exc.message}"
        ) from exc
    except OSError as exc:
        raise RunSearchError(
            f"could not reach the MLflow tracking store {redact_uri(uri)}: {exc}"
        ) from exc
    return _summary(run, uri)
