"""Promotion: move a registry alias (``champion``) to a version only when it is better."""

from __future__ import annotations

import logging
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks._validation import check_key
from tracking_tasks.errors import (
    InvalidArgumentError,
    LoggedModelError,
    ModelNotFoundError,
    ModelRegistryError,
    TrackingTasksError,
    mlflow_errors,
)
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._client import client_for, get_client
from tracking_tasks.ops._model_registry import ModelVersion, get_model_version, set_model_alias
from tracking_tasks.ops._model_search import latest_metrics
from tracking_tasks.tags import promotion_tag
from tracking_tasks.urls import redact_uri

log = logging.getLogger(__name__)


class PromotionDecision(BaseModel):
    """What ``promote_model`` decided about an alias, and why.

    Args:
        promoted: True when the alias points at ``version`` afterwards.
        name: The registered model.
        alias: The alias (``champion``).
        version: The candidate version.
        previous_version: The version the alias pointed at before, if any.
        metric: The metric compared.
        value: The candidate's value of it.
        previous_value: The previous version's value, if it had one.
        reason: The decision in a sentence (also tagged on the run and logged).

    Example:
        >>> PromotionDecision(promoted=True, name="digits", alias="champion", version="1",
        ...                   metric="acc", value=0.9, reason="first").promoted
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    promoted: bool = Field(description="True when the alias points at the version afterwards.")
    name: str = Field(description="The registered model.")
    alias: str = Field(description="The alias.")
    version: str = Field(description="The candidate version.")
    previous_version: str | None = Field(default=None, description="The alias's version before.")
    metric: str = Field(description="The metric compared.")
    value: float = Field(description="The candidate's value.")
    previous_value: float | None = Field(default=None, description="The previous value.")
    reason: str = Field(description="The decision in a sentence.")


def _metric_of(version: ModelVersion, metric: str) -> float | None:
    """The latest value of ``metric`` linked to the version's logged model, or None."""
    if version.model_id is None or version.tracking_uri is None:
        return None
    client = get_client(
        version.tracking_uri,
        version.registry_uri,
        credentials=version.credentials,
        workspace=version.workspace,
    )  # a version's tracking URI may be None: checked above
    with mlflow_errors(
        f"could not read logged model {version.model_id} on {redact_uri(version.tracking_uri)}",
        default=LoggedModelError,
        not_found=ModelNotFoundError,
    ):
        model = client.get_logged_model(version.model_id)
    value = latest_metrics(model).get(metric)
    return None if value is None or math.isnan(value) else value


def promote_model(
    version: ModelVersion,
    metric: str,
    *,
    alias: str = "champion",
    mode: Literal["max", "min"] = "max",
    run: RunRef | None = None,
) -> PromotionDecision:
    """Move ``alias`` to ``version`` only if it beats the alias's current version on ``metric``.

    Both values are the latest value of ``metric`` linked to each version's logged model
    (``log_model(..., metrics=...)`` or ``log_model_metrics``). The alias moves when
    there is no current version, when the current one has no value of the metric, or
    when the candidate is strictly better (higher for ``mode="max"``, lower for
    ``"min"``); a tie keeps the current one. The decision is tagged on ``run`` (by
    default the run the version was registered from) as
    ``tracking_tasks.promotion.<alias>`` and logged. Asking again for the version the
    alias already points at changes nothing (a retry).

    Args:
        version: The candidate (``register_model``'s ``ModelVersion``).
        metric: The metric to compare, e.g. ``"test_accuracy"``.
        alias: The alias to move.
        mode: ``"max"``: higher is better; ``"min"``: lower is better.
        run: The run to record the decision on (default: the version's run).

    Returns:
        The ``PromotionDecision``.

    Raises:
        InvalidArgumentError: a bad metric name, mode or version, or the candidate's
            logged model has no value of ``metric``.
        ModelRegistryError: the registry failed or refused the alias.
        LoggedModelError: a logged model could not be read.

    Example:
        >>> from prefect import flow
        >>> from tracking_tasks import ModelRef
        >>> from tracking_tasks.ops import register_model
        >>> @flow
        ... def publish(model: ModelRef, run: RunRef) -> bool:
        ...     version = register_model(model, "digits-sgd")
        ...     return promote_model(version, "test_accuracy", run=run).promoted
    """
    if not isinstance(version, ModelVersion) or version.tracking_uri is None:
        raise InvalidArgumentError(
            "version must be a ModelVersion from register_model or get_model_version"
        )
    try:
        name = check_key(metric, "metric")
    except TrackingTasksError as exc:
        raise InvalidArgumentError(str(exc)) from exc
    if mode not in ("max", "min"):
        raise InvalidArgumentError(f"mode {mode!r} must be 'max' or 'min'")
    value = _metric_of(version, name)
    if value is None:
        raise InvalidArgumentError(
            f"version {version.version} of {version.name!r} ({version.source}) has no value of "
            f"{name!r} linked to its logged model: log it with log_model(..., metrics=...) or "
            "log_model_metrics before promoting"
        )
    try:
        current: ModelVersion | None = get_model_version(
            version.name,
            alias=alias,
            tracking_uri=version.tracking_uri,
            registry_uri=version.registry_uri,
            workspace=version.workspace,
        ).model_copy(update={"credentials": version.credentials})  # the same server's
    except ModelNotFoundError:
        current = None
    label = f"version {version.version} ({name} {value:.6g})"
    previous_value = None if current is None else _metric_of(current, name)
    if current is None:
        promoted, reason = True, f"promoted {label} to {alias}: there was no {alias}"
    elif current.version == version.version:
        promoted, reason = True, f"{label} is already {alias}"
    elif previous_value is None:
        promoted = True
        reason = f"promoted {label} to {alias}: {alias} version {current.version} has no {name}"
    else:
        promoted = value > previous_value if mode == "max" else value < previous_value
        versus = f"{name} {previous_value:.6g} of {alias} version {current.version}"
        reason = (
            f"promoted {label} to {alias}: better than {versus}"
            if promoted
            else f"kept {alias} version {current.version}: {label} does not beat {versus}"
        )
    if promoted and (current is None or current.version != version.version):
        set_model_alias(version, alias)
    decision = PromotionDecision(
        promoted=promoted,
        name=version.name,
        alias=alias,
        version=version.version,
        previous_version=None if current is None else current.version,
        metric=name,
        value=value,
        previous_value=previous_value,
        reason=reason,
    )
    run_id = run.run_id if run is not None else version.run_id
    if run_id:
        client = (
            client_for(run)
            if run is not None
            else get_client(
                version.tracking_uri, credentials=version.credentials, workspace=version.workspace
            )
        )
        with mlflow_errors(
            f"could not record the {alias} decision on run {run_id}", default=ModelRegistryError
        ):
            client.set_tag(run_id, promotion_tag(alias), reason)
    log.info("Model %r: %s", version.name, reason)
    return decision
