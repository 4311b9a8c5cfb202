"""Artifact tasks: resumable, verified, streamed uploads and safe downloads, retried on transient faults."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import posixpath
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks._logging import logger
from tracking_tasks._transport import (
    Transport,
    is_transient,
    join,
    open_transport,
    safe_relpath,
    sha256_file,
)
from tracking_tasks.exceptions import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactVerificationError,
    LocalArtifactPathError,
    TrackingConfigError,
    TransientArtifactError,
    UnsafeArtifactPathError,
)
from tracking_tasks.handles import RunRef
from tracking_tasks.urls import check_uri, redact_uri

__all__ = [
    "MANIFEST_NAME",
    "ArtifactManifest",
    "CheckpointArtifacts",
    "ManifestEntry",
    "download_artifacts",
    "log_best_checkpoint",
    "retry_on_transient_fault",
    "upload_artifacts",
]

MANIFEST_NAME = ".tracking-tasks-manifest.json"
"""The manifest's file name, stored in the folder it describes."""

RETRIES = 4
"""Default Prefect retries of the artifact tasks (so at most 5 attempts)."""
RETRY_BACKOFF_SECONDS = 2.0
"""First retry delay; then doubled: 2, 4, 8, 16 s before jitter."""
RETRY_JITTER_FACTOR = 0.5
"""Each delay is randomised up to 1.5 times its value (at most 45 s of waiting in all)."""
DEFAULT_TIMEOUT_SECONDS = 120.0
"""Per-request connect and read timeout unless ``MLFLOW_HTTP_REQUEST_TIMEOUT`` is set."""
PROGRESS_MIN_BYTES = 64 * 1024 * 1024
"""Uploads sending at least this many bytes report a Prefect progress artifact."""

_T = TypeVar("_T")


class ManifestEntry(BaseModel):
    """One stored file of a manifest.

    Args:
        path: Path relative to the manifest's folder, with ``/`` separators.
        size: Size in bytes.
        sha256: Hex sha256 of the bytes ("" in an incomplete manifest for a file whose
            upload had not finished).
        members: For a tar.gz written in archive mode, the files inside it
            (paths relative to the folder the archive sits in); None otherwise.

    Example:
        >>> ManifestEntry(path="weights.bin", size=3, sha256="ab" * 32).size
        3
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="Path relative to the manifest's folder ('/' separators).")
    size: int = Field(ge=0, description="Size in bytes.")
    sha256: str = Field(description="Hex sha256 of the bytes.")
    members: tuple[ManifestEntry, ...] | None = Field(
        default=None, description="Files inside an archive written in archive mode."
    )


class ArtifactManifest(BaseModel):
    """What a folder of a run's artifacts holds: every file with its size and sha256.

    ``upload_artifacts`` returns it and stores it as ``MANIFEST_NAME``
    (``.tracking-tasks-manifest.json``) in the folder it describes; ``download_artifacts``
    checks what it fetches against it. It is first stored with ``complete=False``
    before any file is sent and rewritten with ``complete=True`` once everything landed
    and was verified, so a folder whose upload never finished is recognised.

    Args:
        format: Manifest format tag.
        run_id: The MLflow run.
        artifact_path: The folder under the run's artifact root ("" for the root).
        complete: True once every file landed and was verified.
        files: The stored files (a tar.gz in archive mode, with its ``members``).

    Example:
        >>> m = ArtifactManifest(run_id="abc", artifact_path="ckpt", complete=True,
        ...                      files=(ManifestEntry(path="a.bin", size=3, sha256="0" * 64),))
        >>> m.total_bytes
        3
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["tracking-tasks-manifest/1"] = Field(
        default="tracking-tasks-manifest/1", description="Manifest format tag."
    )
    run_id: str = Field(description="The MLflow run the artifacts belong to.")
    artifact_path: str = Field(description="Folder under the run's artifact root; '' for root.")
    complete: bool = Field(description="True once every file landed and was verified.")
    files: tuple[ManifestEntry, ...] = Field(description="The stored files, sorted by path.")

    @property
    def total_bytes(self) -> int:
        """Sum of the stored files' sizes."""
        return sum(entry.size for entry in self.files)

    def to_json_bytes(self) -> bytes:
        """The manifest as stored: indented JSON, identical for identical content."""
        return (self.model_dump_json(indent=1) + "\n").encode()


