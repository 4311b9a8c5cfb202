"""The user's environment is theirs: setup_mlflow and the fluent block leave MLFLOW_* alone."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from prefect import flow

from tests.servers import MlflowServer
from tracking_tasks import TrackingConfig, TrackingContext, create_mlflow_run, setup_mlflow


def _mlflow_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


def test_an_earlier_setup_never_changes_what_the_next_one_resolves(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, fluent_reset: None
) -> None:
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team-default")
    before = _mlflow_env()

    @flow
    def one_flow() -> tuple[TrackingContext, TrackingContext]:
        first = setup_mlflow(experiment_name="one-off-eval", tracking_uri=mlflow_server.url)
        second = setup_mlflow(tracking_uri=mlflow_server.url)
        return first, second

    first, second = one_flow()
    assert first.experiment_name == "one-off-eval"
    assert second.experiment_name == "team-default"  # the environment, as the guide says
    assert _mlflow_env() == before
    # the plain function the same way, outside a flow
    assert setup_mlflow.fn(tracking_uri=mlflow_server.url).experiment_name == "team-default"
    assert _mlflow_env() == before


@pytest.mark.parametrize("user_uri", [None, "sqlite:///users-own.db"])
def test_an_explicit_uri_never_becomes_the_next_flows_default(
    mlflow_server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fluent_reset: None,
    user_uri: str | None,
) -> None:
    monkeypatch.chdir(tmp_path)
    if user_uri is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", user_uri)
    before = _mlflow_env()

    @flow
    def explicit() -> str:
        return setup_mlflow(experiment_name="explicit", tracking_uri=mlflow_server.url).tracking_uri

    @flow
    def later() -> str:
        return setup_mlflow(experiment_name="later").tracking_uri

    assert explicit() == mlflow_server.url
    assert _mlflow_env() == before
    expected = user_uri or "sqlite:///mlflow.db"
    assert later() == f"sqlite:///{tmp_path.resolve() / expected.removeprefix('sqlite:///')}"
    assert _mlflow_env() == before


def test_an_injected_run_id_is_left_alone_named_once_and_never_used_by_the_library(
    tracking_config: TrackingConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    injected = {
        "MLFLOW_RUN_ID": uuid.uuid4().hex,
        "MLFLOW_EXPERIMENT_ID": "987654321",
        "MLFLOW_EXPERIMENT_NAME": "an-azure-job-experiment",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/elsewhere",
    }
    for name, value in injected.items():
        monkeypatch.setenv(name, value)
    before = _mlflow_env()
    caplog.set_level(logging.WARNING)

    @flow
    def in_a_job() -> tuple[TrackingContext, str]:
        ctx = setup_mlflow(tracking_config)  # explicit config wins over the variables
        # the fluent API points at it through MLflow's globals, not the environment
        assert mlflow.get_tracking_uri() == tracking_config.tracking_uri
        setup_mlflow(tracking_config, experiment_name="second-setup")
        with create_mlflow_run(ctx, run_name="ours") as run:
            mlflow.log_metric("f1", 0.5)  # the block's run, not the injected one
        return ctx, run.run_id

    ctx, run_id = in_a_job()
    assert _mlflow_env() == before  # not removed, not rewritten, not consumed by end_run
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("tracking_tasks") and "MLFLOW_RUN_ID" in r.getMessage()
    ]
    assert len(warnings) == 1 and "mlflow.start_run()" in warnings[0]
    for value in injected.values():
        assert value not in caplog.text
    stored = MlflowClient(tracking_config.tracking_uri).get_run(run_id)
    assert stored.info.experiment_id == ctx.experiment_id
    assert stored.data.metrics == {"f1": 0.5} and stored.info.status == "FINISHED"
