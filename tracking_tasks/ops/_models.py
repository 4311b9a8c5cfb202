"""Logged models (MLflow 3): log one into a run, found again on a retry; link metrics to it;
finalise FAILED what a dead attempt left PENDING."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import shutil
import tempfile
import threading
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from tracking_tasks._validation import check_metrics, check_model_name, check_params, check_tags
from tracking_tasks.errors import (
    InvalidArgumentError,
    LoggedModelError,
    RunNotFoundError,
    TrackingTasksError,
    mlflow_errors,
)
from tracking_tasks.handles import ModelRef, RunRef
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops._artifacts.upload import Destination, upload_to
from tracking_tasks.ops._client import get_client
from tracking_tasks.ops._filters import and_, attribute_in, model_status_equals, tag_equals
from tracking_tasks.ops._lifecycle import RunLocation
from tracking_tasks.ops._logging import now_ms, send_batch
from tracking_tasks.tags import MODEL_FAILURE_TAG, MODEL_IDENTITY_TAG
from tracking_tasks.urls import redact_uri, same_server

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel

log = logging.getLogger(__name__)

#: A model's top-level package -> the MLflow flavour that saves it (``flavor=`` for others).
FLAVORS = {
    "sklearn": "sklearn",
    "torch": "pytorch",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "keras": "keras",
    "tensorflow": "tensorflow",
    "transformers": "transformers",
    "sentence_transformers": "sentence_transformers",
    "statsmodels": "statsmodels",
    "prophet": "prophet",
    "onnx": "onnx",
    "spacy": "spacy",
}
#: ``pip_requirements="infer"``: let MLflow infer them (a subprocess that imports the model).
INFER = "infer"
#: The longest failure reason kept in the ``tracking_tasks.failure_reason`` tag.
_MAX_REASON_CHARS = 1000
#: Runs per ``source_run_id IN (...)`` clause when looking for PENDING models.
_RUNS_PER_SEARCH = 100

Requirements = Sequence[str] | Literal["infer"] | None


def _saved_folder(model: Any) -> Path | None:
    """The folder of an already saved MLflow model (it holds an ``MLmodel`` file), else None."""
    if not isinstance(model, str | os.PathLike):
        return None
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "MLmodel").is_file():
            raise InvalidArgumentError(
                f"{str(path)!r} is a folder without an MLmodel file: pass a model saved with "
                "mlflow.<flavor>.save_model, a model object, or a pyfunc model's .py file"
            )
        return path
    if not path.is_file():
        raise InvalidArgumentError(f"model path {str(path)!r} does not exist")
    return None


def resolve_flavor(model: Any, flavor: str | ModuleType | None) -> ModuleType | None:
    """The MLflow flavour module that saves ``model`` (None: an already saved folder).

    Args:
        model: A model object, a pyfunc ``PythonModel`` (or its ``.py`` file), or the
            folder of an already saved MLflow model.
        flavor: A flavour module (``mlflow.sklearn``) or name (``"sklearn"``), or None to
            tell it from the model.

    Returns:
        The flavour's module, or None for a saved folder.

    Raises:
        InvalidArgumentError: the flavour is unknown or cannot be told.

    Example:
        >>> from sklearn.linear_model import LogisticRegression
        >>> resolve_flavor(LogisticRegression(), None).__name__
        'mlflow.sklearn'
    """
    if _saved_folder(model) is not None:
        if flavor is not None:
            raise InvalidArgumentError(
                "a saved MLflow model folder is logged as it is: drop flavor="
            )
        return None
    if isinstance(flavor, ModuleType):
        chosen = flavor
    else:
        if flavor is None:
            flavor = _guess_flavor(model)
        if not isinstance(flavor, str) or not flavor.isidentifier():
            raise InvalidArgumentError(f"flavor must be an MLflow flavour name, not {flavor!r}")
        try:
            chosen = importlib.import_module(f"mlflow.{flavor}")
        except ImportError as exc:
            raise InvalidArgumentError(
                f"mlflow.{flavor} cannot be imported ({exc}): name an MLflow flavour "
                "(sklearn, pytorch, pyfunc, ...) and install what it needs"
            ) from exc
    if not callable(getattr(chosen, "save_model", None)):
        raise InvalidArgumentError(f"{chosen.__name__} is not an MLflow flavour (no save_model)")
    return chosen


def _guess_flavor(model: Any) -> str:
    from mlflow.pyfunc.model import PythonModel

    if isinstance(model, PythonModel) or (
        isinstance(model, str | os.PathLike) and str(model).endswith(".py")
    ):
        return "pyfunc"
    package = type(model).__module__.split(".")[0]
    if package in FLAVORS:
        return FLAVORS[package]
    raise InvalidArgumentError(
        f"cannot tell which MLflow flavour saves a {type(model).__module__}."
        f"{type(model).__qualname__}: pass flavor= (e.g. flavor='sklearn' or "
        "flavor=mlflow.pytorch), or a pyfunc PythonModel"
    )


def _requirements(
    flavor: ModuleType, requirements: Requirements, extra: Sequence[str] | None, kwargs: Any
) -> list[str] | None:
    """What ``pip_requirements`` to hand ``save_model``: None lets MLflow infer them."""
    if requirements == INFER:
        return None
    if requirements is not None:
        if isinstance(requirements, str):
            raise InvalidArgumentError(
                "pip_requirements must be a list of requirement strings, 'infer', or None"
            )
        return [*map(str, requirements), *(extra or [])]
    defaults = getattr(flavor, "get_default_pip_requirements", None)
    if defaults is None:
        return None  # a flavour without defaults: MLflow infers them
    accepted = inspect.signature(defaults).parameters
    fmt = kwargs.get("serialization_format")
    options = {
        "include_skops": fmt == "skops",
        "include_cloudpickle": fmt == "cloudpickle",
    }
    chosen = {k: v for k, v in options.items() if k in accepted}
    return [*defaults(**chosen), *(extra or [])]


def save_model_locally(
    model: Any,
    flavor: ModuleType | None,
    folder: Path,
    *,
    input_example: Any = None,
    signature: Any = None,
    pip_requirements: Requirements = None,
    extra_pip_requirements: Sequence[str] | None = None,
    save_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as an MLflow model folder at ``folder`` (which must not exist).

    A saved folder is copied as it is. Otherwise the flavour's ``save_model`` writes it,
    with the signature inferred from ``input_example`` (unless given), the flavour's
    default requirements (no inference subprocess unless ``pip_requirements="infer"``)
    and no uv project files copied from the working directory.

    Returns:
        ``folder``.
    """
    saved = _saved_folder(model)
    if saved is not None:
        shutil.copytree(saved, folder)
        return folder
    assert flavor is not None
    kwargs: dict[str, Any] = dict(save_kwargs or {})
    if flavor.__name__ == "mlflow.sklearn":
        # MLflow's default outside Databricks, chosen here so nothing reads the global URI
        kwargs.setdefault("serialization_format", "skops")
    if input_example is not None:
        kwargs["input_example"] = input_example
    if signature is not None:
        kwargs["signature"] = signature
    if "pip_requirements" not in kwargs and "conda_env" not in kwargs:
        chosen = _requirements(flavor, pip_requirements, extra_pip_requirements, kwargs)
        if chosen is not None:
            kwargs["pip_requirements"] = chosen
        elif extra_pip_requirements:
            kwargs["extra_pip_requirements"] = list(extra_pip_requirements)
    accepted = inspect.signature(flavor.save_model).parameters
    if "uv_project_path" in accepted and "uv_project_path" not in kwargs:
        # pyfunc copies uv.lock and pyproject.toml of the working directory into the model
        # unless told where the project is: point it at an empty folder
        no_project = folder.parent / "no-uv-project"
        no_project.mkdir(exist_ok=True)
        kwargs["uv_project_path"] = str(no_project)
    with mlflow_errors(
        f"could not save the model with {flavor.__name__}", default=LoggedModelError
    ):
        if flavor.__name__ == "mlflow.pyfunc":
            python_model = str(model) if isinstance(model, os.PathLike) else model
            flavor.save_model(path=str(folder), python_model=python_model, **kwargs)
        else:
            flavor.save_model(model, path=str(folder), **kwargs)
    for cache in folder.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return folder


