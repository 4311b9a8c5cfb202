"""How artifact bytes move: the transport interface, safe paths, and MLflow's artifact repository."""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tracking_tasks.errors import (
    ArtifactError,
    RunNotFoundError,
    UnsafeArtifactPathError,
    mlflow_errors,
    transfer_error,
)
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._client import get_client
from tracking_tasks.ops._workspaces import scoped
from tracking_tasks.urls import redact_uri

CHUNK_BYTES = 1024 * 1024
#: Answers whose ``Retry-After`` the HTTP transport honours in place.
RETRY_AFTER_STATUS = frozenset({429, 503})
RETRY_AFTER_MAX_SECONDS = 60.0
"""The longest ``Retry-After`` a transfer waits for; a longer one fails the transfer at
once (``ArtifactError`` naming the server and the wait), not retried."""
RETRY_AFTER_ATTEMPTS = 3
"""How many ``Retry-After`` answers one request waits out in place before the failure
goes to the task's retries (``TransientArtifactError``)."""

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class Destination:
    """Where an upload lands: a run's artifact root, or another root on the run's server.

    Attributes:
        run_id: The run the manifest names (for a logged model: its source run).
        tracking_uri: The tracking server.
        registry_uri: The model registry URI, or None.
        credentials: The secret-free credentials reference requests carry, or None.
        artifact_uri: The root to write under; None for the run's artifact root (looked
            up). A logged model's ``artifact_location`` for its files.
        label: How the log lines name it (default ``run <run_id>``).
        workspace: The MLflow workspace every request goes to, or None.
    """

    run_id: str
    tracking_uri: str
    registry_uri: str | None = None
    credentials: str | None = None
    artifact_uri: str | None = None
    label: str = ""
    workspace: str | None = None

    @classmethod
    def of_run(cls, run: RunRef) -> Destination:
        """The artifact root of the run a ``RunRef`` names."""
        return cls(
            run.run_id,
            run.tracking_uri,
            run.registry_uri,
            run.credentials,
            workspace=run.workspace,
        )


@dataclass(frozen=True)
class RemoteFile:
    """One stored file: its path relative to the listed folder and its size."""

    path: str
    size: int | None


class Transport(Protocol):
    """Moves files between this machine and one run's artifact root."""

    description: str

    def put(self, local: Path, remote: str, progress: ProgressFn | None = None) -> str:
        """Store ``local`` at ``remote`` (under the run's artifact root); return the
        sha256 of the bytes sent (for the HTTP transport, exactly the size measured when
        it started; the caller checks the file did not change meanwhile)."""

    def list(self, remote_dir: str) -> list[RemoteFile]:
        """Every file under ``remote_dir``, recursively; paths relative to it."""

    def get(self, remote: str, local: Path) -> str:
        """Write ``remote`` to ``local``; return the sha256 of what was written."""

    def close(self) -> None:
        """Release the transport's connections."""


def safe_relpath(name: str, what: str = "artifact name") -> str:
    """Return ``name`` as a clean relative POSIX path, or refuse it.

    Raises:
        UnsafeArtifactPathError: empty, absolute, a drive letter, a backslash, or a
            ``..`` component.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafeArtifactPathError(f"{what} {name!r} is empty or not a string")
    if "\\" in name:
        raise UnsafeArtifactPathError(
            f"{what} {name!r} contains a backslash; artifact names use '/' only"
        )
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArtifactPathError(
            f"{what} {name!r} is absolute and would land outside the destination folder"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeArtifactPathError(
            f"{what} {name!r} has a '..' component (or names no file) and would land "
            "outside the destination folder"
        )
    return "/".join(parts)


def join(*parts: str | None) -> str:
    """Join artifact path parts, skipping empty ones."""
    return posixpath.join(*[p for p in parts if p]) if any(parts) else ""


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header value asks for, read as RFC 9110 (10.2.3) says.

    ``delay-seconds`` is ``1*DIGIT``: ASCII digits only (``"\\uff13"`` or ``"²"`` are digits to
    Python, not to HTTP); otherwise an HTTP-date (a date without a zone counts as GMT).
    Anything else counts as no ``Retry-After`` at all.

    Returns:
        The wait (0 for a date in the past), or None for a missing or unreadable value.

    Example:
        >>> retry_after_seconds("3"), retry_after_seconds(None), retry_after_seconds("soon")
        (3.0, None, None)
        >>> retry_after_seconds("\uff13"), retry_after_seconds("\u00b2")  # not ASCII digits
        (None, None)
    """
    import datetime
    import email.utils
    import time

    if value is None:
        return None
    text = value.strip(" \t")
    if text.isascii() and text.isdigit():
        return float(text)
    if not text.isascii() or not text[:1].isalpha():  # an HTTP-date starts with a day name
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(when.timestamp() - time.time(), 0.0)


class RepoTransport:
    """Any other artifact store (local folder, S3, ...) through MLflow's ArtifactRepository."""

    def __init__(self, artifact_uri: str, tracking_uri: str, workspace: str | None = None) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        # scoped: the pool threads that call it run outside the caller's workspace scope
        self.repo = scoped(
            get_artifact_repository(artifact_uri, tracking_uri=tracking_uri), workspace
        )
        self.description = redact_uri(artifact_uri)

    def put(self, local: Path, remote: str, progress: ProgressFn | None = None) -> str:
        head, tail = posixpath.split(remote)
        try:
            if local.name == tail:
                self.repo.log_artifact(str(local), head or None)  # type: ignore[no-untyped-call]
            else:
                with tempfile.TemporaryDirectory(prefix="tt-put-") as tmp:
                    named = Path(tmp) / tail
                    os.symlink(local.resolve(), named)
                    self.repo.log_artifact(str(named), head or None)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise transfer_error(exc, f"upload of {remote!r} to {self.description}") from exc
        if progress is not None:
            progress(local.stat().st_size)
        return sha256_file(local)

    def list(self, remote_dir: str) -> list[RemoteFile]:
        result: list[RemoteFile] = []
        pending = [remote_dir]
        try:
            while pending:
                for info in self.repo.list_artifacts(pending.pop() or None):
                    if info.is_dir:
                        pending.append(info.path)
                    else:
                        relative = posixpath.relpath(info.path, remote_dir or ".")
                        result.append(RemoteFile(relative, info.file_size))
        except Exception as exc:
            raise transfer_error(exc, f"listing of {remote_dir!r} in {self.description}") from exc
        return sorted(result, key=lambda f: f.path)

    def get(self, remote: str, local: Path) -> str:
        with tempfile.TemporaryDirectory(prefix="tt-get-", dir=local.parent) as tmp:
            try:
                fetched = self.repo.download_artifacts(remote, dst_path=tmp)  # type: ignore[no-untyped-call]
            except Exception as exc:
                raise transfer_error(
                    exc, f"download of {remote!r} from {self.description}"
                ) from exc
            shutil.move(fetched, local)
        return sha256_file(local)

    def close(self) -> None:
        """Nothing to release: MLflow's repository keeps its own sessions."""


def repo_artifact_uri(
    run_id: str, tracking_uri: str, registry_uri: str | None, workspace: str | None = None
) -> str:
    """The run's artifact URI, read with MLflow's client (any tracking store)."""
    with mlflow_errors(
        f"could not read MLflow run {run_id} on {redact_uri(tracking_uri)}",
        default=ArtifactError,
        not_found=RunNotFoundError,
    ):
        client = get_client(tracking_uri, registry_uri, workspace=workspace)
        return str(client.get_run(run_id).info.artifact_uri)
