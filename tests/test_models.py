"""MLflow 3 logged models, against a real `mlflow server` and the suite's Prefect API:
logging each kind, idempotent retries, faults and SIGKILLs mid-upload, linked metrics,
the model finders, the registry and alias promotion."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.pyfunc import PythonModel
from prefect import flow, states, task
from prefect.client.orchestration import get_client as prefect_client
from prefect.settings import PREFECT_API_URL
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, SGDClassifier

from tests.servers import FaultProxy, MlflowServer, start_fault_proxy, stop_process_group
from tracking_tasks import (
    ModelRef,
    RunRef,
    TrackingConfig,
    TrackingContext,
    create_mlflow_run,
    log_model,
    mlflow_state_hooks,
    ops,
    setup_mlflow,
)
from tracking_tasks.errors import (
    ArtifactError,
    InvalidArgumentError,
    InvalidLogDataError,
    InvalidSearchError,
    LoggedModelError,
    ModelNotFoundError,
)
from tracking_tasks.ops._artifacts.manifest import MANIFEST_NAME
from tracking_tasks.ops._lifecycle import RunLocation
from tracking_tasks.ops._reconcile import reconcile_runs
from tracking_tasks.tags import FLOW_RUN_TAG, MODEL_FAILURE_TAG, PREFECT_API_TAG, promotion_tag
from tracking_tasks.tasks import (
    find_best_model,
    find_logged_models,
    log_model_metrics,
    prefect_api_identity,
)
from tracking_tasks.tasks._hooks import end_open_runs
from tracking_tasks.tasks._reconcile import read_flow_run_states
from tracking_tasks.tasks._run_memory import RunMemory

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_PUTS = r"^PUT /api/2\.0/mlflow-artifacts/artifacts/.*/models/"


class Doubler(PythonModel):  # type: ignore[misc]
    """A pyfunc PythonModel (pickled with cloudpickle by reference to this module)."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # no type hints: MLflow would read them as the model's input schema
        return np.asarray(model_input, dtype=float) * 2


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


@pytest.fixture(scope="module")
def classifier(digits: tuple[np.ndarray, np.ndarray]) -> SGDClassifier:
    return SGDClassifier(loss="log_loss", random_state=0).fit(*digits)


@pytest.fixture
def ctx(tracking_config: TrackingConfig) -> TrackingContext:
    return ops.setup_mlflow(tracking_config)


@pytest.fixture
def run(ctx: TrackingContext) -> Iterator[RunRef]:
    ref = ops.create_mlflow_run(ctx, "models", idempotency_key=uuid.uuid4().hex)
    yield ref
    ops.end_mlflow_run(ref)


@pytest.fixture(scope="module")
def proxy(mlflow_server: MlflowServer) -> Iterator[FaultProxy]:
    started = start_fault_proxy(mlflow_server.url)
    try:
        yield started
    finally:
        started.stop()


def _via(ref: RunRef, proxy: FaultProxy) -> RunRef:
    return ref.model_copy(update={"tracking_uri": proxy.url})


def _models(client: MlflowClient, experiment_id: str) -> list[Any]:
    return list(client.search_logged_models([experiment_id], max_results=100))


def _files(client: MlflowClient, model_id: str) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    pending = [""]
    while pending:
        for info in client.list_logged_model_artifacts(model_id, pending.pop() or None):
            if info.is_dir:
                pending.append(info.path)
            else:
                found[info.path] = info.file_size
    return found


# --- logging each kind ------------------------------------------------------------------


