"""Real server processes for the tests: `mlflow server` (SQLite or PostgreSQL backend,
plain, basic-auth, or with workspaces), PostgreSQL 16 (the pgserver wheel's binaries), a Prefect server,
the fault proxy and a TLS stand-in for the Azure ML management endpoint, each on a free
loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ok(
    url: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    ca_bundle: Path | None = None,
) -> None:
    context = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else None
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def make_self_signed_cert(root: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1 (openssl): (cert.pem, key.pem)."""
    root.mkdir(parents=True, exist_ok=True)
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


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
    ca_bundle: Path | None = None
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    backend_store_uri: str = ""

    def stop(self) -> None:
        stop_process_group(self.proc)

    def restart(self, down_seconds: float = 0.0, timeout: float = 180) -> None:
        """Kill the server's process group and start ``mlflow server`` again with the same
        command: same port, SQLite database and artifacts folder. Waits for /health."""
        self.stop()
        time.sleep(down_seconds)
        self.proc = _launch_mlflow(self.command, self.env, self.log_path, self.url, timeout)


def start_mlflow_server(
    root: Path,
    *extra_args: str,
    timeout: float = 180,
    env_extra: dict[str, str] | None = None,
    workers: int = 1,
    tls: bool = False,
    backend_store_uri: str | None = None,
) -> MlflowServer:
    """Start `mlflow server` (SQLite, served artifacts, one worker by default) and wait for
    /health. Several workers add ~40 ms to each request on a reused connection here.

    ``backend_store_uri`` replaces the SQLite file, e.g. a fresh database from
    ``PostgresServer.create_database`` (``postgresql+psycopg://...``): the server migrates
    it on its first start.

    MLflow's job runner is off: left on (MLflow's default with a SQL store) it starts
    seven huey consumer processes that each import MLflow, about 40 CPU-seconds in the
    20 s after /health answers, which on 2 cores stalls whatever runs next. Nothing in
    tracking-tasks uses server jobs (GenAI scorers, trace rollups).

    With ``tls=True`` it serves HTTPS with a fresh self-signed certificate
    (``MlflowServer.ca_bundle``)."""
    port = free_port()
    backend_store_uri = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
    ca_bundle: Path | None = None
    if tls:
        ca_bundle, key = make_self_signed_cert(root / "tls")
        extra_args = (
            *extra_args,
            "--uvicorn-opts",
            f"--ssl-certfile {ca_bundle} --ssl-keyfile {key}",
        )
    log_path = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.update(env_extra or {})
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", str(root / "artifacts"),
        "--serve-artifacts",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", str(workers),
        *extra_args,
    ]  # fmt: skip
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    proc = _launch_mlflow(command, env, log_path, url, timeout, ca_bundle)
    return MlflowServer(
        url=url,
        proc=proc,
        root=root,
        log_path=log_path,
        ca_bundle=ca_bundle,
        command=command,
        env=env,
        backend_store_uri=backend_store_uri,
    )