def stamp_model_folder(folder: Path, logged: LoggedModel, run_id: str) -> None:
    """Write the logged model's ids into the folder's ``MLmodel``, as ``Model.log`` does.

    ``mlflow.pyfunc.load_model`` reads ``model_id`` from it, so predictions and traces
    stay linked to the logged model.
    """
    from mlflow.models import Model

    mlmodel = Model.load(str(folder))
    mlmodel.artifact_path = logged.artifact_location
    mlmodel.model_uuid = logged.model_id
    mlmodel.run_id = run_id
    mlmodel.model_id = logged.model_id
    mlmodel.save(str(folder / "MLmodel"))


# A retry must find the model an earlier attempt made, never make a second: attempts in
# this process wait for each other per identity (striped locks: bounded, never dropped).
_LOCKS = tuple(threading.Lock() for _ in range(64))


@contextlib.contextmanager
def _identity_lock(identity: str) -> Iterator[None]:
    with _LOCKS[zlib.crc32(identity.encode()) % len(_LOCKS)]:
        yield


def model_identity(
    run_id: str, name: str, step: int, params: Mapping[str, str], model_type: str | None
) -> str:
    """The identity of a model logged into a run (tagged ``tracking_tasks.model_identity``).

    Args:
        run_id: The run it is logged into.
        name: The model's name.
        step: The run's step it was logged at.
        params: Its params (as given).
        model_type: Its model type.

    Returns:
        32 hex digits.

    Example:
        >>> len(model_identity("abc", "digits", 0, {}, None))
        32
    """
    return config_hash(
        {
            "run_id": run_id,
            "name": name,
            "step": step,
            "params": dict(params),
            "model_type": model_type,
        }
    )[:32]