@pytest.mark.backends
def test_each_kind_of_model_logs_ready_and_loads_with_mlflow(
    run: RunRef,
    digits: tuple[np.ndarray, np.ndarray],
    classifier: SGDClassifier,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flavour's model, a pyfunc PythonModel and an already saved folder each become a
    READY logged model of the run that MLflow's own loader reads by models:/<id>."""
    x, _ = digits
    # a uv project in the working directory: pyfunc would copy its files into the model
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uv.lock").write_text("version = 1\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n')
    saved = tmp_path / "saved"
    mlflow.sklearn.save_model(classifier, saved, input_example=x[:3], pip_requirements=[])

    sk = ops.log_model(run, classifier, "sk", input_example=x[:5], params={"alpha": 1e-4})
    py = ops.log_model(run, Doubler(), "doubler", input_example=np.ones((2, 3)))
    folder = ops.log_model(run, saved, "folder")

    client = MlflowClient(run.tracking_uri)
    mlflow.set_tracking_uri(run.tracking_uri)  # MLflow's loader reads the global URI
    for ref, name in ((sk, "sk"), (py, "doubler"), (folder, "folder")):
        logged = client.get_logged_model(ref.model_id)
        assert (logged.status, logged.name, logged.source_run_id) == ("READY", name, run.run_id)
        assert logged.experiment_id == run.experiment_id and ref.uri == f"models:/{ref.model_id}"
        files = _files(client, ref.model_id)
        assert {"MLmodel", "requirements.txt", MANIFEST_NAME} <= set(files)
        assert "uv.lock" not in files and "pyproject.toml" not in files
        loaded = mlflow.pyfunc.load_model(ref.uri)
        assert loaded.model_id == ref.model_id  # the MLmodel carries the logged model's id
    assert sk.model_id in {o.model_id for o in client.get_run(run.run_id).outputs.model_outputs}
    assert client.get_logged_model(sk.model_id).params["alpha"] == "0.0001"
    sk_model = mlflow.pyfunc.load_model(sk.uri)
    assert sk_model.metadata.signature is not None  # inferred from the input example
    assert (sk_model.predict(x[:50]) == classifier.predict(x[:50])).all()
    assert mlflow.pyfunc.load_model(py.uri).predict(np.ones((2, 3))).tolist() == [[2.0] * 3] * 2
    assert (mlflow.pyfunc.load_model(folder.uri).predict(x[:9]) == classifier.predict(x[:9])).all()
    location = client.get_logged_model(sk.model_id).artifact_location
    requirements = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location}/requirements.txt", dst_path=str(tmp_path)
        )
    ).read_text()
    assert "scikit-learn==" in requirements and "pytest" not in requirements  # no inference
    # the library's own loader: no global URI needed, the same predictions
    mlflow.set_tracking_uri(None)
    ours = ops.load_model(sk.uri, tracking_uri=run.tracking_uri)
    assert (ours.predict(x[:50]) == classifier.predict(x[:50])).all()


def test_bad_input_is_refused_before_anything_is_written(run: RunRef, ctx: TrackingContext) -> None:
    client = MlflowClient(run.tracking_uri)
    with pytest.raises(InvalidArgumentError, match="flavor="):
        ops.log_model(run, object(), "what")
    with pytest.raises(InvalidLogDataError, match="digits-sgd-v2"):
        ops.log_model(run, LogisticRegression(), "a/b.c")
    with pytest.raises(InvalidArgumentError, match="MLmodel"):
        ops.log_model(run, str(Path(__file__).parent), "not-a-model")
    with pytest.raises(InvalidArgumentError, match=r"mlflow\.nonsense"):
        ops.log_model(run, LogisticRegression(), "x", flavor="nonsense")
    assert _models(client, ctx.experiment_id) == []


def test_a_model_that_cannot_be_saved_fails_before_any_model_is_made(
    run: RunRef, ctx: TrackingContext, classifier: SGDClassifier
) -> None:
    with pytest.raises(LoggedModelError, match=r"could not save the model with mlflow\.sklearn"):
        ops.log_model(run, classifier, "unsaved", save_kwargs={"serialization_format": "zip"})
    assert _models(MlflowClient(run.tracking_uri), ctx.experiment_id) == []


# --- the handle -------------------------------------------------------------------------


