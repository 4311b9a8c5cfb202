"""log_params / log_metrics / set_tags tasks and the batched RunLogger."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient
from prefect import flow

from tracking_tasks import (
    RunLogger,
    RunRef,
    TrackingConfig,
    create_mlflow_run,
    log_metrics,
    log_params,
    set_tags,
    setup_mlflow,
)
from tracking_tasks.errors import InvalidLogDataError, RunNotFoundError


@pytest.fixture
def run(tracking_config: TrackingConfig) -> Iterator[RunRef]:
    ref = create_mlflow_run.fn(setup_mlflow.fn(tracking_config), run_name="logging")
    yield ref
    MlflowClient(ref.tracking_uri).set_terminated(ref.run_id)


def _data(ref: RunRef):  # type: ignore[no-untyped-def]
    return MlflowClient(ref.tracking_uri).get_run(ref.run_id).data


def test_log_tasks_in_a_flow(run: RunRef) -> None:
    @flow
    def pipeline() -> tuple[int, int, int]:
        return (
            log_params(run, {"lr": 0.1, "layers": 2, "name": "bert"}),
            log_metrics(run, {"f1": 0.91, "loss": float("nan")}, step=3),
            set_tags(run, {"stage": "training", "epochs": 3}),
        )

    assert pipeline() == (3, 2, 2)
    data = _data(run)
    assert data.params == {"lr": "0.1", "layers": "2", "name": "bert"}
    assert data.metrics["f1"] == 0.91 and math.isnan(data.metrics["loss"])
    assert data.tags["stage"] == "training" and data.tags["epochs"] == "3"
    history = MlflowClient(run.tracking_uri).get_metric_history(run.run_id, "f1")
    assert [(m.step, m.value) for m in history] == [(3, 0.91)]


def test_many_params_and_tags_go_in_chunks(run: RunRef) -> None:
    params = {f"p{i:03d}": i for i in range(250)}
    tags = {f"t{i:03d}": "x" * 7000 for i in range(150)}  # forces size-based splits too
    assert log_params.fn(run, params) == 250
    assert set_tags.fn(run, tags) == 150
    data = _data(run)
    assert data.params == {k: str(v) for k, v in params.items()}
    assert {k: v for k, v in data.tags.items() if k.startswith("t")} == tags


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda r: log_params.fn(r, {"ok": 1, "long": "x" * 6001}), "6000"),
        (lambda r: log_params.fn(r, {"ok": 1, "nan": float("nan")}), "NaN"),
        (lambda r: log_params.fn(r, {"ok": 1, "bad/../key": 1}), "normalised"),
        (lambda r: set_tags.fn(r, {"ok": "1", 7: "x"}), "must be strings"),
        (lambda r: set_tags.fn(r, {"ok": "1", "a b!": "x"}), "characters MLflow refuses"),
        (lambda r: log_metrics.fn(r, {"ok": 1.0, "acc": "high"}), "numbers"),
        (lambda r: log_metrics.fn(r, {"ok": 1.0}, step=1.5), "integer"),
        (lambda r: log_params.fn(r, [("a", 1)]), "mapping"),
    ],
)
def test_bad_values_fail_before_anything_is_sent(run: RunRef, call, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidLogDataError, match=words):
        call(run)
    data = _data(run)
    assert data.params == {} and data.metrics == {}
    assert "ok" not in data.tags


def test_changing_a_param_is_a_clear_error(run: RunRef) -> None:
    log_params.fn(run, {"lr": 0.1})
    with pytest.raises(InvalidLogDataError, match="lr"):
        log_params.fn(run, {"lr": 0.2})
    with RunLogger(run) as log:
        log.log_param("seed", 1)
        with pytest.raises(InvalidLogDataError, match="cannot change"):
            log.log_param("seed", 2)
    assert _data(run).params == {"lr": "0.1", "seed": "1"}


def test_unknown_run_is_a_clear_error(run: RunRef) -> None:
    ghost = run.model_copy(update={"run_id": "0" * 32})
    with pytest.raises(RunNotFoundError, match="0" * 32):
        log_metrics.fn(ghost, {"x": 1.0})


def test_run_logger_batches_at_mlflow_limits(run: RunRef) -> None:
    with RunLogger(run, flush_interval_seconds=None) as log:
        for step in range(2500):
            log.log_metric("loss", 1.0 / (step + 1), step)
        assert log.requests_sent == 2  # two full batches of 1,000 went out on the way
        log.log_params({f"p{i}": i for i in range(150)})
        log.set_tag("phase", "train")
    # 150 params pass the 100 limit: the buffer (500 points, 150 params) goes out in two
    # requests; the tag goes at exit
    assert log.requests_sent == 5
    assert log.points_sent == 2500
    history = MlflowClient(run.tracking_uri).get_metric_history(run.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(2500))
    data = _data(run)
    assert len(data.params) == 150 and data.tags["phase"] == "train"


def test_run_logger_flushes_on_error(run: RunRef) -> None:
    with pytest.raises(RuntimeError, match="diverged"), RunLogger(run) as log:
        for step in range(10):
            log.log_metric("loss", float(step), step)
        raise RuntimeError("diverged")
    history = MlflowClient(run.tracking_uri).get_metric_history(run.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(10))


def test_run_logger_flushes_by_time(run: RunRef) -> None:
    log = RunLogger(run, flush_interval_seconds=0)
    log.log_metric("a", 1.0, 0)
    log.log_metric("a", 2.0, 1)
    assert log.requests_sent == 2
    assert len(MlflowClient(run.tracking_uri).get_metric_history(run.run_id, "a")) == 2


def test_run_logger_rejects_bad_points_at_the_call(run: RunRef) -> None:
    with RunLogger(run) as log:
        log.log_metric("good", 1.0, 0)
        with pytest.raises(InvalidLogDataError):
            log.log_metric("bad", "x", 0)  # type: ignore[arg-type]
        with pytest.raises(InvalidLogDataError):
            log.log_metrics({"fine": 1.0, "bad": None}, 0)  # type: ignore[dict-item]
    assert _data(run).metrics == {"good": 1.0}


def test_run_logger_is_thread_safe(run: RunRef) -> None:
    log = RunLogger(run, flush_interval_seconds=None)

    def worker(n: int) -> None:
        for step in range(1000):
            log.log_metric(f"w{n}", float(step), step)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.flush()
    client = MlflowClient(run.tracking_uri)
    for n in range(4):
        assert len(client.get_metric_history(run.run_id, f"w{n}")) == 1000
    assert log.requests_sent == 4