def _find_by_identity(client: MlflowClient, run: RunRef, identity: str) -> LoggedModel | None:
    found = client.search_logged_models(
        [run.experiment_id],
        filter_string=and_(
            tag_equals(MODEL_IDENTITY_TAG, identity), attribute_in("source_run_id", [run.run_id])
        ),
        max_results=10,
    )
    return min(found, key=lambda m: (m.creation_timestamp, m.model_id)) if found else None


def _ref(logged: LoggedModel, run: RunRef) -> ModelRef:
    return ModelRef(
        model_id=logged.model_id,
        name=logged.name,
        experiment_id=str(logged.experiment_id),
        source_run_id=logged.source_run_id,
        tracking_uri=run.tracking_uri,
        registry_uri=run.registry_uri,
        artifact_uri=logged.artifact_location,
        credentials=run.credentials,
    )


def _reason(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:_MAX_REASON_CHARS]


def finalize_failed(client: MlflowClient, model_id: str, reason: str) -> None:
    """Tag why, then finalise the model FAILED (MLflow's finalize call takes no message)."""
    from mlflow.entities import LoggedModelStatus

    client.set_logged_model_tags(model_id, {MODEL_FAILURE_TAG: reason[:_MAX_REASON_CHARS]})
    client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)


def _metrics(
    checked: list[tuple[str, float, int]],
    model_id: str,
    dataset: tuple[str, str] | None = None,
    timestamp: int | None = None,
) -> list[Any]:
    from mlflow.entities import Metric

    ts = timestamp if timestamp is not None else _unique_ms()
    name, digest = dataset if dataset is not None else (None, None)
    return [
        Metric(k, v, ts, s, model_id=model_id, dataset_name=name, dataset_digest=digest)
        for k, v, s in checked
    ]


_last_ms = 0
_ms_lock = threading.Lock()


def _unique_ms() -> int:
    """Now in ms, strictly increasing in this process: a model's metric table keys on
    (model, key, timestamp, step) without the dataset, so two datasets' values of one key
    logged in the same millisecond would collide."""
    global _last_ms
    with _ms_lock:
        _last_ms = max(now_ms(), _last_ms + 1)
        return _last_ms


