"""setup_mlflow: resolution order, experiment lifecycle, caching and the fluent API."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from prefect import flow
from pydantic import ValidationError

from tests.servers import MlflowServer
from tracking_tasks import TrackingConfig, TrackingContext, setup_mlflow
from tracking_tasks.config import resolve_tracking_config
from tracking_tasks.errors import ExperimentSetupError, TrackingConfigError


def test_setup_creates_experiment_and_returns_context(tracking_config: TrackingConfig) -> None:
    @flow
    def pipeline() -> TrackingContext:
        return setup_mlflow(tracking_config)

    ctx = pipeline()
    experiment = MlflowClient(tracking_config.tracking_uri).get_experiment(ctx.experiment_id)
    assert experiment.name == tracking_config.experiment_name
    assert ctx.tracking_uri == tracking_config.tracking_uri
    assert len(ctx.config_hash) == 64
    with pytest.raises(ValidationError):  # frozen: a handle is a value
        ctx.experiment_id = "x"  # type: ignore[misc]


def test_setup_is_safe_to_repeat_and_restores_deleted(tracking_config: TrackingConfig) -> None:
    first = setup_mlflow.fn(tracking_config)
    client = MlflowClient(tracking_config.tracking_uri)
    client.delete_experiment(first.experiment_id)
    second = setup_mlflow.fn(tracking_config)
    assert second.experiment_id == first.experiment_id
    assert client.get_experiment(first.experiment_id).lifecycle_stage == "active"


def test_seed_call_shape_and_fluent_api_points_there(
    mlflow_server: MlflowServer, fluent_reset: None
) -> None:
    ctx = setup_mlflow.fn(experiment_name="seed-shape", tracking_uri=mlflow_server.url)
    assert mlflow.get_tracking_uri() == mlflow_server.url
    # user code using the fluent API inside its own run lands in the same place
    with mlflow.start_run() as run:
        mlflow.log_metric("fluent", 1.0)
    stored = MlflowClient(mlflow_server.url).get_run(run.info.run_id)
    assert stored.info.experiment_id == ctx.experiment_id
    assert stored.data.metrics == {"fluent": 1.0}


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    # embedded default: a SQLite file in the working directory, made absolute
    default = resolve_tracking_config()
    assert default.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert default.experiment_name == "Default"
    # environment beats the default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "env-exp")
    env = resolve_tracking_config()
    assert (env.tracking_uri, env.experiment_name) == ("http://127.0.0.1:5001", "env-exp")
    # config beats the environment
    cfg = TrackingConfig(tracking_uri="http://127.0.0.1:5002", experiment_name="cfg-exp")
    from_cfg = resolve_tracking_config(cfg)
    assert (from_cfg.tracking_uri, from_cfg.experiment_name) == ("http://127.0.0.1:5002", "cfg-exp")
    # explicit argument beats the config
    explicit = resolve_tracking_config(cfg, tracking_uri="http://127.0.0.1:5003")
    assert explicit.tracking_uri == "http://127.0.0.1:5003"
    assert explicit.experiment_name == "cfg-exp"


def test_embedded_default_creates_local_sqlite_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fluent_reset: None
) -> None:
    monkeypatch.chdir(tmp_path)
    ctx = setup_mlflow.fn()
    assert (tmp_path / "mlflow.db").exists()
    assert MlflowClient(ctx.tracking_uri).get_experiment(ctx.experiment_id).name == "Default"


def test_file_uri_refused_with_sqlite_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///tmp/mlruns")
    with pytest.raises(TrackingConfigError) as info:
        setup_mlflow.fn(experiment_name="x")
    assert "$MLFLOW_TRACKING_URI" in str(info.value)
    assert "sqlite:///" in str(info.value)
    assert "MLFLOW_ALLOW_FILE_STORE" in str(info.value)


def test_unreachable_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.servers import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(ExperimentSetupError, match="experiment 'x'"):
        setup_mlflow.fn(experiment_name="x", tracking_uri=f"http://127.0.0.1:{free_port()}")


def test_cached_within_a_flow_run_not_across(
    tracking_config: TrackingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    @flow
    def pipeline() -> list[str]:
        states = [
            setup_mlflow(tracking_config, return_state=True),
            setup_mlflow(tracking_config, return_state=True),
            # the same resolved settings reached another way share the cache entry
            setup_mlflow(
                experiment_name=tracking_config.experiment_name,
                tracking_uri=tracking_config.tracking_uri,
                return_state=True,
            ),
            setup_mlflow(tracking_config, experiment_name="other-exp", return_state=True),
        ]
        return [s.name for s in states]

    assert pipeline() == ["Completed", "Cached", "Cached", "Completed"]
    assert pipeline() == ["Completed", "Cached", "Cached", "Completed"]


def test_cache_hit_still_points_fluent_api(tracking_config: TrackingConfig) -> None:
    @flow
    def pipeline() -> str:
        setup_mlflow(tracking_config)
        mlflow.set_tracking_uri("http://127.0.0.1:1")  # user code moved it away
        state = setup_mlflow(tracking_config, return_state=True)
        assert state.name == "Cached"
        return mlflow.get_tracking_uri()

    assert pipeline() == tracking_config.tracking_uri