def test_the_handle_pickles_and_crosses_threads_and_tasks(
    tracking_config: TrackingConfig, classifier: SGDClassifier, digits: tuple[Any, Any]
) -> None:
    x, _ = digits

    @task
    def measure(model: ModelRef) -> str:
        log_model_metrics(model, {"thread_metric": 1.0})
        return threading.current_thread().name

    @flow(**mlflow_state_hooks())
    def crossing() -> tuple[ModelRef, str]:
        ctx = setup_mlflow(tracking_config)
        run = create_mlflow_run(ctx, "handle")
        ref = log_model.submit(run, classifier, "handle", input_example=x[:2]).result()
        return ref, measure.submit(ref).result()

    ref, thread = crossing()
    assert thread != threading.current_thread().name
    again = pickle.loads(pickle.dumps(ref))
    assert again == ref and again.uri == ref.uri and hash(again) == hash(ref)
    found: list[ModelRef] = []
    worker = threading.Thread(target=lambda: found.append(pickle.loads(pickle.dumps(again))))
    worker.start()
    worker.join()
    logged = MlflowClient(ref.tracking_uri).get_logged_model(found[0].model_id)
    assert {m.key for m in logged.metrics} == {"thread_metric"}
    # tagged with the flow run like every run the flow opened
    assert (
        logged.tags[FLOW_RUN_TAG]
        == MlflowClient(ref.tracking_uri).get_run(str(ref.source_run_id)).data.tags[FLOW_RUN_TAG]
    )


# --- idempotent retries -----------------------------------------------------------------


def test_a_task_retry_gets_back_the_one_model(
    tracking_config: TrackingConfig,
    proxy: FaultProxy,
    classifier: SGDClassifier,
    digits: tuple[Any, Any],
) -> None:
    """The first attempt dies on a 503 mid-upload (model FAILED); Prefect's retry takes
    the same model up and finishes it: one logged model, READY, every file there."""
    x, _ = digits
    config = tracking_config.model_copy(update={"tracking_uri": proxy.url})

    @flow(**mlflow_state_hooks())
    def retried() -> ModelRef:
        run = create_mlflow_run(setup_mlflow(config), "task-retry")
        proxy.set(fault="503", after=3, first=1, match=MODEL_PUTS)
        return log_model(run, classifier, "retried", input_example=x[:2])

    ref = retried()
    assert proxy.stats()["injected"] == 1
    client = MlflowClient(tracking_config.tracking_uri)
    (logged,) = _models(client, ref.experiment_id)
    assert (logged.model_id, logged.status) == (ref.model_id, "READY")
    assert MODEL_FAILURE_TAG not in logged.tags  # the attempt's failure is cleared
    assert len(client.get_run(str(ref.source_run_id)).outputs.model_outputs) == 1
    assert (ops.load_model(ref).predict(x[:20]) == classifier.predict(x[:20])).all()


def test_a_flow_retry_gets_back_the_one_model(
    tracking_config: TrackingConfig, classifier: SGDClassifier, digits: tuple[Any, Any]
) -> None:
    x, _ = digits
    attempts: list[str] = []

    @flow(retries=1, **mlflow_state_hooks())
    def flaky() -> ModelRef:
        run = create_mlflow_run(setup_mlflow(tracking_config), "flow-retry")
        ref = log_model(run, classifier, "flaky", input_example=x[:2], metrics={"acc": 0.9})
        attempts.append(ref.model_id)
        if len(attempts) == 1:
            raise RuntimeError("the flow fails after the model was logged")
        return ref

    ref = flaky()
    assert attempts == [ref.model_id, ref.model_id]
    client = MlflowClient(tracking_config.tracking_uri)
    (logged,) = _models(client, ref.experiment_id)
    assert logged.status == "READY" and len(logged.metrics) == 1  # not logged twice


# --- faults and crashes mid-upload ------------------------------------------------------


