"""Archive mode: a deterministic tar.gz of a folder, checked and extracted safely."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from pathlib import Path
from typing import Any

from tracking_tasks.errors import ArtifactVerificationError, UnsafeArtifactPathError
from tracking_tasks.ops._artifacts.manifest import ManifestEntry
from tracking_tasks.ops._artifacts.transport import join, safe_relpath


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


def make_archive(files: list[tuple[str, Path]], target: Path, compresslevel: int) -> ManifestEntry:
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


def inside(dst: Path, rel: str) -> Path:
    target = (dst / rel).resolve()
    if target != dst and dst not in target.parents:
        raise UnsafeArtifactPathError(
            f"artifact name {rel!r} would land at {str(target)!r}, outside {str(dst)!r}"
        )
    return target


def check_archive(
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
            inside(dst, join(folder, rel))
            if member.isfile():
                found.append(member)
    names = {safe_relpath(m.name) for m in found}
    if names != set(expected):
        raise ArtifactVerificationError(
            f"archive {entry.path!r} holds {sorted(names - set(expected))[:10]} not in its "
            f"manifest and lacks {sorted(set(expected) - names)[:10]}"
        )
    return found


def extract(
    archive_file: Path, entry: ManifestEntry, members: list[tarfile.TarInfo], into: Path
) -> list[str]:
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
