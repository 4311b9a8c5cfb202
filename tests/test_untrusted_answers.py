"""What a server (or whatever stands in front of it) answers is not trusted: a
``Retry-After`` that is not HTTP's, a redirect out of a credential's path prefix, a
redirect to a signed URL, names and tags with terminal control sequences. Each against
the real `mlflow server`, through tests/faultproxy.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.servers import FaultProxy, MlflowServer
from tracking_tasks import RunRef, TrackingConfig, setup_mlflow
from tracking_tasks.errors import ArtifactError, TransientArtifactError
from tracking_tasks.ops._artifacts.download import download_artifacts
from tracking_tasks.ops._artifacts.upload import upload_artifacts
from tracking_tasks.ops._runs import create_mlflow_run as plain_create_run

REPO = Path(__file__).resolve().parent.parent
ARTIFACT_PUTS = r"^PUT /api/2\.0/mlflow-artifacts/artifacts/"


@pytest.fixture
def proxy(module_proxy: FaultProxy) -> FaultProxy:
    return module_proxy


def _set(proxy: FaultProxy, **options: Any) -> None:
    """Configure every option (unnamed ones back to harmless defaults); counters reset."""
    defaults: dict[str, Any] = {
        "fault": "none",
        "after": 0,
        "first": 0,
        "fraction": 0.0,
        "match": ".*",
        "retry_after": None,
        "redirect_from": None,
        "redirect_to": None,
        "redirect_query": None,
        "redirect_status": 307,
    }
    proxy.configure(**{**defaults, **options})


def _run_via(proxy: FaultProxy, config: TrackingConfig, name: str) -> RunRef:
    _set(proxy)
    via = config.model_copy(update={"tracking_uri": proxy.url})
    return plain_create_run(setup_mlflow.fn(via), run_name=name)


# --- Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u00b2", "1.5", "-1", "soon"])
def test_a_retry_after_that_is_not_http_counts_as_absent(
    fluent_reset: None,
    tracking_config: TrackingConfig,
    proxy: FaultProxy,
    tmp_path: Path,
    value: str,
) -> None:
    """``"²"`` is a digit to Python (``str.isdigit``) but not to HTTP: it used to raise
    ``ValueError`` out of the retry logic; now the 429 is a plain transient fault, which
    the task's retries handle, and the retry lands complete."""
    run = _run_via(proxy, tracking_config, "retry-after-not-http")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a" * 10)
    _set(proxy, fault="429", first=1, retry_after=value, match=ARTIFACT_PUTS)
    with pytest.raises(TransientArtifactError, match="HTTP 429"):
        upload_artifacts(run, src, "out")
    assert proxy.stats()["injected"] == 1  # answered once, not waited on or asked again
    manifest = upload_artifacts(run, src, "out")  # what the task's retry does
    assert manifest.complete and [f.path for f in manifest.files] == ["a.txt"]
    stored = MlflowClient(proxy.url).download_artifacts(run.run_id, "out/a.txt", str(tmp_path))
    assert Path(stored).read_bytes() == b"a" * 10


# --- a redirect to a signed URL -------------------------------------------------------

SIGNED_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261127"
    "&X-Amz-Security-Token=tt-session-token-0451&X-Amz-Signature=tt-signature-9c1e"
    "&sig=tt-sas-sig-77&client_secret=tt-client-secret-3&key=tt-api-key-8"
)
SIGNED_SECRETS = (
    "AKIAEXAMPLE",
    "tt-session-token-0451",
    "tt-signature-9c1e",
    "tt-sas-sig-77",
    "tt-client-secret-3",
    "tt-api-key-8",
)


def test_a_redirect_to_a_signed_url_is_shown_redacted(
    fluent_reset: None, tracking_config: TrackingConfig, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The transport never follows a redirect; the error names where it pointed, with the
    signature, session token and other secret query values replaced by ``***``."""
    run = _run_via(proxy, tracking_config, "signed-redirect")
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(100))
    upload_artifacts(run, src, "out")
    _set(
        proxy,
        redirect_from="/api/2.0/mlflow-artifacts/artifacts/",
        redirect_to="/signed/",
        redirect_query=SIGNED_QUERY,
    )
    with pytest.raises(ArtifactError, match="HTTP 307") as info:
        download_artifacts(run, "out", tmp_path / "dst")
    message = str(info.value)
    assert "/signed/" in message and "X-Amz-Signature=***" in message, message
    assert "X-Amz-Security-Token=***" in message and "client_secret=***" in message
    leaked = [s for s in SIGNED_SECRETS if s in message]
    assert not leaked, f"the error shows {leaked}: {message}"
    assert proxy.stats()["redirected"] >= 1
    assert not (tmp_path / "dst").exists()  # a refused download leaves nothing behind


# --- terminal control sequences in what the server returns ----------------------------

EVIL_NAME = "run\x1b]0;owned\x07-\x1b[2J\x1b[31mred\u202e"
EVIL_TAG = "line1\nline2\r\x1b[1A\x1b[2Kfake: FINISHED\x9b31m"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "tracking_tasks.cli", *args],
        capture_output=True, text=True, env=env, timeout=120, cwd=REPO,
    )  # fmt: skip


def test_the_command_line_shows_control_sequences_escaped_and_json_intact(
    mlflow_server: MlflowServer,
) -> None:
    client = MlflowClient(mlflow_server.url)
    experiment = f"cli-controls-{os.urandom(4).hex()}"
    run = client.create_run(client.create_experiment(experiment), run_name=EVIL_NAME)
    run_id = run.info.run_id
    client.set_tag(run_id, "note", EVIL_TAG)
    client.log_param(run_id, "p", "v\x1b[5m")  # blinking
    client.set_terminated(run_id)
    uri = ["--tracking-uri", mlflow_server.url]
    outputs = {
        "find": _cli("runs", "find", "-e", experiment, *uri),
        "show": _cli("runs", "show", run_id, *uri),
    }
    for name, out in outputs.items():
        assert out.returncode == 0, out.stderr
        text = out.stdout + out.stderr
        controls = sorted({f"{ord(c):#x}" for c in text if _is_control(c)})
        assert controls == [], f"{name} printed raw control characters {controls}: {text!r}"
    (row,) = outputs["find"].stdout.splitlines()[1:]
    assert row.startswith(run_id) and "\\x1b]0;owned\\x07" in row  # shown, not obeyed
    assert "note = line1\\x0aline2\\x0d\\x1b[1A\\x1b[2Kfake: FINISHED\\x9b31m" in (
        outputs["show"].stdout
    )
    # JSON stays JSON: the exact values, escaped by the encoder
    shown = _cli("runs", "show", run_id, *uri, "--format", "json").stdout
    assert "\x1b" not in shown
    summary = json.loads(shown)
    assert summary["run_name"] == EVIL_NAME and summary["tags"]["note"] == EVIL_TAG
    assert summary["params"] == {"p": "v\x1b[5m"}


def _is_control(char: str) -> bool:
    code = ord(char)
    return (code < 0x20 and char != "\n") or 0x7F <= code < 0xA0 or char in "\u202a\u202e"
