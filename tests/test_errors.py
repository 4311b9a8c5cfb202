"""Every documented failure of the public API raises its class of the exception tree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
from prefect import flow

from tests.servers import free_port
from tracking_tasks import (
    AzureMLWorkspace,
    MlflowCredentials,
    RunLogger,
    RunRef,
    StageOutput,
    TrackingConfig,
    TrackingContext,
    TrackingTasksError,
    config_hash,
    track_conversion,
    track_sweep,
    track_training,
)
from tracking_tasks import errors as e
from tracking_tasks.azure_ml import get_azure_tracking_uri
from tracking_tasks.ops import _finders as search
from tracking_tasks.ops import _lifecycle as lifecycle
from tracking_tasks.ops import _runs as runs
from tracking_tasks.ops._artifacts import checkpoint, download, upload
from tracking_tasks.ops._logging import log_metrics, log_params
from tracking_tasks.ops._setup import setup_mlflow
from tracking_tasks.trackers._benchmark import latency_summary

MISSING = "0" * 32


@pytest.fixture(scope="module")
def ctx(mlflow_server: Any) -> TrackingContext:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("errors") or None
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("errors")
    return TrackingContext(
        tracking_uri=mlflow_server.url,
        experiment_id=experiment_id,
        experiment_name="errors",
        config_hash="0" * 64,
    )


@pytest.fixture(scope="module")
def run(ctx: TrackingContext) -> RunRef:
    return runs.create_mlflow_run(ctx, "errors")


def _missing_run(ctx: TrackingContext) -> RunRef:
    return RunRef(
        run_id=MISSING, experiment_id=ctx.experiment_id, run_name="x", tracking_uri=ctx.tracking_uri
    )


def _cases(
    ctx: TrackingContext, run: RunRef, tmp: Path
) -> list[tuple[str, Callable[[], Any], type[Exception], str]]:
    """(what, call, expected class, a fragment the message must hold)."""
    folder = tmp / "folder"
    folder.mkdir(exist_ok=True)
    (folder / "a.txt").write_text("a")
    return [
        ("file store URI", lambda: setup_mlflow(tracking_uri="file:./mlruns"),
         e.TrackingConfigError, "sqlite:///"),
        ("password in the URI", lambda: setup_mlflow(tracking_uri="http://u:pw@127.0.0.1:1"),
         e.CredentialInURIError, "MLFLOW_TRACKING_PASSWORD"),
        ("unknown scheme", lambda: setup_mlflow(tracking_uri="ftp://host"),
         e.TrackingConfigError, "unknown scheme"),
        ("config of the wrong type", lambda: setup_mlflow({"experiment_name": "x"}),  # type: ignore[arg-type]
         e.TrackingConfigError, "TrackingConfig(**your_mapping)"),
        ("missing config file", lambda: TrackingConfig.from_yaml(tmp / "none.yaml"),
         e.TrackingConfigError, "does not exist"),
        ("no Azure workspace", lambda: get_azure_tracking_uri(),
         e.TrackingConfigError, "AzureMLWorkspace"),
        ("not a context", lambda: runs.create_mlflow_run("ctx", "x"),  # type: ignore[arg-type]
         e.TrackingConfigError, "TrackingContext"),
        ("bad tag key", lambda: runs.create_mlflow_run(ctx, "x", tags={"a|b": 1}),
         e.InvalidLogDataError, "a|b"),
        ("unhashable config", lambda: runs.create_mlflow_run(ctx, "x", config={"f": object()}),
         e.ConfigHashError, "plain data"),
        ("bad parent", lambda: runs.create_mlflow_run(ctx, "x", parent_run_id=3),  # type: ignore[arg-type]
         e.InvalidArgumentError, "parent_run_id"),
        ("missing parent", lambda: runs.create_mlflow_run(ctx, "x", parent_run_id="0" * 32),
         e.InvalidParentRunError, "does not exist"),
        ("nothing listens", lambda: setup_mlflow(tracking_uri=f"http://127.0.0.1:{free_port()}"),
         e.ExperimentSetupError, "could not reach the tracking server"),
        ("NaN param", lambda: log_params(run, {"lr": float("nan")}),
         e.InvalidLogDataError, "NaN"),
        ("text metric", lambda: log_metrics(run, {"f1": "high"}),  # type: ignore[dict-item]
         e.InvalidLogDataError, "f1"),
        ("metric to a missing run", lambda: log_metrics(_missing_run(ctx), {"f1": 1.0}),
         e.RunNotFoundError, MISSING),
        ("changed param", lambda: _change_param(run), e.InvalidLogDataError, "cannot change"),
        ("bad status", lambda: lifecycle.end_mlflow_run(run, "DONE"),  # type: ignore[arg-type]
         e.InvalidArgumentError, "FINISHED, FAILED, KILLED"),
        ("end a missing run", lambda: lifecycle.end_mlflow_run(_missing_run(ctx)),
         e.RunNotFoundError, MISSING),
        ("upload a missing folder", lambda: upload.upload_artifacts(run, tmp / "none"),
         e.LocalArtifactPathError, "does not exist"),
        ("upload outside the run", lambda: upload.upload_artifacts(run, folder, "../x"),
         e.UnsafeArtifactPathError, ".."),
        ("archive a file", lambda: upload.upload_artifacts(run, folder / "a.txt", archive=True),
         e.TrackingConfigError, "archive=True"),
        ("config_dir missing", lambda: checkpoint.log_best_checkpoint(run, folder, tmp / "none"),
         e.LocalArtifactPathError, "config_dir"),
        ("download nothing", lambda: download.download_artifacts(run, "nothing", tmp / "d"),
         e.ArtifactNotFoundError, "nothing"),
        ("download a missing run", lambda: download.download_artifacts(
            _missing_run(ctx), "x", tmp / "d"), e.RunNotFoundError, MISSING),
        ("unknown experiment", lambda: search.find_mlflow_runs(
            "no-such-experiment", tracking_uri=ctx.tracking_uri),
         e.ExperimentNotFoundError, "no-such-experiment"),
        ("malformed filter", lambda: search.find_mlflow_runs(
            ctx, "metrics.f1 >"), e.InvalidSearchError, "malformed filter"),
        ("malformed order_by", lambda: search.find_mlflow_runs(
            ctx, order_by="f1 sideways"), e.InvalidSearchError, "order_by"),
        ("bad mode", lambda: search.find_best_run("f1", ctx, mode="median"),  # type: ignore[arg-type]
         e.InvalidSearchError, "median"),
        ("not a hash", lambda: search.find_run_by_config_hash("abc", ctx),
         e.InvalidSearchError, "64 hex digits"),
        ("not a flow run id", lambda: search.find_runs_for_flow_run("nope", ctx),
         e.InvalidSearchError, "UUID"),
        ("missing run summary", lambda: search.get_run_summary(
            MISSING, tracking_uri=ctx.tracking_uri), e.RunNotFoundError, MISSING),
        ("unhashable value", lambda: config_hash({"f": lambda: 1}),
         e.ConfigHashError, "function"),
        ("one latency sample", lambda: latency_summary([0.1]),
         e.InvalidArgumentError, "at least 2"),
        ("sweep without trials", lambda: _in_flow(lambda: track_sweep(
            lambda p, log: {"m": 1.0}, [], metric="m", context=ctx)),
         e.InvalidArgumentError, "at least one trial"),
        ("every trial fails", lambda: _in_flow(lambda: track_sweep(
            _failing_objective, [{"x": 1}], metric="m", context=ctx)),
         e.SweepFailedError, "no trial"),
        ("training returns text", lambda: _in_flow(lambda: track_training(
            lambda stage: "done", {"x": 1}, ctx)), e.StageOutputError, "str"),
        ("conversion returns metrics", lambda: _in_flow(lambda: track_conversion(
            lambda stage: StageOutput(), {"x": 1}, ctx)), e.StageOutputError, "ConversionOutput"),
    ]  # fmt: skip


def _change_param(run: RunRef) -> None:
    with RunLogger(run) as log:
        log.log_param("seed", 1)
        log.log_param("seed", 2)


def _failing_objective(params: dict[str, Any], log: RunLogger) -> dict[str, float]:
    raise RuntimeError("the objective fails")


def _in_flow(body: Callable[[], Any]) -> Any:
    @flow
    def wrapper() -> Any:
        return body()

    return wrapper()


def test_every_documented_failure_raises_its_class(
    ctx: TrackingContext, run: RunRef, tmp_path: Path, fluent_reset: None
) -> None:
    seen = []
    for what, call, expected, fragment in _cases(ctx, run, tmp_path):
        with pytest.raises(TrackingTasksError) as info:
            call()
        assert isinstance(info.value, expected), f"{what}: got {type(info.value).__name__}"
        assert fragment in str(info.value), f"{what}: {info.value}"
        seen.append(expected)
    # every leaf a user can meet here is covered
    assert {
        e.TrackingConfigError,
        e.CredentialInURIError,
        e.InvalidLogDataError,
        e.ConfigHashError,
        e.RunNotFoundError,
        e.ExperimentNotFoundError,
        e.InvalidSearchError,
        e.LocalArtifactPathError,
        e.UnsafeArtifactPathError,
        e.ArtifactNotFoundError,
        e.StageOutputError,
        e.SweepFailedError,
        e.InvalidArgumentError,
    } <= set(seen)


def test_model_fields_fail_as_validation_errors() -> None:
    with pytest.raises(pydantic.ValidationError, match="experiment_name"):
        TrackingConfig(experiment_name=" ")
    with pytest.raises(pydantic.ValidationError, match="workspace_name"):
        AzureMLWorkspace(subscription_id="s", resource_group="rg", workspace_name="a/b")
    with pytest.raises(pydantic.ValidationError, match="needs a username"):
        MlflowCredentials(password="pw")  # type: ignore[arg-type]


def test_the_tree_is_rooted_and_mlflow_errors_translate() -> None:
    for name in e.__all__:
        obj = getattr(e, name)
        if isinstance(obj, type):
            assert issubclass(obj, TrackingTasksError), name
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    with (
        pytest.raises(e.RunNotFoundError, match="reading run x: no such run") as info,
        e.mlflow_errors("reading run x", not_found=e.RunNotFoundError),
    ):
        raise MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST)
    assert isinstance(info.value.__cause__, MlflowException)