def log_model(
    run: RunRef,
    model: Any,
    name: str,
    *,
    flavor: str | ModuleType | None = None,
    input_example: Any = None,
    signature: Any = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    model_type: str | None = None,
    metrics: Mapping[str, float] | None = None,
    step: int = 0,
    pip_requirements: Requirements = None,
    extra_pip_requirements: Sequence[str] | None = None,
    save_kwargs: Mapping[str, Any] | None = None,
    max_workers: int = 8,
    timeout_seconds: float | None = None,
) -> ModelRef:
    """Log a model into a run as an MLflow 3 logged model, and return its handle.

    ``model`` is a model object of any MLflow flavour (told from its package, or named
    by ``flavor``), a pyfunc ``PythonModel`` (an instance, or the path of a ``.py`` file
    that calls ``mlflow.models.set_model``), or the folder of a model already saved with
    ``mlflow.<flavor>.save_model``. It is saved locally first (a model that cannot be
    saved fails before anything is written), then a logged model is created PENDING in
    the run's experiment (``source_run_id`` = the run, the run's params merged under
    ``params``), its files uploaded with the artifact upload (resumable, verified against
    a manifest), ``metrics`` linked to it, and only then is it finalised READY. On any
    failure it is finalised FAILED with the reason in its ``tracking_tasks.failure_reason``
    tag, and the error raised.

    **Idempotent.** The model's identity (run, name, step, params, model type) is tagged
    on it: a retry finds the model an earlier attempt made. A READY one is returned as
    it is; a PENDING or FAILED one is taken up again (saved and uploaded again, a stored
    file kept only if its sha256 matches), so a run never holds two models of one
    identity. To log another model into the same run, change the name, step or params.

    The signature is inferred from ``input_example`` unless ``signature`` is given. The
    requirements default to the flavour's own (MLflow's inference, a subprocess that
    imports the model, runs only with ``pip_requirements="infer"``).

    Args:
        run: The run the model is logged into (its experiment holds the model).
        model: The model object, a pyfunc ``PythonModel`` or its ``.py`` file, or a
            saved MLflow model folder.
        name: The model's name (no ``/``).
        flavor: The MLflow flavour module or name; None tells it from the model.
        input_example: A few rows of input, saved with the model; the signature is
            inferred from it.
        signature: An ``mlflow.models.ModelSignature``, if not inferred.
        params: Params of the model (the run's params are added under them).
        tags: Tags of the model.
        model_type: A type to search models by (``"classifier"``...).
        metrics: Metrics to link to the model (logged in its run at ``step``).
        step: The run's step the model belongs to (a checkpoint per epoch: the epoch).
        pip_requirements: The model's requirements; None for the flavour's defaults;
            ``"infer"`` for MLflow's inference.
        extra_pip_requirements: Requirements added to the defaults (``["numpy"]``).
        save_kwargs: More arguments for the flavour's ``save_model`` (``code_paths``,
            a pyfunc's ``artifacts``, ``serialization_format``...).
        max_workers: Files sent at once.
        timeout_seconds: Per-request timeout of the upload (default
            ``MLFLOW_HTTP_REQUEST_TIMEOUT`` or 120).

    Returns:
        The model's ``ModelRef`` (``ref.uri`` is ``models:/<model id>``).

    Raises:
        InvalidArgumentError: a bad flavour, path or argument (nothing written).
        InvalidLogDataError: a name, param, tag or metric MLflow would refuse (nothing
            written).
        LoggedModelError: the model could not be saved, or MLflow refused to create,
            finalise or find it.
        RunNotFoundError: the run does not exist.
        TransientArtifactError: a transient fault during the upload (the task retries).
        ArtifactError: the upload failed otherwise or could not be verified.

    Example:
        >>> from sklearn.linear_model import LogisticRegression
        >>> clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
        >>> ref = log_model(run, clf, "doctest-clf", input_example=[[0.5]])
        >>> ref.uri.startswith("models:/m-")
        True
    """
    if not isinstance(run, RunRef):
        raise InvalidArgumentError(
            f"run must be the RunRef of the run to log into, not {type(run).__name__}"
        )
    model_name = check_model_name(name)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidArgumentError(f"step must be a non-negative integer, not {step!r}")
    if model_type is not None and not isinstance(model_type, str):
        raise InvalidArgumentError(f"model_type must be a string or None, not {model_type!r}")
    user_params = check_params(params or {})
    user_tags = check_tags(tags or {})
    checked_metrics = check_metrics(metrics or {}, step)
    chosen_flavor = resolve_flavor(model, flavor)
    identity = model_identity(run.run_id, model_name, step, user_params, model_type)
    where = redact_uri(run.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="tt-model-") as scratch:
        folder = save_model_locally(
            model,
            chosen_flavor,
            Path(scratch) / "model",
            input_example=input_example,
            signature=signature,
            pip_requirements=pip_requirements,
            extra_pip_requirements=extra_pip_requirements,
            save_kwargs=save_kwargs,
        )
        client = get_client(run.tracking_uri, run.registry_uri, credentials=run.credentials)
        with _identity_lock(identity):
            with mlflow_errors(
                f"could not log model {model_name!r} into run {run.run_id} on {where}",
                default=LoggedModelError,
                not_found=RunNotFoundError,
            ):
                found = _find_by_identity(client, run, identity)
                if found is not None and found.status == "READY":
                    log.info(
                        "Model %r (%s) of run %s is already READY from an earlier attempt: "
                        "not logged again",
                        model_name,
                        found.model_id,
                        run.run_id,
                    )
                    return _ref(found, run)
                source = client.get_run(run.run_id)
                logged = found or client.create_logged_model(
                    run.experiment_id,
                    name=model_name,
                    source_run_id=run.run_id,
                    params={**dict(source.data.params), **user_params},
                    tags={**user_tags, MODEL_IDENTITY_TAG: identity},
                    model_type=model_type,
                )
            try:
                _finish(
                    client,
                    run,
                    logged,
                    source,
                    folder,
                    found is not None,
                    step,
                    max_workers,
                    timeout_seconds,
                    checked_metrics,
                )
            except BaseException as exc:
                with contextlib.suppress(Exception):  # the original failure matters more
                    finalize_failed(client, logged.model_id, _reason(exc))
                    log.warning(
                        "Model %r (%s) of run %s finalised FAILED: %s",
                        model_name,
                        logged.model_id,
                        run.run_id,
                        _reason(exc),
                    )
                raise
    log.info("Logged model %r (%s) into run %s: READY", model_name, logged.model_id, run.run_id)
    return _ref(logged, run)


