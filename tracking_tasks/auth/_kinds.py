"""The kinds of credential: basic auth, a fixed bearer token, and credentials for one server."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import SecretStr


class Credential(Protocol):
    """Something that gives the ``Authorization`` header value for a request.

    ``BasicAuth``, ``BearerToken`` and ``TokenProvider`` are the three kinds.
    """

    @property
    def description(self) -> str:
        """What it is, for log lines (never a secret)."""
        ...

    def authorization(self, *, refresh: bool = False) -> str:
        """The header value; ``refresh=True`` after the server refused the last one."""
        ...


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic auth (MLflow's ``--app-name basic-auth`` server, most proxies).

    Args:
        username: The user name.
        password: The password, kept as a ``SecretStr``.

    Example:
        >>> BasicAuth("alice", SecretStr("s3cret"))
        BasicAuth(username='alice')
    """

    username: str
    password: SecretStr = field(repr=False)

    @property
    def description(self) -> str:
        """``basic auth as '<username>'``."""
        return f"basic auth as {self.username!r}"

    def authorization(self, *, refresh: bool = False) -> str:
        """``Basic <base64 of username:password>``."""
        raw = f"{self.username}:{self.password.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class BearerToken:
    """A fixed bearer token.

    Args:
        token: The token, kept as a ``SecretStr``.
        description: What it is, for log lines.

    Example:
        >>> BearerToken(SecretStr("t0k")).authorization()
        'Bearer t0k'
    """

    token: SecretStr = field(repr=False)
    description: str = "a bearer token"

    def authorization(self, *, refresh: bool = False) -> str:
        """``Bearer <token>``."""
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


def credentials_identity(credentials: Any) -> dict[str, Any] | None:
    """What credentials are, for a cache key: never their secret, nor a hash of it.

    Args:
        credentials: An ``MlflowCredentials`` block, ``ServerCredentials``, or None.

    Returns:
        Their ``cache_identity()``, or None.

    Example:
        >>> credentials_identity(None) is None
        True
    """
    identity = getattr(credentials, "cache_identity", None)
    return identity() if callable(identity) else None
