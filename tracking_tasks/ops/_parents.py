"""Parent runs: a nested run is refused unless its parent exists, here, in its experiment."""

from __future__ import annotations

from tracking_tasks.errors import InvalidParentRunError, RunCreationError, mlflow_errors
from tracking_tasks.handles import RunRef, TrackingContext
from tracking_tasks.ops._client import client_for
from tracking_tasks.urls import redact_uri, same_server


def check_parent_location(parent: RunRef, context: TrackingContext) -> None:
    """Refuse a parent handle on another server or in another experiment (no request).

    Raises:
        InvalidParentRunError: the parent is elsewhere.

    Example:
        >>> check_parent_location(run, ctx)  # same server and experiment: no error
    """
    if not same_server(parent.tracking_uri, context.tracking_uri):
        raise InvalidParentRunError(
            f"parent run {parent.run_id} lives on {redact_uri(parent.tracking_uri)}, not on "
            f"{redact_uri(context.tracking_uri)}: a nested run must be on its parent's server"
        )
    if parent.experiment_id != context.experiment_id:
        raise InvalidParentRunError(
            f"parent run {parent.run_id} is in experiment {parent.experiment_id}, not in "
            f"{context.experiment_id} ({context.experiment_name!r}): nest runs in their "
            "parent's experiment"
        )


_checked_parents: set[tuple[str, str, str]] = set()


def check_parent_run(context: TrackingContext, parent_run_id: str) -> None:
    """Refuse a parent run that does not exist, is deleted, or is in another experiment.

    One request the first time a parent is seen in this process.

    Args:
        context: Where the nested run goes.
        parent_run_id: The parent's run id.

    Raises:
        InvalidParentRunError: the parent cannot hold the nested run.
        RunCreationError: the server failed or could not be reached.

    Example:
        >>> check_parent_run(ctx, "0" * 32)
        Traceback (most recent call last):
        ...
        tracking_tasks.errors.InvalidParentRunError: parent run 000... does not exist on ...
    """
    key = (context.tracking_uri, context.experiment_id, parent_run_id)
    if key in _checked_parents:
        return
    where = redact_uri(context.tracking_uri)
    with mlflow_errors(
        f"parent run {parent_run_id} does not exist on {where}",
        default=RunCreationError,
        not_found=InvalidParentRunError,
        invalid=InvalidParentRunError,
        fix="Pass the run id of an existing run (a RunRef from create_mlflow_run)",
    ):
        info = client_for(context).get_run(parent_run_id).info
    if info.lifecycle_stage == "deleted":
        raise InvalidParentRunError(
            f"parent run {parent_run_id} on {where} is deleted: restore it or nest under "
            "another run"
        )
    if str(info.experiment_id) != context.experiment_id:
        raise InvalidParentRunError(
            f"parent run {parent_run_id} is in experiment {info.experiment_id}, not in "
            f"{context.experiment_id} ({context.experiment_name!r}): nest runs in their "
            "parent's experiment"
        )
    _checked_parents.add(key)
