"""Finding logged models (MLflow 3): paged search with MLflow's grammar, the best model."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks._status import ModelStatusName
from tracking_tasks._validation import check_key
from tracking_tasks.config._resolve import CredentialsLocation
from tracking_tasks.errors import (
    InvalidSearchError,
    LoggedModelError,
    TrackingTasksError,
    mlflow_errors,
)
from tracking_tasks.handles import ModelRef
from tracking_tasks.ops._client import get_client
from tracking_tasks.ops._model_filters import (
    check_model_filter,
    check_model_order_by,
    check_model_status,
)
from tracking_tasks.ops._scope import (
    MAX_PAGE_SIZE,
    Experiments,
    Scope,
    check_positive,
    follow_pages,
    resolve_scope,
)
from tracking_tasks.urls import model_url, redact_uri

if TYPE_CHECKING:
    from mlflow.entities import LoggedModel

#: Models asked for per ``search_logged_models`` request (MLflow's own default).
DEFAULT_MODEL_PAGE_SIZE = 100


class ModelSummary(BaseModel):
    """One MLflow 3 logged model as a finder returns it: a frozen, picklable value.

    Args:
        model_id: The logged model's id (``m-...``).
        name: Its name.
        status: ``PENDING``, ``READY`` or ``FAILED``.
        experiment_id: Its experiment.
        source_run_id: The run that produced it, if any.
        model_type: Its model type, if any.
        tracking_uri: Tracking URI it lives on (never carries credentials).
        artifact_uri: Where its files are.
        creation_time: When it was created (UTC).
        params: Param name -> value.
        tags: Tag name -> value.
        metrics: Metric name -> its latest value (by timestamp, then step).
        url: Its MLflow UI page, or None for a local store.
        workspace: The MLflow workspace it lives in, or None for the default.

    Example:
        >>> summary = ModelSummary(model_id="m-1", name="digits", status="READY",
        ...                        experiment_id="1", tracking_uri="http://127.0.0.1:5000")
        >>> summary.uri, summary.to_ref().model_id
        ('models:/m-1', 'm-1')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(description="The logged model's id.")
    name: str = Field(description="Its name.")
    status: str = Field(description="PENDING, READY or FAILED.")
    experiment_id: str = Field(description="Its experiment id.")
    source_run_id: str | None = Field(default=None, description="The run that produced it.")
    model_type: str | None = Field(default=None, description="Its model type.")
    tracking_uri: str = Field(description="Tracking URI it lives on.")
    artifact_uri: str | None = Field(default=None, description="Where its files are.")
    creation_time: dt.datetime | None = Field(default=None, description="Created, UTC.")
    params: dict[str, str] = Field(default_factory=dict, description="Params.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Latest metric values.")
    url: str | None = Field(default=None, description="Its UI page, or None.")
    workspace: str | None = Field(default=None, description="Its MLflow workspace, or None.")

    @classmethod
    def from_logged_model(
        cls, model: LoggedModel, tracking_uri: str, workspace: str | None = None
    ) -> ModelSummary:
        """Summarise an MLflow ``LoggedModel`` fetched from ``tracking_uri``.

        Args:
            model: An ``mlflow.entities.LoggedModel``.
            tracking_uri: The server it came from (no credentials in it).
            workspace: The MLflow workspace it came from, or None.

        Returns:
            Its ``ModelSummary``.

        Example:
            >>> from mlflow.entities import LoggedModel
            >>> lm = LoggedModel(experiment_id="1", model_id="m-1", name="n",
            ...                  artifact_location="x", creation_timestamp=0,
            ...                  last_updated_timestamp=0)
            >>> ModelSummary.from_logged_model(lm, "sqlite:///m.db").status
            'READY'
        """
        created = model.creation_timestamp
        return cls(
            model_id=model.model_id,
            name=model.name,
            status=str(model.status),
            experiment_id=str(model.experiment_id),
            source_run_id=model.source_run_id,
            model_type=model.model_type or None,  # the server answers "" for none
            tracking_uri=tracking_uri,
            artifact_uri=model.artifact_location,
            creation_time=None
            if created is None
            else dt.datetime.fromtimestamp(created / 1000, dt.UTC),
            params=dict(model.params or {}),
            tags=dict(model.tags or {}),
            metrics=latest_metrics(model),
            url=model_url(
                tracking_uri, str(model.experiment_id), model.model_id, workspace=workspace
            ),
            workspace=workspace,
        )

    @property
    def uri(self) -> str:
        """``models:/<model id>``."""
        return f"models:/{self.model_id}"

    def to_ref(self) -> ModelRef:
        """Return a ``ModelRef`` for this model, to register it or log metrics to it.

        Returns:
            A ``ModelRef`` naming the same model on the same server.

        Example:
            >>> ModelSummary(model_id="m-1", name="n", status="READY", experiment_id="1",
            ...              tracking_uri="sqlite:///m.db").to_ref().uri
            'models:/m-1'
        """
        return ModelRef(
            model_id=self.model_id,
            name=self.name,
            experiment_id=self.experiment_id,
            source_run_id=self.source_run_id,
            tracking_uri=self.tracking_uri,
            artifact_uri=self.artifact_uri,
            workspace=self.workspace,
        )


