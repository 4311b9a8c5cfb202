"""A run search: where it looks (server, experiments) and MLflow's paged search_runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracking_tasks.auth._apply import apply_credentials, ensure_credentials
from tracking_tasks.config._models import TrackingConfig
from tracking_tasks.config._resolve import (
    CredentialsLocation,
    resolve_tracking_config,
    resolve_tracking_uri,
    resolve_workspace,
)
from tracking_tasks.errors import InvalidSearchError, RunSearchError, mlflow_errors
from tracking_tasks.handles import RunSummary, TrackingContext
from tracking_tasks.ops._client import get_client
from tracking_tasks.ops._experiments import all_experiment_ids, experiment_ids
from tracking_tasks.ops._filters import and_, check_filter, status_equals
from tracking_tasks.ops._setup import check_reachable
from tracking_tasks.urls import redact_uri

if TYPE_CHECKING:
    from mlflow.entities import Run

#: What one lookup may name: an experiment name, a ``TrackingContext``, or a list of them.
Experiments = str | TrackingContext | Sequence[str | TrackingContext] | None

#: Runs asked for per ``search_runs`` request (MLflow's own default page size).
DEFAULT_PAGE_SIZE = 1000
#: The largest page MLflow's server accepts (``SEARCH_MAX_RESULTS_THRESHOLD``).
MAX_PAGE_SIZE = 50_000


@dataclass(frozen=True)
class Scope:
    """Where a lookup searches: one tracking server and the experiment ids on it.

    Attributes:
        tracking_uri: The resolved tracking URI.
        experiment_ids: The experiments searched.
        credentials: The secret-free credentials reference requests to the server carry
            (a saved block's, from a ``TrackingContext`` or ``credentials=``), or None.
        workspace: The MLflow workspace searched, or None for the server's default.
    """

    tracking_uri: str
    experiment_ids: tuple[str, ...]
    credentials: str | None = None
    workspace: str | None = None


@dataclass(frozen=True)
class Query:
    """A checked search: where, and MLflow's search arguments.

    Attributes:
        scope: Where to search.
        filter_string: A checked filter string.
        order_by: Checked order-by clauses.
        include_deleted: Also return deleted runs.
        max_results: At most this many runs (None: all).
        page_size: Runs per request.
    """

    scope: Scope
    filter_string: str
    order_by: tuple[str, ...] = ()
    include_deleted: bool = False
    max_results: int | None = None
    page_size: int = DEFAULT_PAGE_SIZE


def check_positive(value: int | None, name: str, upper: int | None = None) -> int | None:
    """``value`` if it is None or a positive integer (at most ``upper``), else raise.

    Raises:
        InvalidSearchError: not a positive integer, or over ``upper``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSearchError(f"{name} must be a positive integer or None, not {value!r}")
    if upper is not None and value > upper:
        raise InvalidSearchError(f"{name} {value} is over MLflow's limit of {upper} a request")
    return value


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


def _server(
    tracking_uri: str | None,
    contexts: Sequence[TrackingContext],
    credentials: CredentialsLocation | None,
) -> str:
    """Explicit > the contexts' URI > the credentials' server > ``$MLFLOW_TRACKING_URI`` >
    the embedded default."""
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
    return resolve_tracking_uri(chosen, credentials=credentials)


def _credentials(
    credentials: CredentialsLocation | None, uri: str, contexts: Sequence[TrackingContext]
) -> str | None:
    """Explicit credentials > the contexts' reference; loaded here before any request."""
    if credentials is not None:
        return apply_credentials(credentials, uri)
    references = {c.credentials for c in contexts if c.credentials is not None}
    if len(references) > 1:
        raise InvalidSearchError(
            f"the TrackingContexts carry different credentials ({', '.join(sorted(references))})"
            " for one server: search one at a time"
        )
    reference = next(iter(references), None)
    ensure_credentials(reference, uri)
    return reference


def _experiment_name(name: str) -> str:
    """A name checked like TrackingConfig's (stripped, not empty, not too long)."""
    checked = TrackingConfig(experiment_name=name).experiment_name
    assert checked is not None
    return checked


def resolve_scope(
    experiments: Experiments = None,
    experiment_name: str | Sequence[str] | None = None,
    tracking_uri: str | None = None,
    *,
    credentials: CredentialsLocation | None = None,
    all_when_unnamed: bool = False,
    workspace: str | None = None,
) -> Scope:
    """Resolve the server, workspace and experiment ids a lookup searches (one request a name).

    With no experiment named, the experiment is ``$MLFLOW_EXPERIMENT_NAME`` or
    ``Default`` (as for ``setup_mlflow``), or every experiment if ``all_when_unnamed``.
    The MLflow workspace is ``workspace``, else the contexts', else the block's, else
    ``$MLFLOW_WORKSPACE``, else the server's default (``resolve_workspace``).

    Args:
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        tracking_uri: Tracking URI (wins over a context's and the environment).
        credentials: An ``MlflowCredentials`` block (or ``ServerCredentials``) for the
            server; else the contexts' credentials reference, loaded in this process if
            it has not been (a task in a Dask worker).
        all_when_unnamed: Search every active experiment when none is named.
        workspace: The MLflow workspace to search in.

    Returns:
        The ``Scope``.

    Raises:
        InvalidSearchError: both ``experiments`` and ``experiment_name``, an empty list,
            or contexts on different servers or with different credentials.
        TrackingConfigError: the tracking URI is invalid, or the workspace (malformed,
            unknown, contexts in different workspaces, a server without workspaces).
        ExperimentNotFoundError: a named experiment does not exist.
        RunSearchError: the server failed, or could not be reached at all (refused,
            unknown host, untrusted TLS: within seconds, by one probe sent once).

    Example:
        >>> resolve_scope("doctests").experiment_ids == (ctx.experiment_id,)
        True
    """
    names, contexts = _split_experiments(experiments, experiment_name)
    uri = _server(tracking_uri, contexts, credentials)
    reference = _credentials(credentials, uri, contexts)
    space = resolve_workspace(
        workspace, given=[c.workspace for c in contexts], credentials=credentials, tracking_uri=uri
    )
    # a dead server fails here at once, not after MLflow's retries (minutes)
    check_reachable(uri, f"could not search runs on {redact_uri(uri)}", error=RunSearchError)
    ids = [c.experiment_id for c in contexts]
    if not names and not contexts:
        if all_when_unnamed:
            ids = all_experiment_ids(uri, workspace=space)
        else:
            # the resolution order already ends in the default experiment's name
            default = resolve_tracking_config(tracking_uri=uri).experiment_name
            assert default is not None
            names = [default]
    try:
        checked = [_experiment_name(name) for name in names]
    except ValueError as exc:
        raise InvalidSearchError(f"invalid experiment name: {exc}") from exc
    ids += experiment_ids(uri, checked, workspace=space)
    return Scope(
        tracking_uri=uri,
        experiment_ids=tuple(dict.fromkeys(ids)),
        credentials=reference,
        workspace=space,
    )


def follow_pages(
    fetch: Callable[[int, str | None], Any], max_results: int | None, page_size: int
) -> Iterator[list[Any]]:
    """Yield the pages ``fetch(size, page_token)`` answers (MLflow ``PagedList`` values),
    following page tokens to the end, up to ``max_results`` items (None: all)."""
    token: str | None = None
    remaining = max_results
    while remaining is None or remaining > 0:
        page = fetch(page_size if remaining is None else min(page_size, remaining), token)
        items = list(page)
        if remaining is not None:
            items = items[:remaining]
            remaining -= len(items)
        if items:
            yield items
        token = page.token
        if not token:
            return


def pages(query: Query) -> Iterator[list[Run]]:
    """Yield pages of runs, following page tokens, up to ``query.max_results`` runs."""
    from mlflow.entities import ViewType

    uri = query.scope.tracking_uri
    client = get_client(uri, credentials=query.scope.credentials, workspace=query.scope.workspace)
    view = ViewType.ALL if query.include_deleted else ViewType.ACTIVE_ONLY

    def fetch(size: int, token: str | None) -> Any:
        with mlflow_errors(
            f"searching runs ({query.filter_string!r}) on {redact_uri(uri)} failed",
            default=RunSearchError,
            invalid=InvalidSearchError,
        ):
            return client.search_runs(
                list(query.scope.experiment_ids),
                filter_string=query.filter_string,
                run_view_type=view,
                max_results=size,
                order_by=list(query.order_by) or None,
                page_token=token,
            )

    return follow_pages(fetch, query.max_results, query.page_size)


def search(query: Query) -> list[RunSummary]:
    """Every run the query finds, as ``RunSummary`` values, in the search order."""
    return [
        RunSummary.from_run(run, query.scope.tracking_uri, query.scope.workspace)
        for page in pages(query)
        for run in page
    ]


def checked_filter(*clauses: str, status: str | None = None) -> str:
    """The clauses (and a status clause) joined with AND and checked by MLflow's parser."""
    return check_filter(and_(*clauses, status_equals(status) if status is not None else ""))