class CheckpointArtifacts(BaseModel):
    """What ``log_best_checkpoint`` stored: the checkpoint's and the config's manifests.

    Args:
        artifact_path: The folder holding both (``<artifact_path>/checkpoint`` and
            ``<artifact_path>/config``).
        checkpoint: Manifest of ``<artifact_path>/checkpoint``.
        config: Manifest of ``<artifact_path>/config``.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def keep(run: RunRef) -> str:
        ...     return log_best_checkpoint(run, "ckpt/step-900", "configs").checkpoint_path
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact_path: str = Field(description="Folder holding checkpoint/ and config/.")
    checkpoint: ArtifactManifest = Field(description="Manifest of the checkpoint folder.")
    config: ArtifactManifest = Field(description="Manifest of the config folder.")

    @property
    def checkpoint_path(self) -> str:
        """Artifact path to pass to ``download_artifacts`` for the checkpoint."""
        return self.checkpoint.artifact_path

    @property
    def config_path(self) -> str:
        """Artifact path to pass to ``download_artifacts`` for the config."""
        return self.config.artifact_path


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


_retry_options: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=RETRY_BACKOFF_SECONDS),
    "retry_jitter_factor": RETRY_JITTER_FACTOR,
    "retry_condition_fn": retry_on_transient_fault,
}


def _timeout(timeout_seconds: float | None) -> float:
    if timeout_seconds is not None:
        return float(timeout_seconds)
    return float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or DEFAULT_TIMEOUT_SECONDS)


def _artifact_root(artifact_path: str | None) -> str:
    if artifact_path is None or artifact_path.strip("/.") == "":
        return ""
    return safe_relpath(artifact_path, "artifact_path")


class _Progress:
    """Bytes sent, counted from worker threads, reported from the task's own thread."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total = total
        self.sent = 0
        self._lock = threading.Lock()
        self._artifact_id: Any = None
        self._last = 0.0
        if enabled and total > 0 and TaskRunContext.get() is not None:
            from prefect.artifacts import create_progress_artifact

            try:
                self._artifact_id = create_progress_artifact(0.0, description=label)
                self._last = time.monotonic()
            except Exception as exc:  # progress is a courtesy: never fail the upload on it
                logger().warning("could not create a progress artifact: %s", exc)

    def add(self, count: int) -> None:
        with self._lock:
            self.sent += count

    def report(self, final: bool = False) -> None:
        if self._artifact_id is None:
            return
        now = time.monotonic()
        if not final and now - self._last < 1.0:
            return
        self._last = now
        from prefect.artifacts import update_progress_artifact

        with self._lock:
            percent = 100.0 if final else min(99.9, 100.0 * self.sent / self.total)
        try:
            update_progress_artifact(self._artifact_id, percent)
        except Exception as exc:
            logger().warning("could not update the progress artifact: %s", exc)


def _run_all(
    pool: ThreadPoolExecutor,
    work: Callable[[_T], Any],
    items: Iterable[_T],
    progress: _Progress | None = None,
) -> list[tuple[_T, BaseException]]:
    """Run ``work`` on every item; collect failures; start no more after a permanent one.

    Completion is counted in each worker, so the waiting thread costs nothing per item
    (a ``wait(FIRST_COMPLETED)`` loop re-registers on every pending future each time
    one finishes: quadratic, and it competed with the senders for the GIL).
    """
    todo = list(items)
    failures: list[tuple[_T, BaseException]] = []
    lock = threading.Lock()
    stop = threading.Event()
    finished = threading.Event()
    remaining = len(todo)

    def guarded(item: _T) -> None:
        nonlocal remaining
        try:
            if not stop.is_set():
                work(item)
        except BaseException as exc:
            with lock:
                failures.append((item, exc))
            if not is_transient(exc):
                stop.set()
        finally:
            with lock:
                remaining -= 1
                if remaining == 0:
                    finished.set()

    if not todo:
        return failures
    for item in todo:
        pool.submit(guarded, item)
    while not finished.wait(1.0):
        if progress is not None:
            progress.report()
    return failures


