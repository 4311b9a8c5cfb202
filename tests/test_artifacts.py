"""Artifact tasks against a real `mlflow server`, with faults from a real proxy process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from prefect import flow

from tests.helpers import flow_run_artifacts, task_run_states
from tests.servers import (
    FaultProxy,
    MlflowServer,
    start_fault_proxy,
    start_mlflow_server,
)
from tracking_tasks import (
    ArtifactManifest,
    RunRef,
    TrackingConfig,
    create_mlflow_run,
    download_artifacts,
    log_best_checkpoint,
    setup_mlflow,
    upload_artifacts,
)
from tracking_tasks.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactVerificationError,
    LocalArtifactPathError,
    RunNotFoundError,
    UnsafeArtifactPathError,
)
from tracking_tasks.ops._artifacts.manifest import MANIFEST_NAME, ManifestEntry

ARTIFACT_PUTS = r"^PUT /api/2\.0/mlflow-artifacts/artifacts/"
FAST = {"retries": 6, "retry_delay_seconds": 0.1, "retry_jitter_factor": 0}


@pytest.fixture
def proxy(mlflow_server: MlflowServer) -> Iterator[FaultProxy]:
    """tests/faultproxy.py as its own process in front of the session's mlflow server."""
    started = start_fault_proxy(mlflow_server.url)
    try:
        yield started
    finally:
        started.stop()


def _run(config: TrackingConfig, name: str = "artifacts") -> RunRef:
    ref = create_mlflow_run.fn(setup_mlflow.fn(config), run_name=name)
    return ref


def _end(ref: RunRef) -> None:
    MlflowClient(ref.tracking_uri).set_terminated(ref.run_id)


@pytest.fixture
def run(tracking_config: TrackingConfig) -> Iterator[RunRef]:
    ref = _run(tracking_config)
    yield ref
    _end(ref)


