"""How artifact bytes move: straight HTTP to ``mlflow server --serve-artifacts``, else MLflow's repo."""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

from tracking_tasks.clients import error_code, get_client
from tracking_tasks.exceptions import (
    ArtifactError,
    ArtifactNotFoundError,
    RunNotFoundError,
    TransientArtifactError,
    UnsafeArtifactPathError,
)
from tracking_tasks.urls import is_http_uri, redact_uri

if TYPE_CHECKING:
    import requests

CHUNK_BYTES = 1024 * 1024
# Bodies up to this size go out in the same write as the headers: a file object body is
# written after them, and the server's delayed ACK then costs ~40 ms per small file.
SMALL_FILE_BYTES = 1024 * 1024
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class RemoteFile:
    """One stored file: its path relative to the listed folder and its size."""

    path: str
    size: int | None


class Transport(Protocol):
    """Moves files between this machine and one run's artifact root."""

    description: str

    def put(self, local: Path, remote: str, progress: ProgressFn | None = None) -> str:
        """Store ``local`` at ``remote`` (under the run's artifact root); return the
        sha256 of the bytes sent."""

    def list(self, remote_dir: str) -> list[RemoteFile]:
        """Every file under ``remote_dir``, recursively; paths relative to it."""

    def get(self, remote: str, local: Path) -> str:
        """Write ``remote`` to ``local``; return the sha256 of what was written."""


def safe_relpath(name: str, what: str = "artifact name") -> str:
    """Return ``name`` as a clean relative POSIX path, or refuse it.

    Raises:
        UnsafeArtifactPathError: empty, absolute, a drive letter, a backslash, or a
            ``..`` component.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafeArtifactPathError(f"{what} {name!r} is empty or not a string")
    if "\\" in name:
        raise UnsafeArtifactPathError(
            f"{what} {name!r} contains a backslash; artifact names use '/' only"
        )
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArtifactPathError(
            f"{what} {name!r} is absolute and would land outside the destination folder"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeArtifactPathError(
            f"{what} {name!r} has a '..' component (or names no file) and would land "
            "outside the destination folder"
        )
    return "/".join(parts)


def join(*parts: str | None) -> str:
    """Join artifact path parts, skipping empty ones."""
    return posixpath.join(*[p for p in parts if p]) if any(parts) else ""


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def is_transient(exc: BaseException) -> bool:
    """True for faults that may pass: connection refused/reset, timeouts, HTTP 408/429/5xx."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TransientArtifactError):
            return True
        if isinstance(current, ArtifactError):
            return False
        if isinstance(
            current,
            requests.ConnectionError
            | requests.Timeout
            | requests.exceptions.ChunkedEncodingError
            | ConnectionError
            | TimeoutError,
        ):
            return True
        response = getattr(current, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int) and status in TRANSIENT_STATUS:
            return True
        current = current.__cause__ or current.__context__
    return False


class _FileBody:
    """A streamed request body: reads the file in chunks, hashing and counting them.

    The sha256 runs on a helper thread fed through a bounded queue (at most 8 chunks,
    8 MiB, in flight): hashlib and the socket both release the GIL, so hashing overlaps
    sending instead of adding to it.
    """

    _QUEUE_CHUNKS = 8

    def __init__(self, path: Path, size: int, progress: ProgressFn | None) -> None:
        self._file = path.open("rb")
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
        chunk = self._file.read(max(amount, CHUNK_BYTES))
        if chunk:
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


