"""Credentials scoped to one server: which origin gets which ``Authorization`` header.

A credential is registered for the *origin* its tracking URI names (scheme, host, port
and path prefix) and is attached only to requests for that origin, by MLflow's client
(through the ``tracking-tasks`` request-auth plugin, :mod:`tracking_tasks.ops.request_auth`)
and by the artifact transport. The secrets stay in this module's memory, never in
``os.environ`` (``tracking_tasks.ops.client.use_credentials`` scopes a credential and
names the plugin in ``MLFLOW_TRACKING_AUTH``).

Three kinds of credential: basic auth, a fixed bearer token, and a bearer token asked
from a *provider* (a callable, or an azure-identity ``TokenCredential``) before it
expires. In another process (a Dask worker) a handle's secret-free ``credentials``
reference (a saved block's name) is loaded again where the task runs, by the loader
registered for its kind (the Prefect layer registers ``mlflow-credentials``).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import SecretStr

from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.ops.tokens import TokenProvider
from tracking_tasks.urls import is_http_uri, redact_uri

__all__ = [
    "PROVIDER_NAME",
    "BasicAuth",
    "BearerToken",
    "Credential",
    "Origin",
    "ServerCredentials",
    "TokenProvider",
    "authorization_for",
    "clear_scoped_credentials",
    "is_loaded",
    "load_reference",
    "mark_loaded",
    "register_loader",
    "scope_credentials",
    "scoped_origins",
]

log = logging.getLogger(__name__)

#: The name MLflow finds the request-auth plugin by (``MLFLOW_TRACKING_AUTH``).
PROVIDER_NAME = "tracking-tasks"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    """Where a credential may go: scheme, host, port and path prefix of a tracking URI.

    Example:
        >>> o = Origin.of("https://mlflow.example.com/team-a")
        >>> o.matches("https://mlflow.example.com:443/team-a/api/2.0/mlflow/runs/get")
        True
        >>> o.matches("https://mlflow.example.com/team-b/api"), o.matches("http://mlflow.example.com/team-a")
        (False, False)
    """

    scheme: str
    host: str
    port: int
    prefix: str

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin a URL names (path prefix without a trailing ``/``)."""
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError as exc:
            raise TrackingConfigError(f"{redact_uri(url)!r} has an invalid port") from exc
        return cls(
            scheme=scheme,
            host=(parts.hostname or "").lower(),
            port=port or _DEFAULT_PORTS.get(scheme, 0),
            prefix=parts.path.rstrip("/"),
        )

    def matches(self, url: str) -> bool:
        """True when ``url`` is on this origin, under its path prefix."""
        other = Origin.of(url)
        if (other.scheme, other.host, other.port) != (self.scheme, self.host, self.port):
            return False
        return (
            not self.prefix
            or other.prefix == self.prefix
            or (other.prefix.startswith(self.prefix + "/"))
        )

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}"


