"""Stage trackers as subflows: success, failure, retry, and a concurrent sweep."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from prefect import flow

from tests.helpers import experiment_runs, flow_run_artifacts
from tracking_tasks import (
    BenchmarkOutput,
    ConversionOutput,
    RunLogger,
    StageContext,
    StageOutput,
    TrackingConfig,
    mlflow_state_hooks,
    setup_mlflow,
    track_benchmark,
    track_conversion,
    track_sweep,
    track_training,
)
from tracking_tasks.trackers._benchmark import latency_summary

# every test here that uses the server runs on SQLite and on PostgreSQL (conftest.py)
pytestmark = pytest.mark.backends


def _by_name(config: TrackingConfig) -> dict[str, Any]:
    return {r.info.run_name: r for r in experiment_runs(config)}


def test_training_records_config_steps_metrics_checkpoint(
    tracking_config: TrackingConfig, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "weights.bin").write_bytes(bytes(range(256)) * 40)

    def train(stage: StageContext) -> StageOutput:
        assert stage.config == {"lr": 0.1, "opt": {"name": "sgd"}}
        for step in range(20):
            stage.log.log_metric("loss", 1.0 / (step + 1), step)
        return StageOutput(metrics={"f1": 0.9}, checkpoint=ckpt)

    @flow(**mlflow_state_hooks())
    def pipeline() -> Any:
        ctx = setup_mlflow(tracking_config)
        return track_training(
            train, {"lr": 0.1, "opt": {"name": "sgd"}}, ctx, sweep_run="s" * 32, trial_run="t" * 32
        )

    result = pipeline()
    client = MlflowClient(tracking_config.tracking_uri)
    run = client.get_run(result.run.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "opt.name": "sgd"}
    assert run.data.metrics["f1"] == 0.9 == result.metrics["f1"]
    assert len(client.get_metric_history(result.run.run_id, "loss")) == 20
    assert run.data.tags["stage"] == "training"
    assert run.data.tags["tracking_tasks.lineage.sweep"] == "s" * 32
    assert run.data.tags["tracking_tasks.lineage.trial"] == "t" * 32
    got = client.download_artifacts(
        result.run.run_id, "checkpoint/weights.bin", str(tmp_path / "d")
    )
    assert Path(got).read_bytes() == (ckpt / "weights.bin").read_bytes()


def test_raising_stage_fails_run_and_subflow_parent_decides(
    tracking_config: TrackingConfig,
) -> None:
    def train(stage: StageContext) -> None:
        stage.log.log_metric("loss", 3.0, 0)
        raise RuntimeError("diverged")

    @flow(**mlflow_state_hooks())
    def pipeline() -> str:
        ctx = setup_mlflow(tracking_config)
        state = track_training(train, {"lr": 10.0}, ctx, return_state=True)
        assert state.is_failed()
        return "recovered"  # the parent flow decides to carry on

    state = pipeline(return_state=True)
    assert state.is_completed() and state.result() == "recovered"
    (run,) = experiment_runs(tracking_config)
    assert run.info.status == "FAILED"
    assert run.data.metrics == {"loss": 3.0}  # flushed before the failure


def test_retried_subflow_reuses_its_run(tracking_config: TrackingConfig) -> None:
    calls: list[str] = []

    def train(stage: StageContext) -> dict[str, float]:
        calls.append(stage.run.run_id)
        if len(calls) == 1:
            raise ConnectionError("lost the GPU node")
        return {"f1": 0.8}

    @flow(**mlflow_state_hooks())
    def pipeline() -> Any:
        ctx = setup_mlflow(tracking_config)
        return track_training.with_options(retries=1, retry_delay_seconds=0)(train, {"lr": 1}, ctx)

    result = pipeline()
    runs = experiment_runs(tracking_config)
    assert len(runs) == 1 and calls == [runs[0].info.run_id] * 2
    assert runs[0].info.status == "FINISHED" and result.metrics == {"f1": 0.8}


def test_sweep_eight_concurrent_trials_none_crossed(tracking_config: TrackingConfig) -> None:
    barrier = threading.Barrier(2, timeout=30)  # proves two trials ran at the same time
    threads: set[int] = set()

    def objective(params: dict[str, Any], log: RunLogger) -> dict[str, float]:
        threads.add(threading.get_ident())
        if params["i"] < 2:
            barrier.wait()
        for step in range(5):
            log.log_metric("score_curve", params["i"] * 10 + step, step)
        return {"score": float(params["i"] * 10 + params["x"])}

    trials = [{"i": i, "x": (i * 7) % 5} for i in range(8)]

    @flow(**mlflow_state_hooks())
    def hpo() -> Any:
        return track_sweep(objective, trials, metric="score", mode="max", context=tracking_config)

    state = hpo(return_state=True)
    result = state.result()
    assert len(threads) >= 2
    runs = _by_name(tracking_config)
    parent = runs["sweep"]
    assert parent.info.status == "FINISHED"
    client = MlflowClient(tracking_config.tracking_uri)
    for trial in result.trials:
        child = runs[f"trial-{trial.index}"]
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        i = trial.index
        assert child.data.params == {"i": str(i), "x": str((i * 7) % 5)}
        assert child.data.metrics["score"] == i * 10 + (i * 7) % 5
        curve = client.get_metric_history(child.info.run_id, "score_curve")
        assert sorted(m.value for m in curve) == [i * 10 + s for s in range(5)]
    assert result.best.index == 7
    assert parent.data.tags["tracking_tasks.best_run_id"] == runs["trial-7"].info.run_id
    assert parent.data.metrics["best.score"] == 70 + (49 % 5)
    sweep_flow_run = parent.data.tags["prefect.flow_run_id"]  # the subflow's own flow run
    assert sweep_flow_run != str(state.state_details.flow_run_id)
    tables = [a.data for a in flow_run_artifacts(sweep_flow_run) if a.type == "markdown"]
    sweep_tables = [t for t in tables if "ranked by `score`" in t]
    assert len(sweep_tables) == 1 and sweep_tables[0].count("FINISHED") == 8


def test_sweep_survives_a_failed_trial_and_ties_go_to_the_earliest(
    tracking_config: TrackingConfig,
) -> None:
    def objective(params: dict[str, Any], log: RunLogger) -> dict[str, float]:
        if params["bad"]:
            raise ValueError("NaN loss")
        return {"loss": 0.5}

    @flow(**mlflow_state_hooks())
    def hpo() -> Any:
        trials = [{"bad": True, "k": 0}, {"bad": False, "k": 1}, {"bad": False, "k": 2}]
        return track_sweep(objective, trials, metric="loss", mode="min", context=tracking_config)

    result = hpo()
    runs = _by_name(tracking_config)
    assert runs["trial-0"].info.status == "FAILED"
    assert result.trials[0].status == "FAILED" and "NaN loss" in str(result.trials[0].error)
    assert result.trials[0].run_id == runs["trial-0"].info.run_id
    assert result.best.index == 1  # a tie with trial 2: the earliest wins
    assert runs["sweep"].info.status == "FINISHED"


def test_sweep_fails_when_every_trial_fails(tracking_config: TrackingConfig) -> None:
    def objective(params: dict[str, Any], log: RunLogger) -> dict[str, float]:
        raise ValueError("broken objective")

    @flow(**mlflow_state_hooks())
    def hpo() -> Any:
        return track_sweep(objective, [{"a": 1}, {"a": 2}], metric="loss", context=tracking_config)

    state = hpo(return_state=True)
    assert state.is_failed()
    assert {r.info.status for r in experiment_runs(tracking_config)} == {"FAILED"}


def test_benchmark_percentiles_machine_and_lineage(tracking_config: TrackingConfig) -> None:
    samples = [0.001 * (i + 1) for i in range(100)]

    def bench(stage: StageContext) -> BenchmarkOutput:
        return BenchmarkOutput(latencies_s=samples, batch_size=4, metrics={"accuracy": 0.97})

    @flow(**mlflow_state_hooks())
    def pipeline() -> Any:
        return track_benchmark(bench, {"batch": 4}, tracking_config, model_run="m" * 32)

    result = pipeline()
    expected = latency_summary(samples, 4)
    assert result.p50_ms == pytest.approx(50.5) == expected["latency_p50_ms"]
    assert result.p99_ms == pytest.approx(expected["latency_p99_ms"])
    assert result.throughput_per_s == pytest.approx(400 / sum(samples))
    run = MlflowClient(tracking_config.tracking_uri).get_run(result.run.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["latency_p90_ms"] == pytest.approx(expected["latency_p90_ms"])
    assert run.data.metrics["accuracy"] == 0.97
    assert run.data.tags["machine.cpu_count"].isdigit()
    assert run.data.tags["machine.python"].count(".") == 2
    assert run.data.tags["tracking_tasks.lineage.model"] == "m" * 32


def test_benchmark_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        latency_summary([0.1])


def test_conversion_uploads_measures_and_registers(
    tracking_config: TrackingConfig, tmp_path: Path
) -> None:
    converted = tmp_path / "model.json"
    converted.write_text('{"coef": [1, 2, 3]}')

    def convert(stage: StageContext) -> ConversionOutput:
        return ConversionOutput(artifact=converted, parity_max_abs_diff=1e-9)

    name = f"reg-{tracking_config.experiment_name}"[:60].replace("/", "-")

    @flow(**mlflow_state_hooks())
    def pipeline() -> Any:
        return track_conversion(
            convert, {"format": "json"}, tracking_config, source_run="x" * 32, register_as=name
        )

    result = pipeline()
    client = MlflowClient(tracking_config.tracking_uri)
    run = client.get_run(result.run.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["converted_size_bytes"] == converted.stat().st_size
    assert run.data.metrics["parity_max_abs_diff"] == 1e-9
    assert run.data.tags["tracking_tasks.lineage.source"] == "x" * 32
    got = client.download_artifacts(result.run.run_id, "converted/model.json", str(tmp_path / "d"))
    assert Path(got).read_bytes() == converted.read_bytes()
    (version,) = client.search_model_versions(f"name = '{name}'")
    assert version.version == result.model_version and version.run_id == result.run.run_id


def test_a_trackers_run_is_found_by_its_config_and_stage(tracking_config: TrackingConfig) -> None:
    """The trackers tag `stage` and the config hash; the finder filters on both."""
    from tracking_tasks import find_run_by_config_hash

    config = {"lr": 0.05, "epochs": 3}
    model = object()

    def train(stage: StageContext) -> StageOutput:
        return StageOutput(metrics={"f1": 0.8}, value=model)

    @flow(**mlflow_state_hooks())
    def pipeline() -> tuple[Any, Any, Any, Any]:
        ctx = setup_mlflow(tracking_config)
        result = track_training(train, config, ctx)
        found = find_run_by_config_hash(config, ctx, stage="training")
        as_benchmark = find_run_by_config_hash(config, ctx, stage="benchmark")
        fresh = find_run_by_config_hash.with_options(refresh_cache=True)
        return result, found, as_benchmark, fresh(config, ctx, stage="training", status=None)

    result, found, as_benchmark, any_status = pipeline()
    assert result.value is model  # handed back next to the metrics, never logged
    assert found is not None and found.run_id == result.run.run_id
    assert found.tags["stage"] == "training" and found.status == "FINISHED"
    assert as_benchmark is None
    assert any_status is not None and any_status.run_id == result.run.run_id
    assert _by_name(tracking_config)["training"].data.params == {"lr": "0.05", "epochs": "3"}
