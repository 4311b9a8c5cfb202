"""Exceptions raised by tracking_tasks.

Every error the library raises on purpose derives from ``TrackingTasksError``::

    TrackingTasksError
    ├── TrackingConfigError (ValueError)   bad configuration: field, value and the fix
    │   └── CredentialInURIError           a password or token inside a tracking URI
    ├── MissingExtraError (ImportError)    a feature needs an extra that is not installed
    ├── AzureWorkspaceError                the Azure ML workspace cannot be read
    │   └── AzureAuthenticationError       Azure refused the credential (no secret shown)
    ├── ConfigHashError (TypeError)        a value config_hash() cannot represent
    ├── ExperimentSetupError               the experiment cannot be found, made or restored
    ├── RunCreationError                   MLflow refused to create or reopen a run
    ├── InvalidLogDataError (ValueError)   a param, metric or tag MLflow would refuse
    ├── RunNotFoundError (LookupError)     a run id that the tracking server does not know
    ├── ArtifactError                      an artifact upload or download did not complete
    │   ├── TransientArtifactError         network fault, timeout, HTTP 408/429/5xx: retried
    │   ├── ArtifactNotFoundError (LookupError)   nothing stored at that artifact path
    │   ├── ArtifactVerificationError      what landed differs from the manifest
    │   ├── UnsafeArtifactPathError (ValueError)  a name that would land outside its folder
    │   └── LocalArtifactPathError (FileNotFoundError)  the local file or folder is missing
    └── RunSearchError                     a run search the tracking server refused or missed
        ├── InvalidSearchError (ValueError)        a malformed filter, order_by, status or limit
        └── ExperimentNotFoundError (LookupError)  an experiment to search that does not exist

Only ``TransientArtifactError`` is retried by the artifact tasks; every other error
fails the task run at once.

Foreign exceptions (``MlflowException``, connection errors) are translated where the
library calls MLflow and re-raised ``from`` the original, so the cause stays visible.
"""

from __future__ import annotations


class TrackingTasksError(Exception):
    """Base class of every error tracking_tasks raises on purpose."""


class TrackingConfigError(TrackingTasksError, ValueError):
    """Raised when tracking configuration is invalid; the message names the fix."""


class CredentialInURIError(TrackingConfigError):
    """Raised when a tracking or registry URI carries a password or token.

    Secrets in URIs end up in logs, tags and Prefect results; MLflow reads
    credentials from its own environment variables instead.
    """


class MissingExtraError(TrackingTasksError, ImportError):
    """Raised when a feature needs an optional extra that is not installed.

    The message names the extra and the command that installs it, e.g.
    ``pip install 'tracking-tasks[azure]'``.
    """


class AzureWorkspaceError(TrackingTasksError):
    """Raised when an Azure ML workspace cannot be read (unknown, unreachable, refused)."""


class AzureAuthenticationError(AzureWorkspaceError):
    """Raised when Azure refuses the credential, or no credential can be had.

    The message names the workspace and what to check; it never shows a token.
    """


class ConfigHashError(TrackingTasksError, TypeError):
    """Raised when a value cannot be hashed canonically (a lambda, a socket, ...)."""


class ExperimentSetupError(TrackingTasksError):
    """Raised when the MLflow experiment cannot be found, created or restored."""


class RunCreationError(TrackingTasksError):
    """Raised when an MLflow run cannot be created or found again."""


class InvalidLogDataError(TrackingTasksError, ValueError):
    """Raised when params, metrics or tags would be refused by MLflow.

    Raised before anything is sent, so a batch is never half written.
    """


class RunNotFoundError(TrackingTasksError, LookupError):
    """Raised when a run id is unknown to the tracking server."""


class ArtifactError(TrackingTasksError):
    """Raised when an artifact upload or download fails for a reason that is not transient.

    Also the base of every artifact error, so ``except ArtifactError`` catches them all.
    """


class TransientArtifactError(ArtifactError):
    """Raised when a transfer failed on a fault that may pass: a refused or reset
    connection, a timeout, HTTP 408, 429 or 5xx.

    The artifact tasks retry on this error only; a retry sends just what is missing.
    """


class ArtifactNotFoundError(ArtifactError, LookupError):
    """Raised when nothing is stored at the artifact path asked for."""


class ArtifactVerificationError(ArtifactError):
    """Raised when stored or downloaded artifacts differ from their manifest.

    The message lists the files missing, extra, or with another size or sha256.
    """


class UnsafeArtifactPathError(ArtifactError, ValueError):
    """Raised when an artifact name would land outside its folder.

    An absolute path, a ``..`` component, a backslash, or an archive member that is a
    link or a device; checked for every name before anything is written.
    """


class LocalArtifactPathError(ArtifactError, FileNotFoundError):
    """Raised when the local file or folder to upload does not exist or is unreadable."""


class RunSearchError(TrackingTasksError):
    """Raised when a run search fails on the tracking server (refused or unreachable)."""


class InvalidSearchError(RunSearchError, ValueError):
    """Raised when a filter string, order_by clause, status or limit is malformed.

    Raised before any request is sent, with MLflow's own parser's verdict in the message.
    """


class ExperimentNotFoundError(RunSearchError, LookupError):
    """Raised when an experiment to search does not exist (or is deleted) on the server.

    Raised before any run is searched; the message names the experiment and the server.
    """
