"""Credentials scoped to one server: which origin gets which ``Authorization`` header.

A credential is registered for the *origin* its tracking URI names (scheme, host, port
and path prefix) and is attached only to requests for that origin, by MLflow's client
(through the ``tracking-tasks`` request-auth plugin, :mod:`tracking_tasks.auth._plugin`)
and by the artifact transport. The secrets stay in this module's memory, never in
``os.environ``. :func:`authorization_for` gives a request its header;
:func:`retry_authorization` is the one rule for a refused (HTTP 401) request.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from tracking_tasks.auth._kinds import Credential
from tracking_tasks.auth._tokens import TokenProvider
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.urls import is_http_uri, redact_uri

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}

#: The name MLflow finds the library's request-auth plugin by (``MLFLOW_TRACKING_AUTH``).
PROVIDER_NAME = "tracking-tasks"
#: The header MLflow's client names a request's workspace in (MLflow's
#: ``WORKSPACE_HEADER_NAME``; ``tests/test_private_apis.py`` checks they agree).
WORKSPACE_HEADER = "X-MLFLOW-WORKSPACE"


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


@dataclass
class _Entry:
    origin: Origin
    credential: Credential
    reference: str | None


_lock = threading.Lock()
_scoped: dict[Origin, _Entry] = {}


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
        >>> from tracking_tasks.auth import BearerToken
        >>> from pydantic import SecretStr
        >>> str(scope_credentials("http://127.0.0.1:5999/x", BearerToken(SecretStr("t"))))
        'http://127.0.0.1:5999/x'
        >>> forget_origin("http://127.0.0.1:5999/x")
    """
    if not is_http_uri(tracking_uri):
        raise TrackingConfigError(
            f"credentials are for HTTP(S) tracking servers; {redact_uri(tracking_uri)} is not one"
        )
    origin = Origin.of(tracking_uri)
    with _lock:
        previous = _scoped.get(origin)
        _scoped[origin] = _Entry(origin, credential, reference)
    if previous is None or previous.credential is not credential:
        log.info(
            "MLflow credentials (%s) scoped to %s in this process",
            credential.description,
            redact_uri(tracking_uri),
        )
    return origin


def forget_origin(tracking_uri: str) -> None:
    """Stop attaching a credential to requests for ``tracking_uri``'s origin."""
    with _lock:
        _scoped.pop(Origin.of(tracking_uri), None)


def _entry_for(url: str) -> _Entry | None:
    """The entry of the longest path prefix that ``url`` falls under, if any."""
    target = Origin.of(url)
    with _lock:
        entries = list(_scoped.values())
    best: _Entry | None = None
    for entry in entries:
        origin = entry.origin
        if (origin.scheme, origin.host, origin.port) != (target.scheme, target.host, target.port):
            continue
        under = (
            not origin.prefix
            or target.prefix == origin.prefix
            or target.prefix.startswith(origin.prefix + "/")
        )
        if under and (best is None or len(origin.prefix) > len(best.origin.prefix)):
            best = entry
    return best


def authorization_for(url: str) -> str | None:
    """The ``Authorization`` value for a request to ``url``, or None if none is scoped.

    The longest matching path prefix wins.

    Example:
        >>> authorization_for("http://nowhere.invalid/api") is None
        True
    """
    entry = _entry_for(url)
    return None if entry is None else entry.credential.authorization()


def retry_authorization(url: str, refused: str | None) -> str | None:
    """After the server refused a request to ``url`` with HTTP 401: the value to send it
    again with once, or None when sending again would not help.

    The one rule for a refused request, used by MLflow's requests (the plugin) and the
    artifact transport: only a token provider's credential is asked again (a fixed
    token or password would be refused again), and it bounds how often
    (``TokenProvider.after_refusal``: one fetch for all the requests refused with the
    same token, none again within ``min_refresh_interval``); the caller sends the
    request once more at most, and only if its body can be sent again.

    Args:
        url: The refused request's URL.
        refused: The ``Authorization`` value it carried.

    Returns:
        A fresh ``Authorization`` value, or None.

    Example:
        >>> retry_authorization("http://nowhere.invalid/api", "Bearer t0k") is None
        True
    """
    entry = _entry_for(url)
    if entry is None or not isinstance(entry.credential, TokenProvider):
        return None
    value = entry.credential.after_refusal(refused)
    if value is None:
        log.info("The tracking server refused a fresh token: not asking its provider again yet")
    elif value != refused:
        log.info(
            "The tracking server refused the token; sending the request again with a fresh one"
        )
    return value if value != refused else None


def scoped_origins() -> list[str]:
    """The origins with credentials in this process (for logs and tests; no secret).

    Example:
        >>> isinstance(scoped_origins(), list)
        True
    """
    with _lock:
        return sorted(str(origin) for origin in _scoped)


def clear_scoped_origins() -> None:
    """Forget every scoped credential of this process (the origins only)."""
    with _lock:
        _scoped.clear()
