"""Run creation (idempotent per flow run) and the log_params / log_metrics / set_tags tasks."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tracking_tasks._logging import logger
from tracking_tasks._prefect import PrefectRunInfo, current_run_info, deployment_name
from tracking_tasks.batching import now_ms, send_batch
from tracking_tasks.clients import error_code, get_client
from tracking_tasks.exceptions import RunCreationError, RunNotFoundError, TrackingConfigError
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.lifecycle import TERMINAL_STATUSES, known_run_id, remember_run
from tracking_tasks.urls import redact_uri
from tracking_tasks.validation import check_metrics, check_params, check_tags

if TYPE_CHECKING:
    from mlflow.entities import RunInfo

__all__ = ["create_mlflow_run", "get_run_info", "log_metrics", "log_params", "set_tags"]

CONFIG_HASH_TAG = "tracking_tasks.config_hash"
IDENTITY_TAG = "tracking_tasks.run_identity"
PARENT_RUN_TAG = "mlflow.parentRunId"
DEPLOYMENT_NAME_TAG = "prefect.deployment_name"

_identity_locks: dict[str, threading.Lock] = {}
_identity_locks_guard = threading.Lock()


def _identity_lock(identity: str) -> threading.Lock:
    with _identity_locks_guard:
        if len(_identity_locks) > 10_000:
            _identity_locks.clear()
        return _identity_locks.setdefault(identity, threading.Lock())


def get_run_info(run: RunRef) -> RunInfo:
    """Fetch a run's current info (status, start and end time) from its tracking server.

    Args:
        run: The run handle.

    Returns:
        MLflow's ``RunInfo`` for the run.

    Raises:
        RunNotFoundError: the run does not exist there.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def check(run: RunRef) -> str:
        ...     return get_run_info(run).status
    """
    from mlflow.exceptions import MlflowException

    try:
        return get_client(run.tracking_uri, run.registry_uri).get_run(run.run_id).info
    except MlflowException as exc:
        if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise RunNotFoundError(
                f"MLflow run {run.run_id} does not exist on {redact_uri(run.tracking_uri)}"
            ) from exc
        raise


def _find_again(context: TrackingContext, identity: str, info: PrefectRunInfo) -> RunInfo | None:
    """Find the run an earlier call or attempt opened for ``identity``, if any.

    This process remembers the runs it opened; an earlier attempt (a task or flow retry,
    possibly in another process) can only exist when Prefect counts more than one run
    of the task or the flow, and only then is the server searched (a search costs far
    more than a create).
    """
    run_id = known_run_id(info.flow_run_id, identity)
    if run_id is not None:
        return get_client(context.tracking_uri, context.registry_uri).get_run(run_id).info
    if info.is_first_attempt:
        return None
    return _find_by_identity(context, identity)


def _find_by_identity(context: TrackingContext, identity: str) -> RunInfo | None:
    from mlflow.entities import ViewType

    runs = get_client(context.tracking_uri, context.registry_uri).search_runs(
        [context.experiment_id],
        filter_string=f"tags.`{IDENTITY_TAG}` = '{identity}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0].info if runs else None


def _publish_link(ref: RunRef) -> None:
    from prefect.artifacts import create_link_artifact

    if ref.url is None:
        return
    try:
        create_link_artifact(
            link=ref.url,
            link_text=f"MLflow run {ref.run_name}",
            description=f"MLflow run `{ref.run_id}` in experiment `{ref.experiment_id}`",
        )
    except Exception as exc:  # a missing link must not fail the run it points to
        logger().warning("could not publish the Prefect link artifact for %s: %s", ref.url, exc)


@task(name="create_mlflow_run", cache_policy=NO_CACHE)  # idempotency is a lookup, not a cache
def create_mlflow_run(
    context: TrackingContext,
    run_name: str | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
    config: Any = None,
    parent_run_id: str | RunRef | None = None,
    idempotency_key: str | None = None,
) -> RunRef:
    """Create an MLflow run, or find it again on a retry, and return its handle.

    Inside a flow run a run's identity is (flow run, experiment, run name, config hash,
    parent, ``idempotency_key``): a retried task or a retried flow run gets the same
    MLflow run back instead of a second one (reopened if an earlier attempt ended it).
    Two calls with the same identity in one flow run also share a run: to open
    several runs of the same name and config, pass distinct ``idempotency_key`` values.

    Every run is tagged with the Prefect flow run id and name, flow name, deployment
    (when there is one), task run id and the config hash. When the tracking URI is an
    http(s) server, a Prefect link artifact points at the run's MLflow UI page. The
    run is not the fluent "active run": pass the returned handle to the logging tasks.

    Args:
        context: From ``setup_mlflow``.
        run_name: The run's name; MLflow picks one if None.
        tags: Extra tags (on top of the context's default tags).
        config: The stage config (dict, pydantic model, dataclass); its ``config_hash``
            is tagged as ``tracking_tasks.config_hash``.
        parent_run_id: Parent run (id or handle) to nest this run under.
        idempotency_key: Distinguishes runs that share name, config and parent.

    Returns:
        A frozen ``RunRef`` (run_id, experiment_id, run_name, tracking_uri, ...).

    Raises:
        InvalidLogDataError: a tag is invalid (checked before anything is written).
        ConfigHashError: ``config`` cannot be hashed.
        RunCreationError: MLflow refused to create or reopen the run.

    Example:
        >>> from prefect import flow
        >>> @flow(**mlflow_state_hooks())
        ... def train(lr: float = 0.1):
        ...     ctx = setup_mlflow(experiment_name="ner")
        ...     run = create_mlflow_run(ctx, run_name="train", config={"lr": lr})
        ...     log_params(run, {"lr": lr})
    """
    from mlflow.exceptions import MlflowException

    if not isinstance(context, TrackingContext):
        raise TrackingConfigError(
            f"context must be the TrackingContext returned by setup_mlflow, not "
            f"{type(context).__name__}"
        )
    user_tags = check_tags(tags or {})
    digest = config_hash(config) if config is not None else None
    parent = parent_run_id.run_id if isinstance(parent_run_id, RunRef) else parent_run_id
    info = current_run_info()

    identity: str | None = None
    if info.flow_run_id is not None or idempotency_key is not None:
        identity = config_hash(
            {
                "flow_run_id": info.flow_run_id,
                "experiment_id": context.experiment_id,
                "run_name": run_name,
                "config_hash": digest,
                "parent_run_id": parent,
                "idempotency_key": idempotency_key,
            }
        )[:32]

    all_tags: dict[str, str] = {**context.default_tags, **user_tags, **info.tags()}
    if digest is not None:
        all_tags[CONFIG_HASH_TAG] = digest
    if identity is not None:
        all_tags[IDENTITY_TAG] = identity
    if parent is not None:
        all_tags[PARENT_RUN_TAG] = parent
    deployment = deployment_name(info.deployment_id)
    if deployment:
        all_tags[DEPLOYMENT_NAME_TAG] = deployment

    client = get_client(context.tracking_uri, context.registry_uri)
    lock = _identity_lock(identity) if identity else threading.Lock()
    existing: RunInfo | None = None
    try:
        with lock:
            if identity is not None:
                existing = _find_again(context, identity, info)
            if existing is not None:
                if existing.status in TERMINAL_STATUSES:
                    client.update_run(existing.run_id, status="RUNNING")
                    logger().info(
                        "Reopened MLflow run %s (%s, was %s) for this retry",
                        existing.run_id,
                        existing.run_name,
                        existing.status,
                    )
                else:
                    logger().info(
                        "Found MLflow run %s (%s) again for this flow run",
                        existing.run_id,
                        existing.run_name,
                    )
                run_info = existing
            else:
                run = client.create_run(
                    context.experiment_id, start_time=now_ms(), tags=all_tags, run_name=run_name
                )
                run_info = run.info
            ref = RunRef(
                run_id=run_info.run_id,
                experiment_id=context.experiment_id,
                run_name=run_info.run_name or run_name or run_info.run_id,
                tracking_uri=context.tracking_uri,
                registry_uri=context.registry_uri,
                parent_run_id=parent,
                config_hash=digest,
            )
            remember_run(info.flow_run_id, ref, identity)
    except MlflowException as exc:
        raise RunCreationError(
            f"could not create MLflow run {run_name!r} in experiment {context.experiment_id} "
            f"on {redact_uri(context.tracking_uri)}: {exc.message}"
        ) from exc

    if existing is None:
        logger().info(
            "Created MLflow run %s (%s)%s",
            ref.run_id,
            ref.run_name,
            f": {ref.url}" if ref.url else "",
        )
    if info.flow_run_id is not None and ref.url is not None:  # an MLflow UI or Azure ML studio
        _publish_link(ref)
    return ref


@task(name="log_params", cache_policy=NO_CACHE)  # writes to MLflow: must run every time
def log_params(run: RunRef, params: Mapping[str, Any]) -> int:
    """Log params to a run in as few ``log_batch`` requests as MLflow allows (100 each).

    Args:
        run: The run handle.
        params: Name -> value; values are stored as strings.

    Returns:
        The number of params logged.

    Raises:
        InvalidLogDataError: a key is invalid, a value is NaN or longer than 6,000
            characters (checked before anything is sent), or MLflow refused a changed value.
        RunNotFoundError: the run does not exist.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def train(run):
        ...     log_params(run, {"lr": 0.1, "layers": 2})
    """
    from mlflow.entities import Param

    checked = check_params(params)
    send_batch(run, params=[Param(k, v) for k, v in checked.items()])
    return len(checked)


@task(name="log_metrics", cache_policy=NO_CACHE)  # writes to MLflow: must run every time
def log_metrics(
    run: RunRef, metrics: Mapping[str, float], step: int = 0, timestamp: int | None = None
) -> int:
    """Log metrics at one step in as few ``log_batch`` requests as allowed (1,000 each).

    Args:
        run: The run handle.
        metrics: Name -> number (NaN allowed).
        step: The step of every point.
        timestamp: Milliseconds since the epoch; now by default.

    Returns:
        The number of points logged.

    Raises:
        InvalidLogDataError: a name is invalid, a value is not a number or the step is
            not an integer (checked before anything is sent).
        RunNotFoundError: the run does not exist.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def evaluate(run):
        ...     log_metrics(run, {"f1": 0.91, "precision": 0.9}, step=0)
    """
    from mlflow.entities import Metric

    checked = check_metrics(metrics, step)
    ts = timestamp if timestamp is not None else now_ms()
    send_batch(run, metrics=[Metric(k, v, ts, s) for k, v, s in checked])
    return len(checked)


@task(name="set_tags", cache_policy=NO_CACHE)  # writes to MLflow: must run every time
def set_tags(run: RunRef, tags: Mapping[str, Any]) -> int:
    """Set tags on a run in as few ``log_batch`` requests as allowed (100 each).

    Args:
        run: The run handle.
        tags: Name -> value; values are stored as strings.

    Returns:
        The number of tags set.

    Raises:
        InvalidLogDataError: a key is not a valid string or a value is longer than 8,000
            characters (checked before anything is sent).
        RunNotFoundError: the run does not exist.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def train(run):
        ...     set_tags(run, {"stage": "training"})
    """
    from mlflow.entities import RunTag

    checked = check_tags(tags)
    send_batch(run, tags=[RunTag(k, v) for k, v in checked.items()])
    return len(checked)
