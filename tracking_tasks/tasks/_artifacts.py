"""Artifact tasks: the plain transfers, retried by Prefect on transient faults only."""

from __future__ import annotations

import os
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tracking_tasks.errors import is_transient
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._artifacts import checkpoint as plain_checkpoint
from tracking_tasks.ops._artifacts import download as plain_download
from tracking_tasks.ops._artifacts import upload as plain_upload
from tracking_tasks.ops._artifacts.manifest import ArtifactManifest, CheckpointArtifacts
from tracking_tasks.ops._artifacts.upload import PROGRESS_MIN_BYTES
from tracking_tasks.tasks._runtime import in_run, run_logger
from tracking_tasks.tasks._task import tracking_task

RETRIES = 4
"""Default Prefect retries of the artifact tasks (so at most 5 attempts)."""
RETRY_BACKOFF_SECONDS = 2.0
"""First retry delay; then doubled: 2, 4, 8, 16 s before jitter."""
RETRY_JITTER_FACTOR = 0.5
"""Each delay is randomised up to 1.5 times its value (at most 45 s of waiting in all)."""


def retry_on_transient_fault(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient faults.

    Transient: a refused or reset connection, a timeout, HTTP 408, 429 or 5xx
    (``TransientArtifactError``). Anything else (an unknown run, another 4xx, a missing
    local file, a verification failure, an unsafe name) fails the task run at once.

    Args:
        task: The Prefect task (unused).
        task_run: The task run (unused).
        state: The Failed state; its data is the exception.

    Returns:
        True to retry.

    Example:
        >>> from prefect import task
        >>> @task(retries=3, retry_condition_fn=retry_on_transient_fault)
        ... def fetch() -> None: ...
    """
    exc = getattr(state, "data", None)
    if not isinstance(exc, BaseException):
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as error:
            exc = error
    return isinstance(exc, BaseException) and is_transient(exc)


RETRY_OPTIONS: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=RETRY_BACKOFF_SECONDS),
    "retry_jitter_factor": RETRY_JITTER_FACTOR,
    "retry_condition_fn": retry_on_transient_fault,
}


class PrefectProgress:
    """An upload's progress as a Prefect progress artifact (made on the first report).

    Progress is a courtesy: an API failure is logged, never raised.

    Args:
        description: The artifact's description.

    Example:
        >>> progress = PrefectProgress("upload of checkpoint/")
        >>> progress(50.0)  # outside a task run: nothing is made
    """

    def __init__(self, description: str) -> None:
        self.description = description
        self._artifact_id: Any = None

    def __call__(self, percent: float) -> None:
        if not in_run():
            return
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        try:
            if self._artifact_id is None:
                self._artifact_id = create_progress_artifact(percent, description=self.description)
            else:
                update_progress_artifact(self._artifact_id, percent)
        except Exception as exc:
            run_logger().warning("could not report upload progress: %s", exc)


@tracking_task(name="upload_artifacts", cache_policy=NO_CACHE, **RETRY_OPTIONS)  # writes to MLflow
def upload_artifacts(
    run: RunRef,
    local_path: str | os.PathLike[str],
    artifact_path: str | None = None,
    *,
    archive: bool = False,
    max_workers: int = 8,
    timeout_seconds: float | None = None,
    progress_min_bytes: int = PROGRESS_MIN_BYTES,
) -> ArtifactManifest:
    """Upload a file or folder to a run's artifacts: resumable, verified, retried.

    The task form of ``tracking_tasks.ops._artifacts.upload.upload_artifacts`` (see it
    for resumption and verification): retried on transient faults only, 4 times after
    2, 4, 8 and 16 s (each up to 1.5x with jitter); a large upload reports a Prefect
    progress artifact.

    Args:
        run: The run handle.
        local_path: A file or a folder.
        artifact_path: Folder under the run's artifact root (None: the root).
        archive: Send the folder as one tar.gz (for checkpoint folders).
        max_workers: Files sent at once.
        timeout_seconds: Per-request connect/read timeout (default
            ``MLFLOW_HTTP_REQUEST_TIMEOUT`` or 120).
        progress_min_bytes: Smallest upload that reports progress.

    Returns:
        The folder's ``ArtifactManifest`` (complete), also stored next to the files.

    Raises:
        LocalArtifactPathError: ``local_path`` is missing or unreadable.
        UnsafeArtifactPathError: ``artifact_path`` is absolute or has ``..``.
        RunNotFoundError: the run does not exist.
        TransientArtifactError: a transient fault outlasted the retries.
        ArtifactVerificationError: what landed differs from the manifest.
        ArtifactError: any other refusal (an HTTP 4xx, ...).

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def keep(run: RunRef) -> int:
        ...     manifest = upload_artifacts(run, "outputs/eval", "eval")
        ...     return len(manifest.files)
    """
    return plain_upload.upload_artifacts(
        run,
        local_path,
        artifact_path,
        archive=archive,
        max_workers=max_workers,
        timeout_seconds=timeout_seconds,
        progress_min_bytes=progress_min_bytes,
        on_progress=PrefectProgress(f"upload of {local_path} to run {run.run_id}"),
    )


@tracking_task(
    name="log_best_checkpoint", cache_policy=NO_CACHE, **RETRY_OPTIONS
)  # writes to MLflow
def log_best_checkpoint(
    run: RunRef,
    checkpoint_path: str | os.PathLike[str],
    config_dir: str | os.PathLike[str],
    *,
    artifact_path: str = "best_checkpoint",
    archive: bool = True,
    max_workers: int = 8,
    timeout_seconds: float | None = None,
    progress_min_bytes: int = PROGRESS_MIN_BYTES,
) -> CheckpointArtifacts:
    """Upload a checkpoint and the config folder that produced it, side by side.

    The task form of ``tracking_tasks.ops._artifacts.upload.log_best_checkpoint``:
    ``config_dir`` is used as given (nothing is inferred from the checkpoint's path),
    with the retries of ``upload_artifacts``.

    Args:
        run: The run handle.
        checkpoint_path: The checkpoint folder (or file).
        config_dir: The folder of configs to keep with it.
        artifact_path: Folder for both under the run's artifact root.
        archive: Send a checkpoint folder as one tar.gz.
        max_workers: Files sent at once.
        timeout_seconds: Per-request timeout (default ``MLFLOW_HTTP_REQUEST_TIMEOUT`` or 120).
        progress_min_bytes: Smallest upload that reports progress.

    Returns:
        ``CheckpointArtifacts`` with both manifests.

    Raises:
        LocalArtifactPathError: the checkpoint or the config folder is missing.
        RunNotFoundError: the run does not exist.
        TransientArtifactError: a transient fault outlasted the retries.
        ArtifactVerificationError: what landed differs from the manifest.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def keep(run: RunRef) -> None:
        ...     log_best_checkpoint(run, "/mnt/ckpt/step-900", config_dir="configs")
    """
    return plain_checkpoint.log_best_checkpoint(
        run,
        checkpoint_path,
        config_dir,
        artifact_path=artifact_path,
        archive=archive,
        max_workers=max_workers,
        timeout_seconds=timeout_seconds,
        progress_min_bytes=progress_min_bytes,
        on_progress=PrefectProgress(f"upload of checkpoint {checkpoint_path} to run {run.run_id}"),
    )


# Reads fresh state: never cached.
download_artifacts = tracking_task(
    name="download_artifacts", cache_policy=NO_CACHE, **RETRY_OPTIONS
)(plain_download.download_artifacts)
