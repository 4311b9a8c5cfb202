"""Which token providers may be imported, and which scopes a block may ask tokens for.

A credentials block is data that anyone who may edit blocks can change, and every worker
that loads it acts on it: it imports the block's ``token_provider`` and sends the token
it asks for ``token_scope`` to the block's tracking server. Unchecked, a block editor
could import any module, or have every worker's managed identity send a token for
another audience (a key vault's) to a host of the editor's choosing. So:

- an import path is imported only if it is a known azure-identity credential class or
  the operator allowed it, in code (:func:`allow_token_provider`) or in the worker's
  environment (``TRACKING_TASKS_TOKEN_PROVIDERS``), never from the block itself;
- a block's scope belongs to its own server: Azure ML's scopes (``AZURE_ML_SCOPES``)
  for a workspace or an Azure ML endpoint (``https://<region>.api.azureml.ms/...``), a
  scope on the tracking server's own host for any other HTTP(S) server (an
  azure-identity credential must be given one; a callable provider is asked for none).

Both checks run when a block is validated (saved, or loaded: a block saved by an older
version is refused on load) and again when the block makes its token provider.
"""

from __future__ import annotations

import os
import threading
from urllib.parse import urlsplit

from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.urls import base_scheme, redact_uri

#: The environment variable listing more import paths a block may name (comma or space
#: separated), for worker processes where no code of yours runs first.
TOKEN_PROVIDERS_ENV = "TRACKING_TASKS_TOKEN_PROVIDERS"
#: azure-identity credential classes that need no argument: a block may name these.
AZURE_IDENTITY_CREDENTIALS = frozenset(
    {
        "DefaultAzureCredential",
        "ManagedIdentityCredential",
        "WorkloadIdentityCredential",
        "EnvironmentCredential",
        "AzureCliCredential",
        "AzureDeveloperCliCredential",
        "AzurePowerShellCredential",
        "SharedTokenCacheCredential",
        "VisualStudioCodeCredential",
    }
)
#: Scopes an Azure ML workspace's tracking is authenticated with (Azure ML's own and
#: Resource Manager's, in the public, US Government and China clouds).
AZURE_ML_SCOPES = frozenset(
    {
        "https://ml.azure.com/.default",
        "https://management.azure.com/.default",
        "https://management.core.windows.net/.default",
        "https://ml.azure.us/.default",
        "https://management.usgovcloudapi.net/.default",
        "https://management.core.usgovcloudapi.net/.default",
        "https://ml.azure.cn/.default",
        "https://management.chinacloudapi.cn/.default",
        "https://management.core.chinacloudapi.cn/.default",
    }
)
#: The scope a workspace's token provider is asked for when the block names none.
DEFAULT_AZURE_SCOPE = "https://ml.azure.com/.default"
#: Hosts of Azure ML's own MLflow endpoints (``https://<region>.api.azureml.ms/mlflow/...``).
AZURE_ML_HOST_SUFFIXES = (".api.azureml.ms", ".api.ml.azure.us", ".api.ml.azure.cn")

_lock = threading.Lock()
_allowed: set[str] = set()


def allow_token_provider(path: str) -> str:
    """Let credentials blocks name ``path`` as their ``token_provider``, in this process.

    A block may name azure-identity's credential classes that take no argument
    (``"azure.identity:DefaultAzureCredential"``, ``ManagedIdentityCredential``, ...)
    and nothing else unless the operator allows it: here, in code that runs before the
    block is loaded, or in the ``TRACKING_TASKS_TOKEN_PROVIDERS`` environment variable
    of the worker processes (a Dask worker, a Prefect worker's flow runs). The block
    itself can never widen the list. Code that holds the provider object passes it
    directly (``TokenProvider(callable)``) and needs no allowing.

    Args:
        path: An import path ``"package.module:name"`` of a token provider (a callable
            returning a token, or a credential class with ``get_token``).

    Returns:
        The path.

    Raises:
        TrackingConfigError: ``path`` is not of the form ``"package.module:name"``.

    Example:
        >>> allow_token_provider("mypkg.tokens:fetch")  # imported only when a block uses it
        'mypkg.tokens:fetch'
    """
    checked = _import_path(path, "allow_token_provider")
    with _lock:
        _allowed.add(checked)
    return checked


