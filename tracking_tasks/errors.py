"""The exception tree, and the one place MLflow's errors become ours.

Every error raised through the public API derives from ``TrackingTasksError`` (or is a
pydantic ``ValidationError`` for a model's fields)::

    TrackingTasksError
    ├── InvalidArgumentError (ValueError)  an argument the call cannot use: what to pass
    │   ├── TrackingConfigError            bad configuration: field, value and the fix
    │   │   └── CredentialInURIError       a password or token inside a tracking URI
    │   ├── InvalidLogDataError            a param, metric or tag MLflow would refuse
    │   ├── InvalidSearchError             a malformed filter, order_by, status or limit
    │   ├── InvalidParentRunError          a parent run missing, deleted, or elsewhere
    │   └── UnsafeArtifactPathError        a name that would land outside its folder
    ├── MissingExtraError (ImportError)    a feature needs an extra that is not installed
    ├── ConfigHashError (TypeError)        a value config_hash() cannot represent
    ├── AzureWorkspaceError                the Azure ML workspace cannot be read
    │   └── AzureAuthenticationError       Azure refused the credential (no secret shown)
    ├── TrackingServerError                MLflow refused or failed a request, or is unreachable
    │   ├── ExperimentSetupError           the experiment cannot be found, made or restored
    │   ├── RunCreationError               MLflow refused to create or reopen a run
    │   ├── RunEndError                    runs could not be ended (hooks, end_mlflow_run)
    │   ├── ModelRegistryError             the model registry refused a model version
    │   ├── LoggedModelError               a logged model could not be made, finalised, read or searched
    │   └── RunSearchError                 a run search the tracking server refused or missed
    ├── NotFoundError (LookupError)        something named does not exist on the server
    │   ├── RunNotFoundError               a run id the tracking server does not know
    │   ├── ExperimentNotFoundError        an experiment to search that does not exist
    │   ├── ModelNotFoundError             a logged model, registered version or alias unknown
    │   └── ArtifactNotFoundError          nothing stored at that artifact path
    ├── ArtifactError                      an artifact upload or download did not complete
    │   ├── TransientArtifactError         network fault, timeout, HTTP 408/429/5xx: retried
    │   ├── ArtifactVerificationError      what landed differs from the manifest
    │   └── LocalArtifactPathError (FileNotFoundError)  the local file or folder is missing
    └── StageError                         a stage tracker could not use what the stage did
        ├── StageOutputError (TypeError)   a stage function returned something unusable
        └── SweepFailedError               no trial of a sweep reported its metric

``ArtifactNotFoundError`` and ``UnsafeArtifactPathError`` are also ``ArtifactError``, so
``except ArtifactError`` catches every artifact failure; ``InvalidSearchError`` and
``ExperimentNotFoundError`` are also ``RunSearchError``. Only ``TransientArtifactError``
is retried by the artifact tasks; every other error fails the task run at once.

Foreign exceptions are translated here and nowhere else: :func:`mlflow_errors` wraps a
block of MLflow client calls and re-raises ``MlflowException`` and connection errors as
the tree's classes, ``from`` the original so the cause stays visible;
:func:`transfer_error` and :func:`http_status_error` do the same for an artifact
transfer's urllib3, requests and HTTP failures, and :func:`is_transient` is the one
verdict on whether a failure may pass (the artifact tasks retry on it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = [
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactVerificationError",
    "AzureAuthenticationError",
    "AzureWorkspaceError",
    "ConfigHashError",
    "CredentialInURIError",
    "ExperimentNotFoundError",
    "ExperimentSetupError",
    "InvalidArgumentError",
    "InvalidLogDataError",
    "InvalidParentRunError",
    "InvalidSearchError",
    "LocalArtifactPathError",
    "LoggedModelError",
    "MissingExtraError",
    "ModelNotFoundError",
    "ModelRegistryError",
    "NotFoundError",
    "RunCreationError",
    "RunEndError",
    "RunNotFoundError",
    "RunSearchError",
    "StageError",
    "StageOutputError",
    "SweepFailedError",
    "TrackingConfigError",
    "TrackingServerError",
    "TrackingTasksError",
    "TransientArtifactError",
    "UnsafeArtifactPathError",
    "error_code",
    "http_status_error",
    "is_transient",
    "mlflow_errors",
    "transfer_error",
]

#: HTTP statuses of a failure that may pass: retried by the artifact tasks.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class TrackingTasksError(Exception):
    """Base class of every error tracking_tasks raises on purpose."""


class InvalidArgumentError(TrackingTasksError, ValueError):
    """Raised when an argument cannot be used; the message says what to pass instead.

    Raised before anything is written.
    """


class TrackingConfigError(InvalidArgumentError):
    """Raised when tracking configuration is invalid; the message names the fix."""


class CredentialInURIError(TrackingConfigError):
    """Raised when a tracking or registry URI carries a password or token.

    Secrets in URIs end up in logs, tags and Prefect results; MLflow reads
    credentials from its own environment variables instead.
    """


class InvalidLogDataError(InvalidArgumentError):
    """Raised when params, metrics or tags would be refused by MLflow.

    Raised before anything is sent, so a batch is never half written.
    """


class InvalidParentRunError(InvalidArgumentError):
    """Raised when a parent run does not exist, is deleted, or lives in another
    experiment or on another tracking server.

    Raised before the nested run is created, so no run is left with a dangling parent.
    """


class MissingExtraError(TrackingTasksError, ImportError):
    """Raised when a feature needs an optional extra that is not installed.

    The message names the extra and the command that installs it, e.g.
    ``pip install 'tracking-tasks[azure]'``.
    """


class ConfigHashError(TrackingTasksError, TypeError):
    """Raised when a value cannot be hashed canonically (a lambda, a socket, ...)."""


class AzureWorkspaceError(TrackingTasksError):
    """Raised when an Azure ML workspace cannot be read (unknown, unreachable, refused)."""


class AzureAuthenticationError(AzureWorkspaceError):
    """Raised when Azure refuses the credential, or no credential can be had.

    The message names the workspace and what to check; it never shows a token.
    """


class TrackingServerError(TrackingTasksError):
    """Raised when the tracking server refuses or fails a request, or cannot be reached.

    The message names the server (credentials redacted) and what was being done.
    """


class ExperimentSetupError(TrackingServerError):
    """Raised when the MLflow experiment cannot be found, created or restored."""


class RunCreationError(TrackingServerError):
    """Raised when an MLflow run cannot be created or found again."""


class RunEndError(TrackingServerError):
    """Raised when MLflow runs could not be ended; the message lists each failure."""


class ModelRegistryError(TrackingServerError):
    """Raised when the model registry refuses to register a model version."""


class LoggedModelError(TrackingServerError):
    """Raised when an MLflow 3 logged model cannot be saved, created, finalised, read or
    searched.

    The message names the model and the server; a model this error interrupted while
    logging it is left FAILED with the reason in its ``tracking_tasks.failure_reason`` tag.
    """


class RunSearchError(TrackingServerError):
    """Raised when a run search fails on the tracking server (refused or unreachable)."""


class InvalidSearchError(RunSearchError, InvalidArgumentError):
    """Raised when a filter string, order_by clause, status or limit is malformed.

    Raised before any request is sent, with MLflow's own parser's verdict in the message.
    """


class NotFoundError(TrackingTasksError, LookupError):
    """Raised when something named (a run, an experiment, an artifact) does not exist."""


class RunNotFoundError(NotFoundError):
    """Raised when a run id is unknown to the tracking server."""


class ExperimentNotFoundError(RunSearchError, NotFoundError):
    """Raised when an experiment to search does not exist (or is deleted) on the server.

    Raised before any run is searched; the message names the experiment and the server.
    """


class ModelNotFoundError(NotFoundError):
    """Raised when a logged model id, a registered model version or an alias is unknown."""


class ArtifactError(TrackingTasksError):
    """Raised when an artifact upload or download fails for a reason that is not transient.

    Also the base of every artifact error, so ``except ArtifactError`` catches them all.
    """


class TransientArtifactError(ArtifactError):
    """Raised when a transfer failed on a fault that may pass: a refused or reset
    connection, a timeout, HTTP 408, 429 or 5xx.

    The artifact tasks retry on this error only; a retry sends just what is missing.
    """


class ArtifactNotFoundError(ArtifactError, NotFoundError):
    """Raised when nothing is stored at the artifact path asked for."""


class ArtifactVerificationError(ArtifactError):
    """Raised when stored or downloaded artifacts differ from their manifest.

    The message lists the files missing, extra, or with another size or sha256.
    """


class UnsafeArtifactPathError(ArtifactError, InvalidArgumentError):
    """Raised when an artifact name would land outside its folder.

    An absolute path, a ``..`` component, a backslash, or an archive member that is a
    link or a device; checked for every name before anything is written.
    """


class LocalArtifactPathError(ArtifactError, FileNotFoundError):
    """Raised when the local file or folder to upload does not exist or is unreadable."""


class StageError(TrackingTasksError):
    """Raised when a stage tracker cannot use what its stage function did."""


class StageOutputError(StageError, TypeError):
    """Raised when a stage function returns a value the tracker cannot record.

    The message names the stage, the type returned and the types accepted.
    """


class SweepFailedError(StageError):
    """Raised when no trial of a sweep reported the metric it is ranked by."""


def error_code(exc: BaseException) -> str | None:
    """Return MLflow's error code of an exception (``RESOURCE_DOES_NOT_EXIST``...), if any.

    Args:
        exc: Any exception.

    Returns:
        The ``error_code`` attribute MLflow sets on its exceptions, or None.

    Example:
        >>> error_code(ValueError("x")) is None
        True
    """
    return getattr(exc, "error_code", None)


def _detail(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return " ".join(str(message if message is not None else exc).split())


def _tls_advice(detail: str) -> str:
    """What a failed TLS connection means and what to set: the one text for every caller."""
    if "CERTIFICATE_VERIFY_FAILED" in detail or "hostname" in detail.lower():
        return (
            f"the server's TLS certificate was refused ({detail}). Trust its CA with "
            "MLFLOW_TRACKING_SERVER_CERT_PATH (or REQUESTS_CA_BUNDLE)."
        )
    return (
        f"the TLS connection failed ({detail}). Check the URI's scheme (https:// to a "
        "plain HTTP port fails like this), and trust the server's CA with "
        "MLFLOW_TRACKING_SERVER_CERT_PATH or REQUESTS_CA_BUNDLE (a client certificate: "
        "MLFLOW_TRACKING_CLIENT_CERT_PATH)."
    )


def _network_fault(exc: BaseException) -> str:
    """Say what kind of network fault ``exc`` is, and what to check."""
    detail = _detail(exc)
    lowered = detail.lower()
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        return _tls_advice(detail)
    if any(
        marker in lowered
        for marker in (
            "name or service not known",
            "nodename nor servname",
            "name resolution",
            "failed to resolve",
        )
    ):
        return (
            f"the server's host name does not resolve ({detail}). Check the host in the "
            "tracking URI."
        )
    return (
        f"could not reach the tracking server ({detail}). Check that it is running and "
        "that the tracking URI is right."
    )


@contextlib.contextmanager
def mlflow_errors(
    action: str,
    *,
    default: type[TrackingTasksError] = TrackingServerError,
    not_found: type[TrackingTasksError] | None = None,
    invalid: type[TrackingTasksError] | None = None,
    fix: str = "",
) -> Iterator[None]:
    """Translate MLflow's errors raised in the block into the exception tree.

    ``MlflowException`` with code ``RESOURCE_DOES_NOT_EXIST`` becomes ``not_found``,
    ``INVALID_PARAMETER_VALUE`` becomes ``invalid`` (when given), anything else and
    connection errors become ``default``. Errors of the tree pass through unchanged.
    The message starts with ``action`` (say which server: redact it first).

    Args:
        action: What was being done, e.g. ``"creating run 'train' on http://host:5000"``.
        default: The class for any other failure.
        not_found: The class for ``RESOURCE_DOES_NOT_EXIST`` (default: ``default``).
        invalid: The class for ``INVALID_PARAMETER_VALUE`` (default: ``default``).
        fix: What to do about it, appended to the message.

    Yields:
        Nothing; wrap the MLflow calls.

    Raises:
        TrackingTasksError: the translated error, ``from`` the original.

    Example:
        >>> try:
        ...     with mlflow_errors("reading run abc", not_found=RunNotFoundError):
        ...         raise ConnectionRefusedError("refused")
        ... except TrackingServerError as exc:
        ...     print(exc)
        reading run abc: could not reach the tracking server (refused). Check that it is running and that the tracking URI is right.
    """
    try:
        yield
    except TrackingTasksError:
        raise
    except OSError as exc:  # requests' ConnectionError and timeouts are OSErrors too
        raise default(f"{action}: {_network_fault(exc)}") from exc
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if not isinstance(exc, MlflowException):
            raise
        code = error_code(exc)
        workspace_fault = _workspace_fault(code, _detail(exc))
        if workspace_fault is not None:
            detail = _detail(exc).rstrip(".")
            raise TrackingConfigError(f"{action}: {detail}. {workspace_fault}") from exc
        chosen = default
        if code == "RESOURCE_DOES_NOT_EXIST" and not_found is not None:
            chosen = not_found
        elif code == "INVALID_PARAMETER_VALUE" and invalid is not None:
            chosen = invalid
        raise chosen(f"{action}: {_detail(exc)}" + (f". {fix}" if fix else "")) from exc


def _workspace_fault(code: str | None, detail: str) -> str | None:
    """The fix for a request sent to an MLflow workspace the server cannot use, else None.

    A wrong workspace is a configuration error, not a missing run: the server answers
    every request in it (whatever it names) with the same refusal.
    """
    if code == "FEATURE_DISABLED" and "workspace" in detail.lower():
        return (
            "This server does not have MLflow workspaces enabled: start it with "
            "`mlflow server --enable-workspaces`, or drop workspace= (and MLFLOW_WORKSPACE)"
        )
    if code == "RESOURCE_DOES_NOT_EXIST" and detail.lower().startswith(
        ("workspace '", "resource_does_not_exist: workspace '")
    ):
        return (
            "The workspace does not exist on this server: check its name, or have an "
            "administrator create it (MlflowClient(tracking_uri).create_workspace(name))"
        )
    return None


def is_transient(exc: BaseException) -> bool:
    """Tell whether a failure may pass: a refused or reset connection, a timeout, HTTP
    408, 429 or 5xx. The causes of ``exc`` are looked at too.

    Args:
        exc: Any exception.

    Returns:
        True for a fault worth retrying.

    Example:
        >>> is_transient(ConnectionResetError()), is_transient(ValueError())
        (True, False)
    """
    import requests
    import urllib3

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
            | urllib3.exceptions.ProtocolError
            | urllib3.exceptions.TimeoutError
            | urllib3.exceptions.NewConnectionError
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


# TLS failures that may pass: the connection dropped during the handshake
_TRANSIENT_TLS = ("EOF", "reset", "timed out", "Connection aborted")


def transfer_error(exc: BaseException, what: str) -> ArtifactError:
    """Translate a failed artifact transfer (urllib3, requests, MLflow's artifact
    repository) into ``TransientArtifactError`` or a permanent ``ArtifactError``.

    Permanent, with the setting to fix: a refused certificate or other TLS mismatch, a
    proxy refusing the tunnel (407/403), a local file that cannot be read; an MLflow
    ``RESOURCE_DOES_NOT_EXIST`` is ``ArtifactNotFoundError``. Transient: what
    :func:`is_transient` says, and any other urllib3 failure (connection-level).

    Args:
        exc: The failure.
        what: What was being done, e.g. ``"upload of 'a.bin' to http://host/..."``.

    Returns:
        The error to raise, ``from exc``.

    Example:
        >>> type(transfer_error(ConnectionRefusedError("refused"), "upload")).__name__
        'TransientArtifactError'
    """
    import urllib3

    text = str(exc)
    if isinstance(exc, urllib3.exceptions.SSLError) and not any(
        marker in text for marker in _TRANSIENT_TLS
    ):
        return ArtifactError(f"{what}: {_tls_advice(text)}")
    if isinstance(exc, urllib3.exceptions.ProxySchemeUnknown):
        return ArtifactError(
            f"{what} (from HTTP_PROXY / HTTPS_PROXY) is not an http:// or https:// proxy, the "
            "only kinds the artifact tasks can use; set NO_PROXY for this host or use an "
            "HTTP proxy"
        )
    if isinstance(exc, urllib3.exceptions.ProxyError) and "Tunnel connection failed: 4" in text:
        return ArtifactError(
            f"{what}: the proxy refused the connection ({exc}); check the credentials in "
            "HTTPS_PROXY, or set NO_PROXY for this host"
        )
    cause = exc.args[1] if len(exc.args) > 1 else exc.__context__
    if isinstance(cause, FileNotFoundError | PermissionError | IsADirectoryError):
        return ArtifactError(f"{what}: cannot read a local file ({cause})")
    if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
        return ArtifactNotFoundError(f"{what}: {_detail(exc)}")
    if is_transient(exc) or isinstance(exc, urllib3.exceptions.HTTPError):
        return TransientArtifactError(f"{what}: {type(exc).__name__}: {exc}")
    return ArtifactError(f"{what}: {_detail(exc)}")


def http_status_error(
    status: int, reason: str, detail: str, what: str, *, location: str | None = None
) -> ArtifactError:
    """Translate an artifact server's non-2xx answer into the tree.

    Args:
        status: The HTTP status.
        reason: Its reason phrase.
        detail: The start of the answer's body.
        what: What was being done.
        location: The ``Location`` header of a redirect, if any.

    Returns:
        ``TransientArtifactError`` for 408/429/5xx, ``ArtifactNotFoundError`` for 404,
        else ``ArtifactError`` (a redirect says where to point the tracking URI).

    Example:
        >>> type(http_status_error(503, "Service Unavailable", "", "upload")).__name__
        'TransientArtifactError'
    """
    message = f"{what}: HTTP {status} {reason}: {detail}"
    if 300 <= status < 400:
        message += f" (the server redirects to {location!r}: use that address in the tracking URI)"
    if status in TRANSIENT_STATUS:
        return TransientArtifactError(message)
    if status == 404:
        return ArtifactNotFoundError(message)
    return ArtifactError(message)