def latest_metrics(model: LoggedModel, dataset: tuple[str, str] | None = None) -> dict[str, float]:
    """Each metric's latest value (by timestamp, then step), of one data set if given."""
    latest: dict[str, tuple[int, int, float]] = {}
    for metric in model.metrics or []:
        if dataset is not None and (metric.dataset_name, metric.dataset_digest) != dataset:
            continue
        key = (metric.timestamp or 0, metric.step or 0, float(metric.value))
        if metric.key not in latest or key[:2] >= latest[metric.key][:2]:
            latest[metric.key] = key
    return {name: value for name, (_, _, value) in latest.items()}


def _datasets(datasets: Sequence[Mapping[str, str]] | None) -> list[dict[str, str]] | None:
    if datasets is None:
        return None
    if isinstance(datasets, Mapping | str):
        raise InvalidSearchError("datasets must be a list of {'dataset_name', 'dataset_digest'}")
    checked = []
    for item in datasets:
        if not isinstance(item, Mapping) or set(item) != {"dataset_name", "dataset_digest"}:
            raise InvalidSearchError(
                f"dataset {item!r}: give {{'dataset_name': ..., 'dataset_digest': ...}}, both "
                "(MLflow's server matches nothing for a dataset without its digest)"
            )
        checked.append({k: str(v) for k, v in item.items()})
    return checked or None


def _pages(
    scope: Scope,
    filter_string: str,
    order_by: Sequence[Mapping[str, Any]],
    datasets: list[dict[str, str]] | None,
    max_results: int | None,
    page_size: int,
) -> Iterator[list[LoggedModel]]:
    client = get_client(
        scope.tracking_uri, credentials=scope.credentials, workspace=scope.workspace
    )

    def fetch(size: int, token: str | None) -> Any:
        with mlflow_errors(
            f"searching logged models ({filter_string!r}) on {redact_uri(scope.tracking_uri)} "
            "failed",
            default=LoggedModelError,
            invalid=InvalidSearchError,
        ):
            return client.search_logged_models(
                list(scope.experiment_ids),
                filter_string=filter_string or None,
                datasets=datasets,
                max_results=size,
                order_by=[dict(o) for o in order_by] or None,
                page_token=token,
            )

    return follow_pages(fetch, max_results, page_size)


def _in_status(models: Iterator[list[LoggedModel]], status: str | None) -> Iterator[LoggedModel]:
    """The models of the pages in ``status`` (None: all): filtered here, since MLflow's
    server cannot compare a model's status in a filter (see ``MODEL_STATUSES``)."""
    for page in models:
        for model in page:
            if status is None or str(model.status) == status:
                yield model


def find_logged_models(
    experiments: Experiments = None,
    filter_string: str = "",
    *,
    experiment_name: str | Sequence[str] | None = None,
    tracking_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
    order_by: str | Sequence[str] | None = None,
    datasets: Sequence[Mapping[str, str]] | None = None,
    status: ModelStatusName | None = None,
    max_results: int | None = None,
    page_size: int = DEFAULT_MODEL_PAGE_SIZE,
) -> list[ModelSummary]:
    """Search logged models with MLflow's own grammar, following page tokens to the end.

    The filter and ``order_by`` are checked before any request: MLflow's parser, and the
    attributes its server knows (an unknown one would be an HTTP 500 that MLflow's client
    retries for minutes). Where to search is resolved as for ``find_mlflow_runs``:
    ``tracking_uri`` > the ``TrackingContext``'s > ``$MLFLOW_TRACKING_URI`` > the
    embedded default, and the same credentials. Without ``order_by``: newest first.
    ``status`` is applied to each page as it arrives (MLflow's server cannot compare a
    model's status in a filter).

    As a Prefect task (``tracking_tasks.tasks.find_logged_models``) it asks the server on
    every call; ``tracking_tasks.tasks.allow_stale`` opts in to a cache.

    Args:
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        filter_string: A logged-model filter, e.g. ``"metrics.accuracy > 0.9 AND
            name = 'digits'"`` (attributes: ``name``, ``model_id``, ``model_type``,
            ``source_run_id``, ``creation_time``...; not ``status``: use ``status=``).
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        tracking_uri: Tracking URI to search.
        credentials: An ``MlflowCredentials`` block for the server; by default the
            contexts'.
        workspace: The MLflow workspace (default: the contexts', the block's, the env's).
        order_by: ``"metrics.accuracy DESC"``, ``"creation_time ASC"``... (metrics are
            each model's latest value; models without it come last).
        datasets: Only metrics of these data sets count in metric clauses:
            ``[{"dataset_name": "test", "dataset_digest": "..."}]``.
        status: Only models in this status (``READY``, ``PENDING``, ``FAILED``).
        max_results: At most this many models; None means all.
        page_size: Models per request.

    Returns:
        Frozen ``ModelSummary`` values in the search order.

    Raises:
        InvalidSearchError: a malformed filter, order_by, dataset, status or limit (no
            request sent).
        ExperimentNotFoundError: an experiment does not exist on that server.
        LoggedModelError: the server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def report() -> int:
        ...     return len(find_logged_models("digits-pipeline", "metrics.test_accuracy > 0.9",
        ...                                   status="READY"))
    """
    where = check_model_filter(filter_string)
    wanted = check_model_status(status)
    clauses = check_model_order_by(order_by)
    checked_datasets = _datasets(datasets)
    limit = check_positive(max_results, "max_results")
    size = check_positive(page_size, "page_size", MAX_PAGE_SIZE) or DEFAULT_MODEL_PAGE_SIZE
    scope = resolve_scope(
        experiments, experiment_name, tracking_uri, credentials=credentials, workspace=workspace
    )
    order = [{"field_name": name, "ascending": ascending} for name, ascending in clauses]
    # with a status to match, the server's pages are not counted against the limit
    pages = _pages(scope, where, order, checked_datasets, None if wanted else limit, size)
    found = []
    for model in _in_status(pages, wanted):
        found.append(ModelSummary.from_logged_model(model, scope.tracking_uri, scope.workspace))
        if limit is not None and len(found) >= limit:
            break
    return found


