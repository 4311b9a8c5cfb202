"""The one place the library changes this process's environment (``os.environ``).

Three things, done by ``setup_mlflow`` (the first also wherever a credential is scoped:
a handle's reference loaded in another process, the command line's ``--credentials``):

- :func:`activate_scoped_auth`: ``MLFLOW_TRACKING_AUTH`` names the library's request-auth
  plugin, which adds credentials to requests for their own server only (no secret is
  ever written to the environment);
- :func:`point_fluent_api`: MLflow's fluent ``mlflow.*`` API (and ``MLFLOW_EXPERIMENT_ID``)
  points at the context's server and experiment, so user code calling
  ``mlflow.log_metric`` inside its own ``mlflow.start_run()`` lands in the same place;
- :func:`neutralise_injected_env`: injected ``MLFLOW_RUN_ID`` / ``MLFLOW_EXPERIMENT_*`` /
  ``MLFLOW_TRACKING_URI`` values that contradict the context are removed.

The library's own calls pass the tracking URI and run id explicitly; of all this, they
depend only on the plugin's name, which is how MLflow's client finds the credentials.
"""

from __future__ import annotations

import logging
import os

from tracking_tasks._private_apis import set_fluent_experiment_id
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.handles import TrackingContext
from tracking_tasks.urls import redact_uri, same_server

log = logging.getLogger(__name__)

#: Variables an environment (an Azure ML job, a CI runner) may inject that would steer
#: MLflow's fluent API away from what setup_mlflow resolved.
INJECTED_RUN_VARS = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


#: MLflow's variable naming the request-auth plugin asked for every request's auth.
AUTH_VAR = "MLFLOW_TRACKING_AUTH"


def point_fluent_api(context: TrackingContext) -> None:
    """Point this process's fluent ``mlflow.*`` API at the context's URI and experiment.

    Args:
        context: The resolved tracking context.

    Example:
        >>> import mlflow
        >>> point_fluent_api(ctx)
        >>> mlflow.get_tracking_uri() == ctx.tracking_uri
        True
    """
    import mlflow

    mlflow.set_tracking_uri(context.tracking_uri)
    if context.registry_uri:
        mlflow.set_registry_uri(context.registry_uri)
    if set_fluent_experiment_id(context.experiment_id):
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
        >>> getfixture("monkeypatch").setenv("MLFLOW_RUN_ID", "not-one-of-ours")
        >>> neutralise_injected_env(ctx)
        ['MLFLOW_RUN_ID']
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
        return not same_server(value, context.tracking_uri)
    return True  # MLFLOW_RUN_ID: a run this library did not open


def name_auth_plugin(name: str) -> bool:
    """Make ``MLFLOW_TRACKING_AUTH`` name a request-auth plugin (its *name*, no secret).

    MLflow asks the plugin this variable names for every request's auth. Credentials in
    MLflow's own variables (``MLFLOW_TRACKING_USERNAME`` ...) are left as they are.

    Args:
        name: The plugin's name.

    Returns:
        True when the variable was set now, False when it already named ``name``.

    Raises:
        TrackingConfigError: ``MLFLOW_TRACKING_AUTH`` names another plugin (MLflow uses
            one at a time).

    Example:
        >>> getfixture("monkeypatch").delenv("MLFLOW_TRACKING_AUTH", raising=False)
        >>> name_auth_plugin("tracking-tasks")
        True
    """
    current = os.environ.get(AUTH_VAR, "").strip()
    if current == name:
        return False
    if current:
        raise TrackingConfigError(
            f"{AUTH_VAR} is {current!r}: MLflow uses one request-auth plugin at a time, so "
            "credentials passed to setup_mlflow cannot be scoped to their server. Unset "
            f"{AUTH_VAR} or leave credentials to that plugin"
        )
    os.environ[AUTH_VAR] = name
    log.debug("%s=%s: MLflow requests get their server's own credentials", AUTH_VAR, name)
    return True