def _raise_failures(failures: list[tuple[Any, BaseException]], total: int, verb: str) -> None:
    if not failures:
        return
    permanent = [exc for _, exc in failures if not is_transient(exc)]
    if permanent:
        exc = permanent[0]
        if isinstance(exc, ArtifactError):
            raise exc
        if isinstance(exc, OSError):
            raise LocalArtifactPathError(f"could not read a local file to {verb}: {exc}") from exc
        raise exc
    first = failures[0][1]
    raise TransientArtifactError(
        f"{len(failures)} of {total} files failed to {verb} on transient faults (first: "
        f"{first}); a retry sends only what is missing"
    ) from first


def _local_files(source: Path) -> list[tuple[str, Path]]:
    if not source.exists():
        raise LocalArtifactPathError(f"local path {str(source)!r} does not exist")
    if source.is_file():
        return [(source.name, source)]
    found: list[tuple[str, Path]] = []
    for folder, _dirs, names in os.walk(source, followlinks=False):
        for name in names:
            path = Path(folder) / name
            if not path.is_file():
                continue  # sockets, fifos, dangling links
            found.append((path.relative_to(source).as_posix(), path))
    return sorted(found)


def _hash_entries(pool: ThreadPoolExecutor, files: list[tuple[str, Path]]) -> list[ManifestEntry]:
    def one(item: tuple[str, Path]) -> ManifestEntry:
        rel, path = item
        try:
            return ManifestEntry(path=rel, size=path.stat().st_size, sha256=sha256_file(path))
        except OSError as exc:
            raise LocalArtifactPathError(f"cannot read local file {str(path)!r}: {exc}") from exc

    return list(pool.map(one, files))


def _sizes(files: list[tuple[str, Path]]) -> list[ManifestEntry]:
    """Entries with sizes only (sha256 "" until the file is hashed or sent)."""
    try:
        return [ManifestEntry(path=rel, size=path.stat().st_size, sha256="") for rel, path in files]
    except OSError as exc:
        raise LocalArtifactPathError(f"cannot read a local file: {exc}") from exc


