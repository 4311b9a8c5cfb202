"""The one place the library changes this process's environment (``os.environ``).

Three things, all done by ``setup_mlflow`` and nothing else:

- :func:`apply_credentials`: a credentials block's secrets become MLflow's own
  ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` / ``MLFLOW_TRACKING_TOKEN``;
- :func:`point_fluent_api`: MLflow's fluent ``mlflow.*`` API (and ``MLFLOW_EXPERIMENT_ID``)
  points at the context's server and experiment, so user code calling
  ``mlflow.log_metric`` inside its own ``mlflow.start_run()`` lands in the same place;
- :func:`neutralise_injected_env`: injected ``MLFLOW_RUN_ID`` / ``MLFLOW_EXPERIMENT_*`` /
  ``MLFLOW_TRACKING_URI`` values that contradict the context are removed.

The library's own calls never depend on any of it: they pass the tracking URI and run
id explicitly.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

from tracking_tasks.handles import TrackingContext
from tracking_tasks.urls import absolute_local_uri, redact_uri

__all__ = [
    "INJECTED_RUN_VARS",
    "CredentialsEnvironment",
    "apply_credentials",
    "neutralise_injected_env",
    "point_fluent_api",
]

log = logging.getLogger(__name__)

#: Variables an environment (an Azure ML job, a CI runner) may inject that would steer
#: MLflow's fluent API away from what setup_mlflow resolved.
INJECTED_RUN_VARS = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


class CredentialsEnvironment(Protocol):
    """A credentials block that can say which MLflow variables it sets."""

    def mlflow_environment(self) -> dict[str, str | None]: ...


def point_fluent_api(context: TrackingContext) -> None:
    """Point this process's fluent ``mlflow.*`` API at the context's URI and experiment.

    Args:
        context: The resolved tracking context.

    Example:
        >>> ctx = TrackingContext(tracking_uri="sqlite:///mlflow.db", experiment_id="0",
        ...                       experiment_name="Default", config_hash="0" * 64)
        >>> point_fluent_api(ctx)  # doctest: +SKIP
    """
    import mlflow
    from mlflow.tracking import fluent

    mlflow.set_tracking_uri(context.tracking_uri)
    if context.registry_uri:
        mlflow.set_registry_uri(context.registry_uri)
    if hasattr(fluent, "_active_experiment_id"):
        # What mlflow.set_experiment(experiment_id=...) does, without its request to fetch
        # an experiment that ensure_experiment has just found or created.
        fluent._active_experiment_id = context.experiment_id  # type: ignore[assignment]
        os.environ["MLFLOW_EXPERIMENT_ID"] = context.experiment_id
    else:  # a future MLflow without that global: take the public, slower path
        mlflow.set_experiment(experiment_id=context.experiment_id)


def neutralise_injected_env(context: TrackingContext) -> list[str]:
    """Remove injected ``MLFLOW_*`` variables that would hijack the context's runs.

    ``MLFLOW_RUN_ID`` (set by Azure ML jobs) makes ``mlflow.start_run()`` resume a run
    this library did not open; ``MLFLOW_EXPERIMENT_ID`` / ``MLFLOW_EXPERIMENT_NAME`` and
    ``MLFLOW_TRACKING_URI`` that name another experiment or server send fluent calls
    elsewhere. They are removed from this process's ``os.environ`` with a log line that
    names the variable, never its value. Values that agree with the context stay.

    Args:
        context: The resolved tracking context.

    Returns:
        The names of the variables removed.

    Example:
        >>> ctx = TrackingContext(tracking_uri="sqlite:///mlflow.db", experiment_id="0",
        ...                       experiment_name="Default", config_hash="0" * 64)
        >>> neutralise_injected_env(ctx)  # doctest: +SKIP
        []
    """
    removed = []
    for name in (*INJECTED_RUN_VARS, "MLFLOW_TRACKING_URI"):
        value = os.environ.get(name, "").strip()
        if value and _contradicts(name, value, context):
            del os.environ[name]
            removed.append(name)
            log.warning(
                "Removed %s from this process's environment: it pointed MLflow at another %s "
                "than setup_mlflow resolved (experiment %r on %s)",
                name,
                "run" if name == "MLFLOW_RUN_ID" else name.removeprefix("MLFLOW_").lower(),
                context.experiment_name,
                redact_uri(context.tracking_uri),
            )
    return removed


def _contradicts(name: str, value: str, context: TrackingContext) -> bool:
    if name == "MLFLOW_EXPERIMENT_ID":
        return value != context.experiment_id
    if name == "MLFLOW_EXPERIMENT_NAME":
        return value != context.experiment_name
    if name == "MLFLOW_TRACKING_URI":
        return absolute_local_uri(value).rstrip("/") != context.tracking_uri.rstrip("/")
    return True  # MLFLOW_RUN_ID: a run this library did not open


def apply_credentials(credentials: CredentialsEnvironment, tracking_uri: str) -> list[str]:
    """Hand a block's secrets to MLflow through its environment variables.

    MLflow reads ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or
    ``MLFLOW_TRACKING_TOKEN`` from ``os.environ`` on every request, so they are set for
    this whole process (every MLflow HTTP request it makes from now on carries them);
    variables of the other kind are removed so they cannot mix.

    Args:
        credentials: The block (``MlflowCredentials``).
        tracking_uri: The resolved tracking URI (for the log line only).

    Returns:
        The names of the variables set (never their values).

    Example:
        >>> apply_credentials(creds, "http://127.0.0.1:5000")  # doctest: +SKIP
        ['MLFLOW_TRACKING_USERNAME', 'MLFLOW_TRACKING_PASSWORD']
    """
    names = []
    for name, value in credentials.mlflow_environment().items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
            names.append(name)
    if names:
        log.info(
            "MLflow credentials for %s set for this process from the MlflowCredentials block (%s)",
            redact_uri(tracking_uri),
            ", ".join(names),
        )
    return names
