"""Runs: open one (or find it again by its identity), read it, end it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracking_tasks._status import TERMINAL_STATUSES
from tracking_tasks._validation import check_run_name, check_tags
from tracking_tasks.errors import (
    InvalidArgumentError,
    RunCreationError,
    RunNotFoundError,
    TrackingConfigError,
    mlflow_errors,
)
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops._client import client_for
from tracking_tasks.ops._filters import tag_equals
from tracking_tasks.ops._logging import now_ms
from tracking_tasks.ops._parents import check_parent_location, check_parent_run
from tracking_tasks.tags import CONFIG_HASH_TAG, IDENTITY_TAG, PARENT_RUN_TAG
from tracking_tasks.urls import redact_uri

if TYPE_CHECKING:
    from mlflow.entities import RunInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """A checked request for a run: where, its name, every tag, and its identity.

    Made by :func:`plan_run` before any request is sent.

    Attributes:
        context: Where the run goes.
        run_name: The run's name (None: MLflow picks one).
        tags: Every tag the run is created with.
        config_hash: ``config_hash`` of the stage config, if one was given.
        parent_run_id: The parent of a nested run.
        identity: The run's identity (a retry finds the run again by it), or None.
    """

    context: TrackingContext
    run_name: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    config_hash: str | None = None
    parent_run_id: str | None = None
    identity: str | None = None


@dataclass(frozen=True)
class OpenedRun:
    """What :func:`open_run` did: the run's handle, and the status it had if found again.

    Attributes:
        ref: The run's handle.
        found_status: None for a new run; else the status the run had when found again
            (a terminal one means it was reopened).
    """

    ref: RunRef
    found_status: str | None = None


def plan_run(
    context: TrackingContext,
    run_name: str | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
    config: Any = None,
    parent_run_id: str | RunRef | None = None,
    idempotency_key: str | None = None,
    scope_id: str | None = None,
    scope_tags: Mapping[str, str] | None = None,
) -> RunPlan:
    """Check a run request and compute its identity; no request is sent.

    A run's identity is (scope, experiment, run name, config hash, parent,
    ``idempotency_key``), where the scope is the orchestrator's run (a Prefect flow run
    id). It exists when there is a scope or an idempotency key.

    Args:
        context: From ``setup_mlflow``.
        run_name: The run's name; MLflow picks one if None.
        tags: Extra tags (on top of the context's default tags and MLflow's own context
            tags: see :func:`mlflow_context_tags`).
        config: The stage config; its ``config_hash`` is tagged.
        parent_run_id: Parent run (id or handle) to nest this run under.
        idempotency_key: Distinguishes runs that share name, config and parent.
        scope_id: The orchestrator run this run belongs to, if any.
        scope_tags: Tags naming that orchestrator run (``prefect.*``).

    Returns:
        The ``RunPlan``.

    Raises:
        TrackingConfigError: ``context`` is not a ``TrackingContext``.
        InvalidArgumentError: ``run_name`` is not a string or longer than 250 characters.
        InvalidParentRunError: the parent ``RunRef`` is on another server or experiment.
        InvalidLogDataError: a tag is invalid.
        ConfigHashError: ``config`` cannot be hashed.

    Example:
        >>> ctx = TrackingContext(tracking_uri="sqlite:///mlflow.db", experiment_id="1",
        ...                       experiment_name="ner", config_hash="0" * 64)
        >>> plan = plan_run(ctx, "train", config={"lr": 0.1}, idempotency_key="a")
        >>> len(plan.identity), plan.tags["tracking_tasks.config_hash"] == plan.config_hash
        (32, True)
    """
    if not isinstance(context, TrackingContext):
        raise TrackingConfigError(
            f"context must be the TrackingContext returned by setup_mlflow, not "
            f"{type(context).__name__}"
        )
    run_name = check_run_name(run_name)
    user_tags = check_tags(tags or {})
    digest = config_hash(config) if config is not None else None
    parent = parent_run_id.run_id if isinstance(parent_run_id, RunRef) else parent_run_id
    if parent is not None and not isinstance(parent, str):
        raise InvalidArgumentError(
            f"parent_run_id must be a run id or a RunRef, not {type(parent).__name__}"
        )
    if isinstance(parent_run_id, RunRef):
        check_parent_location(parent_run_id, context)
    identity: str | None = None
    if scope_id is not None or idempotency_key is not None:
        identity = config_hash(
            {
                "flow_run_id": scope_id,
                "experiment_id": context.experiment_id,
                "run_name": run_name,
                "config_hash": digest,
                "parent_run_id": parent,
                "idempotency_key": idempotency_key,
            }
        )[:32]
    all_tags: dict[str, str] = {
        **mlflow_context_tags(),
        **context.default_tags,
        **user_tags,
        **(scope_tags or {}),
    }
    if digest is not None:
        all_tags[CONFIG_HASH_TAG] = digest
    if identity is not None:
        all_tags[IDENTITY_TAG] = identity
    if parent is not None:
        all_tags[PARENT_RUN_TAG] = parent
    return RunPlan(
        context=context,
        run_name=run_name,
        tags=all_tags,
        config_hash=digest,
        parent_run_id=parent,
        identity=identity,
    )


def mlflow_context_tags() -> dict[str, str]:
    """The tags ``mlflow.start_run`` puts on a run, from MLflow's own context providers.

    ``MlflowClient.create_run`` sets none of them, and MLflow's UI then shows a run's
    "Created by" and "Source" as empty. MLflow's run-context registry resolves them as
    ``start_run`` does: ``mlflow.user``, ``mlflow.source.name`` / ``mlflow.source.type``,
    ``mlflow.source.git.commit`` in a git checkout, and whatever a plugin's provider adds.
    The caller's tags win over them.

    Returns:
        The context tags.

    Example:
        >>> sorted(k for k in mlflow_context_tags() if k in ("mlflow.user", "mlflow.source.type"))
        ['mlflow.source.type', 'mlflow.user']
    """
    from mlflow.tracking.context.registry import resolve_tags

    return {str(key): str(value) for key, value in resolve_tags({}).items()}


def _find_by_identity(context: TrackingContext, identity: str) -> RunInfo | None:
    from mlflow.entities import ViewType

    runs = client_for(context).search_runs(
        [context.experiment_id],
        filter_string=tag_equals(IDENTITY_TAG, identity),
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0].info if runs else None


def open_run(plan: RunPlan, *, known_run_id: str | None = None, search: bool = False) -> OpenedRun:
    """Create the planned run, or find it again and reopen it if an attempt ended it.

    Args:
        plan: From :func:`plan_run`.
        known_run_id: The run this process already opened for the plan's identity.
        search: Search the server for a run with the plan's identity (an earlier
            attempt, possibly in another process, may have opened it). A search costs
            far more than a create: pass True only when such an attempt may exist.

    Returns:
        An ``OpenedRun``.

    Raises:
        InvalidParentRunError: the plan's parent does not exist, is deleted, or is in
            another experiment (checked before a new run is created).
        RunCreationError: MLflow refused to create, find or reopen the run.

    Example:
        >>> import tempfile
        >>> uri = f"sqlite:///{tempfile.mkdtemp()}/mlflow.db"
        >>> ctx = TrackingContext(tracking_uri=uri, experiment_id="0",
        ...                       experiment_name="Default", config_hash="0" * 64)
        >>> first = open_run(plan_run(ctx, "train", idempotency_key="k"), search=True)
        >>> again = open_run(plan_run(ctx, "train", idempotency_key="k"), search=True)
        >>> again.ref.run_id == first.ref.run_id, again.found_status
        (True, 'RUNNING')
    """
    context = plan.context
    client = client_for(context)
    with mlflow_errors(
        f"could not create MLflow run {plan.run_name!r} in experiment {context.experiment_id} "
        f"on {redact_uri(context.tracking_uri)}",
        default=RunCreationError,
    ):
        existing: RunInfo | None = None
        if plan.identity is not None:
            if known_run_id is not None:
                existing = client.get_run(known_run_id).info
            elif search:
                existing = _find_by_identity(context, plan.identity)
        if existing is None and plan.parent_run_id is not None:
            check_parent_run(context, plan.parent_run_id)
        if existing is not None:
            if existing.status in TERMINAL_STATUSES:
                client.update_run(existing.run_id, status="RUNNING")
                log.info(
                    "Reopened MLflow run %s (%s, was %s) for this retry",
                    existing.run_id,
                    existing.run_name,
                    existing.status,
                )
            else:
                log.info("Found MLflow run %s (%s) again", existing.run_id, existing.run_name)
            info = existing
        else:
            info = client.create_run(
                context.experiment_id,
                start_time=now_ms(),
                tags=dict(plan.tags),
                run_name=plan.run_name,
            ).info
    ref = RunRef(
        run_id=info.run_id,
        experiment_id=context.experiment_id,
        run_name=info.run_name or plan.run_name or info.run_id,
        tracking_uri=context.tracking_uri,
        registry_uri=context.registry_uri,
        parent_run_id=plan.parent_run_id,
        config_hash=plan.config_hash,
        credentials=context.credentials,
        workspace=context.workspace,
    )
    if existing is None:
        log.info(
            "Created MLflow run %s (%s)%s",
            ref.run_id,
            ref.run_name,
            f": {ref.url}" if ref.url else "",
        )
    return OpenedRun(ref=ref, found_status=None if existing is None else str(existing.status))


def create_mlflow_run(
    context: TrackingContext,
    run_name: str | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
    config: Any = None,
    parent_run_id: str | RunRef | None = None,
    idempotency_key: str | None = None,
) -> RunRef:
    """Create an MLflow run outside Prefect (or find it again by ``idempotency_key``).

    The plain form of the ``tracking_tasks.create_mlflow_run`` task, for code that runs
    without Prefect: no flow run scopes the run's identity, so a run is found again only
    when the same ``idempotency_key`` (with the same name, config and parent) is given.

    Args:
        context: From ``setup_mlflow``.
        run_name: The run's name; MLflow picks one if None.
        tags: Extra tags (on top of the context's default tags).
        config: The stage config; its ``config_hash`` is tagged.
        parent_run_id: Parent run (id or handle) to nest this run under.
        idempotency_key: Finds the run an earlier call with the same key opened.

    Returns:
        The run's ``RunRef``.

    Raises:
        InvalidArgumentError: ``run_name`` is longer than 250 characters (checked before
            anything is written).
        InvalidLogDataError: a tag is invalid (checked before anything is written).
        ConfigHashError: ``config`` cannot be hashed.
        InvalidParentRunError: the parent run does not exist, is deleted, or lives in
            another experiment or on another server (checked before the run is created).
        RunCreationError: MLflow refused to create or reopen the run.

    Example:
        >>> run = create_mlflow_run(ctx, "train", config={"lr": 0.1}, idempotency_key="k1")
        >>> create_mlflow_run(ctx, "train", config={"lr": 0.1}, idempotency_key="k1") == run
        True
    """
    plan = plan_run(
        context,
        run_name,
        tags=tags,
        config=config,
        parent_run_id=parent_run_id,
        idempotency_key=idempotency_key,
    )
    return open_run(plan, search=plan.identity is not None).ref


def get_run_info(run: RunRef) -> RunInfo:
    """Fetch a run's current info (status, start and end time) from its tracking server.

    Args:
        run: The run handle.

    Returns:
        MLflow's ``RunInfo`` for the run.

    Raises:
        RunNotFoundError: the run does not exist there.
        TrackingServerError: the server failed or could not be reached.

    Example:
        >>> get_run_info(run).status
        'RUNNING'
    """
    with mlflow_errors(
        f"could not read MLflow run {run.run_id} on {redact_uri(run.tracking_uri)}",
        not_found=RunNotFoundError,
    ):
        client = client_for(run)
        return client.get_run(run.run_id).info
