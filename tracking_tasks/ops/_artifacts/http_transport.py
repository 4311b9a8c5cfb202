"""Straight HTTP to ``mlflow server --serve-artifacts``: one urllib3 pool, set up as MLflow's.

Over 400 lines on purpose: the pool, its TLS and proxy set-up, the failure classes
and the transport that uses them are one piece; split, each part would need the others.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from tracking_tasks.auth._apply import ensure_credentials
from tracking_tasks.auth._scope import (
    PROVIDER_NAME,
    WORKSPACE_HEADER,
    authorization_for,
    retry_authorization,
)
from tracking_tasks.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactVerificationError,
    RunNotFoundError,
    UnsafeArtifactPathError,
    http_status_error,
    is_transient,
    transfer_error,
)
from tracking_tasks.ops._artifacts.transport import (
    CHUNK_BYTES,
    RETRY_AFTER_ATTEMPTS,
    RETRY_AFTER_MAX_SECONDS,
    RETRY_AFTER_STATUS,
    ProgressFn,
    RemoteFile,
    RepoTransport,
    Transport,
    join,
    repo_artifact_uri,
    retry_after_seconds,
    safe_relpath,
)
from tracking_tasks.urls import is_http_uri, redact_uri

if TYPE_CHECKING:
    import urllib3

# Bodies up to this size go out in the same write as the headers: a file object body is
# written after them, and the server's delayed ACK then costs ~40 ms per small file.
SMALL_FILE_BYTES = 1024 * 1024
_ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"


def _shrank(path: Path, size: int, read: int) -> ArtifactVerificationError:
    return ArtifactVerificationError(
        f"{str(path)!r} shrank while it was being uploaded ({read} of the {size} bytes "
        "measured were there): upload it again once it is written"
    )


class _FileBody:
    """A streamed request body: exactly ``size`` bytes of the file, hashed and counted.

    It stops at ``size`` (the ``Content-Length`` sent) even if the file has grown since
    it was measured: urllib3 sends a body until it reads nothing, and the extra bytes
    would be read by the server as the start of the next request on that keep-alive
    connection. A file that ends before ``size`` raises ``ArtifactVerificationError``,
    which aborts the request (urllib3 closes the connection). The sha256 runs on a
    helper thread fed through a bounded queue (at most 8 chunks, 8 MiB, in flight):
    hashlib and the socket both release the GIL, so hashing overlaps sending.
    """

    _QUEUE_CHUNKS = 8

    def __init__(self, path: Path, size: int, progress: ProgressFn | None) -> None:
        self._path = path
        self._file = path.open("rb")
        self._left = size
        self._size = size
        self._progress = progress
        self._digest = hashlib.sha256()
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=self._QUEUE_CHUNKS)
        self._hasher = threading.Thread(target=self._hash, name="sha256-upload", daemon=True)
        self._hasher.start()
        self._finished = False

    def _hash(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._digest.update(chunk)

    def read(self, amount: int = -1) -> bytes:
        # urllib3 asks for 16 KiB blocks; 1 MiB ones cost 64x fewer Python round trips
        # and sendall() takes whatever it is given
        if self._left <= 0:
            return b""
        chunk = self._file.read(min(max(amount, CHUNK_BYTES), self._left))
        if not chunk:
            raise _shrank(self._path, self._size, self._size - self._left)
        self._left -= len(chunk)
        self._chunks.put(chunk)
        if self._progress is not None:
            self._progress(len(chunk))
        return chunk

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK_BYTES):
            yield chunk

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._chunks.put(None)
            self._hasher.join()

    def hexdigest(self) -> str:
        """sha256 of every byte read so far (waits for the hashing thread)."""
        self._finish()
        return self._digest.hexdigest()

    def close(self) -> None:
        self._finish()
        self._file.close()


@functools.cache
def _quickack_connection(base: type[Any]) -> type[Any]:
    """``base`` (a urllib3 connection class) that acknowledges answers at once.

    ``mlflow server`` with several uvicorn workers (MLflow's default is 4) answers with
    Nagle's algorithm on (uvicorn#3149): a Flask endpoint's reply goes out as headers,
    then the body held back until the headers are acknowledged, and Linux delays that
    ACK by 40 ms. Every listing and run lookup cost ~44 ms instead of ~2 ms. Linux's
    TCP_QUICKACK, set before each reply is read, sends the ACK at once. Elsewhere this
    is the plain class.
    """
    import socket

    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is None:
        return base

    class QuickAck(base):  # type: ignore[misc]
        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            # TLS tunnelled through an https:// proxy is an SSLTransport: no setsockopt
            setsockopt = getattr(getattr(self, "sock", None), "setsockopt", None)
            if setsockopt is not None:
                with contextlib.suppress(OSError):
                    setsockopt(socket.IPPROTO_TCP, quickack, 1)
            return super().getresponse(*args, **kwargs)

    QuickAck.__name__ = QuickAck.__qualname__ = f"QuickAck{base.__name__}"
    return QuickAck


class _Origin:
    """A urllib3 connection pool to one HTTP(S) origin, set up as MLflow's own client is.

    Same credentials (the scoped credential of the request's origin, see
    ``tracking_tasks.auth._scope``; else ``get_default_host_creds``: basic auth or
    bearer token from MLflow's variables), TLS
    verification with ``MLFLOW_TRACKING_SERVER_CERT_PATH`` or requests' CA bundle,
    client certificate) and the same proxies (``HTTP(S)_PROXY`` / ``NO_PROXY``, by
    requests' rules). They are resolved once here: a ``requests.Session`` re-reads
    proxies and CA settings from the environment on every request, which made it cost
    2.5x the client CPU of this pool per small file (``bench/bench_artifacts.py``).

    Each request is sent once (no urllib3 retries, no redirects followed): a failure is
    raised as ``TransientArtifactError`` or a permanent ``ArtifactError`` so that the
    Prefect task's retries are the only ones, and visible. One exception: an HTTP 429 or
    503 with a ``Retry-After`` is waited out and sent again in place, up to
    ``RETRY_AFTER_ATTEMPTS`` times; a ``Retry-After`` over ``RETRY_AFTER_MAX_SECONDS``
    fails at once (see ``request``).
    """

    def __init__(
        self,
        url: str,
        tracking_uri: str,
        timeout: float,
        pool_size: int,
        workspace: str | None = None,
    ) -> None:
        import urllib3
        from mlflow.utils.credentials import get_default_host_creds
        from requests.utils import (
            get_auth_from_url,
            get_environ_proxies,
            prepend_scheme_if_needed,
            select_proxy,
        )

        from tracking_tasks._version import __version__

        parts = urlsplit(url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.description = redact_uri(self.origin)
        self.creds = creds = get_default_host_creds(tracking_uri)  # type: ignore[no-untyped-call]
        self.headers = {"User-Agent": f"tracking-tasks/{__version__}"}
        if workspace is not None:  # every request, the run lookup included, goes there
            self.headers[WORKSPACE_HEADER] = workspace
        if creds.username and creds.password:
            self.headers.update(
                urllib3.util.make_headers(basic_auth=f"{creds.username}:{creds.password}")
            )
        elif creds.token:
            self.headers["Authorization"] = f"Bearer {creds.token}"
        options: dict[str, Any] = {
            "maxsize": max(pool_size, 1),
            "retries": False,
            "timeout": urllib3.Timeout(connect=timeout, read=timeout),
        }
        if parts.scheme == "https":
            options.update(_tls_options(creds.verify, creds.client_cert_path))
        proxy = select_proxy(url, get_environ_proxies(url))
        manager: urllib3.PoolManager
        if proxy:
            proxy = prepend_scheme_if_needed(proxy, "http")  # as requests reads "host:port"
            user, password = get_auth_from_url(proxy)
            proxy_headers = (
                urllib3.util.make_headers(proxy_basic_auth=f"{user}:{password}") if user else None
            )
            try:
                manager = urllib3.ProxyManager(
                    proxy, num_pools=1, proxy_headers=proxy_headers, **options
                )
            except urllib3.exceptions.ProxySchemeUnknown as exc:
                what = f"the proxy {redact_uri(proxy)} for {self.description}"
                raise transfer_error(exc, what) from exc
        else:
            manager = urllib3.PoolManager(num_pools=1, **options)
        self._manager = manager
        self.pool = manager.connection_from_url(self.origin)
        self.pool.ConnectionCls = _quickack_connection(self.pool.ConnectionCls)
        # a plain-HTTP proxy takes the absolute URL in the request line
        self._absolute = bool(proxy) and parts.scheme == "http"

    def request(
        self,
        method: str,
        target: str,
        what: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request to ``target`` (a path with its query); return a 2xx answer.

        With ``stream=True`` the body is left unread: read it, then ``release_conn()``.
        ``body`` may be a function returning a fresh body (a streamed file), so that the
        request can be sent again after a ``Retry-After``: an HTTP 429 or 503 with
        ``Retry-After: N`` (seconds or a date) is sent again after N seconds, at most
        ``RETRY_AFTER_ATTEMPTS`` times.

        Raises:
            TransientArtifactError: connection refused/reset, timeout, HTTP 408/429/5xx
                (a 429/503 after ``RETRY_AFTER_ATTEMPTS`` waits).
            ArtifactNotFoundError: HTTP 404.
            ArtifactError: a ``Retry-After`` over ``RETRY_AFTER_MAX_SECONDS``; any other
                refusal.
        """
        for waited in range(RETRY_AFTER_ATTEMPTS + 1):
            response = self._request_once(method, target, what, body, headers, stream)
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if response.status not in RETRY_AFTER_STATUS or wait is None:
                break
            if wait > RETRY_AFTER_MAX_SECONDS:
                response.drain_conn()
                raise ArtifactError(
                    f"{what}: {self.description} answered HTTP {response.status} with "
                    f"Retry-After {wait:.0f} s, longer than the {RETRY_AFTER_MAX_SECONDS:.0f} s "
                    "an artifact transfer waits (RETRY_AFTER_MAX_SECONDS); try again later"
                )
            if waited == RETRY_AFTER_ATTEMPTS:
                break
            response.drain_conn()
            time.sleep(wait)
        return self._checked(response, what, stream)

    def _request_once(
        self,
        method: str,
        target: str,
        what: str,
        body: Any,
        headers: dict[str, str] | None,
        stream: bool,
    ) -> urllib3.BaseHTTPResponse:
        import urllib3

        url = self.origin + target
        sent = {**self.headers, **headers} if headers else dict(self.headers)
        scoped = authorization_for(url)  # asked per request: a provider's token expires
        if scoped is not None:
            sent["Authorization"] = scoped
        if callable(body):
            body = body()
        try:
            response = self._send(method, url, target, body, sent, stream)
            if response.status == 401 and isinstance(body, bytes | None):  # body can go again
                fresh = retry_authorization(url, sent.get("Authorization"))
                if fresh is not None:
                    response.drain_conn()
                    sent["Authorization"] = fresh
                    response = self._send(method, url, target, body, sent, stream)
        except urllib3.exceptions.HTTPError as exc:
            raise transfer_error(exc, what) from exc
        return response

    def _checked(
        self, response: urllib3.BaseHTTPResponse, what: str, stream: bool
    ) -> urllib3.BaseHTTPResponse:
        """``response`` if it is a 2xx answer, else the error it means."""
        if response.status < 300:
            return response
        detail = (response.read(300) if stream else response.data[:300]).decode("utf-8", "replace")
        response.close()
        location = response.headers.get("Location")
        raise http_status_error(
            response.status,
            response.reason or "",
            detail,
            what,
            location=None if location is None else redact_uri(location),  # a signed URL
        )

    def _send(
        self, method: str, url: str, target: str, body: Any, headers: dict[str, str], stream: bool
    ) -> urllib3.BaseHTTPResponse:
        return self.pool.urlopen(
            method,
            url if self._absolute else target,
            body=body,
            headers=headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            preload_content=not stream,
        )

    def get_json(self, target: str, what: str) -> dict[str, Any]:
        """GET ``target`` and parse the JSON answer (a 404's body included)."""
        response = self.request("GET", target, what)
        try:
            body = json.loads(response.data)
        except ValueError as exc:
            raise ArtifactError(f"{what}: the answer is not JSON") from exc
        if not isinstance(body, dict):
            raise ArtifactError(f"{what}: the answer is not a JSON object")
        return body

    def close(self) -> None:
        self._manager.clear()


def _readable(path: str, setting: str) -> str:
    if not os.path.exists(path):
        raise ArtifactError(f"{setting} is {path!r}, which does not exist; fix or unset it")
    return path


def _tls_options(verify: bool | str, client_cert: str | None) -> dict[str, Any]:
    """urllib3 TLS options for MLflow's ``verify`` (bool or CA path) and client cert.

    Raises:
        ArtifactError: a CA bundle or client certificate setting names a missing file.
    """
    options: dict[str, Any] = {}
    if verify is False:
        options["cert_reqs"] = "CERT_NONE"
    else:
        if isinstance(verify, str):
            bundle = _readable(verify, "MLFLOW_TRACKING_SERVER_CERT_PATH")
        elif os.environ.get("REQUESTS_CA_BUNDLE"):  # requests' order, then certifi
            bundle = _readable(os.environ["REQUESTS_CA_BUNDLE"], "REQUESTS_CA_BUNDLE")
        elif os.environ.get("CURL_CA_BUNDLE"):
            bundle = _readable(os.environ["CURL_CA_BUNDLE"], "CURL_CA_BUNDLE")
        else:
            import certifi

            bundle = certifi.where()
        options["cert_reqs"] = "CERT_REQUIRED"
        options["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
    if client_cert:
        options["cert_file"] = _readable(client_cert, "MLFLOW_TRACKING_CLIENT_CERT_PATH")
    return options


class HttpTransport:
    """Talks to ``mlflow server --serve-artifacts`` over one urllib3 pool (see ``_Origin``)."""

    def __init__(self, origin: _Origin, artifact_url: str) -> None:
        path = urlsplit(artifact_url).path
        prefix, _, root = path.partition(_ARTIFACTS_API)
        self.http = origin
        self.api = f"{prefix}{_ARTIFACTS_API}"
        self.root = root.strip("/")
        self.description = redact_uri(f"{origin.origin}{self.api}/{self.root}")

    def _target(self, remote: str) -> str:
        return f"{self.api}/{quote(join(self.root, remote), safe='/')}"

    def put(self, local: Path, remote: str, progress: ProgressFn | None = None) -> str:
        size = local.stat().st_size
        what = f"upload of {remote!r} to {self.description}"
        if size <= SMALL_FILE_BYTES:
            with local.open("rb") as f:
                body = f.read(size)  # what was measured: bytes appended since stay home
            if len(body) != size:
                raise _shrank(local, size, len(body))
            self.http.request("PUT", self._target(remote), what, body=body)
            if progress is not None:
                progress(len(body))
            return hashlib.sha256(body).hexdigest()
        streams: list[_FileBody] = []  # one more each time a Retry-After asks again

        def fresh() -> _FileBody:
            streams.append(_FileBody(local, size, progress))
            return streams[-1]

        try:
            self.http.request(
                "PUT",
                self._target(remote),
                what,
                body=fresh,
                headers={"Content-Length": str(size)},
            )
        finally:
            for stream in streams:
                stream.close()
        return streams[-1].hexdigest()

    def _list_one(self, remote_dir: str) -> list[tuple[str, bool, int | None]]:
        what = f"listing of {remote_dir or '/'!r} in {self.description}"
        query = urlencode({"path": join(self.root, remote_dir)})
        files = self.http.get_json(f"{self.api}?{query}", what).get("files", [])
        found = []
        for item in files:
            name = str(item.get("path", ""))
            if "/" in name or name in ("", ".", ".."):
                safe_relpath(join(remote_dir, name), "listed artifact name")
                raise UnsafeArtifactPathError(f"listed artifact name {name!r} is not a plain name")
            size = item.get("file_size")
            found.append((name, bool(item.get("is_dir")), int(size) if size is not None else None))
        return found

    def list(self, remote_dir: str) -> list[RemoteFile]:
        result: list[RemoteFile] = []
        pending = [""]
        while pending:
            relative = pending.pop()
            for name, is_dir, size in self._list_one(join(remote_dir, relative)):
                path = join(relative, name)
                if is_dir:
                    pending.append(path)
                else:
                    result.append(RemoteFile(path, size))
        return sorted(result, key=lambda f: f.path)

    def get(self, remote: str, local: Path) -> str:
        what = f"download of {remote!r} from {self.description}"
        response = self.http.request("GET", self._target(remote), what, stream=True)
        digest = hashlib.sha256()
        try:
            with local.open("wb") as f:
                for chunk in response.stream(CHUNK_BYTES):
                    digest.update(chunk)
                    f.write(chunk)
        except Exception as exc:
            response.close()
            if is_transient(exc):
                raise transfer_error(exc, what) from exc
            raise
        response.release_conn()
        return digest.hexdigest()

    def close(self) -> None:
        self.http.close()


def _get_run_artifact_uri(origin: _Origin, run_id: str, tracking_uri: str) -> str:
    """The run's artifact URI: one ``runs/get`` request, sent once (no MLflow retries)."""
    what = f"lookup of MLflow run {run_id} on {redact_uri(tracking_uri)}"
    prefix = urlsplit(tracking_uri).path.rstrip("/")
    target = f"{prefix}/api/2.0/mlflow/runs/get?{urlencode({'run_id': run_id})}"
    try:
        body = origin.get_json(target, what)
    except ArtifactNotFoundError as exc:
        raise RunNotFoundError(
            f"MLflow run {run_id} does not exist on {redact_uri(tracking_uri)}"
        ) from exc
    except ArtifactError as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc):
            raise RunNotFoundError(
                f"MLflow run {run_id} does not exist on {redact_uri(tracking_uri)}"
            ) from exc
        raise
    try:
        return str(body["run"]["info"]["artifact_uri"])
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{what}: the answer holds no artifact_uri") from exc


def open_transport(
    run_id: str,
    tracking_uri: str,
    registry_uri: str | None = None,
    *,
    credentials: str | None = None,
    timeout: float = 120.0,
    pool_size: int = 8,
    workspace: str | None = None,
    artifact_uri: str | None = None,
) -> Transport:
    """Pick the transport for a run: direct HTTP when its artifacts are served by the
    tracking server (``mlflow-artifacts:`` URIs) with basic or token auth, else MLflow's
    artifact repository for that URI. Close it when done. ``credentials`` (the run
    handle's reference) is loaded first if this process has not yet done so; every
    request of either transport goes to the run handle's MLflow ``workspace``.
    ``artifact_uri`` names the root directly (a logged model's ``artifact_location``):
    the run is then not looked up.

    Raises:
        RunNotFoundError: the run does not exist.
        TransientArtifactError: the server could not be reached.
    """
    ensure_credentials(credentials, tracking_uri)
    if not is_http_uri(tracking_uri):
        root = artifact_uri or repo_artifact_uri(run_id, tracking_uri, registry_uri, workspace)
        return RepoTransport(root, tracking_uri, workspace)
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    origin = _Origin(tracking_uri, tracking_uri, timeout, pool_size, workspace)
    try:
        if artifact_uri is None:
            artifact_uri = _get_run_artifact_uri(origin, run_id, tracking_uri)
        creds = origin.creds
        other_plugin = creds.auth and creds.auth != PROVIDER_NAME
        plain_auth = not (other_plugin or creds.aws_sigv4 or creds.use_databricks_sdk)
        if plain_auth and (
            artifact_uri.startswith("mlflow-artifacts:") or _ARTIFACTS_API in artifact_uri
        ):
            url = (
                artifact_uri
                if is_http_uri(artifact_uri)
                else MlflowArtifactsRepository.resolve_uri(artifact_uri, tracking_uri)  # type: ignore[no-untyped-call]
            )
            parts = urlsplit(url)
            if f"{parts.scheme}://{parts.netloc}" != origin.origin:
                origin.close()
                origin = _Origin(url, tracking_uri, timeout, pool_size, workspace)
            return HttpTransport(origin, url)
    except BaseException:
        origin.close()
        raise
    origin.close()
    return RepoTransport(artifact_uri, tracking_uri, workspace)
