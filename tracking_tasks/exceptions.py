"""Exceptions raised by tracking_tasks.

Every error the library raises on purpose derives from ``TrackingTasksError``::

    TrackingTasksError
    ├── TrackingConfigError (ValueError)   bad configuration: field, value and the fix
    │   └── CredentialInURIError           a password or token inside a tracking URI
    ├── ConfigHashError (TypeError)        a value config_hash() cannot represent
    ├── ExperimentSetupError               the experiment cannot be found, made or restored
    ├── RunCreationError                   MLflow refused to create or reopen a run
    ├── InvalidLogDataError (ValueError)   a param, metric or tag MLflow would refuse
    ├── RunNotFoundError (LookupError)     a run id that the tracking server does not know
    └── RunSearchError                     a run search the tracking server refused or missed
        ├── InvalidSearchError (ValueError)        a malformed filter, order_by, status or limit
        └── ExperimentNotFoundError (LookupError)  an experiment to search that does not exist

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