class Credential(Protocol):
    """Something that gives the ``Authorization`` header value for a request."""

    @property
    def description(self) -> str:
        """What it is, for log lines (never a secret)."""
        ...

    def authorization(self, *, refresh: bool = False) -> str:
        """The header value; ``refresh=True`` after the server refused the last one."""
        ...


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic auth (MLflow's ``--app-name basic-auth`` server, most proxies)."""

    username: str
    password: SecretStr = field(repr=False)

    @property
    def description(self) -> str:
        return f"basic auth as {self.username!r}"

    def authorization(self, *, refresh: bool = False) -> str:
        raw = f"{self.username}:{self.password.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class BearerToken:
    """A fixed bearer token."""

    token: SecretStr = field(repr=False)
    description: str = "a bearer token"

    def authorization(self, *, refresh: bool = False) -> str:
        return f"Bearer {self.token.get_secret_value()}"


@dataclass(frozen=True)
class ServerCredentials:
    """Credentials for one tracking server, for ``setup_mlflow(credentials=...)``.

    The plain form of the ``MlflowCredentials`` block (which gives one of these): use it
    without Prefect, or with a live token provider (a callable or an azure-identity
    credential) that cannot be saved in a block.

    Args:
        tracking_uri: The server the credential belongs to; sent to no other.
        credential: ``BasicAuth``, ``BearerToken`` or ``TokenProvider``.
        reference: A secret-free name another process can load it again by, or None.

    Example:
        >>> creds = ServerCredentials("http://127.0.0.1:5000", BasicAuth("a", SecretStr("p")))
        >>> creds.scoped_credential().description
        "basic auth as 'a'"
    """

    tracking_uri: str
    credential: Credential | None
    reference: str | None = None
    azure_workspace: None = None

    def scoped_credential(self) -> Credential | None:
        """The credential to scope to ``tracking_uri``."""
        return self.credential

    def credentials_reference(self) -> str | None:
        """The secret-free reference handles carry to other processes."""
        return self.reference

    def cache_identity(self) -> dict[str, Any]:
        """Non-secret identity, for cache keys."""
        description = self.credential.description if self.credential is not None else None
        return {"tracking_uri": self.tracking_uri, "credential": description}


@dataclass
class _Entry:
    origin: Origin
    credential: Credential
    reference: str | None


_lock = threading.Lock()
_scoped: dict[Origin, _Entry] = {}
_loaded_refs: set[str] = set()
_loaders: dict[str, Callable[[str], Any]] = {}


def scope_credentials(
    tracking_uri: str, credential: Credential, reference: str | None = None
) -> Origin:
    """Attach ``credential`` to requests for ``tracking_uri``'s origin, in this process.

    Replaces a credential registered earlier for the same origin. Other origins are not
    touched, so two servers' credentials live side by side, from any thread.

    Args:
        tracking_uri: An ``http(s)://`` tracking URI.
        credential: The credential.
        reference: Secret-free name to load it again by (kept for the log line).

    Returns:
        The origin.

    Raises:
        TrackingConfigError: the URI is not HTTP(S).

    Example:
        >>> scope_credentials("http://127.0.0.1:5999", BearerToken(SecretStr("t")))  # doctest: +SKIP
    """
    if not is_http_uri(tracking_uri):
        raise TrackingConfigError(
            f"credentials are for HTTP(S) tracking servers; {redact_uri(tracking_uri)} is not one"
        )
    origin = Origin.of(tracking_uri)
    with _lock:
        previous = _scoped.get(origin)
        _scoped[origin] = _Entry(origin, credential, reference)
        if reference is not None:
            _loaded_refs.add(reference)
    if previous is None or previous.credential is not credential:
        log.info(
            "MLflow credentials (%s) scoped to %s in this process",
            credential.description,
            redact_uri(tracking_uri),
        )
    return origin


def _entry_for(url: str) -> _Entry | None:
    with _lock:
        entries = list(_scoped.values())
    best: _Entry | None = None
    for entry in entries:
        if entry.origin.matches(url) and (
            best is None or len(entry.origin.prefix) > len(best.origin.prefix)
        ):
            best = entry
    return best


def authorization_for(url: str, *, refresh: bool = False) -> str | None:
    """The ``Authorization`` value for a request to ``url``, or None if none is scoped.

    The longest matching path prefix wins.

    Example:
        >>> authorization_for("http://nowhere.invalid/api") is None
        True
    """
    entry = _entry_for(url)
    return None if entry is None else entry.credential.authorization(refresh=refresh)


def is_refreshable(url: str) -> bool:
    """True when ``url``'s credential is a token provider (worth one retry after a 401)."""
    entry = _entry_for(url)
    return entry is not None and isinstance(entry.credential, TokenProvider)


def scoped_origins() -> list[str]:
    """The origins with credentials in this process (for logs and tests; no secret)."""
    with _lock:
        return sorted(str(origin) for origin in _scoped)


def clear_scoped_credentials() -> None:
    """Forget every scoped credential of this process."""
    with _lock:
        _scoped.clear()
        _loaded_refs.clear()


def register_loader(kind: str, loader: Callable[[str], Any]) -> None:
    """Register how a reference ``"<kind>/<name>"`` is loaded in another process.

    ``loader(name)`` returns an object with ``tracking_uri``, ``scoped_credential()``
    and ``credentials_reference()`` (a ``ServerCredentials``, an ``MlflowCredentials``).
    """
    _loaders[kind] = loader


def load_reference(reference: str) -> tuple[str | None, Credential] | None:
    """Load the credentials a reference names, with the loader registered for its kind.

    Returns:
        ``(tracking URI, credential)`` (the URI None for a block naming an Azure ML
        workspace), or None when the reference holds no credential.

    Raises:
        TrackingConfigError: the reference's kind has no loader, or loading it failed.
    """
    kind, _, name = reference.partition("/")
    loader = _loaders.get(kind)
    if loader is None:
        raise TrackingConfigError(
            f"credentials {reference!r} cannot be loaded in this process: nothing loads "
            f"{kind!r} references here (import tracking_tasks to load MlflowCredentials blocks)"
        )
    try:
        creds = loader(name)
    except Exception as exc:
        raise TrackingConfigError(
            f"could not load credentials {reference!r} ({type(exc).__name__}): check that the "
            "block exists and that this process reaches the Prefect API"
        ) from exc
    credential = creds.scoped_credential()
    if credential is None:
        return None
    return (None if creds.tracking_uri is None else str(creds.tracking_uri)), credential


def is_loaded(reference: str) -> bool:
    """True when ``reference`` was scoped in this process already."""
    with _lock:
        return reference in _loaded_refs


def mark_loaded(reference: str) -> None:
    """Remember that ``reference`` needs no loading again in this process."""
    with _lock:
        _loaded_refs.add(reference)
