"""Quiet by default: the user's console keeps what they must act on."""

from __future__ import annotations

import logging

import mlflow
import pytest
from mlflow import MlflowClient
from prefect import flow

from tracking_tasks import TrackingConfig, create_mlflow_run, mlflow_state_hooks, setup_mlflow


def test_setup_and_a_fluent_block_print_and_log_nothing_to_act_on(
    tracking_config: TrackingConfig,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    @flow(**mlflow_state_hooks())
    def pipeline() -> str:
        ctx = setup_mlflow(tracking_config)
        setup_mlflow(tracking_config)  # a cache hit: the context is remembered again
        with create_mlflow_run(ctx, run_name="fluent") as run:
            mlflow.log_metric("f1", 0.85)
        with create_mlflow_run(run_name="no-context-given") as other:  # setup's, remembered
            mlflow.log_metric("f1", 0.9)
        assert other.experiment_id == ctx.experiment_id
        return run.run_id

    run_id = pipeline()
    out = capsys.readouterr()
    assert "View run" not in out.out + out.err and "View experiment" not in out.out + out.err
    assert "_after_setup" not in caplog.text  # no hook, so no "Running hook" lines
    assert MlflowClient(tracking_config.tracking_uri).get_run(run_id).info.status == "FINISHED"
