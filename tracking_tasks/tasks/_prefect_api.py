"""Which Prefect API a flow run lives in: a secret-free identity, the same from every URL.

Runs record it (the ``prefect.api`` tag) and reconcile compares it with its own, so a
pass on one API never ends a run whose flow run lives in another: a laptop's temporary
API, another server, another Cloud workspace. The identity is:

- Prefect Cloud: ``prefect-cloud:<account id>/<workspace id>``, read from the API URL
  (no call);
- a Prefect server, or the temporary API Prefect starts when none is configured:
  ``prefect-db:<id>``, the id of the ``secret`` block type that every Prefect server
  registers in its database the first time it starts on it (random, never changed,
  protected from deletion). Every URL and process reaching that database gets the same
  value: ``127.0.0.1`` and ``localhost``, a Dask worker, a temporary API started again
  on the same ``PREFECT_HOME``. One API call per process and API, cached.

If that call fails, a readable fallback stands in (``prefect-url:<scheme://host:port/
path>`` without credentials or query, and the host name for a loopback address): a run
tagged with it is never reconciled, which is the safe side.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import threading
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

_CLOUD = re.compile(r"/accounts/([0-9a-fA-F-]{36})/workspaces/([0-9a-fA-F-]{36})(?:/|$)")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_lock = threading.Lock()


def prefect_api_identity() -> str:
    """The identity of the Prefect API this code talks to (a flow run's own, inside one).

    Returns:
        ``prefect-cloud:<account>/<workspace>``, ``prefect-db:<id>``, or the readable
        fallback ``prefect-url:...`` when the API could not be asked.

    Example:
        >>> prefect_api_identity().startswith("prefect-db:")
        True
    """
    api_url = _api_url()
    cloud = cloud_identity(api_url)
    if cloud is not None:
        return cloud
    try:
        return _database_identity(api_url)
    except Exception as exc:  # a run is still tracked: it is just never reconciled
        log.warning(
            "Could not read the identity of the Prefect API at %s (%s): runs opened now "
            "carry %s and are left alone by reconcile",
            readable_identity(api_url),
            type(exc).__name__,
            readable_identity(api_url),
        )
        return readable_identity(api_url)


def cloud_identity(api_url: str) -> str | None:
    """``prefect-cloud:<account>/<workspace>`` for a Prefect Cloud API URL, else None.

    Example:
        >>> cloud_identity("https://api.prefect.cloud/api/accounts/"
        ...                "9B5D6E1C-0000-4000-8000-000000000001/workspaces/"
        ...                "2c1d0a6e-0000-4000-8000-000000000002")
        'prefect-cloud:9b5d6e1c-0000-4000-8000-000000000001/2c1d0a6e-0000-4000-8000-000000000002'
    """
    match = _CLOUD.search(urlsplit(api_url).path)
    if match is None:
        return None
    return f"prefect-cloud:{match.group(1).lower()}/{match.group(2).lower()}"


def readable_identity(api_url: str) -> str:
    """The no-call fallback: the API URL without credentials, query or default port.

    Example:
        >>> readable_identity("https://user:pw@prefect.example.com:443/api/?x=1")
        'prefect-url:https://prefect.example.com/api'
    """
    parts = urlsplit(api_url.strip())
    scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    if (scheme, port) in {("http", 80), ("https", 443)}:
        port = None
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    text = f"prefect-url:{scheme}://{netloc}{parts.path.rstrip('/')}"
    return f"{text}@{socket.gethostname()}" if host in _LOOPBACK else text


def _api_url() -> str:
    """The API URL of the run's own client inside a run, else of this process's settings.

    Prefect's temporary API has no URL setting (its port is chosen per process): its
    client knows it, and outside a run ``get_client`` starts it.
    """
    from prefect.context import FlowRunContext, TaskRunContext

    for context in (TaskRunContext.get(), FlowRunContext.get()):
        client = getattr(context, "client", None)
        if client is not None and getattr(client, "api_url", None):
            return str(client.api_url)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)


def _database_identity(api_url: str) -> str:
    with _lock:  # one call per API, even when many tasks open their first run at once
        return _read_database_identity(api_url)


@functools.lru_cache(maxsize=32)
def _read_database_identity(api_url: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return f"prefect-db:{client.read_block_type_by_slug('secret').id}"