def _make_tree(root: Path, files: int = 6, big_bytes: int = 2 * 1024 * 1024) -> Path:
    """A small folder: text files, a nested one, and one file above the streaming size."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"part-{i}.txt").write_text(f"file {i}\n" * (i + 1))
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "nested" / "deeper" / "weights.bin").write_bytes(os.urandom(4096))
    (root / "big.bin").write_bytes(os.urandom(big_bytes))
    return root


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _remote_files(run: RunRef, path: str) -> dict[str, int]:
    """Every stored file under ``path`` (recursively) with its size, via MLflow itself."""
    client = MlflowClient(run.tracking_uri)
    found: dict[str, int] = {}
    pending = [path]
    while pending:
        for info in client.list_artifacts(run.run_id, pending.pop()):
            if info.is_dir:
                pending.append(info.path)
            else:
                found[info.path] = int(info.file_size)
    return found


def _through(run: RunRef, proxy: FaultProxy) -> RunRef:
    return run.model_copy(update={"tracking_uri": proxy.url})


# --- upload, manifest, download -------------------------------------------------------


def test_upload_stores_manifest_and_downloads_byte_identical(run: RunRef, tmp_path: Path) -> None:
    source = _make_tree(tmp_path / "src")
    manifest = upload_artifacts.fn(run, source, "outputs")

    expected = _tree_bytes(source)
    assert manifest.complete and manifest.artifact_path == "outputs"
    assert {e.path: e.size for e in manifest.files} == {k: len(v) for k, v in expected.items()}
    stored = _remote_files(run, "outputs")
    assert set(stored) == {f"outputs/{k}" for k in expected} | {f"outputs/{MANIFEST_NAME}"}
    raw = MlflowClient(run.tracking_uri).download_artifacts(
        run.run_id, f"outputs/{MANIFEST_NAME}", str(tmp_path)
    )
    assert ArtifactManifest.model_validate_json(Path(raw).read_bytes()) == manifest

    dst = download_artifacts.fn(run, "outputs", tmp_path / "restored")
    assert dst == (tmp_path / "restored").resolve()
    assert _tree_bytes(dst) == expected


def test_single_file_upload_and_download(run: RunRef, tmp_path: Path) -> None:
    source = tmp_path / "report.json"
    source.write_text('{"f1": 0.9}')
    manifest = upload_artifacts.fn(run, source, "reports")
    assert [e.path for e in manifest.files] == ["report.json"]
    other = tmp_path / "notes.txt"
    other.write_text("second file in the same folder")
    manifest = upload_artifacts.fn(run, other, "reports")
    assert [e.path for e in manifest.files] == ["notes.txt", "report.json"]  # merged

    dst = download_artifacts.fn(run, "reports/report.json", tmp_path / "one")
    assert _tree_bytes(dst) == {"report.json": source.read_bytes()}
    both = download_artifacts.fn(run, "reports", tmp_path / "both")
    assert set(_tree_bytes(both)) == {"report.json", "notes.txt"}


def test_rerun_sends_only_what_changed(run: RunRef, tmp_path: Path, proxy: FaultProxy) -> None:
    source = _make_tree(tmp_path / "src", files=3)
    via = _through(run, proxy)
    proxy.configure(fault="none", match=ARTIFACT_PUTS)
    upload_artifacts.fn(via, source, "ckpt")
    first = proxy.stats()["candidates"]
    assert first == 5 + 2  # 5 files, the manifest before and after

    proxy.configure(fault="none", match=ARTIFACT_PUTS)
    upload_artifacts.fn(via, source, "ckpt")
    assert proxy.stats()["candidates"] == 0  # everything already there: nothing sent

    (source / "part-0.txt").write_text("FILE 0\n")  # same size, other bytes: sha256 differs
    (source / "added.txt").write_text("new")
    proxy.configure(fault="none", match=ARTIFACT_PUTS)
    manifest = upload_artifacts.fn(via, source, "ckpt")
    assert proxy.stats()["candidates"] == 2 + 2
    assert _tree_bytes(download_artifacts.fn(run, "ckpt", tmp_path / "out")) == _tree_bytes(source)
    assert len(manifest.files) == 6


def test_archive_mode_roundtrip_and_resume(run: RunRef, tmp_path: Path, proxy: FaultProxy) -> None:
    source = _make_tree(tmp_path / "step-900", files=3)
    via = _through(run, proxy)
    manifest = upload_artifacts.fn(via, source, "ckpt", archive=True)
    (entry,) = manifest.files
    assert entry.path == "step-900.tar.gz" and entry.members is not None
    assert {m.path for m in entry.members} == set(_tree_bytes(source))
    assert set(_remote_files(run, "ckpt")) == {"ckpt/step-900.tar.gz", f"ckpt/{MANIFEST_NAME}"}

    proxy.configure(fault="none", match=ARTIFACT_PUTS)
    assert upload_artifacts.fn(via, source, "ckpt", archive=True) == manifest
    assert proxy.stats()["candidates"] == 0  # the archive is deterministic: not re-sent

    restored = download_artifacts.fn(run, "ckpt", tmp_path / "restored")
    assert _tree_bytes(restored) == _tree_bytes(source)
    kept = download_artifacts.fn(run, "ckpt", tmp_path / "kept", extract=False)
    assert set(_tree_bytes(kept)) == {"step-900.tar.gz"}


def test_log_best_checkpoint_uses_the_explicit_config_dir(run: RunRef, tmp_path: Path) -> None:
    checkpoint = _make_tree(tmp_path / "mnt" / "ckpts" / "epoch-3", files=2)
    config = tmp_path / "code" / "configs"
    config.mkdir(parents=True)
    (config / "train.yaml").write_text("lr: 0.1\n")

    result = log_best_checkpoint.fn(run, checkpoint, config_dir=config)
    assert result.checkpoint_path == "best_checkpoint/checkpoint"
    assert result.config_path == "best_checkpoint/config"
    assert set(_remote_files(run, "best_checkpoint")) == {
        "best_checkpoint/checkpoint/epoch-3.tar.gz",
        f"best_checkpoint/checkpoint/{MANIFEST_NAME}",
        "best_checkpoint/config/train.yaml",
        f"best_checkpoint/config/{MANIFEST_NAME}",
    }
    restored = download_artifacts.fn(
        run.run_id, result.checkpoint_path, tmp_path / "r", tracking_uri=run.tracking_uri
    )
    assert _tree_bytes(restored) == _tree_bytes(checkpoint)

    with pytest.raises(LocalArtifactPathError, match="config_dir"):
        log_best_checkpoint.fn(run, checkpoint, config_dir=tmp_path / "nope")


def test_progress_artifact_reaches_100(run: RunRef, tmp_path: Path) -> None:
    source = _make_tree(tmp_path / "src", files=1)

    @flow
    def keep() -> None:
        upload_artifacts(run, source, "p", progress_min_bytes=0)

    state = keep(return_state=True)
    assert state.is_completed()
    progress = [
        a for a in flow_run_artifacts(state.state_details.flow_run_id) if a.type == "progress"
    ]
    assert len(progress) == 1 and float(progress[0].data) == 100.0


# --- faults through the proxy ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("refuse", {"first": 2}),
        ("reset", {"first": 2, "match": r"^PUT /api/2\.0/mlflow-artifacts/.*big\.bin"}),
        ("503", {"first": 3}),
        ("429", {"first": 2}),
        ("stall", {"first": 1, "stall_seconds": 5}),
        ("503", {"fraction": 0.25, "seed": 7}),
    ],
    ids=["refuse", "reset-mid-body", "503", "429", "stall", "503-fraction"],
)
def test_transient_faults_end_complete_and_identical(
    run: RunRef, tmp_path: Path, proxy: FaultProxy, fault: str, options: dict[str, Any]
) -> None:
    source = _make_tree(tmp_path / "src", files=8)
    via = _through(run, proxy)
    proxy.configure(**{"fault": fault, "match": ARTIFACT_PUTS, **options})

    @flow
    def keep() -> ArtifactManifest:
        task = upload_artifacts.with_options(**FAST)
        # the stall outlasts a 2 s timeout; elsewhere leave room for a busy machine
        return task(via, source, "ckpt", timeout_seconds=2.0 if fault == "stall" else 20.0)

    state = keep(return_state=True)
    assert state.is_completed(), state.message
    stats = proxy.stats()
    assert stats["injected"] >= 1, stats
    (history,) = task_run_states(state.state_details.flow_run_id, "upload_artifacts")
    assert history.count("Retrying") >= 1 and history[-1] == "Completed", history

    expected = _tree_bytes(source)
    stored = _remote_files(run, "ckpt")
    assert sorted(stored) == sorted([f"ckpt/{k}" for k in expected] + [f"ckpt/{MANIFEST_NAME}"])
    proxy.configure(fault="none")
    restored = download_artifacts.fn(via, "ckpt", tmp_path / "restored")
    assert _tree_bytes(restored) == expected


def test_download_retries_transient_faults(run: RunRef, tmp_path: Path, proxy: FaultProxy) -> None:
    source = _make_tree(tmp_path / "src", files=2)
    upload_artifacts.fn(run, source, "ckpt")
    via = _through(run, proxy)
    proxy.configure(fault="reset", first=1, match=r"^GET /api/2\.0/mlflow-artifacts/.*big\.bin")

    @flow
    def restore() -> Path:
        return download_artifacts.with_options(**FAST)(via, "ckpt", tmp_path / "out")

    state = restore(return_state=True)
    assert state.is_completed(), state.message
    (history,) = task_run_states(state.state_details.flow_run_id, "download_artifacts")
    assert history.count("Retrying") == 1
    assert _tree_bytes(tmp_path / "out") == _tree_bytes(source)


def _failed_once(state: Any, task_name: str) -> list[str]:
    assert state.is_failed()
    (history,) = task_run_states(state.state_details.flow_run_id, task_name)
    assert "Retrying" not in history and "AwaitingRetry" not in history, history
    return history


def _upload_fails_at_once(run: RunRef, source: Path, dest: str, match: str) -> None:
    """Upload in a flow with quick retries: the task fails on its first attempt."""

    @flow
    def keep() -> None:
        upload_artifacts.with_options(**FAST)(run, source, dest)

    state = keep(return_state=True)
    assert _failed_once(state, "upload_artifacts")[-1] == "Failed"
    with pytest.raises(ArtifactError, match=match):
        state.result()


def test_permanent_http_refusal_fails_at_once(
    run: RunRef, tmp_path: Path, proxy: FaultProxy
) -> None:
    source = _make_tree(tmp_path / "src", files=1)
    via = _through(run, proxy)
    proxy.configure(fault="403", first=1000, match=ARTIFACT_PUTS)
    _upload_fails_at_once(via, source, "ckpt", match="HTTP 403")


def test_unknown_run_and_missing_path_fail_at_once(
    run: RunRef, tmp_path: Path, tracking_config: TrackingConfig
) -> None:
    ghost = run.model_copy(update={"run_id": "0" * 32})
    source = _make_tree(tmp_path / "src", files=1)

    @flow
    def unknown_run() -> None:
        upload_artifacts.with_options(**FAST)(ghost, source, "x")

    state = unknown_run(return_state=True)
    _failed_once(state, "upload_artifacts")
    with pytest.raises(RunNotFoundError, match="does not exist"):
        state.result()

    @flow
    def missing_path() -> None:
        upload_artifacts.with_options(**FAST)(run, tmp_path / "nope", "x")

    state = missing_path(return_state=True)
    _failed_once(state, "upload_artifacts")
    with pytest.raises(LocalArtifactPathError, match="does not exist"):
        state.result()

    with pytest.raises(ArtifactNotFoundError):
        download_artifacts.fn(run, "never-uploaded", tmp_path / "d")
    with pytest.raises(UnsafeArtifactPathError):
        upload_artifacts.fn(run, source, "../outside")


# --- downloads refuse what would escape, and what does not match ----------------------


def _put_raw(run: RunRef, folder: Path, artifact_path: str) -> None:
    """Store a folder with plain MLflow, bypassing the library's checks."""
    MlflowClient(run.tracking_uri).log_artifacts(run.run_id, str(folder), artifact_path)