class _Hashing:
    """A file wrapper that hashes every byte read from or written through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, amount: int = -1) -> bytes:
        chunk: bytes = self.inner.read(amount)
        self.digest.update(chunk)
        self.count += len(chunk)
        return chunk

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.count += len(data)
        return int(self.inner.write(data))

    def flush(self) -> None:
        self.inner.flush()


def _make_archive(files: list[tuple[str, Path]], target: Path, compresslevel: int) -> ManifestEntry:
    """A tar.gz whose bytes depend only on the files' names and contents (resumable).

    The members and the archive are hashed as they are written: one read of each file.
    """
    members = []
    with target.open("wb") as raw:
        out = _Hashing(raw)
        with (
            gzip.GzipFile(
                filename="", mode="wb", fileobj=out, mtime=0, compresslevel=compresslevel
            ) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for rel, path in files:
                info = tarfile.TarInfo(rel)
                info.size = path.stat().st_size
                info.mode = 0o644
                info.mtime = 0
                with path.open("rb") as f:
                    source = _Hashing(f)
                    tar.addfile(info, source)
                members.append(
                    ManifestEntry(path=rel, size=info.size, sha256=source.digest.hexdigest())
                )
    return ManifestEntry(
        path=target.name, size=out.count, sha256=out.digest.hexdigest(), members=tuple(members)
    )


def _read_manifest(transport: Transport, root: str, scratch: Path) -> ArtifactManifest | None:
    target = scratch / f"remote-{time.monotonic_ns()}{MANIFEST_NAME}"
    transport.get(join(root, MANIFEST_NAME), target)
    try:
        return ArtifactManifest.model_validate_json(target.read_bytes())
    except ValueError as exc:
        raise ArtifactVerificationError(
            f"the manifest {join(root, MANIFEST_NAME)!r} is not a valid tracking-tasks "
            f"manifest: {exc}"
        ) from exc
    finally:
        target.unlink(missing_ok=True)


def _put_manifest(
    transport: Transport, root: str, manifest: ArtifactManifest, scratch: Path
) -> None:
    folder = scratch / f"manifest-{time.monotonic_ns()}"
    folder.mkdir()
    path = folder / MANIFEST_NAME
    path.write_bytes(manifest.to_json_bytes())
    transport.put(path, join(root, MANIFEST_NAME))


def _same_intent(stored: ArtifactManifest | None, intent: ArtifactManifest) -> bool:
    """True when an incomplete stored manifest already lists these paths and sizes.

    Its sha256 values are then those of the same local files (or empty for files not
    yet sent, which are compared by size), so rewriting it would change nothing useful.
    """
    if stored is None or stored.complete:
        return False
    sizes = {e.path: e.size for e in stored.files}
    return sizes == {e.path: e.size for e in intent.files} and all(
        e.sha256 in ("", i.sha256) or not i.sha256
        for e, i in zip(stored.files, intent.files, strict=True)
    )


def _verify_listing(
    listed: dict[str, int | None], manifest: ArtifactManifest, where: str
) -> list[str]:
    """Compare a listing with the manifest (names, sizes); return the extra names."""
    expected = {entry.path: entry.size for entry in manifest.files}
    missing = sorted(set(expected) - set(listed))
    wrong = sorted(
        f"{path} ({listed[path]} bytes, expected {size})"
        for path, size in expected.items()
        if path in listed and listed[path] is not None and listed[path] != size
    )
    if missing or wrong:
        raise ArtifactVerificationError(
            f"artifacts in {where} differ from the manifest: missing {missing[:10]} "
            f"({len(missing)}), wrong size {wrong[:10]} ({len(wrong)})"
        )
    return sorted(set(listed) - set(expected) - {MANIFEST_NAME})


def _upload(
    run: RunRef,
    local_path: str | os.PathLike[str],
    artifact_path: str | None,
    *,
    archive: bool,
    max_workers: int,
    timeout_seconds: float | None,
    progress_min_bytes: int,
    compresslevel: int = 1,
) -> ArtifactManifest:
    if not isinstance(run, RunRef):
        raise TrackingConfigError(
            f"run must be the RunRef returned by create_mlflow_run, not {type(run).__name__}"
        )
    if max_workers < 1:
        raise TrackingConfigError(f"max_workers must be at least 1, not {max_workers}")
    source = Path(local_path).expanduser()
    root = _artifact_root(artifact_path)
    files = _local_files(source)
    if not files:
        raise LocalArtifactPathError(f"local folder {str(source)!r} holds no files to upload")
    if archive and source.is_file():
        raise TrackingConfigError(f"archive=True needs a folder, and {str(source)!r} is a file")
    if any(rel == MANIFEST_NAME for rel, _ in files):
        raise ArtifactError(
            f"{str(source)!r} contains a file named {MANIFEST_NAME}, a name reserved for the "
            "manifest; rename it"
        )
    log = logger()
    with (
        contextlib.ExitStack() as cleanup,  # exits last: the transport outlives the pool
        ThreadPoolExecutor(max_workers, thread_name_prefix="tt-artifacts") as pool,
        tempfile.TemporaryDirectory(prefix="tt-upload-") as scratch_name,
    ):
        scratch = Path(scratch_name)
        local: dict[str, Path] = dict(files)
        if archive:
            archive_file = scratch / f"{source.resolve().name or 'archive'}.tar.gz"
            entries = [_make_archive(files, archive_file, compresslevel)]
            local = {archive_file.name: archive_file}
        else:
            entries = _sizes(files)

        transport = open_transport(
            run.run_id,
            run.tracking_uri,
            run.registry_uri,
            timeout=_timeout(timeout_seconds),
            pool_size=max_workers,
        )
        cleanup.callback(transport.close)
        where = f"run {run.run_id} at {root or '/'!r}"
        remote = {f.path: f.size for f in transport.list(root)}
        previous = _read_manifest(transport, root, scratch) if MANIFEST_NAME in remote else None
        known = {e.path: e for e in previous.files} if previous else {}
        # hash up front only the files a same-size copy may already stand for; the
        # others are hashed while they are sent (one read of each file)
        unhashed = [e for e in entries if not e.sha256 and remote.get(e.path) == e.size]
        hashed = {
            e.path: e for e in _hash_entries(pool, [(e.path, local[e.path]) for e in unhashed])
        }
        entries = [hashed.get(e.path, e) for e in entries]
        # skip: same size, and the same sha256 where a stored manifest knows it (an
        # empty sha256 there is a file an interrupted attempt was sending: size only)
        to_send = [
            entry
            for entry in entries
            if not (
                remote.get(entry.path) == entry.size
                and known.get(entry.path, entry).sha256 in ("", entry.sha256)
            )
        ]
        # the folder's manifest keeps earlier uploads' files that are still there intact
        new_paths = {entry.path for entry in entries}
        kept = [
            entry
            for path, entry in known.items()
            if path not in new_paths and entry.sha256 and remote.get(path) == entry.size
        ]
        all_entries = tuple(sorted([*kept, *entries], key=lambda e: e.path))
        final = ArtifactManifest(
            run_id=run.run_id, artifact_path=root, complete=True, files=all_entries
        )
        log.info(
            "Uploading %d of %d files (%d bytes) to %s; %d already there with the same size "
            "and checksum",
            len(to_send),
            len(entries),
            sum(e.size for e in to_send),
            where,
            len(entries) - len(to_send),
        )
        if to_send:
            intent = final.model_copy(update={"complete": False})
            if not _same_intent(previous, intent):  # a retry finds its own intent there
                _put_manifest(transport, root, intent, scratch)
            total = sum(e.size for e in to_send)
            progress = _Progress(
                total,
                f"upload of {len(to_send)} files to {where}",
                enabled=total >= progress_min_bytes,
            )

            sent: dict[str, str] = {}

            def send(entry: ManifestEntry) -> None:
                digest = transport.put(local[entry.path], join(root, entry.path), progress.add)
                if entry.sha256 and digest != entry.sha256:
                    raise ArtifactVerificationError(
                        f"{str(local[entry.path])!r} changed while it was being uploaded"
                    )
                sent[entry.path] = digest

            failures = _run_all(pool, send, to_send, progress)
            _raise_failures(failures, len(to_send), "upload")
            progress.report(final=True)
            final = final.model_copy(
                update={
                    "files": tuple(
                        e.model_copy(update={"sha256": sent[e.path]}) if e.path in sent else e
                        for e in final.files
                    )
                }
            )
        if previous != final:
            _put_manifest(transport, root, final, scratch)
        listed = {f.path: f.size for f in transport.list(root)}
        manifest_size = listed.get(MANIFEST_NAME)
        try:
            extra = _verify_listing(listed, final, where)
            if manifest_size != len(final.to_json_bytes()):
                raise ArtifactVerificationError(
                    f"the manifest in {where} did not land ({manifest_size} bytes listed)"
                )
        except ArtifactVerificationError:
            with contextlib.suppress(ArtifactError):  # the verification error matters more
                _put_manifest(
                    transport, root, final.model_copy(update={"complete": False}), scratch
                )
            raise
        if extra:
            log.warning(
                "%s also holds %d files the manifest does not list (e.g. %s)",
                where,
                len(extra),
                extra[:5],
            )
    log.info(
        "Uploaded and verified %d files (%d bytes) in %s", len(entries), final.total_bytes, where
    )
    return final


@task(name="upload_artifacts", cache_policy=NO_CACHE, **_retry_options)  # writes to MLflow
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
    """Upload a local file or folder to a run's artifacts: resumable, verified, streamed.

    A folder's contents land under ``artifact_path`` with their relative paths (like
    ``MlflowClient.log_artifacts``); a file lands as ``<artifact_path>/<name>``. With
    ``archive=True`` the folder goes as one deterministic ``<folder name>.tar.gz``
    (same files, same bytes) whose manifest entry lists the files inside.

    **Resumable.** Before sending, the folder is listed: a file is skipped when the
    listing shows it with the same size *and*, if a manifest is stored there (one is
    stored, marked incomplete, before any file is sent), that manifest records the
    same sha256 for it. Sizes alone decide where the stored manifest has no sha256:
    a file an interrupted attempt was still sending (the server stores files
    atomically), or a folder with no manifest. So a Prefect retry, or a re-run with
    the same inputs, sends only what is missing or changed.

    **Verified.** After sending, the folder is listed again and every manifest entry
    must be there with its size, else ``ArtifactVerificationError``; then the manifest
    is stored with ``complete=True`` as ``.tracking-tasks-manifest.json`` in the folder.

    **Retries.** Each HTTP request is sent once (MLflow's own 7 retries with backoff
    factor 2, up to ~4 minutes per request, are not used); the task retries instead:
    4 retries after 2, 4, 8 and 16 s, each up to 1.5x with jitter (45 s of waiting at
    most), and only for transient faults (see ``retry_on_transient_fault``). Override
    with ``upload_artifacts.with_options(retries=..., retry_delay_seconds=...)``.

    **Streamed.** Files over 1 MiB are streamed from disk in chunks and sha256 is
    computed in 1 MiB chunks, so memory does not grow with file size; smaller files are
    sent concurrently on ``max_workers`` threads. Inside a task run an upload of at
    least ``progress_min_bytes`` reports a Prefect progress artifact.

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
    return _upload(
        run,
        local_path,
        artifact_path,
        archive=archive,
        max_workers=max_workers,
        timeout_seconds=timeout_seconds,
        progress_min_bytes=progress_min_bytes,
    )


