"""Artifacts under change, against the real `mlflow server` behind tests/faultproxy.py:
a resumed upload proves what it skips, a file growing while it is sent fails clearly and
leaves the connection and the manifest right, and a download stages on the destination's
own filesystem (a mount point, a read-only parent)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.servers import FaultProxy, MlflowServer
from tracking_tasks import ArtifactManifest, RunRef, TrackingConfig
from tracking_tasks.errors import ArtifactVerificationError, TransientArtifactError
from tracking_tasks.ops import create_mlflow_run, download_artifacts, setup_mlflow
from tracking_tasks.ops import upload_artifacts as upload
from tracking_tasks.ops._artifacts.http_transport import open_transport
from tracking_tasks.ops._artifacts.manifest import MANIFEST_NAME

REPO = Path(__file__).resolve().parent.parent
ARTIFACT_PUTS = r"^PUT /api/2\.0/mlflow-artifacts/artifacts/"
MiB = 1024 * 1024


@pytest.fixture
def proxy(module_proxy: FaultProxy) -> FaultProxy:
    return module_proxy


@pytest.fixture
def run(tracking_config: TrackingConfig, proxy: FaultProxy) -> Iterator[RunRef]:
    """A run whose handle goes through the proxy (created directly)."""
    proxy.configure(fault="none", match=".*")
    ref = create_mlflow_run(setup_mlflow(tracking_config), "changing")
    yield ref.model_copy(update={"tracking_uri": proxy.url})
    MlflowClient(ref.tracking_uri).set_terminated(ref.run_id)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored(server: MlflowServer, run: RunRef, path: str, tmp_path: Path) -> bytes:
    """What the server holds at ``path``, read with MLflow's own client, unverified."""
    where = tmp_path / f"raw-{time.monotonic_ns()}"
    where.mkdir()
    fetched = MlflowClient(server.url).download_artifacts(run.run_id, path, str(where))
    return Path(fetched).read_bytes()


def _stored_manifest(
    server: MlflowServer, run: RunRef, folder: str, tmp_path: Path
) -> ArtifactManifest:
    raw = _stored(server, run, f"{folder}/{MANIFEST_NAME}", tmp_path)
    return ArtifactManifest.model_validate_json(raw)


def _assert_manifest_matches_the_server(
    server: MlflowServer, run: RunRef, folder: str, tmp_path: Path
) -> ArtifactManifest:
    """Every sha256 the stored manifest records is that of the bytes the server holds."""
    manifest = _stored_manifest(server, run, folder, tmp_path)
    for entry in manifest.files:
        if entry.sha256:
            held = _stored(server, run, f"{folder}/{entry.path}", tmp_path)
            assert (len(held), _sha(held)) == (entry.size, entry.sha256), entry.path
    return manifest


# --- 4. a resumed upload proves what it skips -----------------------------------------


def test_a_resumed_upload_sends_again_a_file_that_changed_keeping_its_size(
    run: RunRef, proxy: FaultProxy, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(1000))
    (src / "big.bin").write_bytes(os.urandom(2 * MiB))
    (src / "c.txt").write_text("unchanged\n")
    proxy.configure(fault="reset", first=1, match=ARTIFACT_PUTS + r".*big\.bin")
    with pytest.raises(TransientArtifactError):
        upload(run, src, "ckpt")  # cut mid-body: a.bin and c.txt landed, big.bin did not
    _assert_manifest_matches_the_server(mlflow_server, run, "ckpt", tmp_path)

    new = os.urandom(1000)
    (src / "a.bin").write_bytes(new)  # between attempts: other bytes, same size
    proxy.configure(fault="none", match=ARTIFACT_PUTS + r".*c\.txt")
    manifest = upload(run, src, "ckpt")  # the retry
    assert proxy.stats()["candidates"] == 0  # c.txt: proven there, not sent again

    assert _stored(mlflow_server, run, "ckpt/a.bin", tmp_path) == new
    stored = _assert_manifest_matches_the_server(mlflow_server, run, "ckpt", tmp_path)
    assert stored == manifest and manifest.complete
    assert {e.path: e.sha256 for e in manifest.files} == {
        name: _sha((src / name).read_bytes()) for name in ("a.bin", "big.bin", "c.txt")
    }


