"""Model registry tasks: register a version once, read the newest (never cached)."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from tracking_tasks.ops import _model_registry as plain
from tracking_tasks.tasks._task import tracking_task

# Creates a registry entry (found again on a retry): never cached.
register_model_version = tracking_task(name="register_model_version", cache_policy=NO_CACHE)(
    plain.register_model_version
)
# Reads what is newest now: never cached.
latest_model_version = tracking_task(name="latest_model_version", cache_policy=NO_CACHE)(
    plain.latest_model_version
)
