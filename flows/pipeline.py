"""The end-to-end pipeline: sweep -> train the best config -> benchmark -> convert -> register
-> promote.

The sweep tunes the model's alpha with Optuna's TPE sampler over a log-uniform range,
four trials at a time.

A real small model: scikit-learn's SGD classifier on the handwritten digits data set
that ships with scikit-learn, trained in seconds on a CPU. Every stage is a tracked
subflow; the MLflow runs land under one experiment, the sweep's trials nested under it.

The models are MLflow 3 models: training logs the scikit-learn model (signature and input
example), conversion logs the converted JSON linear model as a pyfunc model
(``flows/linear_pyfunc.py``), registers it, and the ``champion`` alias moves to the new
version only when it beats the current champion's test accuracy. After a run,
``mlflow.pyfunc.load_model("models:/digits-sgd@champion")`` loads it and
``mlflow models serve -m models:/digits-sgd@champion --env-manager local`` serves it.

Run it with ``make demo`` (embedded default: a SQLite store ``mlflow.db`` in the working
directory and Prefect's ephemeral API), or deploy it with ``prefect.yaml``.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# a first flow in a fresh PREFECT_HOME migrates the temporary server's database: 20-30 s
# on 2 busy cores, past Prefect's 20 s default
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import numpy as np
import optuna
from prefect import flow
from pydantic import BaseModel, ConfigDict, Field
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split

from tracking_tasks import (
    BenchmarkOutput,
    ConversionOutput,
    ModelRef,
    RunLogger,
    StageContext,
    StageOutput,
    TrackingConfig,
    log_model,
    mlflow_state_hooks,
    promote_model,
    setup_mlflow,
    track_benchmark,
    track_conversion,
    track_sweep,
    track_training,
)
from tracking_tasks.tasks import log_model_metrics

#: The converted model's pyfunc code (MLflow's models from code: no pickle).
LINEAR_PYFUNC = Path(__file__).with_name("linear_pyfunc.py")


class PipelineConfig(BaseModel):
    """Parameters of one pipeline run (plain YAML in prefect.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment_name: str = Field(default="digits-pipeline", description="MLflow experiment.")
    alpha_min: float = Field(default=1e-5, gt=0, description="Smallest alpha the sweep tries.")
    alpha_max: float = Field(default=1e-1, gt=0, description="Largest alpha the sweep tries.")
    n_trials: int = Field(default=12, ge=1, description="Sweep trials (Optuna TPE).")
    startup_trials: int = Field(default=4, ge=1, description="Random trials before TPE.")
    max_concurrency: int = Field(default=4, ge=1, description="Sweep trials at once.")
    sweep_epochs: int = Field(default=5, ge=1, description="Epochs per sweep trial.")
    train_epochs: int = Field(default=15, ge=1, description="Epochs of the final training.")
    seed: int = Field(default=0, description="Seed of the split and the model.")
    benchmark_calls: int = Field(default=200, ge=2, description="Timed predict calls.")
    benchmark_batch: int = Field(default=32, ge=1, description="Rows per predict call.")
    register_as: str | None = Field(default="digits-sgd", description="Registered model.")
    champion_alias: str = Field(default="champion", description="Alias of the best version.")


def _data(seed: int) -> dict[str, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed)
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=0.2, random_state=seed
    )
    return {
        "x_fit": x_fit,
        "y_fit": y_fit,
        "x_val": x_val,
        "y_val": y_val,
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
    }


def _fit(
    alpha: float,
    epochs: int,
    seed: int,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    log: RunLogger,
) -> SGDClassifier:
    """Train epoch by epoch, logging both accuracies at every step."""
    model = SGDClassifier(loss="log_loss", alpha=alpha, random_state=seed)
    classes = np.unique(train[1])
    for epoch in range(epochs):
        model.partial_fit(*train, classes=classes)
        log.log_metrics(
            {"train_accuracy": model.score(*train), "val_accuracy": model.score(*val)},
            step=epoch,
        )
    return model


