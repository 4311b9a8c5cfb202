"""Finder tasks: the plain finders, cached for five minutes by what they search."""

from __future__ import annotations

import datetime as dt

from prefect import task

from tracking_tasks.ops import _finders as search
from tracking_tasks.tasks._cache import LookupCachePolicy

#: How long a cached lookup is reused; override with ``.with_options(cache_expiration=...)``
#: or ask for a fresh answer with ``.with_options(refresh_cache=True)``.
DEFAULT_CACHE_EXPIRATION = dt.timedelta(minutes=5)

_LOOKUP = LookupCachePolicy()

find_mlflow_runs = task(
    name="find_mlflow_runs", cache_policy=_LOOKUP, cache_expiration=DEFAULT_CACHE_EXPIRATION
)(search.find_mlflow_runs)
find_best_run = task(
    name="find_best_run", cache_policy=_LOOKUP, cache_expiration=DEFAULT_CACHE_EXPIRATION
)(search.find_best_run)
find_run_by_config_hash = task(
    name="find_run_by_config_hash", cache_policy=_LOOKUP, cache_expiration=DEFAULT_CACHE_EXPIRATION
)(search.find_run_by_config_hash)
find_runs_for_flow_run = task(
    name="find_runs_for_flow_run",
    cache_policy=LookupCachePolicy(all_when_unnamed=True),
    cache_expiration=DEFAULT_CACHE_EXPIRATION,
)(search.find_runs_for_flow_run)
