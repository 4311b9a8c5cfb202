"""Downloads: a folder or a file of a run's artifacts, checked before anything is written."""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tracking_tasks.config._models import ENV_VARS
from tracking_tasks.config._resolve import resolve_tracking_uri, resolve_workspace
from tracking_tasks.errors import (
    ArtifactNotFoundError,
    ArtifactVerificationError,
    TrackingConfigError,
    TransientArtifactError,
)
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._artifacts.archive import check_archive, inside
from tracking_tasks.ops._artifacts.archive import extract as extract_archive
from tracking_tasks.ops._artifacts.fanout import raise_failures, run_all
from tracking_tasks.ops._artifacts.http_transport import open_transport
from tracking_tasks.ops._artifacts.manifest import (
    MANIFEST_NAME,
    ManifestEntry,
    read_manifest,
    verify_listing,
)
from tracking_tasks.ops._artifacts.transport import Transport, join, safe_relpath
from tracking_tasks.ops._artifacts.upload import artifact_root, request_timeout
from tracking_tasks.urls import redact_uri

log = logging.getLogger(__name__)


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
    fetched into a hidden staging folder inside ``dst_dir`` (``.tt-download-*``: on its
    own filesystem, so a mount point or a read-only parent works) and moved in only
    once all passed; a refused download removes it, and ``dst_dir`` if it made it. The Prefect task ``tracking_tasks.download_artifacts`` retries transient
    faults like ``upload_artifacts``.

    Args:
        run: The run handle, or a run id (then ``tracking_uri`` or
            ``MLFLOW_TRACKING_URI`` names the server, and ``MLFLOW_WORKSPACE`` its
            workspace).
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
        TransientArtifactError: a transient fault (retried by the task).
        TrackingConfigError: a bare run id and no tracking URI to find it on.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def restore(run_id: str) -> str:
        ...     return str(download_artifacts(run_id, "best_checkpoint/checkpoint", "ckpt",
        ...                                   tracking_uri="http://127.0.0.1:5000"))
    """
    credentials = workspace = None
    if isinstance(run, RunRef):
        run_id, registry, credentials = run.run_id, run.registry_uri, run.credentials
        uri = resolve_tracking_uri(tracking_uri or run.tracking_uri)
        workspace = run.workspace
    else:
        run_id, registry = str(run), None
        if tracking_uri is None and not os.environ.get(ENV_VARS["tracking_uri"], "").strip():
            raise TrackingConfigError(
                "download_artifacts got a bare run id and no tracking URI: pass "
                "tracking_uri= or set MLFLOW_TRACKING_URI (or pass the RunRef)"
            )
        uri = resolve_tracking_uri(tracking_uri)
        workspace = resolve_workspace(tracking_uri=uri)  # a bare run id: $MLFLOW_WORKSPACE
    root = artifact_root(artifact_path)  # refuse a bad path before connecting
    dst = Path(dst_dir).expanduser().resolve()
    transport = open_transport(
        run_id,
        uri,
        registry,
        credentials=credentials,
        timeout=request_timeout(timeout_seconds),
        pool_size=max_workers,
        workspace=workspace,
    )
    with contextlib.closing(transport):
        return download_with(
            transport,
            f"run {run_id}",
            uri,
            artifact_path,
            root,
            dst,
            max_workers=max_workers,
            extract=extract,
        )


#: The hidden folder a download stages its files in, inside the destination.
STAGING_PREFIX = ".tt-download-"


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return those made, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def download_with(
    transport: Transport,
    label: str,
    tracking_uri: str,
    artifact_path: str,
    root: str,
    dst: Path,
    *,
    max_workers: int,
    extract: bool,
    foreign: frozenset[str] = frozenset(),
) -> Path:
    """Download ``root`` (or the one file ``artifact_path`` names) through ``transport``;
    ``label`` names the owner in messages (``run <id>``, ``model <id>``). Names in
    ``foreign`` (files another program writes beside ours) are neither checked nor
    fetched."""
    where = f"{label} at {root or '/'!r}"
    listing = {f.path: f.size for f in transport.list(root) if f.path not in foreign}
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
            f"no artifacts at {artifact_path!r} in {label} on {redact_uri(tracking_uri)}"
        )
    with (
        ThreadPoolExecutor(max_workers, thread_name_prefix="tt-artifacts") as pool,
        tempfile.TemporaryDirectory(prefix="tt-download-") as scratch_name,
    ):
        manifest = (
            read_manifest(transport, root, Path(scratch_name)) if MANIFEST_NAME in listing else None
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
            inside(dst, safe_relpath(name))
        for entry in entries.values():
            folder = posixpath.dirname(safe_relpath(entry.path))
            for member in entry.members or ():
                inside(dst, join(folder, safe_relpath(member.path, "archive member")))
        if manifest is not None:
            verify_listing(
                listing, manifest.model_copy(update={"files": tuple(entries.values())}), where
            )
            extra = sorted(set(listing) - set(entries))
            if extra:
                raise ArtifactVerificationError(
                    f"{where} holds {len(extra)} files its manifest does not list: {extra[:10]}"
                )

        # staging inside dst itself: on dst's own filesystem (os.replace cannot cross
        # into a mount point such as a container volume) and writable wherever dst is
        # (its parent may be read-only); removed on the way out, with any folder made
        made = _make_folder(dst)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dst))
        done = False
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
            raise_failures(run_all(pool, fetch, names), len(names), "download")

            moves: list[tuple[Path, str]] = []
            for name in names:
                stored = entries.get(name)
                if extract and stored is not None and stored.members is not None:
                    folder = posixpath.dirname(name)
                    members = check_archive(fetched / name, stored, folder, dst)
                    unpacked = staging / "unpacked" / name
                    for rel in extract_archive(fetched / name, stored, members, unpacked):
                        moves.append((unpacked / rel, join(folder, rel)))
                else:
                    moves.append((fetched / name, name))
            for source, rel in moves:
                target = inside(dst, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
            done = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if not done:  # a refused download leaves dst as it was: no folder it made
                for made_folder in made:
                    with contextlib.suppress(OSError):
                        made_folder.rmdir()
    log.info(
        "Downloaded %d files from %s to %s (%s)",
        len(moves),
        where,
        dst,
        "checked against its manifest" if manifest is not None else "no manifest: sizes only",
    )
    return dst
