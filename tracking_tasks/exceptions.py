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
    └── RunNotFoundError (LookupError)     a run id that the tracking server does not know

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