@pytest.mark.parametrize("fault", ["403", "reset"])
def test_a_fault_mid_upload_never_leaves_a_ready_model(
    run: RunRef,
    proxy: FaultProxy,
    classifier: SGDClassifier,
    digits: tuple[Any, Any],
    fault: str,
) -> None:
    x, _ = digits
    proxy.set(fault=fault, after=3, first=100, match=MODEL_PUTS)
    with pytest.raises(ArtifactError):
        ops.log_model(_via(run, proxy), classifier, "faulted", input_example=x[:2])
    client = MlflowClient(run.tracking_uri)
    (logged,) = _models(client, run.experiment_id)
    assert logged.status == "FAILED"
    assert fault in logged.tags[MODEL_FAILURE_TAG] or "Error" in logged.tags[MODEL_FAILURE_TAG]
    assert (
        "model.skops" not in _files(client, logged.model_id)
        or len(_files(client, logged.model_id)) < 8
    )  # files are missing: and the model says FAILED
    with pytest.raises(LoggedModelError, match="FAILED"):
        ops.load_model(f"models:/{logged.model_id}", tracking_uri=run.tracking_uri)

    proxy.set(match=MODEL_PUTS)  # the fault passes: a retry takes the same model up
    ref = ops.log_model(_via(run, proxy), classifier, "faulted", input_example=x[:2])
    assert ref.model_id == logged.model_id
    again = client.get_logged_model(ref.model_id)
    assert again.status == "READY" and MODEL_FAILURE_TAG not in again.tags
    assert (ops.load_model(ref).predict(x[:30]) == classifier.predict(x[:30])).all()
    assert len(_models(client, run.experiment_id)) == 1


class Scaler(PythonModel):  # type: ignore[misc]
    """Multiplies by the number in its ``factor`` artifact (one character: "2" or "3")."""

    def load_context(self, context):  # type: ignore[no-untyped-def]
        self.factor = float(Path(context.artifacts["factor"]).read_text())

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return np.asarray(model_input, dtype=float) * self.factor


