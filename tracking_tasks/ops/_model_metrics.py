"""Metrics that measure a logged model, linked to it by ``model_id`` (and a data set)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from tracking_tasks._validation import check_metrics
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.handles import ModelRef, RunRef
from tracking_tasks.ops._logging import now_ms, send_batch
from tracking_tasks.ops._workspaces import place_of
from tracking_tasks.urls import same_server


def model_metrics(
    checked: list[tuple[str, float, int]],
    model_id: str,
    dataset: tuple[str, str] | None = None,
    timestamp: int | None = None,
) -> list[Any]:
    from mlflow.entities import Metric

    ts = timestamp if timestamp is not None else _unique_ms()
    name, digest = dataset if dataset is not None else (None, None)
    return [
        Metric(k, v, ts, s, model_id=model_id, dataset_name=name, dataset_digest=digest)
        for k, v, s in checked
    ]


_last_ms = 0
_ms_lock = threading.Lock()


def _unique_ms() -> int:
    """Now in ms, strictly increasing in this process: a model's metric table keys on
    (model, key, timestamp, step) without the dataset, so two datasets' values of one key
    logged in the same millisecond would collide."""
    global _last_ms
    with _ms_lock:
        _last_ms = max(now_ms(), _last_ms + 1)
        return _last_ms


def log_model_metrics(
    model: ModelRef,
    metrics: Mapping[str, float],
    *,
    run: RunRef | None = None,
    step: int = 0,
    dataset_name: str | None = None,
    dataset_digest: str | None = None,
    timestamp: int | None = None,
) -> int:
    """Log metrics that measure a logged model, linked to it (MLflow's ``model_id``).

    They land in ``run`` (by default the model's own run) and in the model's metrics, so
    MLflow's Models view shows them and ``find_best_model`` ranks by them. A benchmark
    stage logs the latency of the model it measured into its own run this way.

    Args:
        model: The model measured (``log_model``'s handle).
        metrics: Name -> number.
        run: The run that measured it; None for the model's source run.
        step: The step of every point.
        dataset_name: The data set measured on (with ``dataset_digest``), e.g. ``"test"``.
        dataset_digest: That data set's digest (e.g. ``mlflow.data.from_numpy(x).digest``).
        timestamp: Milliseconds since the epoch; now by default.

    Returns:
        The number of points logged.

    Raises:
        InvalidArgumentError: no run to log into, a run on another server, or only one
            of ``dataset_name`` and ``dataset_digest``.
        InvalidLogDataError: a name or value MLflow would refuse (nothing sent).
        RunNotFoundError: the run does not exist.
        TrackingServerError: the server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def benchmark(model: ModelRef, run: RunRef) -> None:
        ...     log_model_metrics(model, {"latency_p99_ms": 1.2}, run=run,
        ...                       dataset_name="digits-test", dataset_digest="8a2b")
    """
    if not isinstance(model, ModelRef):
        raise InvalidArgumentError(
            f"model must be the ModelRef returned by log_model, not {type(model).__name__}"
        )
    if (dataset_name is None) != (dataset_digest is None):
        raise InvalidArgumentError(
            "give dataset_name and dataset_digest together: MLflow's server matches a "
            "model's metrics to a data set by both"
        )
    checked = check_metrics(metrics, step)
    if run is None:
        if model.source_run_id is None:
            raise InvalidArgumentError(
                f"model {model.model_id} has no source run: pass run= to log its metrics into"
            )
        run = RunRef(
            run_id=model.source_run_id,
            experiment_id=model.experiment_id,
            run_name=model.source_run_id,
            tracking_uri=model.tracking_uri,
            registry_uri=model.registry_uri,
            credentials=model.credentials,
            workspace=model.workspace,
        )
    elif not same_server(run.tracking_uri, model.tracking_uri) or run.workspace != model.workspace:
        raise InvalidArgumentError(
            f"run {run.run_id} is on {place_of(run.tracking_uri, run.workspace)} and model "
            f"{model.model_id} on {place_of(model.tracking_uri, model.workspace)}: log into a "
            "run of the model's server and workspace"
        )
    dataset = (dataset_name, dataset_digest) if dataset_name and dataset_digest else None
    send_batch(run, metrics=model_metrics(checked, model.model_id, dataset, timestamp))
    return len(checked)