# --- 5. a file that grows while it is sent ----------------------------------------------


def test_a_file_growing_while_it_is_sent_goes_at_its_measured_length_and_the_pool_stays_in_step(
    run: RunRef, proxy: FaultProxy, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """Appending after the first chunk was read: urllib3 used to send the body to its
    new end, past Content-Length; the server kept the measured length, the digest
    covered more, and the extra bytes started the next request on that connection."""
    log_file = tmp_path / "grow.log"
    original = os.urandom(4 * MiB)
    log_file.write_bytes(original)
    grown: list[int] = []

    def grow_once(count: int) -> None:
        if not grown:  # right after the first chunk went out
            grown.append(count)
            with log_file.open("ab") as f:
                f.write(os.urandom(MiB))

    proxy.configure(fault="none", match=ARTIFACT_PUTS)
    transport = open_transport(run.run_id, run.tracking_uri, pool_size=1)  # one connection
    try:
        digest = transport.put(log_file, "grow/grow.log", grow_once)
        # more requests on the same pooled connection
        small = tmp_path / "after.txt"
        small.write_text("after\n")
        transport.put(small, "grow/after.txt")
        listed = {f.path: f.size for f in transport.list("grow")}
    finally:
        transport.close()
    assert grown and log_file.stat().st_size == 5 * MiB
    assert digest == _sha(original)  # the digest of exactly what was sent...
    assert _stored(mlflow_server, run, "grow/grow.log", tmp_path) == original  # ...and stored
    assert listed == {"grow.log": 4 * MiB, "after.txt": 6}
    assert _stored(mlflow_server, run, "grow/after.txt", tmp_path) == b"after\n"
    assert proxy.stats()["candidate_bodies"] == [4 * MiB, 6]


def test_a_file_growing_during_an_upload_fails_clearly_and_no_manifest_vouches_for_it(
    run: RunRef, proxy: FaultProxy, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.log").write_bytes(os.urandom(32 * MiB))
    (src / "config.yaml").write_text("lr: 0.1\n")
    # the log's PUT is held 3 s before the proxy reads its body: the sender blocks
    # with most of the 32 MiB still unread while the file grows
    proxy.configure(fault="slow", slow_seconds=3, first=1, match=ARTIFACT_PUTS + r".*train\.log")

    def grow() -> None:
        time.sleep(1.0)
        with (src / "train.log").open("ab") as f:
            f.write(os.urandom(MiB))

    writer = threading.Thread(target=grow)
    writer.start()
    with pytest.raises(ArtifactVerificationError, match=r"train\.log' changed while it was"):
        upload(run, src, "logs")
    writer.join()
    stored = _assert_manifest_matches_the_server(mlflow_server, run, "logs", tmp_path)
    assert not stored.complete
    assert {e.path: bool(e.sha256) for e in stored.files} == {
        "config.yaml": True,  # landed: vouched for, a retry skips it
        "train.log": False,  # the server holds a prefix of it: nothing vouches for that
    }

    proxy.configure(fault="none", match=ARTIFACT_PUTS)
    manifest = upload(run, src, "logs")  # once the file is written: sent whole
    assert proxy.stats()["candidates"] == 1 + 2  # train.log, the manifest before and after
    assert (
        _stored(mlflow_server, run, "logs/train.log", tmp_path) == (src / "train.log").read_bytes()
    )
    assert _assert_manifest_matches_the_server(mlflow_server, run, "logs", tmp_path) == manifest


# --- 6. downloads stage on the destination's own filesystem ----------------------------

_DOWNLOAD = """
import hashlib, json, os, sys
from pathlib import Path
from tracking_tasks.handles import RunRef
from tracking_tasks.errors import ArtifactVerificationError
from tracking_tasks.ops import download_artifacts

run = RunRef.model_validate_json(sys.argv[1])
dst = Path(sys.argv[2])
def files():
    return {p.relative_to(dst).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(dst.rglob("*")) if p.is_file()}
report = {"mount_point": os.path.ismount(dst), "before": files()}
try:
    (dst.parent / "probe").write_text("x")
    report["parent_writable"] = True
except OSError as exc:
    report["parent_writable"] = exc.strerror
try:
    download_artifacts(run, "tampered", dst)
except ArtifactVerificationError as exc:
    report["refused"] = str(exc)
report["after_refusal"] = files()
report["entries_after_refusal"] = sorted(os.listdir(dst))
download_artifacts(run, "ckpt", dst)
report["after"] = files()
report["entries"] = sorted(os.listdir(dst))
print(json.dumps(report))
"""


def _download_in_a_mount_namespace(mounts: str, run: RunRef, dst: Path) -> dict[str, object]:
    """Run the download in a private mount namespace set up by the ``mounts`` commands
    (which vanish with it): as root, or as a user mapped to root where allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux unshare to make a mount point")
    map_root = [] if os.geteuid() == 0 else ["--map-root-user"]
    probe = subprocess.run(
        [unshare, "--mount", *map_root, "mount", "-t", "tmpfs", "tt-probe", "/mnt"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"mount namespaces are not available here: {probe.stderr[-200:]!r}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run(
        [unshare, "--mount", "--propagation", "private", *map_root, "sh", "-c",
         f'set -e; {mounts}; exec "$0" -c "$1" "$2" "$3"',
         sys.executable, _DOWNLOAD, run.model_dump_json(), str(dst)],
        env=env, capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.splitlines()[-1]))


@pytest.fixture
def stored_tree(run: RunRef, tmp_path: Path) -> dict[str, str]:
    """ "ckpt": a checked folder; "tampered": one whose stored file differs from its manifest."""
    src = tmp_path / "tree"
    (src / "nested").mkdir(parents=True)
    (src / "weights.bin").write_bytes(os.urandom(3 * MiB))
    (src / "nested" / "config.yaml").write_text("lr: 0.1\n")
    upload(run, src, "ckpt")
    upload(run, src, "tampered")
    other = tmp_path / "other"
    (other / "nested").mkdir(parents=True)
    (other / "nested" / "config.yaml").write_text("lr: 0.9\n")  # same size, other bytes
    MlflowClient(run.tracking_uri).log_artifacts(run.run_id, str(other), "tampered")
    return {
        p.relative_to(src).as_posix(): _sha(p.read_bytes()) for p in src.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("parent", ["writable", "read-only"])
def test_a_download_into_a_mount_point_stages_on_its_filesystem(
    run: RunRef, stored_tree: dict[str, str], tmp_path: Path, parent: str
) -> None:
    """A container volume: dst is a mount point (a tmpfs) whose parent is another
    filesystem, writable or read-only. Staging in the parent failed at the final rename
    (EXDEV) or at once (EROFS); staging inside dst works in both."""
    base = tmp_path / "container"
    dst = base / "volume"
    dst.mkdir(parents=True)
    mounts = f"mount -t tmpfs tt-volume {dst}; echo kept > {dst}/kept.txt"
    if parent == "read-only":
        mounts = (
            f"mount --bind {base} {base}; mount -o remount,bind,ro {base}; "
            f"mount -t tmpfs tt-volume {dst}; echo kept > {dst}/kept.txt"
        )
    report = _download_in_a_mount_namespace(mounts, run, dst)
    assert report["mount_point"] is True
    assert report["parent_writable"] == (True if parent == "writable" else "Read-only file system")
    kept = {"kept.txt": _sha(b"kept\n")}
    assert report["before"] == kept
    assert "differs from its manifest" in str(report["refused"])
    assert report["after_refusal"] == kept  # a refused download leaves dst as it was
    assert report["entries_after_refusal"] == ["kept.txt"]  # no staging folder left
    assert report["after"] == {**kept, **stored_tree}
    assert report["entries"] == ["kept.txt", "nested", "weights.bin"]


def test_a_refused_download_into_a_new_folder_leaves_no_folder(
    run: RunRef, stored_tree: dict[str, str], tmp_path: Path
) -> None:
    dst = tmp_path / "new" / "deeper" / "dst"
    with pytest.raises(ArtifactVerificationError, match="differs from its manifest"):
        download_artifacts(run, "tampered", dst)
    assert not (tmp_path / "new").exists()
    out = download_artifacts(run, "ckpt", dst)
    assert sorted(os.listdir(out)) == ["nested", "weights.bin"]  # no staging folder left
