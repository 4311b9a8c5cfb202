"""The manifest: what a folder of a run's artifacts holds, stored next to the files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks.errors import ArtifactVerificationError
from tracking_tasks.ops._artifacts.transport import Transport, join

MANIFEST_NAME = ".tracking-tasks-manifest.json"
"""The manifest's file name, stored in the folder it describes."""


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


def read_manifest(transport: Transport, root: str, scratch: Path) -> ArtifactManifest | None:
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


def put_manifest(
    transport: Transport, root: str, manifest: ArtifactManifest, scratch: Path
) -> None:
    folder = scratch / f"manifest-{time.monotonic_ns()}"
    folder.mkdir()
    path = folder / MANIFEST_NAME
    path.write_bytes(manifest.to_json_bytes())
    transport.put(path, join(root, MANIFEST_NAME))


def same_intent(stored: ArtifactManifest | None, intent: ArtifactManifest) -> bool:
    """True when an incomplete stored manifest already says what ``intent`` says.

    Same paths, sizes and sha256 values: a file about to be sent has no sha256 in the
    intent, so a stored manifest that still vouches for an earlier copy of it is
    rewritten before the file is sent (it would claim bytes the server may no longer
    hold once the new ones land).
    """
    if stored is None or stored.complete:
        return False
    return [(e.path, e.size, e.sha256) for e in stored.files] == [
        (e.path, e.size, e.sha256) for e in intent.files
    ]


def verify_listing(
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