def _finish(
    client: MlflowClient,
    run: RunRef,
    logged: LoggedModel,
    source: Any,
    folder: Path,
    taken_up: bool,
    step: int,
    max_workers: int,
    timeout_seconds: float | None,
    checked_metrics: list[tuple[str, float, int]],
) -> None:
    """Link, upload, verify, measure and finalise READY a created (or taken up) model."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    what = f"could not finish model {logged.name!r} ({logged.model_id}) on {redact_uri(run.tracking_uri)}"
    with mlflow_errors(what, default=LoggedModelError):
        if taken_up:
            log.info(
                "Taking up model %r (%s), left %s by an earlier attempt",
                logged.name,
                logged.model_id,
                logged.status,
            )
            if logged.status != LoggedModelStatus.PENDING:
                client.finalize_logged_model(logged.model_id, LoggedModelStatus.PENDING)
            if MODEL_FAILURE_TAG in (logged.tags or {}):
                client.delete_logged_model_tag(logged.model_id, MODEL_FAILURE_TAG)
        outputs = {o.model_id for o in (source.outputs.model_outputs if source.outputs else [])}
        if logged.model_id not in outputs:  # a second log_outputs of a pair is refused
            client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step)])
    stamp_model_folder(folder, logged, run.run_id)
    upload_to(
        Destination(
            run.run_id,
            run.tracking_uri,
            run.registry_uri,
            run.credentials,
            artifact_uri=logged.artifact_location,
            label=f"model {logged.model_id}",
        ),
        folder,
        max_workers=max_workers,
        timeout_seconds=timeout_seconds,
        trust_sizes=False,
    )
    with mlflow_errors(what, default=LoggedModelError):
        if checked_metrics:
            send_batch(run, metrics=_metrics(checked_metrics, logged.model_id))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)


def log_model_metrics(
    model: ModelRef,
    metrics: Mapping[str, float],
    *,
    run: RunRef | None = None,
    step: int = 0,
    dataset_name: str | None = None,
    dataset_digest: str | None = None,
    timestamp: int | None = None,
) -> int:
    """Log metrics that measure a logged model, linked to it (MLflow's ``model_id``).

    They land in ``run`` (by default the model's own run) and in the model's metrics, so
    MLflow's Models view shows them and ``find_best_model`` ranks by them. A benchmark
    stage logs the latency of the model it measured into its own run this way.

    Args:
        model: The model measured (``log_model``'s handle).
        metrics: Name -> number.
        run: The run that measured it; None for the model's source run.
        step: The step of every point.
        dataset_name: The data set measured on (with ``dataset_digest``), e.g. ``"test"``.
        dataset_digest: That data set's digest (e.g. ``mlflow.data.from_numpy(x).digest``).
        timestamp: Milliseconds since the epoch; now by default.

    Returns:
        The number of points logged.

    Raises:
        InvalidArgumentError: no run to log into, a run on another server, or only one
            of ``dataset_name`` and ``dataset_digest``.
        InvalidLogDataError: a name or value MLflow would refuse (nothing sent).
        RunNotFoundError: the run does not exist.
        TrackingServerError: the server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def benchmark(model: ModelRef, run: RunRef) -> None:
        ...     log_model_metrics(model, {"latency_p99_ms": 1.2}, run=run,
        ...                       dataset_name="digits-test", dataset_digest="8a2b")
    """
    if not isinstance(model, ModelRef):
        raise InvalidArgumentError(
            f"model must be the ModelRef returned by log_model, not {type(model).__name__}"
        )
    if (dataset_name is None) != (dataset_digest is None):
        raise InvalidArgumentError(
            "give dataset_name and dataset_digest together: MLflow's server matches a "
            "model's metrics to a data set by both"
        )
    checked = check_metrics(metrics, step)
    if run is None:
        if model.source_run_id is None:
            raise InvalidArgumentError(
                f"model {model.model_id} has no source run: pass run= to log its metrics into"
            )
        run = RunRef(
            run_id=model.source_run_id,
            experiment_id=model.experiment_id,
            run_name=model.source_run_id,
            tracking_uri=model.tracking_uri,
            registry_uri=model.registry_uri,
            credentials=model.credentials,
        )
    elif not same_server(run.tracking_uri, model.tracking_uri):
        raise InvalidArgumentError(
            f"run {run.run_id} is on {redact_uri(run.tracking_uri)} and model "
            f"{model.model_id} on {redact_uri(model.tracking_uri)}: log into a run of the "
            "model's server"
        )
    dataset = (dataset_name, dataset_digest) if dataset_name and dataset_digest else None
    send_batch(run, metrics=_metrics(checked, model.model_id, dataset, timestamp))
    return len(checked)


def fail_pending_models(
    run_ids: Iterable[str], locations: Mapping[str, RunLocation], reason: str
) -> list[str]:
    """Finalise FAILED every PENDING logged model of these runs; return the errors.

    A model stays PENDING only while the attempt logging it runs: once its run's flow
    run is over (the state hooks) or its process is gone (reconcile), it never will be
    finished. Each is tagged ``tracking_tasks.failure_reason`` (``reason``, and that its
    upload never finished) and finalised FAILED. A READY or FAILED model is never
    touched: each is read again just before it is written.

    Args:
        run_ids: The runs whose models to look at (those just ended).
        locations: Where each run lives (runs without a location are skipped).
        reason: Why, e.g. ``"flow run Crashed"``.

    Returns:
        One message per failure (a search or a write refused); empty when all went well.

    Example:
        >>> fail_pending_models([], {}, "flow run Crashed")
        []
    """
    from mlflow.entities import LoggedModelStatus

    grouped: dict[RunLocation, list[str]] = defaultdict(list)
    for run_id in dict.fromkeys(run_ids):
        if run_id in locations:
            grouped[locations[run_id]].append(run_id)
    errors: list[str] = []
    failed: list[str] = []
    why = f"{reason}: its logging attempt ended before the model was finalised"
    for where, ids in grouped.items():
        client = get_client(where.tracking_uri, where.registry_uri, credentials=where.credentials)
        for start in range(0, len(ids), _RUNS_PER_SEARCH):
            chunk = ids[start : start + _RUNS_PER_SEARCH]
            query = and_(attribute_in("source_run_id", chunk), model_status_equals("PENDING"))
            try:
                with mlflow_errors(
                    f"looking for PENDING models on {redact_uri(where.tracking_uri)}",
                    default=LoggedModelError,
                ):
                    pending = _search_all(client, where.experiment_id, query)
            except TrackingTasksError as exc:
                errors.append(str(exc))
                continue
            for model in pending:
                try:
                    with mlflow_errors(
                        f"model {model.model_id} on {redact_uri(where.tracking_uri)}",
                        default=LoggedModelError,
                    ):
                        if client.get_logged_model(model.model_id).status == (
                            LoggedModelStatus.PENDING
                        ):
                            finalize_failed(client, model.model_id, why)
                            failed.append(model.model_id)
                except TrackingTasksError as exc:
                    errors.append(str(exc))
    if failed:
        log.info("Finalised %d PENDING model(s) FAILED (%s): %s", len(failed), reason, failed)
    return errors


def _search_all(client: MlflowClient, experiment_id: str, query: str) -> list[LoggedModel]:
    found: list[LoggedModel] = []
    token: str | None = None
    while True:
        page = client.search_logged_models(
            [experiment_id], filter_string=query, max_results=100, page_token=token
        )
        found += list(page)
        token = page.token
        if not token:
            return found