@task(name="log_best_checkpoint", cache_policy=NO_CACHE, **_retry_options)  # writes to MLflow
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
    root = _artifact_root(artifact_path)
    config = Path(config_dir).expanduser()
    if not config.is_dir():
        raise LocalArtifactPathError(f"config_dir {str(config)!r} is not a folder")
    checkpoint = Path(checkpoint_path).expanduser()
    options: dict[str, Any] = {
        "max_workers": max_workers,
        "timeout_seconds": timeout_seconds,
        "progress_min_bytes": progress_min_bytes,
    }
    config_manifest = _upload(run, config, join(root, "config"), archive=False, **options)
    checkpoint_manifest = _upload(
        run,
        checkpoint,
        join(root, "checkpoint"),
        archive=archive and checkpoint.is_dir(),
        **options,
    )
    return CheckpointArtifacts(
        artifact_path=root, checkpoint=checkpoint_manifest, config=config_manifest
    )


def _inside(dst: Path, rel: str) -> Path:
    target = (dst / rel).resolve()
    if target != dst and dst not in target.parents:
        raise UnsafeArtifactPathError(
            f"artifact name {rel!r} would land at {str(target)!r}, outside {str(dst)!r}"
        )
    return target


def _check_archive(
    archive_file: Path, entry: ManifestEntry, folder: str, dst: Path
) -> list[tarfile.TarInfo]:
    """Every member of the archive: a plain file or folder with a safe name, as listed."""
    expected = {m.path: m for m in entry.members or ()}
    found: list[tarfile.TarInfo] = []
    with tarfile.open(archive_file, mode="r:gz") as tar:
        for member in tar:
            rel = safe_relpath(member.name, f"archive member of {entry.path!r}")
            if not (member.isfile() or member.isdir()):
                raise UnsafeArtifactPathError(
                    f"archive {entry.path!r} holds {member.name!r}, a link or device; "
                    "only plain files and folders are extracted"
                )
            _inside(dst, join(folder, rel))
            if member.isfile():
                found.append(member)
    names = {safe_relpath(m.name) for m in found}
    if names != set(expected):
        raise ArtifactVerificationError(
            f"archive {entry.path!r} holds {sorted(names - set(expected))[:10]} not in its "
            f"manifest and lacks {sorted(set(expected) - names)[:10]}"
        )
    return found


