"""Logged models (MLflow 3): log one into a run, found again on a retry; link metrics to it."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tracking_tasks._validation import check_metrics, check_model_name, check_params, check_tags
from tracking_tasks.errors import (
    InvalidArgumentError,
    LoggedModelError,
    RunNotFoundError,
    mlflow_errors,
)
from tracking_tasks.handles import ModelRef, RunRef
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops._artifacts.transport import Destination
from tracking_tasks.ops._artifacts.upload import upload_to
from tracking_tasks.ops._client import client_for
from tracking_tasks.ops._filters import and_, tag_equals
from tracking_tasks.ops._logging import send_batch
from tracking_tasks.ops._model_files import (
    Requirements,
    resolve_flavor,
    save_model_locally,
    stamp_model_folder,
)
from tracking_tasks.ops._model_filters import attribute_in
from tracking_tasks.ops._model_lifecycle import failure_reason, finalize_failed
from tracking_tasks.ops._model_metrics import model_metrics
from tracking_tasks.tags import MODEL_FAILURE_TAG, MODEL_IDENTITY_TAG
from tracking_tasks.urls import redact_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel

log = logging.getLogger(__name__)

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
        workspace=run.workspace,
    )


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
        client = client_for(run)
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
                try:
                    finalize_failed(client, logged.model_id, failure_reason(exc))
                except Exception as unfinished:  # the original failure is what propagates
                    log.warning(
                        "Model %r (%s) of run %s stays PENDING: it failed (%s) and could not "
                        "be finalised FAILED (%s); the flow's state hooks or reconcile will, "
                        "once its run ends",
                        model_name,
                        logged.model_id,
                        run.run_id,
                        failure_reason(exc),
                        unfinished,
                    )
                else:
                    log.warning(
                        "Model %r (%s) of run %s finalised FAILED: %s",
                        model_name,
                        logged.model_id,
                        run.run_id,
                        failure_reason(exc),
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
            workspace=run.workspace,
        ),
        folder,
        max_workers=max_workers,
        timeout_seconds=timeout_seconds,
    )
    with mlflow_errors(what, default=LoggedModelError):
        if checked_metrics:
            send_batch(run, metrics=model_metrics(checked_metrics, logged.model_id))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
