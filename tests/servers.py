"""Real server processes for the tests: `mlflow server` on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop a process started with start_new_session=True, and everything it started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure its children (job runner, huey consumers) are too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        break
    proc.wait(timeout=timeout)


@dataclass
class MlflowServer:
    url: str
    proc: subprocess.Popen[bytes]
    root: Path
    log_path: Path

    def stop(self) -> None:
        stop_process_group(self.proc)


def start_mlflow_server(root: Path, *extra_args: str, timeout: float = 180) -> MlflowServer:
    """Start `mlflow server` (SQLite, served artifacts, one worker) and wait for /health."""
    port = free_port()
    log_path = root / "server.log"
    log = log_path.open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
            "--serve-artifacts",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--workers", "1",
            *extra_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/health", timeout, proc)
    except Exception:
        stop_process_group(proc)
        raise RuntimeError(
            f"mlflow server failed to start:\n{log_path.read_text()[-3000:]}"
        ) from None
    return MlflowServer(url=url, proc=proc, root=root, log_path=log_path)
