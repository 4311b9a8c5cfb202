"""A checkpoint and the config that produced it, uploaded side by side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tracking_tasks.errors import LocalArtifactPathError
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._artifacts.fanout import ProgressCallback
from tracking_tasks.ops._artifacts.manifest import CheckpointArtifacts
from tracking_tasks.ops._artifacts.transport import join
from tracking_tasks.ops._artifacts.upload import (
    PROGRESS_MIN_BYTES,
    artifact_root,
    upload_artifacts,
)


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
    on_progress: ProgressCallback | None = None,
) -> CheckpointArtifacts:
    """Upload a checkpoint and the config that produced it, side by side.

    The checkpoint goes to ``<artifact_path>/checkpoint`` (a folder as one tar.gz when
    ``archive``, a single file as is) and ``config_dir`` to ``<artifact_path>/config``
    (file by file). The config folder is explicit: checkpoints often sit on another
    mount than the code, so nothing is inferred from the checkpoint's path. Same
    retries, resumption and verification as ``upload_artifacts``.

    Args:
        run: The run handle.
        checkpoint_path: The checkpoint folder (or file).
        config_dir: The folder of configs to keep with it.
        artifact_path: Folder for both under the run's artifact root.
        archive: Send a checkpoint folder as one tar.gz.
        max_workers: Files sent at once.
        timeout_seconds: Per-request timeout (default ``MLFLOW_HTTP_REQUEST_TIMEOUT`` or 120).
        progress_min_bytes: Smallest upload that reports progress.
        on_progress: Gets the percentage sent of each of the two uploads.

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
    root = artifact_root(artifact_path)
    config = Path(config_dir).expanduser()
    if not config.is_dir():
        raise LocalArtifactPathError(f"config_dir {str(config)!r} is not a folder")
    checkpoint = Path(checkpoint_path).expanduser()
    options: dict[str, Any] = {
        "max_workers": max_workers,
        "timeout_seconds": timeout_seconds,
        "progress_min_bytes": progress_min_bytes,
        "on_progress": on_progress,
    }
    config_manifest = upload_artifacts(run, config, join(root, "config"), archive=False, **options)
    checkpoint_manifest = upload_artifacts(
        run,
        checkpoint,
        join(root, "checkpoint"),
        archive=archive and checkpoint.is_dir(),
        **options,
    )
    return CheckpointArtifacts(
        artifact_path=root, checkpoint=checkpoint_manifest, config=config_manifest
    )
