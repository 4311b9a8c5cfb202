"""A logged model's end: finalised FAILED with its reason, by the attempt that failed or,
for what a dead attempt left PENDING, by the flow run's hooks and reconcile."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tracking_tasks.errors import LoggedModelError, TrackingTasksError, mlflow_errors
from tracking_tasks.ops._client import client_for
from tracking_tasks.ops._lifecycle import RunLocation
from tracking_tasks.ops._model_filters import attribute_in
from tracking_tasks.ops._scope import follow_pages
from tracking_tasks.tags import MODEL_FAILURE_TAG
from tracking_tasks.urls import redact_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel

log = logging.getLogger(__name__)

#: The longest failure reason kept in the ``tracking_tasks.failure_reason`` tag.
MAX_REASON_CHARS = 1000
#: Runs per ``source_run_id IN (...)`` clause when looking for PENDING models.
_RUNS_PER_SEARCH = 100


def failure_reason(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:MAX_REASON_CHARS]


def finalize_failed(client: MlflowClient, model_id: str, reason: str) -> None:
    """Tag why, then finalise the model FAILED (MLflow's finalize call takes no message)."""
    from mlflow.entities import LoggedModelStatus

    client.set_logged_model_tags(model_id, {MODEL_FAILURE_TAG: reason[:MAX_REASON_CHARS]})
    client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)


def fail_pending_models(
    run_ids: Iterable[str], locations: Mapping[str, RunLocation], reason: str
) -> list[str]:
    """Finalise FAILED every PENDING logged model of these runs; return the errors.

    A model stays PENDING only while the attempt logging it runs: once its run's flow
    run is over (the state hooks) or its process is gone (reconcile), it never will be
    finished. Each is tagged ``tracking_tasks.failure_reason`` (``reason``, and that its
    upload never finished) and finalised FAILED. A READY or FAILED model is never
    touched: each is read again just before it is written.

    Args:
        run_ids: The runs whose models to look at (those just ended).
        locations: Where each run lives (runs without a location are skipped).
        reason: Why, e.g. ``"flow run Crashed"``.

    Returns:
        One message per failure (a search or a write refused); empty when all went well.

    Example:
        >>> fail_pending_models([], {}, "flow run Crashed")
        []
    """
    from mlflow.entities import LoggedModelStatus

    grouped: dict[RunLocation, list[str]] = defaultdict(list)
    for run_id in dict.fromkeys(run_ids):
        if run_id in locations:
            grouped[locations[run_id]].append(run_id)
    errors: list[str] = []
    failed: list[str] = []
    why = f"{reason}: its logging attempt ended before the model was finalised"
    for where, ids in grouped.items():
        client = client_for(where)
        for start in range(0, len(ids), _RUNS_PER_SEARCH):
            chunk = ids[start : start + _RUNS_PER_SEARCH]
            query = attribute_in("source_run_id", chunk)  # the status: checked below
            try:
                with mlflow_errors(
                    f"looking for PENDING models on {redact_uri(where.tracking_uri)}",
                    default=LoggedModelError,
                ):
                    found = _search_all(client, where.experiment_id, query)
                pending = [m for m in found if m.status == LoggedModelStatus.PENDING]
            except TrackingTasksError as exc:
                errors.append(str(exc))
                continue
            for model in pending:
                try:
                    with mlflow_errors(
                        f"model {model.model_id} on {redact_uri(where.tracking_uri)}",
                        default=LoggedModelError,
                    ):
                        if client.get_logged_model(model.model_id).status == (
                            LoggedModelStatus.PENDING
                        ):
                            finalize_failed(client, model.model_id, why)
                            failed.append(model.model_id)
                except TrackingTasksError as exc:
                    errors.append(str(exc))
    if failed:
        log.info("Finalised %d PENDING model(s) FAILED (%s): %s", len(failed), reason, failed)
    return errors


def _search_all(client: MlflowClient, experiment_id: str, query: str) -> list[LoggedModel]:
    def fetch(size: int, token: str | None) -> Any:
        return client.search_logged_models(
            [experiment_id], filter_string=query, max_results=size, page_token=token
        )

    return [model for page in follow_pages(fetch, None, _RUNS_PER_SEARCH) for model in page]