class HttpTransport:
    """Talks to ``mlflow server --serve-artifacts`` with plain ``requests``.

    Each request is sent once (no hidden urllib3 retries); a failure is raised as
    ``TransientArtifactError`` or a permanent ``ArtifactError`` so that the Prefect
    task's retries are the only ones, and visible.
    """

    def __init__(
        self, artifact_url: str, tracking_uri: str, timeout: float, pool_size: int
    ) -> None:
        import requests
        from mlflow.utils.credentials import get_default_host_creds

        parts = urlsplit(artifact_url)
        prefix, _, root = parts.path.partition(_ARTIFACTS_API)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.api = f"{self.origin}{prefix}{_ARTIFACTS_API}"
        self.root = root.strip("/")
        self.timeout = timeout
        self.description = redact_uri(f"{self.api}/{self.root}")
        creds = get_default_host_creds(tracking_uri)  # type: ignore[no-untyped-call]
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=max(pool_size, 1), max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if creds.username and creds.password:
            session.auth = (creds.username, creds.password)
        elif creds.token:
            session.headers["Authorization"] = f"Bearer {creds.token}"
        session.verify = creds.verify
        if creds.client_cert_path is not None:
            session.cert = creds.client_cert_path
        self.session = session
        self._lock = threading.Lock()

    def _url(self, remote: str) -> str:
        return f"{self.api}/{quote(join(self.root, remote), safe='/')}"

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> requests.Response:
        import requests

        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientArtifactError(f"{what}: {type(exc).__name__}: {exc}") from exc
        except requests.RequestException as exc:
            if is_transient(exc):
                raise TransientArtifactError(f"{what}: {type(exc).__name__}: {exc}") from exc
            raise ArtifactError(f"{what}: {exc}") from exc
        if response.status_code < 300:
            return response
        detail = response.text[:300]
        response.close()
        message = f"{what}: HTTP {response.status_code} {response.reason}: {detail}"
        if response.status_code in TRANSIENT_STATUS:
            raise TransientArtifactError(message)
        if response.status_code == 404:
            raise ArtifactNotFoundError(message)
        raise ArtifactError(message)

    def put(self, local: Path, remote: str, progress: ProgressFn | None = None) -> str:
        size = local.stat().st_size
        what = f"upload of {remote!r} to {self.description}"
        if size <= SMALL_FILE_BYTES:
            body = local.read_bytes()
            self._request("PUT", self._url(remote), what, data=body).close()
            if progress is not None:
                progress(len(body))
            return hashlib.sha256(body).hexdigest()
        stream = _FileBody(local, size, progress)
        try:
            self._request("PUT", self._url(remote), what, data=stream).close()
        finally:
            stream.close()
        return stream.hexdigest()

    def _list_one(self, remote_dir: str) -> list[tuple[str, bool, int | None]]:
        what = f"listing of {remote_dir or '/'!r} in {self.description}"
        response = self._request(
            "GET", self.api, what, params={"path": join(self.root, remote_dir)}
        )
        try:
            files = response.json().get("files", [])
        except ValueError as exc:
            raise ArtifactError(f"{what}: the answer is not JSON") from exc
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
        response = self._request("GET", self._url(remote), what, stream=True)
        digest = hashlib.sha256()
        try:
            with local.open("wb") as f:
                for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                    digest.update(chunk)
                    f.write(chunk)
        except Exception as exc:
            if is_transient(exc):
                raise TransientArtifactError(f"{what}: {type(exc).__name__}: {exc}") from exc
            raise
        finally:
            response.close()
        return digest.hexdigest()


class RepoTransport:
    """Any other artifact store (local folder, S3, ...) through MLflow's ArtifactRepository."""

    def __init__(self, artifact_uri: str, tracking_uri: str) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        self.repo = get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)
        self.description = redact_uri(artifact_uri)

    def _translate(self, exc: Exception, what: str) -> ArtifactError:
        if is_transient(exc):
            return TransientArtifactError(f"{what}: {exc}")
        if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            return ArtifactNotFoundError(f"{what}: {exc}")
        return ArtifactError(f"{what}: {exc}")

    def put(self, local: Path, remote: str, progress: ProgressFn | None = None) -> str:
        head, tail = posixpath.split(remote)
        try:
            if local.name == tail:
                self.repo.log_artifact(str(local), head or None)  # type: ignore[no-untyped-call]
            else:
                with tempfile.TemporaryDirectory(prefix="tt-put-") as tmp:
                    named = Path(tmp) / tail
                    os.symlink(local.resolve(), named)
                    self.repo.log_artifact(str(named), head or None)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise self._translate(exc, f"upload of {remote!r} to {self.description}") from exc
        if progress is not None:
            progress(local.stat().st_size)
        return sha256_file(local)

    def list(self, remote_dir: str) -> list[RemoteFile]:
        result: list[RemoteFile] = []
        pending = [remote_dir]
        try:
            while pending:
                for info in self.repo.list_artifacts(pending.pop() or None):
                    if info.is_dir:
                        pending.append(info.path)
                    else:
                        relative = posixpath.relpath(info.path, remote_dir or ".")
                        result.append(RemoteFile(relative, info.file_size))
        except Exception as exc:
            raise self._translate(exc, f"listing of {remote_dir!r} in {self.description}") from exc
        return sorted(result, key=lambda f: f.path)

    def get(self, remote: str, local: Path) -> str:
        with tempfile.TemporaryDirectory(prefix="tt-get-", dir=local.parent) as tmp:
            try:
                fetched = self.repo.download_artifacts(remote, dst_path=tmp)  # type: ignore[no-untyped-call]
            except Exception as exc:
                raise self._translate(
                    exc, f"download of {remote!r} from {self.description}"
                ) from exc
            shutil.move(fetched, local)
        return sha256_file(local)


