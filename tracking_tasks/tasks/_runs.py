"""Run tasks: create_mlflow_run (idempotent per flow run), logging, end_mlflow_run."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prefect.cache_policies import NO_CACHE

from tracking_tasks._status import TERMINAL_STATUSES
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.ops import _lifecycle as lifecycle
from tracking_tasks.ops import _logging as batching
from tracking_tasks.ops import _runs as plain
from tracking_tasks.ops._fluent import RunHandle, enclosing_run
from tracking_tasks.ops._resume import set_retry_probe
from tracking_tasks.tags import DEPLOYMENT_NAME_TAG, PREFECT_API_TAG
from tracking_tasks.tasks._keyed_artifacts import artifact_key, keyed_markdown, publish
from tracking_tasks.tasks._prefect_api import prefect_api_identity
from tracking_tasks.tasks._run_memory import RUN_MEMORY
from tracking_tasks.tasks._runtime import current_run_info, deployment_name
from tracking_tasks.tasks._setup import resolve_context
from tracking_tasks.tasks._task import end_at_exit, tracking_task

log = logging.getLogger(__name__)


def open_mlflow_run(
    context: TrackingContext | None = None,
    run_name: str | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
    config: Any = None,
    parent_run_id: str | RunRef | None = None,
    idempotency_key: str | None = None,
    resume_run_id: str | None = None,
    link: bool = True,
) -> RunHandle:
    """Create an MLflow run, or find it again on a retry, and return its handle.

    Inside a flow run a run's identity is (flow run, experiment, run name, config hash,
    parent, ``idempotency_key``): a retried task or a retried flow run gets the same
    MLflow run back instead of a second one (reopened if an earlier attempt ended it).
    Two calls with the same identity in one flow run also share a run: to open
    several runs of the same name and config, pass distinct ``idempotency_key`` values.

    Every run is tagged with the Prefect flow run id and name, flow name, deployment
    (when there is one), task run id, the Prefect API the flow run lives in
    (``prefect.api``: what reconcile checks before it ends a run) and the config hash,
    and with the context tags MLflow's own ``mlflow.start_run`` sets (``mlflow.user``,
    ``mlflow.source.*``). When the run has a UI page (an http(s) server, Azure ML
    studio), a Prefect link artifact keyed ``mlflow-run-<run id>`` points at it,
    published once in the background. The run is not the fluent "active run": pass the
    returned handle to the logging tasks. Outside Prefect, use
    ``tracking_tasks.ops._runs.create_mlflow_run``.

    The handle is also a ``with`` block (a ``RunHandle``): inside it the run is MLflow's
    active run in this thread, so fluent ``mlflow.log_*`` calls land in it; leaving the
    block ends it FINISHED, an exception ends it FAILED (and propagates). A run opened
    inside such a block, in the same thread, is nested under the block's run unless
    ``parent_run_id`` names another. The context may be omitted: the last
    ``setup_mlflow`` of this flow run (else of this process) is used, else the
    environment and the embedded default, as ``setup_mlflow()`` resolves them.

    ``open_mlflow_run`` is the task's body, for code already inside a task (a sweep's
    trial) that opens a run without a nested task run.

    Args:
        context: From ``setup_mlflow``; None: see above.
        run_name: The run's name; MLflow picks one if None.
        tags: Extra tags (on top of the context's default tags).
        config: The stage config (dict, pydantic model, dataclass); its ``config_hash``
            is tagged as ``tracking_tasks.config_hash``.
        parent_run_id: Parent run (id or handle) to nest this run under (None: the
            enclosing ``with`` block's run in this thread, if any).
        idempotency_key: Distinguishes runs that share name, config and parent.
        resume_run_id: A run an earlier flow run opened for the same work (a resumed
            Optuna study's sweep run), found again and reopened instead of a new one.
        link: Publish the Prefect link artifact (False for a sweep's trials: 50 trials
            would make 50 links, and the sweep's table lists them).

    Returns:
        A frozen ``RunHandle``: a ``RunRef`` (run_id, experiment_id, run_name,
        tracking_uri, ...) that is also a ``with`` block.

    Raises:
        TrackingConfigError: ``context`` is not a ``TrackingContext``.
        InvalidArgumentError: ``run_name`` is longer than 250 characters (checked before
            anything is written).
        InvalidLogDataError: a tag is invalid (checked before anything is written).
        ConfigHashError: ``config`` cannot be hashed.
        RunCreationError: MLflow refused to create or reopen the run.

    Example:
        >>> from prefect import flow
        >>> from tracking_tasks import log_params, mlflow_state_hooks, setup_mlflow
        >>> @flow(**mlflow_state_hooks())
        ... def train(lr: float = 0.1):
        ...     ctx = setup_mlflow(experiment_name="ner")
        ...     run = create_mlflow_run(ctx, run_name="train", config={"lr": lr})
        ...     log_params(run, {"lr": lr})
        ...     import mlflow
        ...     with create_mlflow_run(run_name="fluent"):  # the context of setup_mlflow above
        ...         mlflow.log_metric("f1", 0.85)  # lands in the "fluent" run
    """
    info = current_run_info()
    context = resolve_context(context, flow_run_id=info.flow_run_id)
    if parent_run_id is None and (outer := enclosing_run()) is not None:
        parent_run_id = outer
    scope_tags = info.tags()
    deployment = deployment_name(info.deployment_id)
    if deployment:
        scope_tags[DEPLOYMENT_NAME_TAG] = deployment
    if info.flow_run_id is not None:  # which Prefect API: reconcile ends only its own
        scope_tags[PREFECT_API_TAG] = prefect_api_identity()
    plan = plain.plan_run(
        context,
        run_name,
        tags=tags,
        config=config,
        parent_run_id=parent_run_id,
        idempotency_key=idempotency_key,
        scope_id=info.flow_run_id,
        scope_tags=scope_tags,
    )
    with RUN_MEMORY.identity_lock(plan.identity):
        opened = plain.open_run(
            plan,
            known_run_id=RUN_MEMORY.known_run_id(info.flow_run_id, plan.identity) or resume_run_id,
            # an earlier attempt (a task or flow retry, maybe in another process) can
            # only exist when Prefect counts more than one run of the task or the flow
            search=not info.is_first_attempt,
        )
        RUN_MEMORY.remember_run(info.flow_run_id, opened.ref, plan.identity)
    if info.is_first_attempt and opened.found_status in TERMINAL_STATUSES:
        # not a retry: the same identity asked twice in one flow run (a loop, say)
        log.warning(
            "MLflow run %s (%s) was already opened and ended in this flow run with the same "
            "name, config and parent: reopened it. To open a run of its own each time, pass "
            "an idempotency_key (a loop index) or a config that differs",
            opened.ref.run_id,
            opened.ref.run_name,
        )
    if info.flow_run_id is None:
        end_at_exit(opened.ref)  # no flow hook will end it: interpreter exit does
    if link and info.flow_run_id is not None and opened.ref.url is not None:
        ref = opened.ref
        publish(
            keyed_markdown(
                artifact_key("run", ref.run_id),
                f"[MLflow run {ref.run_name}]({ref.url})",
                f"MLflow run `{ref.run_id}` in experiment `{ref.experiment_id}`",
                info.flow_run_id,
                info.task_run_id,
            )
        )
    return RunHandle.model_validate(opened.ref.model_dump())


def release_run(run: RunRef) -> None:
    """Tell the flow run's hooks that the caller has ended ``run`` itself.

    The hooks check every run the flow run opened (one request each) before ending the
    ones still RUNNING; a caller that ended its run (a sweep's trial) spares them that.

    Args:
        run: A run the caller opened with ``open_mlflow_run`` and has ended.

    Example:
        >>> release_run(run)  # outside a flow run: nothing to forget
    """
    RUN_MEMORY.release_run(current_run_info().flow_run_id, run.run_id)


def retried_attempt() -> bool:
    """Tell whether the caller is a Prefect task run after its first try (a task retry, or
    a task of a retried flow run): a ``RunLogger`` made there resumes its run's history.

    Returns:
        True inside such a task run.

    Example:
        >>> retried_attempt()  # outside a task run
        False
    """
    info = current_run_info()
    return info.task_run_id is not None and not info.is_first_attempt


set_retry_probe(retried_attempt)

# Idempotency is a lookup keyed on the flow run, not a task cache.
create_mlflow_run = tracking_task(name="create_mlflow_run", cache_policy=NO_CACHE)(open_mlflow_run)
# Writes to MLflow: each must run every time, so none is cached.
log_params = tracking_task(name="log_params", cache_policy=NO_CACHE)(batching.log_params)
log_metrics = tracking_task(name="log_metrics", cache_policy=NO_CACHE)(batching.log_metrics)
set_tags = tracking_task(name="set_tags", cache_policy=NO_CACHE)(batching.set_tags)
end_mlflow_run = tracking_task(name="end_mlflow_run", cache_policy=NO_CACHE)(
    lifecycle.end_mlflow_run
)
