"""Cache policies: setup_mlflow once per flow run and config; finders by what they search."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from tracking_tasks.auth._kinds import credentials_identity
from tracking_tasks.config._resolve import resolve_tracking_config
from tracking_tasks.errors import TrackingTasksError
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops._scope import resolve_scope
from tracking_tasks.ops._setup import setup_mlflow as plain_setup_mlflow

#: The arguments resolution reads (where to track), read from its signature: they count
#: by what they resolve to, so the same settings reached two ways share an entry.
_RESOLVE_ARGUMENTS = tuple(inspect.signature(resolve_tracking_config).parameters)
#: setup_mlflow's other arguments, read from its signature: a new argument is part of the
#: key (by its identity) without anyone listing it here.
_OTHER_SETUP_ARGUMENTS = tuple(
    name
    for name in inspect.signature(plain_setup_mlflow).parameters
    if name not in _RESOLVE_ARGUMENTS
)


def _identity(value: Any) -> Any:
    """An argument that holds a secret or a connection counts by its kind, never whole."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return getattr(value, "description", None) or type(value).__qualname__


@dataclass
class SetupCachePolicy(CachePolicy):
    """Cache ``setup_mlflow`` per flow run, keyed by what its arguments resolve to.

    Resolution reads the environment, so the arguments resolution takes count by the
    hash of the config they resolve to (the same settings reached two ways share an
    entry); a credentials block counts by its non-secret identity; every other argument
    of ``setup_mlflow`` (read from its signature, so a new one is never left out) counts
    by its kind (an Azure credential is never hashed whole or persisted). Outside a flow
    run nothing is cached; arguments the key cannot represent give no key (the task
    runs).

    Example:
        >>> from prefect import task
        >>> @task(cache_policy=SetupCachePolicy())
        ... def setup(tracking_uri: str | None = None) -> str: ...
    """

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        flow_run_id = task_ctx.task_run.flow_run_id
        if flow_run_id is None:
            return None
        try:
            resolved = resolve_tracking_config(
                **{name: inputs.get(name) for name in _RESOLVE_ARGUMENTS}
            )
            source = {name: _identity(inputs.get(name)) for name in _OTHER_SETUP_ARGUMENTS}
            source["resolved"] = config_hash(resolved)
            source["credentials"] = credentials_identity(inputs.get("credentials"))
            digest = config_hash(source)
        except TrackingTasksError:
            return None  # no key: the task body runs and raises the clear error
        return f"tracking-tasks-setup-{flow_run_id}-{digest}"


@dataclass
class LookupCachePolicy(CachePolicy):
    """Cache a finder task by what it would look up: task, inputs, server, experiments.

    The resolved tracking URI, MLflow workspace and experiment ids are part of the key,
    so an entry is never shared between servers, workspaces or experiments (the
    environment may point elsewhere, or an experiment be recreated under the same
    name); so is the task's key (its name and source), so two finder tasks with equal
    inputs never share one.
    Resolving experiment names costs one request each. Inputs that cannot be hashed or
    resolved give no key: the task body runs and raises the clear error.

    Args:
        all_when_unnamed: The finder searches every experiment when none is named.

    Example:
        >>> from prefect import task
        >>> @task(cache_policy=LookupCachePolicy())
        ... def lookup(experiments: str, tracking_uri: str | None = None) -> int:
        ...     return 0
    """

    all_when_unnamed: bool = False

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        try:
            credentials = inputs.get("credentials")
            scope = resolve_scope(
                inputs.get("experiments"),
                inputs.get("experiment_name"),
                inputs.get("tracking_uri"),
                credentials=credentials,
                all_when_unnamed=self.all_when_unnamed,
                workspace=inputs.get("workspace"),
            )
            digest = config_hash(
                {
                    "task": task_ctx.task.task_key,
                    "inputs": {**inputs, "credentials": credentials_identity(credentials)},
                    "tracking_uri": scope.tracking_uri,
                    "workspace": scope.workspace,
                    "experiment_ids": sorted(scope.experiment_ids),
                }
            )
        except TrackingTasksError:
            return None
        return f"tracking-tasks-{task_ctx.task.name}-{digest}"