def _import_path(path: object, field: str) -> str:
    module, _, name = str(path).partition(":")
    parts = [*module.split("."), *name.split(".")]
    if not isinstance(path, str) or not name or not all(p.isidentifier() for p in parts):
        raise TrackingConfigError(
            f"{field} {path!r} is not an import path 'package.module:name', e.g. "
            "'azure.identity:DefaultAzureCredential'"
        )
    return path


def _allowed_paths() -> set[str]:
    configured = os.environ.get(TOKEN_PROVIDERS_ENV, "").replace(",", " ").split()
    with _lock:
        return _allowed | set(configured)


def is_azure_identity_credential(path: str) -> bool:
    """True for ``"azure.identity:<one of AZURE_IDENTITY_CREDENTIALS>"``."""
    module, _, name = path.partition(":")
    return module == "azure.identity" and name in AZURE_IDENTITY_CREDENTIALS


def check_token_provider(path: object, field: str = "token_provider") -> str:
    """Return ``path`` if a block may name it as its token provider, else refuse it.

    Raises:
        TrackingConfigError: not an import path, or neither a known azure-identity
            credential class nor allowed by the operator; the message names the fix.
    """
    checked = _import_path(path, field)
    if is_azure_identity_credential(checked) or checked in _allowed_paths():
        return checked
    raise TrackingConfigError(
        f"{field} {checked!r} is not a token provider this process allows: a block may "
        f"name azure-identity's {', '.join(sorted(AZURE_IDENTITY_CREDENTIALS))} "
        "('azure.identity:<class>'), or a provider the operator allowed in code "
        f"(tracking_tasks.auth.allow_token_provider({checked!r})) or in the workers' "
        f"{TOKEN_PROVIDERS_ENV} environment variable; nothing is imported until then"
    )


def _is_azure_ml(tracking_uri: str) -> bool:
    """An ``azureml://`` URI, or an HTTPS URI on an Azure ML endpoint's host."""
    if base_scheme(tracking_uri) == "azureml":
        return True
    host = (urlsplit(tracking_uri).hostname or "").lower()
    return base_scheme(tracking_uri) == "https" and host.endswith(AZURE_ML_HOST_SUFFIXES)


def check_token_scope(
    scope: str | None, provider: str, tracking_uri: str | None, *, workspace: bool
) -> str | None:
    """Return the scope to ask ``provider`` for, if it belongs to the block's server.

    Args:
        scope: The block's ``token_scope``.
        provider: The block's (checked) ``token_provider``.
        tracking_uri: The block's tracking URI (None for a workspace block).
        workspace: The block names an Azure ML workspace.

    Returns:
        The scope to ask (a workspace's default when none is given), or None for a
        callable provider of an HTTP(S) server.

    Raises:
        TrackingConfigError: the scope belongs to another audience than the server, the
            block names no server, or an azure-identity credential is given no scope
            for an HTTP(S) server.
    """
    if workspace or (tracking_uri is not None and _is_azure_ml(tracking_uri)):
        if scope is None:
            return DEFAULT_AZURE_SCOPE
        if scope.strip().lower() in AZURE_ML_SCOPES:
            return scope.strip()
        raise TrackingConfigError(
            f"token_scope {scope!r} is not a scope of Azure ML: a block for an Azure ML "
            f"workspace asks tokens only for {DEFAULT_AZURE_SCOPE!r} or Resource Manager's "
            "'https://management.azure.com/.default'; remove token_scope or use one of them"
        )
    if tracking_uri is None:
        raise TrackingConfigError(
            "a block with a token_provider must name its own server: set tracking_uri (or "
            "azure_workspace), so that its tokens are asked for that server and sent to no "
            "other"
        )
    host = (urlsplit(tracking_uri).hostname or "").lower()
    own = f"https://{host}/.default"
    if scope is None:
        if is_azure_identity_credential(provider):
            raise TrackingConfigError(
                f"token_scope is required: {provider} asks Azure for a token of a scope, "
                f"and the one for {redact_uri(tracking_uri)} is its own app's, on its host: "
                f"e.g. token_scope={own!r}"
            )
        return None
    if (urlsplit(scope.strip()).hostname or "").lower() != host:
        raise TrackingConfigError(
            f"token_scope {scope!r} is not a scope of the tracking server "
            f"{redact_uri(tracking_uri)}: a block asks tokens only for its own server, "
            f"whose scopes are on its host {host!r} (e.g. {own!r}). For another audience "
            "build the credential in code (ServerCredentials with a TokenProvider)"
        )
    return scope.strip()