def _extract(
    archive_file: Path, entry: ManifestEntry, members: list[tarfile.TarInfo], into: Path
) -> list[str]:
    import hashlib

    expected = {m.path: m for m in entry.members or ()}
    written = []
    with tarfile.open(archive_file, mode="r:gz") as tar:
        for member in members:
            rel = safe_relpath(member.name)
            source = tar.extractfile(member)
            if source is None:
                raise ArtifactVerificationError(f"archive member {rel!r} cannot be read")
            target = into / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with source, target.open("wb") as out:
                while chunk := source.read(1024 * 1024):
                    digest.update(chunk)
                    out.write(chunk)
            want = expected[rel]
            if target.stat().st_size != want.size or digest.hexdigest() != want.sha256:
                raise ArtifactVerificationError(
                    f"archive member {rel!r} of {entry.path!r} differs from the manifest "
                    "(size or sha256)"
                )
            written.append(rel)
    return written


def _download(
    run_id: str,
    tracking_uri: str,
    registry_uri: str | None,
    artifact_path: str,
    dst_dir: str | os.PathLike[str],
    *,
    max_workers: int,
    timeout_seconds: float | None,
    extract: bool,
) -> Path:
    root = _artifact_root(artifact_path)  # refuse a bad path before connecting
    dst = Path(dst_dir).expanduser().resolve()
    transport = open_transport(
        run_id, tracking_uri, registry_uri, timeout=_timeout(timeout_seconds), pool_size=max_workers
    )
    with contextlib.closing(transport):
        return _download_with(
            transport,
            run_id,
            tracking_uri,
            artifact_path,
            root,
            dst,
            max_workers=max_workers,
            extract=extract,
        )