def test_a_retry_never_keeps_a_stale_file_of_the_same_size(
    run: RunRef, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The first attempt stored artifacts/factor ("2") and failed on MLmodel; the retry
    saves the model again with "3" (same size, same identity): the READY model holds 3."""
    factor = tmp_path / "factor.txt"
    factor.write_text("2")
    # transient: the other files still go out (a refusal would stop them)
    proxy.set(fault="503", first=100, match=MODEL_PUTS + r".*/MLmodel$")
    kwargs: dict[str, Any] = {"save_kwargs": {"artifacts": {"factor": str(factor)}}}
    with pytest.raises(ArtifactError):
        ops.log_model(_via(run, proxy), Scaler(), "scaler", **kwargs)
    client = MlflowClient(run.tracking_uri)
    (failed,) = _models(client, run.experiment_id)
    assert "artifacts/factor.txt" in _files(client, failed.model_id)  # landed before the fault
    factor.write_text("3")
    proxy.set(match=MODEL_PUTS)
    ref = ops.log_model(_via(run, proxy), Scaler(), "scaler", **kwargs)
    assert ref.model_id == failed.model_id
    assert ops.load_model(ref).predict(np.ones((1, 2))).tolist() == [[3.0, 3.0]]


def test_reconcile_fails_the_pending_models_of_the_runs_it_ends(
    run: RunRef, ctx: TrackingContext
) -> None:
    """A run left RUNNING by a Crashed flow run, holding a PENDING and a READY model."""
    client = MlflowClient(run.tracking_uri)
    with prefect_client(sync_client=True) as prefect:
        flow_run_id = str(prefect.create_flow_run(_subject, state=states.Crashed()).id)
    client.set_tag(run.run_id, FLOW_RUN_TAG, flow_run_id)
    client.set_tag(run.run_id, PREFECT_API_TAG, prefect_api_identity())
    pending = _bare_model(client, run, "left-pending", {}, status="PENDING")
    ready = _bare_model(client, run, "ready", {"acc": 1.0})
    report = reconcile_runs(
        read_flow_run_states,
        ctx,
        tracking_uri=run.tracking_uri,
        prefect_api=prefect_api_identity(),
        grace_seconds=0,
    )
    assert report.failed == (run.run_id,)
    left = client.get_logged_model(pending)
    assert left.status == "FAILED" and left.tags[MODEL_FAILURE_TAG].startswith("flow run Crashed")
    assert client.get_logged_model(ready).status == "READY"
    assert MODEL_FAILURE_TAG not in client.get_logged_model(ready).tags


@flow(name="tt-models-subject")
def _subject() -> None:
    """Only a flow object to create flow runs for; never run."""


@pytest.mark.slow
def test_sigkill_mid_upload_hooks_and_reconcile_leave_the_model_failed(
    tracking_config: TrackingConfig, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """Two flow processes SIGKILLed with a model upload in flight (the proxy lets two
    files through and holds the rest): each model stays PENDING, never READY. The
    state hooks as Prefect's runner would run them from another process (a fresh run
    memory) end one; reconcile ends the other once its flow run is marked Crashed."""
    proxy = start_fault_proxy(mlflow_server.url)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        proxy.set(fault="slow", slow_seconds=600, after=2, first=1000, match=MODEL_PUTS)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        markers = [tmp_path / f"worker-{i}.json" for i in range(2)]
        experiments = [f"{tracking_config.experiment_name}-{i}" for i in range(2)]
        for marker, experiment in zip(markers, experiments, strict=True):
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.model_worker",
                        proxy.url,
                        experiment,
                        str(marker),
                    ],
                    cwd=REPO_ROOT,
                    env=env,
                    start_new_session=True,
                    stdout=(tmp_path / f"{marker.stem}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 240
        client = MlflowClient(mlflow_server.url)
        for marker, worker in zip(markers, workers, strict=True):
            while not marker.exists():
                assert worker.poll() is None, (tmp_path / f"{marker.stem}.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the worker never reached its upload"
                time.sleep(0.2)
        # both uploads are held (the proxy lets the first two model PUTs through, of
        # either worker): files are missing, the models PENDING
        while proxy.stats()["injected"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        for worker in workers:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)
        ids = [json.loads(marker.read_text()) for marker in markers]
        exp_ids = [client.get_experiment_by_name(e).experiment_id for e in experiments]
        pending = [_models(client, e) for e in exp_ids]
        assert [[m.status for m in ms] for ms in pending] == [["PENDING"], ["PENDING"]]
        landed = [_files(client, ms[0].model_id) for ms in pending]
        assert sum(len(files) for files in landed) == 2, landed  # of 8 files each

        # 1. the hooks, run elsewhere (Prefect's runner, on Crashed): nothing remembered here
        location = RunLocation(mlflow_server.url, None, exp_ids[0])
        ended = end_open_runs(
            ids[0]["flow_run_id"], "FAILED", "Crashed", (location,), memory=RunMemory()
        )
        assert ended == [ids[0]["run_id"]]
        hooked = client.get_logged_model(pending[0][0].model_id)
        assert hooked.status == "FAILED"
        assert hooked.tags[MODEL_FAILURE_TAG].startswith("flow run Crashed")

        # 2. reconcile: the flow run is marked Crashed (as Prefect's zombie automation would)
        with prefect_client(sync_client=True) as prefect:
            prefect.set_flow_run_state(
                uuid.UUID(ids[1]["flow_run_id"]), states.Crashed(), force=True
            )
        report = reconcile_runs(
            read_flow_run_states,
            experiments[1],
            tracking_uri=mlflow_server.url,
            prefect_api=prefect_api_identity(),
            grace_seconds=0,
        )
        assert report.failed == (ids[1]["run_id"],) and report.errors == ()
        reconciled = client.get_logged_model(pending[1][0].model_id)
        assert reconciled.status == "FAILED"
        assert reconciled.tags[MODEL_FAILURE_TAG].startswith("flow run Crashed")
        # a second pass and the hooks again change nothing
        assert (
            reconcile_runs(
                read_flow_run_states,
                experiments[1],
                tracking_uri=mlflow_server.url,
                prefect_api=prefect_api_identity(),
                grace_seconds=0,
            ).ended
            == ()
        )
    finally:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            stop_process_group(worker)
        proxy.stop()


def test_hooks_never_touch_a_ready_model(
    tracking_config: TrackingConfig, classifier: SGDClassifier, digits: tuple[Any, Any]
) -> None:
    x, _ = digits
    made: dict[str, str] = {}

    @flow(**mlflow_state_hooks())
    def fails_after_logging() -> None:
        run = create_mlflow_run(setup_mlflow(tracking_config), "ready-then-fail")
        made["ready"] = log_model(run, classifier, "kept", input_example=x[:2]).model_id
        client = MlflowClient(run.tracking_uri)  # a model some other code left PENDING
        made["pending"] = client.create_logged_model(
            run.experiment_id, name="orphan", source_run_id=run.run_id
        ).model_id
        raise RuntimeError("the flow fails")

    state = fails_after_logging(return_state=True)
    assert state.is_failed()
    client = MlflowClient(tracking_config.tracking_uri)
    assert client.get_logged_model(made["ready"]).status == "READY"
    orphan = client.get_logged_model(made["pending"])
    assert orphan.status == "FAILED" and orphan.tags[MODEL_FAILURE_TAG].startswith(
        "flow run Failed"
    )


# --- metrics linked to models, and the finders -------------------------------------------


def _bare_model(
    client: MlflowClient, run: RunRef, name: str, metrics: dict[str, float], status: str = "READY"
) -> str:
    """A logged model made directly (no files): enough for the finders."""
    from mlflow.entities import Metric

    model_id = client.create_logged_model(
        run.experiment_id, name=name, source_run_id=run.run_id, params={"name": name}
    ).model_id
    ts = int(time.time() * 1000)
    if metrics:
        client.log_batch(
            run.run_id, metrics=[Metric(k, v, ts, 0, model_id=model_id) for k, v in metrics.items()]
        )
    if status != "PENDING":
        client.finalize_logged_model(model_id, status)
    return model_id


@pytest.mark.backends
def test_metrics_are_linked_to_the_model_they_measure(
    run: RunRef, ctx: TrackingContext, classifier: SGDClassifier, digits: tuple[Any, Any]
) -> None:
    x, _ = digits
    ref = ops.log_model(run, classifier, "measured", input_example=x[:2], metrics={"acc": 0.5})
    benchmark = ops.create_mlflow_run(ctx, "benchmark", idempotency_key=uuid.uuid4().hex)
    digest = mlflow.data.from_numpy(x).digest
    ops.log_model_metrics(
        ref, {"acc": 0.97}, run=benchmark, dataset_name="test", dataset_digest=digest
    )
    ops.log_model_metrics(
        ref, {"acc": 0.99}, run=benchmark, dataset_name="val", dataset_digest="v1"
    )
    ops.end_mlflow_run(benchmark)

    client = MlflowClient(run.tracking_uri)
    (found,) = client.search_logged_models([run.experiment_id])
    by_dataset = {(m.dataset_name, m.run_id): m.value for m in found.metrics}
    assert by_dataset == {
        (None, run.run_id): 0.5,
        ("test", benchmark.run_id): 0.97,
        ("val", benchmark.run_id): 0.99,
    }
    assert client.get_run(benchmark.run_id).data.metrics["acc"] == 0.99  # the run has them too
    # the finders see them, scoped to a data set too
    assert [m.model_id for m in ops.find_logged_models(ctx, "metrics.acc > 0.98")] == [ref.model_id]
    scoped = ops.find_logged_models(
        ctx, "metrics.acc > 0.98", datasets=[{"dataset_name": "test", "dataset_digest": digest}]
    )
    assert scoped == []
    summary = ops.get_model_summary(ref)
    assert summary.metrics["acc"] == 0.99 and summary.status == "READY"
    with pytest.raises(InvalidArgumentError, match="together"):
        ops.log_model_metrics(ref, {"acc": 1.0}, dataset_name="test")


@pytest.mark.backends
def test_model_finders_filter_order_and_page_through_everything(
    run: RunRef, ctx: TrackingContext
) -> None:
    client = MlflowClient(run.tracking_uri)
    scores = {"m0": 0.70, "m1": 0.91, "m2": 0.91, "m3": 0.85, "m4": 0.75, "m5": 0.60}
    ids = {name: _bare_model(client, run, name, {"score": v}) for name, v in scores.items()}
    ids["nometric"] = _bare_model(client, run, "nometric", {})
    ids["failed"] = _bare_model(client, run, "failed", {"score": 0.99}, status="FAILED")
    ids["pending"] = _bare_model(client, run, "pending", {"score": 0.995}, status="PENDING")

    everything = ops.find_logged_models(ctx, page_size=2)  # 5 requests of 2
    assert len(everything) == 9 and len({m.model_id for m in everything}) == 9
    ordered = ops.find_logged_models(
        ctx, "metrics.score >= 0.8", order_by=["metrics.score DESC", "name ASC"], status="READY"
    )
    assert [m.name for m in ordered] == ["m1", "m2", "m3"]
    assert [m.name for m in ops.find_logged_models(ctx, "name LIKE 'm%'", max_results=3)] == [
        "m5",
        "m4",
        "m3",
    ]  # fmt: skip  (newest first)
    assert {m.name for m in ops.find_logged_models(ctx, status="FAILED")} == {"failed"}
    assert [m.name for m in ops.find_logged_models(ctx, status="PENDING", max_results=1)] == [
        "pending"
    ]  # the limit counts the models that match the status

    best = ops.find_best_model("score", ctx, page_size=1)
    assert best is not None and best.name == "m1"  # tie with m2: the first created wins
    worst = ops.find_best_model("score", ctx, mode="min")
    assert worst is not None and worst.name == "m5"
    assert ops.find_best_model("score", ctx, status=None).name == "pending"  # type: ignore[union-attr]
    assert ops.find_best_model("absent", ctx) is None

    # the task forms: same answers, cached by what they search
    @flow
    def lookups() -> tuple[int, str | None]:
        models = find_logged_models(ctx, "metrics.score > 0.5", status="READY")
        winner = find_best_model("score", ctx, filter_string="name != 'm1'")
        return len(models), winner.name if winner else None

    assert lookups() == (6, "m2")


def test_a_bad_model_filter_is_refused_before_any_request(
    ctx: TrackingContext, proxy: FaultProxy, mlflow_server: MlflowServer
) -> None:
    via = ctx.model_copy(update={"tracking_uri": proxy.url})
    proxy.set(match=r"logged-models")
    began = time.monotonic()
    for bad, match in [
        ("foo = 'x'", "not a logged-model attribute"),
        ("status = 'READY'", "status='READY'"),
        ("status = 2", "PostgreSQL"),
        ("metrics.acc > 0.9 OR name = 'x'", "malformed"),
        ("metrics.acc >", "malformed"),
    ]:
        with pytest.raises(InvalidSearchError, match=match):
            ops.find_logged_models(via, bad)
    with pytest.raises(InvalidSearchError, match="not params"):
        ops.find_logged_models(via, order_by="params.alpha DESC")
    with pytest.raises(InvalidSearchError, match="digest"):
        ops.find_logged_models(via, datasets=[{"dataset_name": "test"}])
    with pytest.raises(InvalidSearchError, match="'max' or 'min'"):
        ops.find_best_model("acc", via, mode="best")  # type: ignore[arg-type]
    with pytest.raises(InvalidSearchError, match="status"):
        ops.find_logged_models(via, status="DONE")  # type: ignore[arg-type]
    assert time.monotonic() - began < 10  # not MLflow's four minutes of retries
    assert proxy.stats()["candidates"] == 0  # no logged-model request went out


# --- the registry and the champion ------------------------------------------------------


@pytest.mark.backends
def test_registering_a_model_is_idempotent_and_loads_by_version_and_alias(
    run: RunRef, classifier: SGDClassifier, digits: tuple[Any, Any]
) -> None:
    x, _ = digits
    ref = ops.log_model(run, classifier, "registered", input_example=x[:2])
    name = f"reg-{uuid.uuid4().hex[:8]}"
    version = ops.register_model(ref, name)
    assert ops.register_model(ref, name) == version  # a retry: the same version
    client = MlflowClient(run.tracking_uri, registry_uri=run.tracking_uri)
    (stored,) = client.search_model_versions(f"name = '{name}'")
    assert (stored.source, stored.run_id) == (ref.uri, run.run_id)
    assert version.model_id == ref.model_id and version.uri == f"models:/{name}/1"
    assert client.get_logged_model(ref.model_id).tags["mlflow.modelVersions"]  # linked
    ops.set_model_alias(version, "candidate")
    mlflow.set_tracking_uri(run.tracking_uri)
    for uri in (version.uri, f"models:/{name}@candidate", f"models:/{name}/latest"):
        assert (mlflow.pyfunc.load_model(uri).predict(x[:9]) == classifier.predict(x[:9])).all()
        ours = ops.load_model(uri, tracking_uri=run.tracking_uri)
        assert ours.model_id == ref.model_id
    read = ops.get_model_version(name, alias="candidate", tracking_uri=run.tracking_uri)
    assert (read.version, read.aliases) == ("1", ("candidate",))
    with pytest.raises(ModelNotFoundError):
        ops.get_model_version(name, alias="champion", tracking_uri=run.tracking_uri)
    with pytest.raises(ModelNotFoundError):
        ops.load_model(f"models:/{name}@champion", tracking_uri=run.tracking_uri)


def test_a_version_of_a_plain_folder_is_refused_with_the_fix(run: RunRef, tmp_path: Path) -> None:
    (tmp_path / "weights.json").write_text("{}")
    ops.upload_artifacts(run, tmp_path, "converted")
    name = f"folder-{uuid.uuid4().hex[:8]}"
    ops.register_model_version(run, "converted", name)
    with pytest.raises(ModelNotFoundError, match="not from a logged model"):
        ops.load_model(f"models:/{name}/1", tracking_uri=run.tracking_uri)


@pytest.mark.backends
def test_champion_moves_only_to_a_better_version_and_the_run_says_why(
    run: RunRef, ctx: TrackingContext
) -> None:
    client = MlflowClient(run.tracking_uri, registry_uri=run.tracking_uri)
    name = f"champ-{uuid.uuid4().hex[:8]}"

    def candidate(score: float) -> ops.ModelVersion:
        model_id = _bare_model(client, run, f"c{int(score * 100)}", {"acc": score})
        ref = ops.get_model_summary(model_id, tracking_uri=run.tracking_uri).to_ref()
        return ops.register_model(ref, name)

    decisions = []
    for score in (0.80, 0.90, 0.85, 0.90):
        decisions.append(ops.promote_model(candidate(score), "acc", run=run))
    assert [(d.version, d.promoted, d.previous_version) for d in decisions] == [
        ("1", True, None),  # no champion yet
        ("2", True, "1"),  # better
        ("3", False, "2"),  # worse: champion stays
        ("4", False, "2"),  # a tie is not better
    ]
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    tag = client.get_run(run.run_id).data.tags[promotion_tag("champion")]
    assert tag == decisions[-1].reason and "does not beat" in tag
    again = ops.promote_model(
        ops.get_model_version(name, version=2, tracking_uri=run.tracking_uri), "acc"
    )
    assert again.promoted and "already champion" in again.reason  # a retry changes nothing
    lower = ops.promote_model(candidate(0.5), "acc", alias="fastest", mode="min", run=run)
    assert lower.promoted
    with pytest.raises(InvalidArgumentError, match="no value of 'f1'"):
        ops.promote_model(candidate(0.7), "f1", run=run)
    assert client.get_model_version_by_alias(name, "champion").version == "2"


def test_the_embedded_store_loads_a_version_mlflow_loaded_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fluent_reset: None
) -> None:
    """On a local store MLflow's loader writes registered_model_meta into the stored model
    folder; the library's loader still checks the rest against the manifest and loads it."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = ops.setup_mlflow(experiment_name="embedded", tracking_uri=uri)
    run = ops.create_mlflow_run(ctx, "embedded")
    clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    version = ops.register_model(ops.log_model(run, clf, "embedded", input_example=[[0.5]]), "e")
    mlflow.set_tracking_uri(uri)
    assert mlflow.pyfunc.load_model(version.uri).predict([[0.9]]).tolist() == [1]
    location = MlflowClient(uri).get_logged_model(str(version.model_id)).artifact_location
    stored = Path(location.removeprefix("file://"))
    assert (stored / "registered_model_meta").is_file()  # MLflow wrote into the store
    assert ops.load_model(version.uri, tracking_uri=uri).predict([[0.9]]).tolist() == [1]
