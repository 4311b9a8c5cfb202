"""Finder tasks (runs and logged models): the plain finders, asking the server every time unless told otherwise."""

from __future__ import annotations

import datetime as dt
from typing import ParamSpec, TypeVar

from prefect.cache_policies import NO_CACHE

from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.ops import _finders as search
from tracking_tasks.ops import _model_search as model_search
from tracking_tasks.tasks._cache import LookupCachePolicy
from tracking_tasks.tasks._task import TrackingTask, tracking_task

P = ParamSpec("P")
R = TypeVar("R")

# A lookup answers what the server holds now: a cached answer could miss a run logged
# since (the best run of a sweep that just ended), so none is cached unless asked for.
find_mlflow_runs = tracking_task(name="find_mlflow_runs", cache_policy=NO_CACHE)(
    search.find_mlflow_runs
)
find_best_run = tracking_task(name="find_best_run", cache_policy=NO_CACHE)(search.find_best_run)
find_run_by_config_hash = tracking_task(name="find_run_by_config_hash", cache_policy=NO_CACHE)(
    search.find_run_by_config_hash
)
find_runs_for_flow_run = tracking_task(name="find_runs_for_flow_run", cache_policy=NO_CACHE)(
    search.find_runs_for_flow_run
)
find_logged_models = tracking_task(name="find_logged_models", cache_policy=NO_CACHE)(
    model_search.find_logged_models
)
find_best_model = tracking_task(name="find_best_model", cache_policy=NO_CACHE)(
    model_search.find_best_model
)

#: The cache key of each finder (``find_runs_for_flow_run`` searches every experiment
#: when none is named, so its key resolves them all).
_POLICIES = {
    find_mlflow_runs.name: LookupCachePolicy(),
    find_best_run.name: LookupCachePolicy(),
    find_run_by_config_hash.name: LookupCachePolicy(),
    find_runs_for_flow_run.name: LookupCachePolicy(all_when_unnamed=True),
    find_logged_models.name: LookupCachePolicy(),
    find_best_model.name: LookupCachePolicy(),
}


def allow_stale(finder: TrackingTask[P, R], max_age: dt.timedelta) -> TrackingTask[P, R]:
    """A finder whose answer Prefect may reuse for up to ``max_age``: opt in to staleness.

    The finders ask the tracking server every time, so an answer is never older than
    the call. Where an answer up to ``max_age`` old will do (a dashboard flow, a
    lookup repeated in a loop), this returns the finder with Prefect caching: keyed by
    the task, its inputs, the resolved tracking URI and the experiment ids (one request
    per experiment name), shared across flow runs and processes once results persist.
    A run logged meanwhile is not seen until the entry expires;
    ``.with_options(refresh_cache=True)`` asks again and replaces the entry. The cache is
    Prefect's, so it applies inside a flow or task run; called outside one, the finder
    is its plain function and asks the server.

    Args:
        finder: ``find_mlflow_runs``, ``find_best_run``, ``find_run_by_config_hash``,
            ``find_runs_for_flow_run``, ``find_logged_models`` or ``find_best_model``
            (the tasks).
        max_age: How old a reused answer may be, e.g. ``timedelta(minutes=5)``.

    Returns:
        The finder task with that cache.

    Raises:
        InvalidArgumentError: not one of the finder tasks, or ``max_age`` not a positive
            ``timedelta``.

    Example:
        >>> from datetime import timedelta
        >>> from prefect import flow
        >>> best_within_5_min = allow_stale(find_best_run, timedelta(minutes=5))
        >>> @flow
        ... def dashboard() -> str | None:
        ...     best = best_within_5_min("f1", "ner")  # may be up to 5 minutes old
        ...     return best.run_id if best else None
    """
    policy = _POLICIES.get(getattr(finder, "name", ""))
    if policy is None or not isinstance(finder, TrackingTask):
        raise InvalidArgumentError(
            f"allow_stale takes one of the finder tasks ({', '.join(sorted(_POLICIES))}), "
            f"not {finder!r}"
        )
    if not isinstance(max_age, dt.timedelta) or max_age <= dt.timedelta(0):
        raise InvalidArgumentError(
            f"max_age must be a positive timedelta such as timedelta(minutes=5), not {max_age!r}"
        )
    return finder.with_options(cache_policy=policy, cache_expiration=max_age)