def _launch_mlflow(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    url: str,
    timeout: float,
    ca_bundle: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session (log appended), wait for ``url``/health."""
    proc = subprocess.Popen(
        command,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        wait_http_ok(f"{url}/health", timeout, proc, ca_bundle)
    except Exception:
        stop_process_group(proc)
        raise RuntimeError(
            f"mlflow server failed to start:\n{log_path.read_text()[-3000:]}"
        ) from None
    return proc


#: The MLflow workspaces the session's workspace server holds.
WORKSPACES = ("team-a", "team-b")


def start_workspace_mlflow_server(
    root: Path, workspaces: tuple[str, ...] = WORKSPACES
) -> MlflowServer:
    """Start `mlflow server --enable-workspaces` (SQLite, served artifacts) and create
    ``workspaces`` in it (through MLflow's own client, as an administrator would)."""
    from mlflow import MlflowClient

    server = start_mlflow_server(root, "--enable-workspaces")
    try:
        client = MlflowClient(server.url)
        for name in workspaces:
            client.create_workspace(name, description=f"{name}, for tracking-tasks' tests")
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class PostgresServer:
    """A PostgreSQL 16 server (the pgserver wheel's binaries) on 127.0.0.1:``port``.

    Trust authentication on loopback, superuser ``postgres``: a throwaway test server.
    """

    port: int
    proc: subprocess.Popen[bytes]
    root: Path
    log_path: Path

    def uri(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URI for ``database`` (psycopg 3 by default)."""
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create the empty database ``name`` and return its SQLAlchemy URI."""
        import psycopg

        with psycopg.connect(self.uri(driver="postgresql"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients disconnected, no checkpoint wait), then make sure
        the whole process group (postmaster and every backend) is gone; delete the data."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        stop_process_group(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres_server(timeout: float = 60) -> PostgresServer:
    """initdb a fresh cluster and start PostgreSQL 16 from the pgserver wheel on loopback.

    pgserver's own ``get_server`` listens on a unix socket only and leaves the server to
    an atexit hook; here the ``postgres`` binary is our child in its own process group,
    listening on a free TCP port, so ``stop`` (or ``stop_process_group``) ends all of it.
    PostgreSQL refuses to run as root: as root, it runs as the ``pgserver`` system user
    (created by pgserver's helper, as ``pgserver.get_server`` would). The data directory is
    a fresh /tmp folder that user owns (pytest's tmp folders are private to root).
    ``fsync=off``: a test server, the data is thrown away.
    """
    from pgserver._commands import POSTGRES_BIN_PATH, initdb

    root = Path(tempfile.mkdtemp(prefix="tt-postgres-"))
    user: str | None = None
    if os.geteuid() == 0:
        from pgserver.utils import ensure_user_exists

        entry = ensure_user_exists("pgserver")
        assert entry is not None
        user = entry.pw_name
        os.chown(root, entry.pw_uid, entry.pw_gid)
    pgdata = root / "data"
    initdb(
        ["--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync"],
        pgdata=pgdata,
        user=user,
    )
    port = free_port()
    log_path = root / "postgres.log"
    proc = subprocess.Popen(
        [
            str(POSTGRES_BIN_PATH / "postgres"), "-D", str(pgdata),
            "-h", "127.0.0.1", "-p", str(port), "-k", str(root),
            "-c", "fsync=off", "-c", "max_connections=200",
        ],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        user=user,
        start_new_session=True,
    )  # fmt: skip
    server = PostgresServer(port=port, proc=proc, root=root, log_path=log_path)
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(server.uri(driver="postgresql"), connect_timeout=2).close()
            return server
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log_path.read_text(errors="replace")[-3000:]
                server.stop()
                raise RuntimeError(f"PostgreSQL failed to start:\n{text}") from None
            time.sleep(0.1)


@dataclass
class AuthMlflowServer(MlflowServer):
    username: str = ""
    password: str = ""


def start_auth_mlflow_server(root: Path, password: str) -> AuthMlflowServer:
    """Start MLflow's own basic-auth server (`--app-name basic-auth`); admin is ``admin``."""
    root.mkdir(parents=True, exist_ok=True)
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server = start_mlflow_server(
        root,
        "--app-name",
        "basic-auth",
        env_extra={
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
        },
    )
    return AuthMlflowServer(
        url=server.url,
        proc=server.proc,
        root=root,
        log_path=server.log_path,
        username="admin",
        password=password,
    )


@dataclass
class AzureStandin:
    """The stand-in's base URL (for AZUREML_DEV_URL_MFE), its CA file and its token."""

    url: str
    ca_bundle: Path
    token: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def requests(self) -> list[str]:
        """The request lines served so far ("GET /subscriptions/...")."""
        return [line for line in self.log_path.read_text().splitlines() if line.startswith("GET ")]

    def stop(self) -> None:
        stop_process_group(self.proc)


def start_azure_standin(
    root: Path,
    token: str,
    workspaces: dict[str, str],
    token_key: str | None = None,
    tls: tuple[Path, Path] | None = None,
) -> AzureStandin:
    """Start tests/azure_standin.py over TLS, with ``tls=(cert, key)`` or a fresh
    self-signed certificate.

    ``token_key``: also accept live tokens signed with it (``tests.faultproxy.mint_token``).
    """
    root.mkdir(parents=True, exist_ok=True)
    cert, key = tls or make_self_signed_cert(root)
    env = {**os.environ, "TT_STANDIN_TOKEN_KEY": token_key} if token_key else None
    port = free_port()
    log_path = root / "standin.log"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tests.azure_standin",
            str(port), str(cert), str(key), token, json.dumps(workspaces),
        ],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while "ready" not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process_group(proc)
            raise RuntimeError(f"Azure stand-in failed to start:\n{log_path.read_text()}")
        time.sleep(0.1)
    return AzureStandin(
        url=f"https://127.0.0.1:{port}", ca_bundle=cert, token=token, proc=proc, log_path=log_path
    )


@dataclass
class PrefectServer:
    """A `prefect server start` process: its API URL and the environment that uses it."""

    api: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        stop_process_group(self.proc)


def start_prefect_server(home: Path, timeout: float = 180) -> PrefectServer:
    """Start `prefect server start` on loopback with its own PREFECT_HOME; wait for health.

    ``env`` is this process's environment without PREFECT_*/MLFLOW_* settings, plus the
    server's home and ``PREFECT_API_URL``: pass it to processes that should use it.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_http_ok(f"{api}/health", timeout, proc)
    except Exception:
        stop_process_group(proc)
        raise
    return PrefectServer(api=api, env={**env, "PREFECT_API_URL": api}, proc=proc)


@dataclass
class FaultProxy:
    """A tests/faultproxy.py process: its URL, control calls and what it recorded."""

    url: str
    proc: subprocess.Popen[bytes]
    ca_bundle: Path | None = None

    def _context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca_bundle)) if self.ca_bundle else None

    def configure(self, **options: object) -> dict[str, object]:
        request = urllib.request.Request(
            f"{self.url}/__faultproxy__", data=json.dumps(options).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10, context=self._context()) as resp:
            return dict(json.loads(resp.read()))

    def set(self, **options: object) -> dict[str, object]:
        """Configure every option, the ones not named back to harmless defaults (no
        fault, every request a candidate); the counters reset."""
        defaults = {"fault": "none", "after": 0, "first": 0, "fraction": 0.0, "match": ".*"}
        return self.configure(**{**defaults, "retry_after": None, **options})

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(
            f"{self.url}/__faultproxy__", timeout=10, context=self._context()
        ) as resp:
            return dict(json.loads(resp.read()))

    def authorization(self) -> dict[str, int]:
        """sha256 of each Authorization value received ("none": without one) -> count."""
        return dict(self.stats()["authorization"])

    def stop(self) -> None:
        stop_process_group(self.proc)


def start_fault_proxy(
    upstream: str,
    *args: str,
    env: dict[str, str] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> FaultProxy:
    """Start tests/faultproxy.py in front of ``upstream`` on a free loopback port.

    ``tls=(cert, key)`` serves HTTPS with that certificate (also the CA file to trust).
    """
    script = Path(__file__).with_name("faultproxy.py")
    tls_args = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
    proc = subprocess.Popen(
        [sys.executable, str(script), "--upstream", upstream, "--port", "0", *tls_args, *args],
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    if line[:1] != ["listening"]:
        stop_process_group(proc)
        raise RuntimeError(f"fault proxy did not start: {line}")
    scheme = "https" if tls else "http"
    return FaultProxy(
        url=f"{scheme}://127.0.0.1:{line[1]}", proc=proc, ca_bundle=tls[0] if tls else None
    )


class Resetter:
    """A real listening socket on loopback that resets every connection it accepts,
    counting them: a server that is there but cannot be talked to."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST: the client's request fails with a reset connection

    def close(self) -> None:
        self.sock.close()