def _save(model: SGDClassifier, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pkl").write_bytes(pickle.dumps(model))
    return folder


def _convert(
    model: SGDClassifier, test: tuple[np.ndarray, np.ndarray], out: Path, stage: StageContext
) -> ConversionOutput:
    """To a dependency-free JSON linear model (logits = x @ coef.T + intercept), logged
    as an MLflow pyfunc model with its test accuracy and parity linked to it."""
    x_test, y_test = test
    out.mkdir(exist_ok=True)
    spec = {
        "coef": model.coef_.tolist(),
        "intercept": model.intercept_.tolist(),
        "classes": model.classes_.tolist(),
        "input_scale": 1 / 16.0,
    }
    (out / "linear_model.json").write_text(json.dumps(spec))
    loaded = json.loads((out / "linear_model.json").read_text())
    converted = x_test @ np.array(loaded["coef"]).T + np.array(loaded["intercept"])
    parity = float(np.max(np.abs(converted - model.decision_function(x_test))))
    labels = np.array(loaded["classes"])[np.argmax(converted, axis=1)]
    accuracy = float(np.mean(labels == y_test))
    logged = log_model(
        stage.run,
        LINEAR_PYFUNC,
        "digits-sgd-linear",
        input_example=x_test[:5],
        save_kwargs={"artifacts": {"linear_model": str(out / "linear_model.json")}},
        extra_pip_requirements=[f"numpy=={np.__version__}"],
        metrics={"test_accuracy": accuracy, "parity_max_abs_diff": parity},
        model_type="linear-json",
    )
    return ConversionOutput(
        artifact=out, parity_max_abs_diff=parity, metrics={"test_accuracy": accuracy}, model=logged
    )


def _latencies(model: SGDClassifier, x: np.ndarray, calls: int, batch: int) -> list[float]:
    latencies = []
    for call in range(calls):
        start = (call * batch) % (len(x) - batch)
        t0 = time.perf_counter()
        model.predict(x[start : start + batch])
        latencies.append(time.perf_counter() - t0)
    return latencies


@flow(name="digits-pipeline", **mlflow_state_hooks())
def pipeline(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """Sweep the SGD classifier's alpha, train the best, benchmark, convert and register."""
    data = _data(config.seed)
    fit_split, val_split = (data["x_fit"], data["y_fit"]), (data["x_val"], data["y_val"])
    train_split, test_split = (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
    ctx = setup_mlflow(TrackingConfig(experiment_name=config.experiment_name))
    work = Path(tempfile.mkdtemp(prefix="digits-pipeline-"))

    def objective(trial: optuna.Trial, log: RunLogger) -> StageOutput:
        alpha = trial.suggest_float("alpha", config.alpha_min, config.alpha_max, log=True)
        model = _fit(alpha, config.sweep_epochs, config.seed, fit_split, val_split, log)
        return StageOutput(
            metrics={"val_accuracy": model.score(*val_split)},
            checkpoint=_save(model, work / f"trial-{trial.number}"),
        )

    # TPE proposes each alpha from the trials told so far, over a log-uniform range;
    # constant_liar keeps the 4 trials in flight from all probing the same place
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=config.startup_trials, constant_liar=True, seed=config.seed
    )
    sweep = track_sweep(
        objective,
        metric="val_accuracy",
        mode="max",
        context=ctx,
        sampler=sampler,
        search_space={
            "alpha": optuna.distributions.FloatDistribution(
                config.alpha_min, config.alpha_max, log=True
            )
        },
        n_trials=config.n_trials,
        max_concurrency=config.max_concurrency,
    )
    best_alpha = float(sweep.best.params["alpha"])

    def train(stage: StageContext) -> StageOutput:
        model = _fit(
            best_alpha, config.train_epochs, config.seed, train_split, test_split, stage.log
        )
        accuracy = model.score(*test_split)
        # the trained model as an MLflow model (skops, signature from the input example)
        logged = log_model(
            stage.run,
            model,
            "digits-sgd-sklearn",
            input_example=data["x_test"][:5],
            metrics={"test_accuracy": accuracy},
            model_type="classifier",
        )
        return StageOutput(metrics={"test_accuracy": accuracy}, value=(model, logged))

    training = track_training(
        train,
        {"alpha": best_alpha, "epochs": config.train_epochs, "seed": config.seed},
        ctx,
        sweep_run=sweep.run,
        trial_run=sweep.best.run_id,
    )
    model: SGDClassifier = training.value[0]
    trained: ModelRef = training.value[1]

    def bench(stage: StageContext) -> BenchmarkOutput:
        return BenchmarkOutput(
            latencies_s=_latencies(
                model, data["x_test"], config.benchmark_calls, config.benchmark_batch
            ),
            batch_size=config.benchmark_batch,
            metrics={"test_accuracy": model.score(*test_split)},
        )

    benchmark = track_benchmark(
        bench,
        {"calls": config.benchmark_calls, "batch": config.benchmark_batch},
        ctx,
        model_run=training.run,
    )
    # the latency the benchmark stage measured belongs to the model it measured
    log_model_metrics(
        trained, {"latency_p50_ms": benchmark.p50_ms, "latency_p99_ms": benchmark.p99_ms},
        run=benchmark.run,
    )  # fmt: skip
    conversion = track_conversion(
        lambda stage: _convert(model, test_split, work / "converted", stage),
        {"format": "linear-json"},
        ctx,
        source_run=training.run,
        register_as=config.register_as,
    )
    promotion = None
    if conversion.registered is not None:
        # champion moves only when the new version's test accuracy beats the champion's
        promotion = promote_model(
            conversion.registered,
            "test_accuracy",
            alias=config.champion_alias,
            run=conversion.run,
        )
    return {
        "sweep": sweep.run.run_id,
        "best_alpha": best_alpha,
        "training": training.run.run_id,
        "test_accuracy": training.metrics["test_accuracy"],
        "benchmark": benchmark.run.run_id,
        "latency_p99_ms": benchmark.p99_ms,
        "conversion": conversion.run.run_id,
        "model_version": conversion.model_version,
        "model_name": conversion.model_name,
        "trained_model": trained.uri,
        "converted_model": conversion.model.uri if conversion.model else None,
        "champion_alias": config.champion_alias,
        "promotion": promotion.reason if promotion else None,
        "tracking_uri": ctx.tracking_uri,
        "experiment_id": ctx.experiment_id,
    }


def main() -> None:
    summary = pipeline()
    print()
    print(
        f"Pipeline done: best alpha {summary['best_alpha']}, test accuracy "
        f"{summary['test_accuracy']:.3f}, p99 latency {summary['latency_p99_ms']:.3f} ms, "
        f"model version {summary['model_version']}"
    )
    print(f"  MLflow runs in experiment {summary['experiment_id']} at {summary['tracking_uri']}:")
    for stage in ("sweep", "training", "benchmark", "conversion"):
        print(f"    {stage:<11} {summary[stage]}")
    print(f"  trained model {summary['trained_model']}, converted {summary['converted_model']}")
    uri = summary["tracking_uri"]
    if summary["model_name"]:
        champion = f"models:/{summary['model_name']}@{summary['champion_alias']}"
        print(f"  {summary['promotion']}")
        print("  load the champion in Python (the tracking URI set first):")
        print(f"    import mlflow; mlflow.set_tracking_uri({uri!r})")
        print(f"    mlflow.pyfunc.load_model({champion!r}).predict(x)")
        print("  serve it with MLflow's own server (it runs uvicorn from PATH):")
        print(
            f"    PATH=.venv/bin:$PATH MLFLOW_TRACKING_URI={uri} mlflow models serve "
            f"-m {champion} --env-manager local --port 5001"
        )
    if uri.startswith("sqlite:"):
        print("  open them in the MLflow UI:")
        print(f"    .venv/bin/mlflow ui --backend-store-uri {uri} --port 5000")
        print(
            f"    then http://127.0.0.1:5000/#/experiments/{summary['experiment_id']}?workflowType=machine_learning"
        )


if __name__ == "__main__":
    main()
