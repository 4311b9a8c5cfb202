"""The one place the library touches this process's environment (``os.environ``).

The user's ``MLFLOW_*`` variables are theirs: the library never deletes or overwrites
one, so the resolution order holds for every call of a process, whatever ran before.
What ``setup_mlflow`` does here:

- :func:`name_auth_plugin`: ``MLFLOW_TRACKING_AUTH`` names the library's request-auth
  plugin, which adds credentials to requests for their own server only (no secret is
  ever written to the environment);
- :func:`point_fluent_api`: MLflow's fluent ``mlflow.*`` API points at the context's
  server and experiment through MLflow's in-process globals; the variables MLflow's
  setters also write (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
  ``MLFLOW_EXPERIMENT_ID``) are put back as they were;
- :func:`warn_injected_run`: an injected ``MLFLOW_RUN_ID`` (an Azure ML job sets one) is
  left alone and named once in a warning: it steers only the user's own
  ``mlflow.start_run()``, never the library's runs.

:func:`kept_env` puts back variables MLflow itself writes or removes (``mlflow.end_run``
removes ``MLFLOW_RUN_ID``) and :func:`quiet_run_links` silences MLflow's "View run" lines
for the calls the library makes on the user's behalf.

The library's own calls pass the tracking URI, registry URI and run id explicitly; of
all this, they depend only on the plugin's name, which is how MLflow's client finds the
credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator

from tracking_tasks._private_apis import set_fluent_experiment_id
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.handles import TrackingContext
from tracking_tasks.urls import redact_uri

log = logging.getLogger(__name__)

#: MLflow's variable that makes ``mlflow.start_run()`` resume a run (set by Azure ML jobs).
RUN_ID_VAR = "MLFLOW_RUN_ID"
#: MLflow's variable naming the request-auth plugin asked for every request's auth.
AUTH_VAR = "MLFLOW_TRACKING_AUTH"
#: MLflow's switch for its "View run ... at" lines on stdout.
QUIET_LINKS_VAR = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"

# every save and restore of os.environ here holds this lock; while blocks of several
# threads overlap, the value from before the first is put back when the last one ends
_env_lock = threading.Lock()
#: Held while MLflow's process-wide fluent state is pointed, and while a run handle
#: points it and resumes its run (``mlflow.start_run`` checks the active experiment):
#: two flows in threads of one process never point it between the other's two steps.
FLUENT_LOCK = threading.RLock()
_kept: dict[str, tuple[int, str | None]] = {}  # name -> (blocks open, value before them)
_warned_run_ids: set[str] = set()


@contextlib.contextmanager
def kept_env(*names: str) -> Iterator[None]:
    """Put ``names`` back in ``os.environ`` as they were before the block (set or unset).

    For calls into MLflow that write or remove variables as a side effect
    (``mlflow.set_tracking_uri`` writes ``MLFLOW_TRACKING_URI``, ``mlflow.end_run``
    removes ``MLFLOW_RUN_ID``): the user's environment stays the user's. Thread-safe:
    while blocks of several threads overlap, the value from before the first one is put
    back when the last one ends (no lock is held inside the block).

    Args:
        *names: The variables to keep.

    Yields:
        Nothing.

    Example:
        >>> import os
        >>> with kept_env("TT_DOCTEST_VAR"):
        ...     os.environ["TT_DOCTEST_VAR"] = "changed"
        >>> "TT_DOCTEST_VAR" in os.environ
        False
    """
    with _env_lock:
        for name in names:
            depth, saved = _kept.get(name, (0, None))
            _kept[name] = (depth + 1, os.environ.get(name) if depth == 0 else saved)
    try:
        yield
    finally:
        with _env_lock:
            for name in names:
                depth, saved = _kept.pop(name)
                if depth > 1:
                    _kept[name] = (depth - 1, saved)
                elif saved is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = saved


@contextlib.contextmanager
def quiet_run_links() -> Iterator[None]:
    """Silence MLflow's "🏃 View run ... at" stdout lines for the block.

    ``mlflow.end_run`` prints them outside every logger; where the library ends a run on
    the user's behalf (leaving a ``with create_mlflow_run(...)`` block) the run's link is
    already in the run's Prefect artifact and log line. A user's own
    ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`` is put back as it was.

    Yields:
        Nothing.

    Example:
        >>> import os
        >>> with quiet_run_links():
        ...     os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"]
        'true'
        >>> "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" in os.environ
        False
    """
    with kept_env(QUIET_LINKS_VAR):
        os.environ[QUIET_LINKS_VAR] = "true"
        yield


def point_fluent_api(context: TrackingContext) -> None:
    """Point this process's fluent ``mlflow.*`` API at the context's URI and experiment.

    MLflow's globals are set (``mlflow.get_tracking_uri()``, the active experiment, the
    registry URI); the environment variables MLflow's setters also write are put back,
    so the next ``setup_mlflow`` (or a subprocess) resolves from the user's own
    environment, not from what an earlier call pointed at.

    Args:
        context: The resolved tracking context.

    Example:
        >>> import mlflow, os
        >>> before = os.environ.get("MLFLOW_TRACKING_URI")
        >>> point_fluent_api(ctx)
        >>> mlflow.get_tracking_uri() == ctx.tracking_uri
        True
        >>> os.environ.get("MLFLOW_TRACKING_URI") == before
        True
    """
    import mlflow

    with (
        FLUENT_LOCK,
        kept_env("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"),
    ):
        mlflow.set_tracking_uri(context.tracking_uri)
        # None: the fluent registry follows the tracking URI (or the user's own variable)
        mlflow.set_registry_uri(context.registry_uri)  # type: ignore[arg-type]
        if not set_fluent_experiment_id(context.experiment_id):
            # a future MLflow without that global: take the public, slower path
            mlflow.set_experiment(experiment_id=context.experiment_id)


def warn_injected_run(context: TrackingContext) -> bool:
    """Say once, by name, that an injected ``MLFLOW_RUN_ID`` steers the user's fluent runs.

    ``MLFLOW_RUN_ID`` (set by Azure ML jobs, where azureml-mlflow also reads it to pick
    the job's token) makes MLflow's own ``mlflow.start_run()`` resume that run instead of
    opening one in the context's experiment. The library's runs never read it: every
    call names its run. So the variable is left as it is, and a warning naming it (never
    its value) is logged once per process and value.

    Args:
        context: The resolved tracking context.

    Returns:
        True when the warning was logged now.

    Example:
        >>> getfixture("monkeypatch").setenv("MLFLOW_RUN_ID", "0123456789abcdef")
        >>> warn_injected_run(ctx), warn_injected_run(ctx)
        (True, False)
    """
    value = os.environ.get(RUN_ID_VAR, "").strip()
    if not value:
        return False
    digest = hashlib.sha256(value.encode()).hexdigest()
    with _env_lock:
        if digest in _warned_run_ids:
            return False
        _warned_run_ids.add(digest)
    log.warning(
        "%s is set in this process's environment (an Azure ML job sets it): MLflow's own "
        "mlflow.start_run() resumes that run instead of opening one in experiment %r on "
        "%s. The library's runs are not affected; unset %s if your own fluent code should "
        "open new runs",
        RUN_ID_VAR,
        context.experiment_name,
        redact_uri(context.tracking_uri),
        RUN_ID_VAR,
    )
    return True


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
