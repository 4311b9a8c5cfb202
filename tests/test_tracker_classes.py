"""The seed-named tracker classes: in and out of a flow, on success and on an exception."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from mlflow import MlflowClient
from prefect import flow

from tests.helpers import experiment_runs
from tracking_tasks import TrackingConfig, create_mlflow_run, find_mlflow_runs, mlflow_state_hooks
from tracking_tasks.compat import (
    MLflowBenchmarkTracker,
    MLflowConversionTracker,
    MLflowSweepTracker,
    MLflowTrainingTracker,
)
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.tags import TRIAL_INDEX_TAG

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _where(config: TrackingConfig) -> TrackingConfig:
    return TrackingConfig(tracking_uri=config.tracking_uri)


def _by_name(config: TrackingConfig) -> dict[str, Any]:
    return {r.info.run_name: r for r in experiment_runs(config)}


def test_training_tracker_outside_a_flow(tracking_config: TrackingConfig, tmp_path: Path) -> None:
    tracker = MLflowTrainingTracker(
        str(tracking_config.experiment_name), tracking=_where(tracking_config)
    )
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "weights.bin").write_bytes(b"\x00" * 64)
    with tracker.start_training_run(
        "final-distilbert", backbone="distilbert", output_dir=tmp_path / "outputs"
    ) as run:
        assert mlflow.active_run().info.run_id == run.run_id
        tracker.log_training_parameters({"training": {"learning_rate": 2e-5}}, random_seed=7)
        tracker.log_training_metrics({"macro-f1": 0.9}, {"PER": {"f1": 0.8}})
        tracker.log_training_artifacts(ckpt)
        mlflow.log_metric("fluent", 1.0)
    with pytest.raises(RuntimeError, match="CUDA"), tracker.start_training_run("oom"):
        tracker.log_training_metrics({"loss": 9.0})
        raise RuntimeError("CUDA out of memory")
    assert mlflow.active_run() is None

    runs = _by_name(tracking_config)
    good, bad = runs["final-distilbert"], runs["oom"]
    assert good.info.status == "FINISHED" and bad.info.status == "FAILED"
    assert good.data.tags["stage"] == "training"
    assert good.data.params["backbone"] == "distilbert"
    assert good.data.params["training.learning_rate"] == "2e-05"
    assert good.data.params["random_seed"] == "7"
    assert good.data.metrics == {"macro-f1": 0.9, "PER_f1": 0.8, "fluent": 1.0}
    assert bad.data.metrics == {"loss": 9.0}
    client = MlflowClient(tracking_config.tracking_uri)
    assert "checkpoint/weights.bin" in [
        a.path for a in client.list_artifacts(good.info.run_id, "checkpoint")
    ]
    with pytest.raises(InvalidArgumentError, match="inside the block"):
        tracker.log_training_metrics({"loss": 1.0})


def test_sweep_tracker_in_a_flow_with_an_optuna_study(
    tracking_config: TrackingConfig, tmp_path: Path
) -> None:
    experiment = str(tracking_config.experiment_name)
    configs = tmp_path / "project" / "config"
    configs.mkdir(parents=True)
    (configs / "train.yaml").write_text("lr: 2e-5\n")
    mounted = tmp_path / "mnt" / "drive" / "trial_3" / "checkpoint"  # far from the code
    mounted.mkdir(parents=True)
    (mounted / "model.bin").write_bytes(b"\x01" * 128)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))

    @flow(**mlflow_state_hooks())
    def hpo() -> dict[str, Any]:
        sweep = MLflowSweepTracker(experiment, tracking=_where(tracking_config))
        hpo_config = {
            "objective": {"metric": "f1", "goal": "maximize"},
            "sampling": {"max_trials": 4},
        }
        with sweep.start_sweep_run(
            "hpo_distilbert",
            hpo_config,
            backbone="distilbert",
            study_name="s1",
            checkpoint_config={"enabled": True},
            storage_path=None,
            should_resume=False,
        ) as parent:
            for _ in range(4):
                trial = study.ask()
                lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
                with create_mlflow_run(
                    run_name=f"trial_{trial.number}", tags={TRIAL_INDEX_TAG: str(trial.number)}
                ):
                    f1 = 0.8 + trial.number * 0.01 if trial.number != 2 else 0.99
                    mlflow.log_params({"lr": lr})
                    mlflow.log_metric("f1", f1)
                study.tell(trial, f1)
            best_run = sweep.log_final_metrics(study, "f1", parent.run_id)
            with pytest.raises(InvalidArgumentError, match="config_dir"):
                sweep.log_best_checkpoint(study, prefer_checkpoint_dir=mounted)
            with pytest.raises(InvalidArgumentError, match="checkpoint_dir"):
                sweep.log_best_checkpoint(study, hpo_output_dir=tmp_path, config_dir=configs)
            artifacts = sweep.log_best_checkpoint(
                study, checkpoint_dir=mounted, config_dir=configs, refit_ok=True
            )
        return {"parent": parent, "best_run": best_run, "artifacts": artifacts}

    out = hpo()
    runs = _by_name(tracking_config)
    parent = runs["hpo_distilbert"]
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "hpo"
    assert parent.data.params["objective_metric"] == "f1"
    assert (
        parent.data.params["max_trials"] == "4" and parent.data.params["backbone"] == "distilbert"
    )
    assert runs["trial_2"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert out["best_run"] == runs["trial_2"].info.run_id
    assert parent.data.tags["tracking_tasks.best_run_id"] == runs["trial_2"].info.run_id
    assert parent.data.tags["tracking_tasks.best_trial"] == "2"
    assert parent.data.tags["tracking_tasks.refit_completed"] == "true"
    assert parent.data.metrics["best.f1"] == 0.99 and parent.data.metrics["n_trials"] == 4
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    client = MlflowClient(tracking_config.tracking_uri)
    listed = [a.path for a in client.list_artifacts(parent.info.run_id, "best_checkpoint/config")]
    assert "best_checkpoint/config/train.yaml" in listed
    # the seed's own filter finds what the sweep tracker wrote (on the server it names:
    # an earlier setup_mlflow never becomes the default of a later call)
    found = find_mlflow_runs(
        experiment_name=experiment,
        filter_string="tags.stage='hpo'",
        tracking_uri=tracking_config.tracking_uri,
    )
    assert [r.info.run_id for r in found] == [parent.info.run_id]


def test_benchmark_and_conversion_trackers_lineage_and_failure_in_a_flow(
    tracking_config: TrackingConfig, tmp_path: Path
) -> None:
    experiment = str(tracking_config.experiment_name)
    report = tmp_path / "benchmark.json"
    data = {"batch_1": {"mean_ms": 4.0, "p99_ms": 9.0}, "batch_8": {"mean_ms": 12.5}}
    report.write_text(json.dumps(data))
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x02" * 2048)

    @flow(**mlflow_state_hooks())
    def evaluate() -> str:
        bench = MLflowBenchmarkTracker(experiment, tracking=_where(tracking_config))
        with bench.start_benchmark_run(
            "bench_distilbert",
            backbone="distilbert",
            benchmark_source="hpo_trial",
            study_key_hash="ignored",
            hpo_trial_run_id="t" * 32,
            hpo_refit_run_id="r" * 32,
            hpo_sweep_run_id="s" * 32,
        ):
            bench.log_benchmark_results([1, 8], 100, 10, 256, "cpu", report, data)
        convert = MLflowConversionTracker(experiment, tracking=_where(tracking_config))
        try:
            with convert.start_conversion_run("onnx", "onnx_int8", source_training_run="r" * 32):
                convert.log_conversion_parameters("ckpt", "onnx", "int8", 17, "distilbert")
                convert.log_conversion_results(True, model, original_checkpoint_size=0.01)
                raise ValueError("smoke test failed")
        except ValueError:
            return "kept the previous model"
        return "converted"

    assert evaluate() == "kept the previous model"
    runs = _by_name(tracking_config)
    bench_run, conv = runs["bench_distilbert"], runs["onnx"]
    assert bench_run.info.status == "FINISHED" and conv.info.status == "FAILED"
    tags = bench_run.data.tags
    assert tags["stage"] == "benchmark"
    assert tags["tracking_tasks.lineage.trial"] == "t" * 32
    assert tags["tracking_tasks.lineage.refit"] == "r" * 32
    assert tags["tracking_tasks.lineage.sweep"] == "s" * 32
    assert tags["tracking_tasks.lineage.model"] == "r" * 32  # refit > trial > sweep
    assert bench_run.data.metrics["latency_batch_1_ms"] == 4.0
    assert bench_run.data.metrics["batch_1_p99_ms"] == 9.0
    assert bench_run.data.params["benchmark_device"] == "cpu"
    assert conv.data.tags["tracking_tasks.lineage.source"] == "r" * 32
    assert conv.data.metrics["conversion_success"] == 1.0
    assert conv.data.params["quantization"] == "int8"