def _manifest_for(run: RunRef, path: str, entries: list[ManifestEntry]) -> bytes:
    manifest = ArtifactManifest(
        run_id=run.run_id, artifact_path=path, complete=True, files=tuple(entries)
    )
    return manifest.to_json_bytes()


def _tar_gz(members: list[tarfile.TarInfo], payloads: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, payload in zip(members, payloads, strict=True):
            tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return buffer.getvalue()


def _file_member(name: str, payload: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info


def _hostile_cases(run: RunRef, tmp_path: Path) -> dict[str, tuple[str, str]]:
    import hashlib

    def entry(path: str, data: bytes, members: tuple[ManifestEntry, ...] | None = None) -> Any:
        return ManifestEntry(
            path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), members=members
        )

    cases: dict[str, tuple[str, str]] = {}
    # 1. a manifest naming a file outside the folder
    folder = tmp_path / "h1"
    folder.mkdir()
    (folder / "ok.txt").write_bytes(b"ok")
    (folder / MANIFEST_NAME).write_bytes(
        _manifest_for(run, "h1", [entry("ok.txt", b"ok"), entry("../../evil.txt", b"x")])
    )
    _put_raw(run, folder, "h1")
    cases["manifest-dotdot"] = ("h1", r"\.\.")

    # 2. an archive whose member climbs out
    payload = b"owned"
    archive = _tar_gz([_file_member("../evil.txt", payload)], [payload])
    folder = tmp_path / "h2"
    folder.mkdir()
    (folder / "ckpt.tar.gz").write_bytes(archive)
    (folder / MANIFEST_NAME).write_bytes(
        _manifest_for(run, "h2", [entry("ckpt.tar.gz", archive, (entry("evil.txt", payload),))])
    )
    _put_raw(run, folder, "h2")
    cases["archive-dotdot"] = ("h2", r"\.\.")

    # 3. an archive holding a symlink to /etc/passwd, then a file through it
    link = tarfile.TarInfo("weights")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc"
    archive = _tar_gz([_file_member("a.bin", b"a"), link], [b"a", b""])
    folder = tmp_path / "h3"
    folder.mkdir()
    (folder / "ckpt.tar.gz").write_bytes(archive)
    (folder / MANIFEST_NAME).write_bytes(
        _manifest_for(run, "h3", [entry("ckpt.tar.gz", archive, (entry("a.bin", b"a"),))])
    )
    _put_raw(run, folder, "h3")
    cases["archive-symlink"] = ("h3", "link or device")

    # 4. an absolute member name
    archive = _tar_gz([_file_member("/tmp/evil.txt", payload)], [payload])
    folder = tmp_path / "h4"
    folder.mkdir()
    (folder / "ckpt.tar.gz").write_bytes(archive)
    (folder / MANIFEST_NAME).write_bytes(
        _manifest_for(run, "h4", [entry("ckpt.tar.gz", archive, (entry("evil.txt", payload),))])
    )
    _put_raw(run, folder, "h4")
    cases["archive-absolute"] = ("h4", "absolute")
    return cases


def test_hostile_names_are_refused_and_nothing_is_written(run: RunRef, tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()
    cases = _hostile_cases(run, tmp_path / "build")
    area = tmp_path / "area"
    area.mkdir()
    for case, (path, reason) in cases.items():
        with pytest.raises(UnsafeArtifactPathError, match=reason):
            download_artifacts.fn(run, path, area / "dst" / case)
        assert list(area.iterdir()) == [], case  # not even the destination folder
    assert not list(tmp_path.rglob("evil.txt"))

    with pytest.raises(UnsafeArtifactPathError, match=r"\.\."):
        download_artifacts.fn(run, "../x", area / "dst" / "arg")
    with pytest.raises(UnsafeArtifactPathError, match="absolute"):
        download_artifacts.fn(run, "/etc", area / "dst" / "abs")
    assert list(area.iterdir()) == []


def test_download_refuses_tampered_and_incomplete_uploads(run: RunRef, tmp_path: Path) -> None:
    source = _make_tree(tmp_path / "src", files=2)
    upload_artifacts.fn(run, source, "good")
    tampered = tmp_path / "tamper"
    tampered.mkdir()
    (tampered / "part-0.txt").write_text("FILE 0\n")  # same size, other bytes
    _put_raw(run, tampered, "good")
    with pytest.raises(ArtifactVerificationError, match="differs from its manifest"):
        download_artifacts.fn(run, "good", tmp_path / "d1")
    assert not (tmp_path / "d1").exists()

    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "stray.txt").write_text("not in the manifest")
    upload_artifacts.fn(run, source, "other")
    _put_raw(run, extra, "other")
    with pytest.raises(ArtifactVerificationError, match="does not list"):
        download_artifacts.fn(run, "other", tmp_path / "d2")

    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "a.txt").write_text("a")
    manifest = ArtifactManifest(run_id=run.run_id, artifact_path="half", complete=False, files=())
    (incomplete / MANIFEST_NAME).write_bytes(manifest.to_json_bytes())
    _put_raw(run, incomplete, "half")
    with pytest.raises(ArtifactVerificationError, match="never completed"):
        download_artifacts.fn(run, "half", tmp_path / "d3")
    assert not (tmp_path / "d2").exists() and not (tmp_path / "d3").exists()


