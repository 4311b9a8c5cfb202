"""Uploads: resumable, verified, streamed."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tracking_tasks.errors import (
    ArtifactError,
    ArtifactVerificationError,
    LocalArtifactPathError,
    TrackingConfigError,
)
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._artifacts.archive import make_archive
from tracking_tasks.ops._artifacts.fanout import (
    Progress,
    ProgressCallback,
    raise_failures,
    run_all,
)
from tracking_tasks.ops._artifacts.http_transport import open_transport
from tracking_tasks.ops._artifacts.manifest import (
    MANIFEST_NAME,
    ArtifactManifest,
    ManifestEntry,
    put_manifest,
    read_manifest,
    same_intent,
    verify_listing,
)
from tracking_tasks.ops._artifacts.transport import (
    Destination,
    join,
    safe_relpath,
    sha256_file,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 120.0
"""Per-request connect and read timeout unless ``MLFLOW_HTTP_REQUEST_TIMEOUT`` is set."""
PROGRESS_MIN_BYTES = 64 * 1024 * 1024
"""Uploads sending at least this many bytes report their progress."""
ARCHIVE_COMPRESSLEVEL = 1
"""gzip level of archive mode: checkpoints hardly compress, and level 1 is the fastest."""


def request_timeout(timeout_seconds: float | None) -> float:
    """The per-request timeout: the argument, else ``MLFLOW_HTTP_REQUEST_TIMEOUT``, else 120 s."""
    if timeout_seconds is not None:
        return float(timeout_seconds)
    return float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or DEFAULT_TIMEOUT_SECONDS)


def artifact_root(artifact_path: str | None) -> str:
    """An artifact folder as a clean relative path ("" for the root), or refused."""
    if artifact_path is None or artifact_path.strip("/.") == "":
        return ""
    return safe_relpath(artifact_path, "artifact_path")


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


def _vouched(
    entry: ManifestEntry, remote: dict[str, int | None], known: dict[str, ManifestEntry]
) -> bool:
    """The server holds a file of this size that the stored manifest records a sha256 for."""
    stored = known.get(entry.path)
    return remote.get(entry.path) == entry.size and stored is not None and bool(stored.sha256)


def upload_artifacts(
    run: RunRef,
    local_path: str | os.PathLike[str],
    artifact_path: str | None = None,
    *,
    archive: bool = False,
    max_workers: int = 8,
    timeout_seconds: float | None = None,
    progress_min_bytes: int = PROGRESS_MIN_BYTES,
    on_progress: ProgressCallback | None = None,
) -> ArtifactManifest:
    """Upload a local file or folder to a run's artifacts: resumable, verified, streamed.

    A folder's contents land under ``artifact_path`` with their relative paths (like
    ``MlflowClient.log_artifacts``); a file lands as ``<artifact_path>/<name>``. With
    ``archive=True`` the folder goes as one deterministic ``<folder name>.tar.gz``
    (same files, same bytes) whose manifest entry lists the files inside.

    **Resumable.** A file is skipped only when the folder's listing shows it with the
    same size *and* the stored manifest records the sha256 the local file has now. A
    manifest records a sha256 only for bytes the server acknowledged (it is stored,
    incomplete, before any file is sent, without the sha256 of those about to go, and
    again with those that landed when an attempt fails). Anything else is sent again: a
    same-size file nothing vouches for, one that changed since, a folder with no
    manifest. So a retry, or a re-run, sends only what is missing or changed.

    **Files that change while sent.** A file is sent with the size measured when the
    upload started, and exactly that many bytes (never what was appended since); if its
    size or modification time differ after it was sent, or it shrank, it fails with
    ``ArtifactVerificationError`` naming it, and the manifest does not vouch for it.

    **Verified.** After sending, the folder is listed again and every manifest entry
    must be there with its size, else ``ArtifactVerificationError``; then the manifest
    is stored with ``complete=True`` as ``.tracking-tasks-manifest.json`` in the folder.

    **Retries.** Each HTTP request is sent once (MLflow's own 7 retries with backoff
    factor 2, up to ~4 minutes per request, are not used): a transient fault raises
    ``TransientArtifactError`` at once. The Prefect task ``tracking_tasks.upload_artifacts``
    retries on it: 4 retries after 2, 4, 8 and 16 s, each up to 1.5x with jitter (45 s
    of waiting at most); override with ``upload_artifacts.with_options(retries=...)``.

    **Streamed.** Files over 1 MiB are streamed from disk in chunks and sha256 is
    computed in 1 MiB chunks, so memory does not grow with file size; smaller files are
    sent concurrently on ``max_workers`` threads. An upload of at least
    ``progress_min_bytes`` reports its progress to ``on_progress`` (the task makes it a
    Prefect progress artifact).

    Args:
        run: The run handle.
        local_path: A file or a folder.
        artifact_path: Folder under the run's artifact root (None: the root).
        archive: Send the folder as one tar.gz (for checkpoint folders).
        max_workers: Files sent at once.
        timeout_seconds: Per-request connect/read timeout (default
            ``MLFLOW_HTTP_REQUEST_TIMEOUT`` or 120).
        progress_min_bytes: Smallest upload that reports progress.
        on_progress: Gets the percentage sent, once a second, from this thread.

    Returns:
        The folder's ``ArtifactManifest`` (complete), also stored next to the files.

    Raises:
        LocalArtifactPathError: ``local_path`` is missing or unreadable.
        UnsafeArtifactPathError: ``artifact_path`` is absolute or has ``..``.
        RunNotFoundError: the run does not exist.
        TransientArtifactError: a transient fault outlasted the retries.
        ArtifactVerificationError: what landed differs from the manifest.
        ArtifactError: any other refusal (an HTTP 4xx, ...).
        TrackingConfigError: ``run`` is not a ``RunRef``, ``max_workers`` below 1, or
            ``archive`` for a single file.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def keep(run: RunRef) -> int:
        ...     manifest = upload_artifacts(run, "outputs/eval", "eval")
        ...     return len(manifest.files)
    """
    if not isinstance(run, RunRef):
        raise TrackingConfigError(
            f"run must be the RunRef returned by create_mlflow_run, not {type(run).__name__}"
        )
    return upload_to(
        Destination.of_run(run),
        local_path,
        artifact_path,
        archive=archive,
        max_workers=max_workers,
        timeout_seconds=timeout_seconds,
        progress_min_bytes=progress_min_bytes,
        on_progress=on_progress,
    )


def upload_to(
    destination: Destination,
    local_path: str | os.PathLike[str],
    artifact_path: str | None = None,
    *,
    archive: bool = False,
    max_workers: int = 8,
    timeout_seconds: float | None = None,
    progress_min_bytes: int = PROGRESS_MIN_BYTES,
    on_progress: ProgressCallback | None = None,
) -> ArtifactManifest:
    """``upload_artifacts`` to any ``Destination`` (see it for the rules)."""
    if max_workers < 1:
        raise TrackingConfigError(f"max_workers must be at least 1, not {max_workers}")
    source = Path(local_path).expanduser()
    root = artifact_root(artifact_path)
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
    with (
        contextlib.ExitStack() as cleanup,  # exits last: the transport outlives the pool
        ThreadPoolExecutor(max_workers, thread_name_prefix="tt-artifacts") as pool,
        tempfile.TemporaryDirectory(prefix="tt-upload-") as scratch_name,
    ):
        scratch = Path(scratch_name)
        local: dict[str, Path] = dict(files)
        if archive:
            archive_file = scratch / f"{source.resolve().name or 'archive'}.tar.gz"
            entries = [make_archive(files, archive_file, ARCHIVE_COMPRESSLEVEL)]
            local = {archive_file.name: archive_file}
        else:
            entries = _sizes(files)

        transport = open_transport(
            destination.run_id,
            destination.tracking_uri,
            destination.registry_uri,
            credentials=destination.credentials,
            timeout=request_timeout(timeout_seconds),
            pool_size=max_workers,
            workspace=destination.workspace,
            artifact_uri=destination.artifact_uri,
        )
        cleanup.callback(transport.close)
        where = f"{destination.label or f'run {destination.run_id}'} at {root or '/'!r}"
        remote = {f.path: f.size for f in transport.list(root)}
        previous = read_manifest(transport, root, scratch) if MANIFEST_NAME in remote else None
        known = {e.path: e for e in previous.files} if previous else {}
        # hash up front only the files a stored copy may already stand for (same size,
        # and a sha256 in the stored manifest); the others are hashed while they are sent
        unhashed = [e for e in entries if not e.sha256 and _vouched(e, remote, known)]
        hashed = {
            e.path: e for e in _hash_entries(pool, [(e.path, local[e.path]) for e in unhashed])
        }
        entries = [hashed.get(e.path, e) for e in entries]
        # skip only what the stored manifest proves is the local file now: same size and
        # the same sha256 (the manifest records one only for bytes the server took)
        to_send = [
            entry
            for entry in entries
            if not (_vouched(entry, remote, known) and known[entry.path].sha256 == entry.sha256)
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
            run_id=destination.run_id, artifact_path=root, complete=True, files=all_entries
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
            # the stored manifest vouches for no file about to be sent: whatever an
            # attempt leaves behind, it never claims bytes the server does not hold
            sending = {entry.path for entry in to_send}
            intent = final.model_copy(
                update={
                    "complete": False,
                    "files": tuple(
                        e.model_copy(update={"sha256": ""}) if e.path in sending else e
                        for e in final.files
                    ),
                }
            )
            if not same_intent(previous, intent):  # a retry finds its own intent there
                put_manifest(transport, root, intent, scratch)
            total = sum(e.size for e in to_send)
            progress = Progress(total, on_progress if total >= progress_min_bytes else None)

            sent: dict[str, str] = {}

            def send(entry: ManifestEntry) -> None:
                path = local[entry.path]
                before = path.stat()
                digest = transport.put(path, join(root, entry.path), progress.add)
                after = path.stat()
                if (
                    (before.st_size, after.st_size) != (entry.size, entry.size)
                    or after.st_mtime_ns != before.st_mtime_ns
                    or (entry.sha256 and digest != entry.sha256)
                ):
                    raise ArtifactVerificationError(
                        f"{str(path)!r} changed while it was being uploaded ({entry.size} "
                        f"bytes when the upload started, {after.st_size} now): what the "
                        "server holds is not the file; upload it again once it is written"
                    )
                sent[entry.path] = digest

            failures = run_all(pool, send, to_send, progress)
            if failures and sent:  # vouch for what did land, so a retry skips it
                landed = intent.model_copy(
                    update={
                        "files": tuple(
                            e.model_copy(update={"sha256": sent[e.path]}) if e.path in sent else e
                            for e in intent.files
                        )
                    }
                )
                with contextlib.suppress(ArtifactError):  # the failure itself matters more
                    put_manifest(transport, root, landed, scratch)
            raise_failures(failures, len(to_send), "upload")
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
            put_manifest(transport, root, final, scratch)
        listed = {f.path: f.size for f in transport.list(root)}
        manifest_size = listed.get(MANIFEST_NAME)
        try:
            extra = verify_listing(listed, final, where)
            if manifest_size != len(final.to_json_bytes()):
                raise ArtifactVerificationError(
                    f"the manifest in {where} did not land ({manifest_size} bytes listed)"
                )
        except ArtifactVerificationError:
            with contextlib.suppress(ArtifactError):  # the verification error matters more
                put_manifest(transport, root, final.model_copy(update={"complete": False}), scratch)
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
