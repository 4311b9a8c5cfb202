"""The seed-named tracker classes: in and out of a flow, on success and on an exception."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
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
from tracking_tasks.errors import InvalidArgumentError, TrackingTasksError
from tracking_tasks.tags import (
    BEST_TRIAL_TAG,
    CONFIG_HASH_TAG,
    GROUP_TAG,
    TRIAL_CHECKPOINT_ATTR,
    TRIAL_INDEX_TAG,
)

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
    with tracker.start_training_run("final-distilbert", backbone="distilbert") as run:
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


def test_refused_arguments_raise_naming_the_fix_before_anything_is_written(
    tracking_config: TrackingConfig, tmp_path: Path
) -> None:
    experiment = str(tracking_config.experiment_name)
    where = _where(tracking_config)
    sweep = MLflowSweepTracker(experiment, tracking=where)
    training = MLflowTrainingTracker(experiment, tracking=where)
    bench = MLflowBenchmarkTracker(experiment, tracking=where)
    convert = MLflowConversionTracker(experiment, tracking=where)
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.9))
    sweep_id = "0" * 32
    naming = object()  # the seed's NamingContext
    # (the call, the argument the error names, what it says to pass instead)
    cases: list[tuple[Callable[[], Any], str, str]] = [
        (lambda: sweep.start_sweep_run("hpo", context=naming), "context", "run_name="),
        (lambda: sweep.start_sweep_run("hpo", output_dir="out"), "output_dir", "checkpoint_dir="),
        (lambda: training.start_training_run("t", context=naming), "context", "run_name="),
        (lambda: training.start_training_run("t", output_dir=tmp_path), "output_dir", "upload"),
        (lambda: bench.start_benchmark_run("b", context=naming), "context", "run_name="),
        (lambda: bench.start_benchmark_run("b", output_dir="o"), "output_dir", "checkpoint_dir="),
        (
            lambda: bench.start_benchmark_run("b", study_key_hash="9f2c"),
            "study_key_hash",
            "hpo_sweep_run_id=",
        ),
        (
            lambda: bench.start_benchmark_run("b", trial_key_hash="77ab"),
            "trial_key_hash",
            "hpo_trial_run_id=",
        ),
        (lambda: convert.start_conversion_run("c", "onnx", context=naming), "context", "run_name="),
        (
            lambda: convert.start_conversion_run("c", "onnx", output_dir="o"),
            "output_dir",
            "config_dir=",
        ),
        (
            lambda: sweep.log_final_metrics(study, "f1", sweep_id, run_name="hpo"),
            "run_name",
            "parent_run_id=",
        ),
        (
            lambda: sweep.log_final_metrics(study, "f1", sweep_id, hpo_output_dir=tmp_path),
            "hpo_output_dir",
            "log_best_checkpoint(checkpoint_dir=",
        ),
        (
            lambda: sweep.log_final_metrics(study, "f1", sweep_id, output_dir=tmp_path),
            "output_dir",
            "config_dir=",
        ),
        (
            lambda: sweep.log_final_metrics(study, "f1", sweep_id, backbone="bert"),
            "backbone",
            "start_sweep_run(backbone=)",
        ),
        (
            lambda: sweep.log_final_metrics(study, "f1", sweep_id, fold_splits=[0, 1]),
            "fold_splits",
            "checkpoint_dir=",
        ),
        (
            lambda: sweep.log_final_metrics(study, "f1", sweep_id, hpo_config={"a": 1}),
            "hpo_config",
            "start_sweep_run(hpo_config=)",
        ),
        (
            lambda: sweep.log_final_metrics(study, "f1", sweep_id, child_runs_map=[(0, "r")]),
            "child_runs_map",
            TRIAL_INDEX_TAG,
        ),
        (
            lambda: sweep.log_best_checkpoint(study, tmp_path, config_dir=tmp_path),
            "hpo_output_dir",
            "checkpoint_dir=",
        ),
        (
            lambda: sweep.log_best_checkpoint(backbone="bert", checkpoint_dir=tmp_path),
            "backbone",
            "start_sweep_run(backbone=)",
        ),
        (
            lambda: sweep.log_best_checkpoint(fold_splits=[0], checkpoint_dir=tmp_path),
            "fold_splits",
            "checkpoint_dir=",
        ),
    ]
    for call, name, fix in cases:
        with pytest.raises(InvalidArgumentError, match=rf"refuses {name}: .*{re.escape(fix)}"):
            call()
    # honoured arguments given what they cannot mean: refused as early
    with pytest.raises(InvalidArgumentError, match=r"run_id=.*parent_run_id=.*pass one"):
        sweep.log_final_metrics(study, "f1", sweep_id, run_id="1" * 32)
    with pytest.raises(InvalidArgumentError, match=r"run_id=.*parent_run_id=.*pass one"):
        sweep.log_best_checkpoint(run_id="1" * 32, parent_run_id=sweep_id)
    with pytest.raises(InvalidArgumentError, match="config_dir but has no checkpoint"):
        sweep.log_final_metrics(study, "f1", sweep_id, config_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="storage_path is the study's storage"):
        sweep.start_sweep_run("hpo", storage_path=study)  # type: ignore[arg-type]
    # nothing was written: not a run, not even the experiment
    client = MlflowClient(tracking_config.tracking_uri)
    assert client.get_experiment_by_name(experiment) is None


def _trial(study: optuna.Study, parent: str, f1: float, ckpt: Path | None) -> str:
    """One trial of the caller's own loop: its nested run tagged with its number."""
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-3, log=True)
    if ckpt is not None:
        trial.set_user_attr(TRIAL_CHECKPOINT_ATTR, str(ckpt))
    with create_mlflow_run(  # no context: the tracker's setup is the process's last
        run_name=f"trial_{trial.number}",
        parent_run_id=parent,
        tags={TRIAL_INDEX_TAG: str(trial.number)},
    ) as run:
        mlflow.log_metric("f1", f1)
    study.tell(trial, f1)
    return run.run_id