def test_importing_the_library_does_not_import_mlflow() -> None:
    code = "import sys, tracking_tasks; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_local_sqlite_store_goes_through_mlflows_repository(
    tmp_path: Path, fluent_reset: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the local store's artifacts go to ./mlruns
    config = TrackingConfig(
        experiment_name="local", tracking_uri=f"sqlite:///{tmp_path / 'local.db'}"
    )
    ref = _run(config)
    try:
        source = _make_tree(tmp_path / "src", files=2)
        manifest = upload_artifacts.fn(ref, source, "ckpt", archive=True)
        assert manifest.complete and manifest.files[0].path == "src.tar.gz"
        assert upload_artifacts.fn(ref, source, "ckpt", archive=True) == manifest
        restored = download_artifacts.fn(ref, "ckpt", tmp_path / "restored")
        assert _tree_bytes(restored) == _tree_bytes(source)
    finally:
        _end(ref)


STREAMING_CHECK = """
import json, sys
from pathlib import Path
from tracking_tasks import RunRef, upload_artifacts

def status_kb(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])

run = RunRef.model_validate_json(sys.argv[1])
upload_artifacts.fn(run, sys.argv[2], "warm")  # imports and connections, not measured
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
before = status_kb("VmRSS:")
upload_artifacts.fn(run, sys.argv[3], "large")
print(json.dumps({"growth_mb": (status_kb("VmHWM:") - before) / 1024}))
"""


