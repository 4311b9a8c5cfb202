"""Tokens that expire: a bearer token asked from a provider again before it runs out."""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from tracking_tasks.auth._providers import DEFAULT_AZURE_SCOPE, check_token_provider
from tracking_tasks.errors import TrackingConfigError

#: A token provider: an azure-identity ``TokenCredential`` (``get_token(scope)``), or a
#: callable returning a token string, a ``(token, expires_at)`` pair (epoch seconds), or
#: an object with ``token`` and ``expires_on`` (azure's ``AccessToken``); or the import
#: path ``"package.module:name"`` of one of those (a class is instantiated), imported
#: only if allowed (azure-identity's credential classes, or ``allow_token_provider``).
TokenSource = Callable[[], Any] | Any | str


class TokenProvider:
    """A bearer token asked from a provider, asked again before it expires.

    A token whose expiry is known is used until ``min(refresh_margin, lifetime / 4)``
    before it; a bare string is asked again after ``max_age`` seconds. When the server
    refuses a token (HTTP 401), a fresh one is asked once for every request that was
    refused with it (concurrent refusals share one fetch), and at most once every
    ``min_refresh_interval`` seconds: a fresh token refused again is not asked again at
    once. Thread safe: one request at a time asks the provider.

    An import path is imported only if a block may name it (azure-identity's credential
    classes, or one the operator allowed: see ``allow_token_provider``). Pickled (a Dask
    task argument), a provider carries only its import path and settings, never a token
    or the object it wraps: one made from a live object (a credential instance, a lambda
    or closure) refuses to be pickled; a module-level function or class goes as its path.

    Args:
        provider: See ``TokenSource``.
        scope: The scope asked of a ``TokenCredential`` (Azure ML:
            ``https://ml.azure.com/.default``).
        refresh_margin: Seconds before expiry to ask again (at most).
        max_age: Seconds a token without a known expiry is reused.
        min_refresh_interval: Seconds between two fetches after refusals.
        default_scope: The scope asked of a ``TokenCredential`` when ``scope`` is None
            (None: such a provider needs ``scope``).

    Example:
        >>> p = TokenProvider(lambda: ("t0k", time.time() + 3600))
        >>> p.authorization()
        'Bearer t0k'
    """

    def __init__(
        self,
        provider: TokenSource,
        *,
        scope: str | None = None,
        refresh_margin: float = 120.0,
        max_age: float = 300.0,
        min_refresh_interval: float = 5.0,
        default_scope: str | None = DEFAULT_AZURE_SCOPE,
    ) -> None:
        self._source = provider
        self._provider: Any = None
        self._trusted_path = False  # an import path from a pickle (code), not a block
        self.scope = scope
        self.default_scope = default_scope
        self.refresh_margin = refresh_margin
        self.max_age = max_age
        self.min_refresh_interval = min_refresh_interval
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._refused_at = -math.inf
        self.fetches = 0
        name = (
            provider
            if isinstance(provider, str)
            else getattr(provider, "__qualname__", type(provider).__name__)
        )
        self.description = f"a token from {name}"

    _SETTINGS = ("scope", "default_scope", "refresh_margin", "max_age", "min_refresh_interval")

    def __getstate__(self) -> dict[str, Any]:
        """Its import path and settings only: never a token, never the object it wraps.

        Raises:
            TypeError: the provider is a live object with no import path (a credential
                instance, a lambda, a closure, a bound method): pickling it would carry
                whatever secret it holds.
        """
        path = self._source if isinstance(self._source, str) else _import_path_of(self._source)
        if path is None:
            raise TypeError(
                f"{self.description} wraps a live {type(self._source).__name__} and cannot be "
                "pickled (it would carry whatever secret that object holds to another "
                "process): give TokenProvider an import path 'package.module:name' (a "
                "module-level function or class), or use a saved MlflowCredentials block, "
                "whose name is what travels"
            )
        state = {name: getattr(self, name) for name in self._SETTINGS}
        state.update(
            _source=path,
            _trusted_path=self._trusted_path or not isinstance(self._source, str),
            description=self.description,
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_source"], **{n: state[n] for n in self._SETTINGS})  # type: ignore[misc]
        self._trusted_path = state["_trusted_path"]
        self.description = state["description"]

    def __copy__(self) -> TokenProvider:
        return self  # one provider, one token cache: a copy shares them

    def __deepcopy__(self, memo: dict[int, Any]) -> TokenProvider:
        return self

    def _resolve(self) -> Any:
        if self._provider is None:
            source = self._source
            if isinstance(source, str):
                if not self._trusted_path:
                    check_token_provider(source)
                module, _, attr = source.partition(":")
                try:
                    source = importlib.import_module(module)
                    for part in attr.split("."):
                        source = getattr(source, part)
                except (ImportError, AttributeError) as exc:
                    raise TrackingConfigError(
                        f"token_provider {self._source!r} cannot be imported ({exc}); write "
                        "'package.module:name'"
                    ) from exc
                if isinstance(source, type):
                    source = source()
            self._provider = source
        return self._provider

    def _fetch(self) -> tuple[str, float, float]:
        provider = self._resolve()
        now = time.time()
        if not (hasattr(provider, "get_token") or callable(provider)):
            raise TrackingConfigError(
                f"token_provider is a {type(provider).__name__}: give a callable or a "
                "TokenCredential"
            )
        try:
            if hasattr(provider, "get_token"):
                scope = self.scope or self.default_scope
                if scope is None:
                    raise TrackingConfigError(
                        f"{self.description} is a TokenCredential, which is asked for a "
                        "scope: give token_scope, the tracking server's own (e.g. "
                        "'https://<its host>/.default')"
                    )
                answer = provider.get_token(scope)
            else:
                answer = provider()
        except TrackingConfigError:
            raise
        except Exception as exc:  # an Azure login that expired, a token service down...
            raise TrackingConfigError(
                f"{self.description} could not give a token ({type(exc).__name__}): check "
                "the provider's own login or configuration"
            ) from exc
        expires: float | None = None
        if isinstance(answer, tuple):
            token, expires = answer[0], float(answer[1])
        elif hasattr(answer, "token"):
            token, expires = answer.token, getattr(answer, "expires_on", None)
        else:
            token = answer
        if not isinstance(token, str) or not token:
            raise TrackingConfigError(f"{self.description} returned no token")
        if expires is None:
            return token, now + self.max_age, now + self.max_age
        lifetime = max(float(expires) - now, 0.0)
        return token, float(expires) - min(self.refresh_margin, lifetime / 4), float(expires)

    def current(self, *, refresh: bool = False) -> tuple[str, float]:
        """The token to send now and when it expires (epoch seconds), asked again if due.

        Args:
            refresh: Ask the provider now (the server refused the last token).

        Returns:
            ``(token, expires_at)``; a token without a known expiry counts as expiring
            ``max_age`` seconds after it was asked.

        Raises:
            TrackingConfigError: the provider failed or gave no token.

        Example:
            >>> TokenProvider(lambda: ("t0k", 2e9)).current()
            ('t0k', 2000000000.0)
        """
        with self._lock:
            if refresh or self._token is None or time.time() >= self._refresh_at:
                self._token, self._refresh_at, self._expires_at = self._fetch()
                self.fetches += 1
            return self._token, self._expires_at

    def authorization(self, *, refresh: bool = False) -> str:
        """The ``Authorization`` header value: ``Bearer <token>``."""
        return f"Bearer {self.current(refresh=refresh)[0]}"

    def after_refusal(self, refused: str | None) -> str | None:
        """The ``Authorization`` value to send a refused (HTTP 401) request again with.

        The provider is asked again only if ``refused`` is the token in use (another
        request may have replaced it already: then that one is given, no fetch) and no
        refusal made it ask in the last ``min_refresh_interval`` seconds (a fresh token
        refused again would be refused once more: None, and the 401 stands).

        Args:
            refused: The ``Authorization`` value the server refused.

        Returns:
            The value to send again with, or None to give up.

        Raises:
            TrackingConfigError: the provider failed or gave no token.

        Example:
            >>> p = TokenProvider(lambda: ("t0k", 2e9))
            >>> p.after_refusal(p.authorization()), p.after_refusal("Bearer t0k")
            ('Bearer t0k', None)
        """
        with self._lock:
            if self._token is not None and f"Bearer {self._token}" != refused:
                return f"Bearer {self._token}"
            now = time.monotonic()
            if now - self._refused_at < self.min_refresh_interval:
                return None
            self._refused_at = now
            self._token, self._refresh_at, self._expires_at = self._fetch()
            self.fetches += 1
            return f"Bearer {self._token}"

    def token_credential(self) -> Any:
        """The provider itself when it is an azure-identity credential, else this object.

        An azure-identity credential caches and renews tokens per scope, so it is handed
        scopes directly (Azure ML tracking asks the Resource Manager scope).

        Raises:
            TrackingConfigError: an import path that cannot be imported.
        """
        provider = self._resolve()
        return provider if hasattr(provider, "get_token") else self

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        """The token as an azure-core ``AccessToken``: a provider is a ``TokenCredential``.

        So the same provider can be given to ``MLClient`` and to an Azure ML workspace's
        MLflow tracking (``setup_mlflow(azure_credential=...)``). The scopes are those of
        the provider's own configuration (``scope=``); a callable gives one token for all.

        Returns:
            ``azure.core.credentials.AccessToken(token, expires_on)``.

        Raises:
            TrackingConfigError: the provider failed or gave no token.
        """
        from azure.core.credentials import AccessToken

        token, expires_at = self.current()
        return AccessToken(token, int(expires_at))


def as_token_credential(source: TokenSource | TokenProvider) -> Any:
    """Return an azure-core ``TokenCredential`` for a credential or a token provider.

    An object with ``get_token`` (an azure-identity credential, a ``TokenProvider``) is
    returned as it is: azure-identity credentials cache and renew their tokens per scope.
    A callable or an import path ``"package.module:name"`` is wrapped in a
    ``TokenProvider``, which asks it again before the token expires.

    Args:
        source: An azure-identity credential, a ``TokenProvider``, a callable returning
            a token (or ``(token, expires_at)``), or an import path of one.

    Returns:
        An object ``MLClient`` and the workspace's MLflow tracking accept as a credential.

    Raises:
        TrackingConfigError: ``source`` is none of those.

    Example:
        >>> cred = as_token_credential(lambda: ("t0k", 2e9))
        >>> cred.get_token("https://management.azure.com/.default").token
        't0k'
    """
    if hasattr(source, "get_token"):
        if isinstance(source, TokenProvider):
            return source.token_credential()
        return source
    if callable(source) or isinstance(source, str):
        return TokenProvider(source)
    raise TrackingConfigError(
        f"azure_credential is a {type(source).__name__}: give an azure-identity credential, "
        "a callable returning a token, or a TokenProvider"
    )


def _import_path_of(value: Any) -> str | None:
    """``"module:qualname"`` of a module-level function or class, if importing finds it."""
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str)) or module == "__main__":
        return None
    if "<" in qualname or not (isinstance(value, type) or callable(value)):
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is value else None