def test_honoured_arguments_reach_mlflow(tracking_config: TrackingConfig, tmp_path: Path) -> None:
    experiment = str(tracking_config.experiment_name)
    where = _where(tracking_config)
    sweep = MLflowSweepTracker(experiment, tracking=where)
    hpo_config = {"objective": {"metric": "f1", "goal": "maximize"}, "sampling": {"max_trials": 3}}
    data = {"dataset": "conll", "split": {"dev": 0.1}}

    def seed_sweep(name: str, data_config: dict[str, Any]) -> str:
        # the seed's positional call, its refused arguments passed as None: accepted
        with sweep.start_sweep_run(
            name, hpo_config, "distilbert", "s1", {"enabled": True},
            "postgresql://ml:hunter2@db/optuna", False, None, None, "nightly-7",
            data_config, {"batch_sizes": [1, 8]}, {"epochs": 3},
        ) as run:  # fmt: skip
            pass
        return run.run_id

    first, other_data, same_again = (
        seed_sweep("hpo_a", data),
        seed_sweep("hpo_b", {**data, "dataset": "wikiner"}),
        seed_sweep("hpo_c", data),
    )
    runs = {r.info.run_id: r for r in experiment_runs(tracking_config)}
    params, tags = runs[first].data.params, runs[first].data.tags
    assert params["data.dataset"] == "conll" and params["data.split.dev"] == "0.1"
    assert params["train.epochs"] == "3" and params["benchmark.batch_sizes"] == "[1, 8]"
    assert params["checkpoint.enabled"] == "True" and params["resumed"] == "False"
    assert params["storage_path"] == "postgresql://ml:***@db/optuna"
    assert "hunter2" not in json.dumps([params, tags])
    assert tags[GROUP_TAG] == "nightly-7"
    hashes = {run_id: runs[run_id].data.tags[CONFIG_HASH_TAG] for run_id in runs}
    assert hashes[first] == hashes[same_again] != hashes[other_data]  # the configs are hashed

    # log_final_metrics: run_id names the sweep run; the best trial's recorded checkpoint
    # goes up with config_dir; should_resume keeps an earlier attempt's best.* params
    configs = tmp_path / "config"
    configs.mkdir()
    (configs / "train.yaml").write_text("lr: 2e-5\n")
    ckpt = tmp_path / "mnt" / "trial_1"
    ckpt.mkdir(parents=True)
    (ckpt / "model.bin").write_bytes(b"\x03" * 256)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(1))
    _trial(study, first, 0.80, None)
    best_run = _trial(study, first, 0.90, ckpt)
    with pytest.raises(InvalidArgumentError, match="pass config_dir="):
        sweep.log_final_metrics(study, "f1", run_id=first)
    client = MlflowClient(tracking_config.tracking_uri)
    assert client.get_run(first).data.metrics == {}  # refused before writing
    assert sweep.log_final_metrics(study, "f1", run_id=first, config_dir=configs) == best_run
    assert sweep.log_final_metrics(study, "f1", other_data, upload_checkpoint=False) is None
    uploaded = [a.path for a in client.list_artifacts(first, "best_checkpoint/config")]
    assert "best_checkpoint/config/train.yaml" in uploaded
    assert client.list_artifacts(other_data) == []
    _trial(study, first, 0.95, None)  # a resumed study finds a better trial
    with pytest.raises(TrackingTasksError):  # MLflow never changes a param
        sweep.log_final_metrics(study, "f1", first, upload_checkpoint=False)
    newer = sweep.log_final_metrics(study, "f1", first, should_resume=True, upload_checkpoint=False)
    summary = client.get_run(first).data
    assert (
        summary.tags[BEST_TRIAL_TAG] == "2" and summary.tags["tracking_tasks.best_run_id"] == newer
    )
    assert summary.metrics["best.f1"] == 0.95 and summary.metrics["n_trials"] == 3
    assert summary.params["best.lr"] == params_of(study, 1)  # kept: trial 1's

    # log_best_checkpoint: the study's best trial recorded the checkpoint; run_id is the sweep
    study_with_ckpt = optuna.create_study(direction="minimize")
    _trial(study_with_ckpt, same_again, 0.2, ckpt)
    _trial(study_with_ckpt, same_again, 0.5, None)
    sweep.log_best_checkpoint(study_with_ckpt, run_id=same_again, config_dir=configs)
    uploaded = [a.path for a in client.list_artifacts(same_again, "best_checkpoint")]
    assert uploaded == ["best_checkpoint/checkpoint", "best_checkpoint/config"]

    # group_id tags every stage's run
    training = MLflowTrainingTracker(experiment, tracking=where)
    bench = MLflowBenchmarkTracker(experiment, tracking=where)
    convert = MLflowConversionTracker(experiment, tracking=where)
    with training.start_training_run("train", "distilbert", "final", None, None, None, "g2"):
        pass
    with bench.start_benchmark_run("bench", "distilbert", "final_training", None, None, None, "g2"):
        pass
    with convert.start_conversion_run("onnx", "onnx_int8", None, None, None, None, "g2"):
        pass
    grouped = find_mlflow_runs(
        experiment_name=experiment,
        filter_string=f"tags.`{GROUP_TAG}` = 'g2'",
        tracking_uri=tracking_config.tracking_uri,
    )
    assert sorted(r.info.run_name for r in grouped) == ["bench", "onnx", "train"]


def params_of(study: optuna.Study, number: int) -> str:
    """A trial's ``lr`` as MLflow shows a logged param."""
    return str(study.trials[number].params["lr"])
