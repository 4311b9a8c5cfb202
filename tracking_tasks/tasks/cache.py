"""Cache policies: setup_mlflow once per flow run and config; finders by what they search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from tracking_tasks.config.resolve import resolve_tracking_config
from tracking_tasks.errors import TrackingTasksError
from tracking_tasks.hashing import config_hash
from tracking_tasks.ops.query import resolve_scope

__all__ = ["LookupCachePolicy", "SetupCachePolicy", "credentials_identity"]

#: The setup_mlflow arguments that decide where it tracks (azure_credential does not).
_RESOLVED_ARGUMENTS = (
    "experiment_name",
    "tracking_uri",
    "registry_uri",
    "artifact_location",
    "azure_workspace",
    "ml_client",
    "credentials",
)


@dataclass
class SetupCachePolicy(CachePolicy):
    """Cache ``setup_mlflow`` per flow run, keyed by the hash of the resolved config.

    Resolution reads the environment, so the key is computed from what the task would
    resolve, not from its raw inputs. An Azure workspace counts by its identifiers (an
    ``MLClient`` is neither hashed nor persisted), a credentials block by its non-secret
    identity. Outside a flow run nothing is cached.

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
        credentials = inputs.get("credentials")
        try:
            resolved = resolve_tracking_config(
                inputs.get("config"), **{name: inputs.get(name) for name in _RESOLVED_ARGUMENTS}
            )
        except TrackingTasksError:
            return None  # no key: the task body runs and raises the clear error
        source = {"config": config_hash(resolved), "credentials": credentials_identity(credentials)}
        return f"tracking-tasks-setup-{flow_run_id}-{config_hash(source)}"


def credentials_identity(credentials: Any) -> dict[str, Any] | None:
    """What a credentials block is, for a cache key: never its secret, nor a hash of it.

    Example:
        >>> credentials_identity(None) is None
        True
    """
    identity = getattr(credentials, "cache_identity", None)
    return identity() if callable(identity) else None


@dataclass
class LookupCachePolicy(CachePolicy):
    """Cache a finder task by what it would look up: task, inputs, server, experiments.

    The resolved tracking URI and experiment ids are part of the key, so an entry is
    never shared between tracking servers or experiments (the environment may point
    elsewhere, or an experiment be recreated under the same name); so is the task's
    key (its name and source), so two finder tasks with equal inputs never share one.
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
            )
            digest = config_hash(
                {
                    "task": task_ctx.task.task_key,
                    "inputs": {**inputs, "credentials": credentials_identity(credentials)},
                    "tracking_uri": scope.tracking_uri,
                    "experiment_ids": sorted(scope.experiment_ids),
                }
            )
        except TrackingTasksError:
            return None
        return f"tracking-tasks-{task_ctx.task.name}-{digest}"