def _download_with(
    transport: Transport,
    run_id: str,
    tracking_uri: str,
    artifact_path: str,
    root: str,
    dst: Path,
    *,
    max_workers: int,
    extract: bool,
) -> Path:
    where = f"run {run_id} at {root or '/'!r}"
    listing = {f.path: f.size for f in transport.list(root)}
    only: str | None = None
    if not listing and root:
        parent, name = posixpath.split(root)
        sizes = {f.path: f.size for f in transport.list(parent)}
        if name in sizes:
            root, only = parent, name
            listing = {name: sizes[name]}
            if MANIFEST_NAME in sizes:
                listing[MANIFEST_NAME] = sizes[MANIFEST_NAME]
    if not listing or set(listing) == {MANIFEST_NAME}:
        raise ArtifactNotFoundError(
            f"no artifacts at {artifact_path!r} in run {run_id} on {redact_uri(tracking_uri)}"
        )
    log = logger()
    with (
        ThreadPoolExecutor(max_workers, thread_name_prefix="tt-artifacts") as pool,
        tempfile.TemporaryDirectory(prefix="tt-download-") as scratch_name,
    ):
        manifest = (
            _read_manifest(transport, root, Path(scratch_name))
            if MANIFEST_NAME in listing
            else None
        )
        listing.pop(MANIFEST_NAME, None)
        entries: dict[str, ManifestEntry] = {}
        if manifest is not None:
            if not manifest.complete:
                raise ArtifactVerificationError(
                    f"the upload to {where} never completed (its manifest is marked "
                    "incomplete): run the upload again"
                )
            entries = {e.path: e for e in manifest.files if only is None or e.path == only}
        # every name, before anything is written
        for name in [*listing, *entries]:
            _inside(dst, safe_relpath(name))
        for entry in entries.values():
            folder = posixpath.dirname(safe_relpath(entry.path))
            for member in entry.members or ():
                _inside(dst, join(folder, safe_relpath(member.path, "archive member")))
        if manifest is not None:
            _verify_listing(
                listing, manifest.model_copy(update={"files": tuple(entries.values())}), where
            )
            extra = sorted(set(listing) - set(entries))
            if extra:
                raise ArtifactVerificationError(
                    f"{where} holds {len(extra)} files its manifest does not list: {extra[:10]}"
                )

        # staging on dst's filesystem (for os.replace), in its nearest existing ancestor,
        # so that a refused download leaves no folder behind
        anchor = next(p for p in (dst.parent, *dst.parent.parents) if p.is_dir())
        staging = Path(tempfile.mkdtemp(prefix=".tt-download-", dir=anchor))
        try:
            fetched = staging / "fetched"

            def fetch(name: str) -> None:
                target = fetched / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = transport.get(join(root, name), target)
                size = target.stat().st_size
                listed = listing.get(name)
                if listed is not None and size != listed:
                    raise TransientArtifactError(
                        f"download of {name!r} from {where} ended after {size} of {listed} bytes"
                    )
                entry = entries.get(name)
                if entry is not None and (size != entry.size or digest != entry.sha256):
                    raise ArtifactVerificationError(
                        f"{name!r} from {where} differs from its manifest: {size} bytes, "
                        f"sha256 {digest[:12]}..., expected {entry.size} bytes, "
                        f"{entry.sha256[:12]}..."
                    )

            names = sorted(listing)
            _raise_failures(_run_all(pool, fetch, names), len(names), "download")

            moves: list[tuple[Path, str]] = []
            for name in names:
                stored = entries.get(name)
                if extract and stored is not None and stored.members is not None:
                    folder = posixpath.dirname(name)
                    members = _check_archive(fetched / name, stored, folder, dst)
                    unpacked = staging / "unpacked" / name
                    for rel in _extract(fetched / name, stored, members, unpacked):
                        moves.append((unpacked / rel, join(folder, rel)))
                else:
                    moves.append((fetched / name, name))
            dst.mkdir(parents=True, exist_ok=True)
            for source, rel in moves:
                target = _inside(dst, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "Downloaded %d files from %s to %s (%s)",
        len(moves),
        where,
        dst,
        "checked against its manifest" if manifest is not None else "no manifest: sizes only",
    )
    return dst


