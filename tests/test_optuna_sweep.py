"""Optuna sweeps through track_sweep: concurrency, pruning, failures, and resuming a study."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from prefect import flow

from tests.helpers import experiment_runs
from tracking_tasks import RunLogger, TrackingConfig, mlflow_state_hooks, setup_mlflow, track_sweep
from tracking_tasks.errors import InvalidArgumentError

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "x": optuna.distributions.FloatDistribution(-10.0, 10.0),
    "depth": optuna.distributions.IntDistribution(1, 8),
}


def _children(config: TrackingConfig, parent_id: str) -> dict[int, Any]:
    runs = [
        r for r in experiment_runs(config) if r.data.tags.get("mlflow.parentRunId") == parent_id
    ]
    by_number: dict[int, Any] = {}
    for run in runs:
        number = int(run.data.tags["tracking_tasks.trial_index"])
        assert number not in by_number, f"two MLflow runs for trial {number}"
        by_number[number] = run
    return by_number


def test_twenty_trials_four_at_a_time_pruned_and_failed_run_by_run(
    tracking_config: TrackingConfig,
) -> None:
    lock = threading.Lock()
    running = [0, 0]  # now, most at once

    def objective(trial: optuna.Trial, log: RunLogger) -> dict[str, float]:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            time.sleep(0.15)
            x = trial.suggest_float("x", -10.0, 10.0)
            for step in range(3):
                log.log_metric("curve", x * step, step)
                trial.report(x * step, step)
            if trial.number == 7:
                raise FloatingPointError("diverged")
            if trial.number % 6 == 5:
                raise optuna.TrialPruned()
            return {"score": -((x - 2.0) ** 2), "aux": 1.0}
        finally:
            with lock:
                running[0] -= 1

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=8)
    )

    @flow(**mlflow_state_hooks())
    def hpo() -> Any:
        ctx = setup_mlflow(tracking_config)
        return track_sweep(
            objective,
            metric="score",
            context=ctx,
            study=study,
            search_space=SPACE,
            n_trials=20,
            max_concurrency=4,
        )

    result = hpo()
    assert running[1] == 4  # four in flight, never more
    assert len(study.trials) == 20 and len(result.trials) == 20
    states = {t.number: t.state.name for t in study.trials}
    pruned = {n for n in range(20) if n % 6 == 5}
    assert {n for n, s in states.items() if s == "PRUNED"} == pruned
    assert {n for n, s in states.items() if s == "FAIL"} == {7}

    client = MlflowClient(tracking_config.tracking_uri)
    parent = client.get_run(result.run.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "sweep"
    assert parent.data.tags["tracking_tasks.optuna_study"] == study.study_name
    assert parent.data.params["sampler"] == "TPESampler"
    children = _children(tracking_config, parent.info.run_id)
    assert sorted(children) == list(range(20))
    for number, run in children.items():
        frozen = study.trials[number]
        assert run.info.run_name == f"trial-{number}"
        assert run.data.tags["stage"] == "sweep-trial"
        assert run.data.params["x"] == str(frozen.params["x"])  # drawn by the sampler
        assert run.data.params["depth"] == str(frozen.params["depth"])
        assert frozen.user_attrs["tracking_tasks.mlflow_run_id"] == run.info.run_id
        assert len(client.get_metric_history(run.info.run_id, "curve")) == 3
        if number == 7:
            assert run.info.status == "FAILED" and "score" not in run.data.metrics
        elif number in pruned:
            assert run.info.status == "KILLED"
            assert run.data.tags["tracking_tasks.pruned"] == "true"
        else:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["score"] == frozen.value
            assert "tracking_tasks.pruned" not in run.data.tags
    assert result.trials[7].status == "FAILED" and "diverged" in str(result.trials[7].error)
    assert {t.index for t in result.trials if t.status == "KILLED"} == pruned
    assert result.best.index == study.best_trial.number
    assert parent.data.tags["tracking_tasks.best_run_id"] == children[result.best.index].info.run_id
    assert parent.data.tags["tracking_tasks.best_trial"] == str(study.best_trial.number)
    assert parent.data.metrics["best.score"] == study.best_value


@pytest.mark.backends  # on PostgreSQL, the study's storage is a PostgreSQL database too
def test_retried_sweep_resumes_the_study_without_duplicates(
    tracking_config: TrackingConfig, rdb_storage: str
) -> None:
    storage = rdb_storage  # its own database, beside MLflow's
    study = optuna.create_study(
        study_name="resume-me",
        storage=storage,
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=3),
    )
    calls: list[int] = []
    stopped = threading.Event()

    def objective(trial: optuna.Trial, log: RunLogger) -> float:
        calls.append(trial.number)
        return (trial.suggest_float("x", -10.0, 10.0) - 1.0) ** 2

    def lose_the_node_once(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        finished = [t for t in study.trials if t.state.is_finished()]
        if len(finished) >= 5 and not stopped.is_set():
            stopped.set()
            raise ConnectionError("lost the node mid-study")

    @flow(**mlflow_state_hooks())
    def hpo() -> Any:
        ctx = setup_mlflow(tracking_config)
        return track_sweep.with_options(retries=1, retry_delay_seconds=0)(
            objective,
            metric="loss",
            context=ctx,
            study=study,
            search_space={"x": SPACE["x"]},
            n_trials=12,
            max_concurrency=2,
            callbacks=[lose_the_node_once],
        )

    result = hpo()
    assert stopped.is_set()
    assert sorted(calls) == list(range(12))  # each trial ran once, across both attempts
    reloaded = optuna.load_study(study_name="resume-me", storage=storage)
    assert [t.state.name for t in reloaded.trials] == ["COMPLETE"] * 12
    parent_ids = {
        r.info.run_id for r in experiment_runs(tracking_config) if r.data.tags["stage"] == "sweep"
    }
    assert parent_ids == {result.run.run_id}  # the retry reopened the sweep's run
    children = _children(tracking_config, result.run.run_id)
    assert sorted(children) == list(range(12))
    assert {r.info.status for r in children.values()} == {"FINISHED"}
    assert MlflowClient(tracking_config.tracking_uri).get_run(result.run.run_id).info.status == (
        "FINISHED"
    )
    assert result.best.index == reloaded.best_trial.number

    # a later flow run on the same study asks only for what is missing, in the same run
    @flow(**mlflow_state_hooks())
    def more() -> Any:
        again = optuna.load_study(study_name="resume-me", storage=storage)
        return track_sweep(
            objective, metric="loss", context=tracking_config, study=again, n_trials=15
        )

    later = more()
    assert later.run.run_id == result.run.run_id
    assert sorted(calls) == list(range(15))
    assert sorted(_children(tracking_config, result.run.run_id)) == list(range(15))
    assert len(later.trials) == 15


def test_a_sampler_makes_a_study_and_mode_must_agree(tracking_config: TrackingConfig) -> None:
    def objective(trial: optuna.Trial, log: RunLogger) -> float:
        return trial.suggest_int("k", 0, 3) * 1.0

    @flow(**mlflow_state_hooks())
    def hpo() -> Any:
        return track_sweep(
            objective,
            metric="k",
            mode="min",
            context=tracking_config,
            sampler=optuna.samplers.GridSampler({"k": [0, 1, 2, 3]}),
            n_trials=4,
            max_concurrency=1,
        )

    result = hpo()
    assert result.mode == "min" and result.best.params == {"k": 0}
    maximising = optuna.create_study(direction="maximize")

    @flow
    def contradicting() -> Any:
        return track_sweep(
            objective,
            metric="k",
            mode="min",
            context=tracking_config,
            study=maximising,
            n_trials=1,
        )

    with pytest.raises(InvalidArgumentError, match="contradicts"):
        contradicting()

    @flow
    def no_count() -> Any:
        return track_sweep(objective, metric="k", context=tracking_config, study=maximising)

    with pytest.raises(InvalidArgumentError, match="n_trials"):
        no_count()


def test_a_trial_a_dead_attempt_left_running_is_asked_again(
    tracking_config: TrackingConfig, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(
        study_name="crashed", storage=storage, sampler=optuna.samplers.RandomSampler(seed=5)
    )
    stale = study.ask({"x": SPACE["x"]})  # an attempt that died with this trial running
    seen: list[float] = []

    def objective(trial: optuna.Trial, log: RunLogger) -> float:
        seen.append(trial.params["x"])
        return float(trial.params["x"])

    @flow(**mlflow_state_hooks())
    def hpo() -> Any:
        return track_sweep(
            objective,
            metric="x",
            context=tracking_config,
            study=study,
            search_space={"x": SPACE["x"]},
            n_trials=3,
        )

    result = hpo()
    reloaded = optuna.load_study(study_name="crashed", storage=storage)
    assert [t.state.name for t in reloaded.trials] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert stale.params["x"] in seen  # its params were asked again
    assert reloaded.user_attrs["tracking_tasks.interrupted"] == [0]
    assert sorted(t.index for t in result.trials) == [1, 2, 3]  # the interrupted one is left out
    assert sorted(_children(tracking_config, result.run.run_id)) == [1, 2, 3]