def find_best_model(
    metric: str,
    experiments: Experiments = None,
    *,
    experiment_name: str | Sequence[str] | None = None,
    mode: Literal["max", "min"] = "max",
    filter_string: str = "",
    status: ModelStatusName | None = "READY",
    dataset_name: str | None = None,
    dataset_digest: str | None = None,
    tracking_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
    page_size: int = DEFAULT_MODEL_PAGE_SIZE,
) -> ModelSummary | None:
    """Return the logged model with the highest (or lowest) ``metric``, or None.

    The server ranks the models by each one's latest value of the metric (of one data
    set if ``dataset_name`` and ``dataset_digest`` are given); models without it, or
    with NaN, never win. Ties go to the model created first, then the smallest id. Only
    READY models count unless ``status`` says otherwise (None: any). None when no model
    has the metric, so a flow can fall back.

    As a Prefect task it asks the server on every call, like ``find_logged_models``.

    Args:
        metric: The metric to rank by, e.g. ``"test_accuracy"``.
        experiments: An experiment name, a ``TrackingContext``, or a list of them.
        experiment_name: The experiment name(s), as an alternative to ``experiments``.
        mode: ``"max"`` (default) or ``"min"``.
        filter_string: An extra logged-model filter, e.g. ``"name = 'digits'"``.
        status: Only models in this status; None for any.
        dataset_name: Rank by the metric on this data set only (with ``dataset_digest``).
        dataset_digest: That data set's digest.
        tracking_uri: Tracking URI to search.
        credentials: An ``MlflowCredentials`` block for the server.
        page_size: Models per request while reading the ranked models.

    Returns:
        The best model's ``ModelSummary``, or None.

    Raises:
        InvalidSearchError: a malformed metric name, mode, filter, data set or status.
        ExperimentNotFoundError: an experiment does not exist on that server.
        LoggedModelError: the server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def pick() -> str | None:
        ...     best = find_best_model("test_accuracy", "digits-pipeline")
        ...     return best.uri if best else None
    """
    try:
        name = check_key(metric, "metric")
    except TrackingTasksError as exc:
        raise InvalidSearchError(str(exc)) from exc
    if mode not in ("max", "min"):
        raise InvalidSearchError(f"mode {mode!r} must be 'max' or 'min'")
    if (dataset_name is None) != (dataset_digest is None):
        raise InvalidSearchError(
            "give dataset_name and dataset_digest together (MLflow's server matches nothing "
            "for a data set without its digest)"
        )
    where = check_model_filter(filter_string)
    wanted = check_model_status(status)
    size = check_positive(page_size, "page_size", MAX_PAGE_SIZE) or DEFAULT_MODEL_PAGE_SIZE
    scope = resolve_scope(
        experiments, experiment_name, tracking_uri, credentials=credentials, workspace=workspace
    )
    dataset = (dataset_name, dataset_digest) if dataset_name and dataset_digest else None
    order: dict[str, Any] = {"field_name": f"metrics.{name}", "ascending": mode == "min"}
    datasets = None
    if dataset is not None:
        order.update(dataset_name=dataset[0], dataset_digest=dataset[1])
        datasets = [{"dataset_name": dataset[0], "dataset_digest": dataset[1]}]
    best_value: float | None = None
    tied: list[LoggedModel] = []
    for model in _in_status(_pages(scope, where, [order], datasets, None, size), wanted):
        value = latest_metrics(model, dataset).get(name)
        if value is None or math.isnan(value):
            continue  # ranked last by the server: without the metric, never the best
        if best_value is not None and value != best_value:
            return _best(tied, scope.tracking_uri, scope.workspace)
        best_value = value
        tied.append(model)
    return _best(tied, scope.tracking_uri, scope.workspace)


def _best(tied: list[LoggedModel], tracking_uri: str, workspace: str | None) -> ModelSummary | None:
    if not tied:
        return None
    winner = min(tied, key=lambda m: (m.creation_timestamp or 0, m.model_id))
    return ModelSummary.from_logged_model(winner, tracking_uri, workspace)