@task(name="download_artifacts", cache_policy=NO_CACHE, **_retry_options)  # reads fresh state
def download_artifacts(
    run: RunRef | str,
    artifact_path: str,
    dst_dir: str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    extract: bool = True,
    max_workers: int = 8,
    timeout_seconds: float | None = None,
) -> Path:
    """Download a folder (or one file) of a run's artifacts into a local folder, verified.

    The contents of ``artifact_path`` land directly in ``dst_dir`` with their relative
    paths. When the folder holds a manifest, the listing must match it and every file's
    sha256 is checked; a folder whose upload never completed is refused. Archives
    written in archive mode are extracted in place of the tar.gz (``extract=False``
    keeps the tar.gz). Without a manifest, sizes are checked against the listing.

    Every name (listed, in the manifest, inside an archive) is checked before anything
    is written: an absolute path, a ``..`` component, or an archive link or device
    raises ``UnsafeArtifactPathError`` and ``dst_dir`` is left untouched. Files are
    fetched into a staging folder next to ``dst_dir`` and moved in only once all
    passed. Same retry policy as ``upload_artifacts``.

    Args:
        run: The run handle, or a run id (then ``tracking_uri`` or
            ``MLFLOW_TRACKING_URI`` names the server).
        artifact_path: Folder or file under the run's artifact root ("" for all).
        dst_dir: Local destination folder (created if missing).
        tracking_uri: Tracking URI for a bare run id.
        extract: Unpack archive-mode tar.gz files.
        max_workers: Files fetched at once.
        timeout_seconds: Per-request timeout (default ``MLFLOW_HTTP_REQUEST_TIMEOUT`` or 120).

    Returns:
        The destination folder (absolute).

    Raises:
        UnsafeArtifactPathError: a name would land outside ``dst_dir``.
        ArtifactNotFoundError: nothing is stored at ``artifact_path``.
        ArtifactVerificationError: a file or the listing differs from the manifest.
        RunNotFoundError: the run does not exist.
        TransientArtifactError: a transient fault outlasted the retries.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def restore(run_id: str) -> str:
        ...     return str(download_artifacts(run_id, "best_checkpoint/checkpoint", "ckpt",
        ...                                   tracking_uri="http://127.0.0.1:5000"))
    """
    if isinstance(run, RunRef):
        run_id, uri, registry = run.run_id, tracking_uri or run.tracking_uri, run.registry_uri
    else:
        run_id, registry = str(run), None
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if not uri:
            raise TrackingConfigError(
                "download_artifacts got a bare run id and no tracking URI: pass "
                "tracking_uri= or set MLFLOW_TRACKING_URI (or pass the RunRef)"
            )
        uri = check_uri(uri, "tracking_uri")
    return _download(
        run_id,
        uri,
        registry,
        artifact_path,
        dst_dir,
        max_workers=max_workers,
        timeout_seconds=timeout_seconds,
        extract=extract,
    )
