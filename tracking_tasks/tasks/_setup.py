"""The setup_mlflow task (the plain setup, cached per flow run), and the one context fallback."""

from __future__ import annotations

from typing import Any

from tracking_tasks._environment import point_fluent_api
from tracking_tasks.auth._apply import ensure_credentials
from tracking_tasks.config._models import TrackingConfig
from tracking_tasks.handles import TrackingContext
from tracking_tasks.ops import _setup as plain
from tracking_tasks.tasks._cache import SetupCachePolicy
from tracking_tasks.tasks._run_memory import RUN_MEMORY, RunMemory
from tracking_tasks.tasks._runtime import current_run_info
from tracking_tasks.tasks._task import tracking_task


def _after_setup(context: Any, flow_run_id: str | None) -> None:
    """Remember where the flow run tracks (for its hooks and for calls that omit the
    context); point MLflow at it again.

    A cache hit skips the body, which is what points MLflow's fluent API at the
    experiment and scopes the credentials; the process may be a new one (a retried flow
    run), so both are done here too (a saved block is loaded again by its name). Run
    after the call, not as a state hook: Prefect logs two INFO lines for every hook.
    """
    if not isinstance(context, TrackingContext):
        return
    ensure_credentials(context.credentials, context.tracking_uri)
    point_fluent_api(context)
    RUN_MEMORY.remember_location(flow_run_id, context)
    RUN_MEMORY.remember_context(flow_run_id, context)


setup_mlflow = tracking_task(
    name="setup_mlflow", cache_policy=SetupCachePolicy(), after_call=_after_setup
)(plain.setup_mlflow)


_UNSET = object()


def resolve_context(
    given: TrackingContext | TrackingConfig | None = None,
    *,
    flow_run_id: str | object | None = _UNSET,
    memory: RunMemory = RUN_MEMORY,
    **overrides: Any,
) -> TrackingContext:
    """The context a call means: the one place "use the given context, else set up" lives.

    A ``TrackingContext`` is used as it is. With nothing given, the last ``setup_mlflow``
    of this flow run (else of this process) is used. Otherwise (a ``TrackingConfig``,
    ``overrides`` such as ``experiment_name=``, or no earlier setup) ``setup_mlflow`` runs:
    the task inside a flow run (cached per flow run), the plain function outside one;
    either way its context is then the last setup of the flow run and of the process.

    Args:
        given: A ``TrackingContext``, a ``TrackingConfig``, or None.
        flow_run_id: The flow run whose last setup counts (default: the current one).
        memory: Where the last setups are remembered (a fresh one in tests).
        **overrides: ``setup_mlflow`` arguments (``experiment_name=``...).

    Returns:
        A ``TrackingContext``.

    Raises:
        TrackingConfigError: ``given`` is neither a context nor a config, or what
            ``setup_mlflow`` raises.

    Example:
        >>> resolve_context(ctx) is ctx
        True
    """
    if isinstance(given, TrackingContext) and not overrides:
        return given
    if given is not None and not isinstance(given, TrackingConfig):
        from tracking_tasks.errors import TrackingConfigError

        raise TrackingConfigError(
            f"where to track is a TrackingContext (from setup_mlflow) or a TrackingConfig, "
            f"not {type(given).__name__}"
        )
    run_id = current_run_info().flow_run_id if flow_run_id is _UNSET else flow_run_id
    assert run_id is None or isinstance(run_id, str)
    if given is None and not overrides:
        last = memory.last_context(run_id)
        if last is not None:
            return last
    # the task: cached per flow run inside one, the plain function outside (remembered
    # by its after-call as the flow run's and this process's last setup either way)
    context: TrackingContext = setup_mlflow(given, **overrides)
    if memory is not RUN_MEMORY:
        memory.remember_context(run_id, context)
    return context