def _get_run_artifact_uri(
    run_id: str, tracking_uri: str, registry_uri: str | None, timeout: float
) -> str:
    """The run's artifact URI; over HTTP one request sent once (no MLflow retries)."""
    if is_http_uri(tracking_uri):
        import requests
        from mlflow.utils.credentials import get_default_host_creds

        creds = get_default_host_creds(tracking_uri)  # type: ignore[no-untyped-call]
        auth = (creds.username, creds.password) if creds.username and creds.password else None
        headers = {"Authorization": f"Bearer {creds.token}"} if creds.token and not auth else {}
        url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/runs/get"
        what = f"lookup of MLflow run {run_id} on {redact_uri(tracking_uri)}"
        try:
            response = requests.get(
                url,
                params={"run_id": run_id},
                timeout=timeout,
                auth=auth,
                headers=headers,
                verify=creds.verify,
                cert=creds.client_cert_path,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientArtifactError(f"{what}: {type(exc).__name__}: {exc}") from exc
        if response.status_code in TRANSIENT_STATUS:
            raise TransientArtifactError(f"{what}: HTTP {response.status_code}")
        body: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            body = response.json()
        if response.status_code == 404 or body.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
            raise RunNotFoundError(
                f"MLflow run {run_id} does not exist on {redact_uri(tracking_uri)}"
            )
        if response.status_code >= 300:
            raise ArtifactError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
        return str(body["run"]["info"]["artifact_uri"])
    from mlflow.exceptions import MlflowException

    try:
        return str(get_client(tracking_uri, registry_uri).get_run(run_id).info.artifact_uri)
    except MlflowException as exc:
        if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise RunNotFoundError(
                f"MLflow run {run_id} does not exist on {redact_uri(tracking_uri)}"
            ) from exc
        raise ArtifactError(f"could not read MLflow run {run_id}: {exc.message}") from exc


def open_transport(
    run_id: str,
    tracking_uri: str,
    registry_uri: str | None = None,
    *,
    timeout: float = 120.0,
    pool_size: int = 8,
) -> Transport:
    """Pick the transport for a run: direct HTTP when its artifacts are served by the
    tracking server (``mlflow-artifacts:`` URIs) with basic or token auth, else MLflow's
    artifact repository for that URI.

    Raises:
        RunNotFoundError: the run does not exist.
        TransientArtifactError: the server could not be reached.
    """
    artifact_uri = _get_run_artifact_uri(run_id, tracking_uri, registry_uri, timeout)
    if is_http_uri(tracking_uri) and (
        artifact_uri.startswith("mlflow-artifacts:") or _ARTIFACTS_API in artifact_uri
    ):
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
        from mlflow.utils.credentials import get_default_host_creds

        creds = get_default_host_creds(tracking_uri)  # type: ignore[no-untyped-call]
        plain_auth = not (creds.auth or creds.aws_sigv4 or creds.use_databricks_sdk)
        if plain_auth:
            url = (
                artifact_uri
                if is_http_uri(artifact_uri)
                else MlflowArtifactsRepository.resolve_uri(artifact_uri, tracking_uri)  # type: ignore[no-untyped-call]
            )
            return HttpTransport(url, tracking_uri, timeout, pool_size)
    return RepoTransport(artifact_uri, tracking_uri)