def test_large_upload_streams_without_holding_the_file(run: RunRef, tmp_path: Path) -> None:
    """Peak RSS of an uploading process grows far less than the 80 MB file it sends."""
    small = tmp_path / "small.txt"
    small.write_text("warm up")
    large = tmp_path / "large.bin"
    with large.open("wb") as f:
        f.truncate(80 * 1024 * 1024)  # sparse: cheap to make, still 80 MB to read and send
    out = subprocess.run(
        [sys.executable, "-c", STREAMING_CHECK, run.model_dump_json(), str(small), str(large)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"},
    )
    growth = json.loads(out.stdout.strip().splitlines()[-1])["growth_mb"]
    assert growth < 40, f"peak RSS grew {growth:.1f} MB while uploading an 80 MB file"
    stored = _remote_files(run, "large")
    assert set(stored) == {"large/large.bin", f"large/{MANIFEST_NAME}"}
    assert stored["large/large.bin"] == 80 * 1024 * 1024


# --- how the bytes travel: the environment's proxy, HTTPS -----------------------------


def test_transfers_honour_the_environments_http_proxy(
    run: RunRef, tmp_path: Path, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY / NO_PROXY are honoured by requests' rules, as MLflow's own client does."""
    source = _make_tree(tmp_path / "src", files=2)  # includes a streamed 2 MiB file
    proxy.configure(fault="none")
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    # "host:port" with no scheme is read as http://host:port, as requests does
    monkeypatch.setenv("http_proxy", proxy.url.removeprefix("http://"))
    manifest = upload_artifacts.fn(run, source, "via-proxy")
    monkeypatch.setenv("http_proxy", proxy.url)
    dst = download_artifacts.fn(run, "via-proxy", tmp_path / "back")
    through_proxy = proxy.stats()["as_forward_proxy"]

    monkeypatch.setenv("no_proxy", "127.0.0.1")  # the same host, now exempted
    download_artifacts.fn(run, "via-proxy", tmp_path / "direct")
    monkeypatch.delenv("http_proxy")

    assert _tree_bytes(dst) == _tree_bytes(source)
    # each file went up and came down through the proxy, with the lookups and listings
    assert through_proxy >= 2 * len(manifest.files) + 3
    assert proxy.stats()["as_forward_proxy"] == through_proxy  # NO_PROXY: direct
    assert _tree_bytes(tmp_path / "direct") == _tree_bytes(source)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-tls"), tls=True)
    yield server
    server.stop()


def test_https_server_is_verified_with_mlflows_certificate_setting(
    tls_server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_server.ca_bundle is not None
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tls_server.ca_bundle))
    client = MlflowClient(tls_server.url)
    experiment_id = client.create_experiment(f"tls-{os.urandom(4).hex()}")
    created = client.create_run(experiment_id, run_name="tls")
    ref = RunRef(
        run_id=created.info.run_id,
        experiment_id=experiment_id,
        run_name="tls",
        tracking_uri=tls_server.url,
    )
    source = _make_tree(tmp_path / "src", files=2)
    try:
        upload_artifacts.fn(ref, source, "secure")
        dst = download_artifacts.fn(ref, "secure", tmp_path / "back")
        assert _tree_bytes(dst) == _tree_bytes(source)

        # a certificate nothing vouches for is refused at once (no retry), nothing sent
        monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
        _upload_fails_at_once(ref, source, "refused", match="MLFLOW_TRACKING_SERVER_CERT_PATH")
        # a setting that names a missing file is refused before anything is sent
        missing = tmp_path / "no-such-ca.pem"
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(missing))
        with pytest.raises(
            ArtifactError, match=r"MLFLOW_TRACKING_SERVER_CERT_PATH.*does not exist"
        ):
            upload_artifacts.fn(ref, source, "refused")
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tls_server.ca_bundle))
        assert not [a.path for a in client.list_artifacts(ref.run_id, "refused")]
    finally:
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tls_server.ca_bundle))
        client.set_terminated(ref.run_id)
