"""Metric history as the user logged it: a retried task resumes, an infinity is said."""

from __future__ import annotations

import logging
import math

import pytest
from mlflow import MlflowClient
from prefect import flow, task

from tracking_tasks import (
    RunLogger,
    RunRef,
    TrackingConfig,
    create_mlflow_run,
    log_metrics,
    mlflow_state_hooks,
    setup_mlflow,
)


def _steps(run: RunRef, key: str) -> list[int]:
    history = MlflowClient(run.tracking_uri).get_metric_history(run.run_id, key)
    return sorted(m.step for m in history)


@pytest.mark.backends
def test_a_retried_task_resumes_its_runs_metric_history(tracking_config: TrackingConfig) -> None:
    attempts: list[int] = []

    @task(retries=1, retry_delay_seconds=0)
    def train(run: RunRef) -> int:
        attempts.append(len(attempts))
        with RunLogger(run, flush_interval_seconds=None) as log:
            for step in range(200):
                if step == 120 and len(attempts) == 1:
                    raise RuntimeError("the GPU went away")  # the logger flushes 0..119
                log.log_metric("loss", 1.0 / (step + 1), step)
                log.log_metric("lr", 0.1, step)
        return log.points_skipped

    @flow(**mlflow_state_hooks())
    def pipeline() -> tuple[RunRef, int]:
        run = create_mlflow_run(setup_mlflow(tracking_config), run_name="train")
        return run, train(run)

    run, skipped = pipeline()
    assert attempts == [0, 1] and skipped == 2 * 120
    for key in ("loss", "lr"):
        assert _steps(run, key) == list(range(200))  # 200 distinct steps, none twice


def test_a_logger_outside_a_retry_keeps_every_point_unless_told(
    tracking_config: TrackingConfig,
) -> None:
    run = create_mlflow_run(setup_mlflow(tracking_config), run_name="plain")
    for _ in range(2):  # two loggers, no retry: both histories are kept
        with RunLogger(run) as log:
            assert log.resume is False
            log.log_metric("loss", 0.5, 0)
    with RunLogger(run, resume=True) as log:  # asked for: steps already stored are skipped
        log.log_metric("loss", 0.5, 0)
        log.log_metric("loss", 0.4, 1)
    assert _steps(run, "loss") == [0, 0, 1] and log.points_skipped == 1


def test_an_infinite_metric_is_stored_as_mlflow_stores_it_and_said_once(
    tracking_config: TrackingConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    run = create_mlflow_run(setup_mlflow(tracking_config), run_name="diverged")
    with RunLogger(run) as log:
        for step in range(3):
            log.log_metric("loss", math.inf, step)  # warned once, not three times
        log.log_metric("score", -math.inf, 0)
    log_metrics(run, {"final_loss": math.inf})
    said = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("tracking_tasks") and "largest float" in r.getMessage()
    ]
    assert len(said) == 3, said
    assert "'loss' is inf" in said[0] and "1.798e+308" in said[0]
    assert "'score' is -inf" in said[1] and "-1.798e+308" in said[1]
    stored = MlflowClient(run.tracking_uri).get_run(run.run_id).data.metrics
    assert stored["loss"] == stored["final_loss"] == 1.7976931348623157e308
    assert stored["score"] == -1.7976931348623157e308
