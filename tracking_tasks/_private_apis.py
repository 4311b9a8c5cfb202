"""Every use of another library's private API, in one place.

Each function here reaches into MLflow, Prefect, azure-ai-ml, azureml-mlflow or the
standard library past their public surface, for a reason its docstring gives, and has a
public fallback where one exists. ``tests/test_private_apis.py`` checks each against the
pinned versions, so an upgrade that changes one fails there, by name, and not somewhere
in a flow. Nothing else in the package touches a private name of another library.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


def end_run_in_one_request(client: Any, run_id: str, status: str, end_time: int) -> None:
    """End a run with one request: MLflow's store ``update_run_info``.

    ``MlflowClient.set_terminated`` first reads the run to print its URL to stdout (two
    requests, and a line outside Prefect's logs); the store call underneath it is one.
    Falls back to ``set_terminated`` when the client has no such store (another MLflow).
    """
    store: Any = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is not None and hasattr(store, "update_run_info"):
        from mlflow.entities import RunStatus

        store.update_run_info(
            run_id, run_status=RunStatus.from_string(status), end_time=end_time, run_name=None
        )
    else:
        client.set_terminated(run_id, status=status, end_time=end_time)


@contextlib.contextmanager
def request_workspace(name: str) -> Iterator[None]:
    """Make ``name`` the MLflow workspace of the requests made in this context only.

    MLflow's client reads each request's workspace from the context variable
    ``mlflow.utils.workspace_context._WORKSPACE``, then from ``MLFLOW_WORKSPACE``
    (``mlflow.utils.rest_utils.http_request``); its public ``mlflow.set_workspace`` also
    writes ``os.environ``, which would send every thread's and flow's requests to one
    workspace. Setting the variable alone scopes it to this thread or task. No fallback:
    without the variable, MLflow has no per-context workspace at all.
    """
    from mlflow.utils import workspace_context

    variable = workspace_context._WORKSPACE
    token = variable.set(name)
    try:
        yield
    finally:
        variable.reset(token)


def fluent_experiment_id() -> str | None:
    """The experiment MLflow's fluent API is pointed at in this process, if any."""
    from mlflow.tracking import fluent

    value = getattr(fluent, "_active_experiment_id", None)
    return None if value is None else str(value)


def set_fluent_experiment_id(experiment_id: str) -> bool:
    """Point MLflow's fluent API at an experiment without a request.

    What ``mlflow.set_experiment(experiment_id=...)`` does, minus its request to fetch an
    experiment the caller has just found or created. Returns False (nothing set) on an
    MLflow without the global: the caller then takes the public, slower path.
    """
    from mlflow.tracking import fluent

    if not hasattr(fluent, "_active_experiment_id"):
        return False
    fluent._active_experiment_id = experiment_id  # type: ignore[assignment]
    return True


def register_request_auth_provider(provider: type[Any]) -> None:
    """Add a request-auth provider class to MLflow's registry if its name is not there.

    MLflow fills that registry from the ``mlflow.request_auth_provider`` entry points;
    a package run from a source tree (not installed) has none, so it registers itself.
    """
    from mlflow.tracking.request_auth.registry import _request_auth_provider_registry

    name = provider().get_name()
    if not any(p.get_name() == name for p in _request_auth_provider_registry):
        _request_auth_provider_registry.register(provider)  # type: ignore[no-untyped-call]


def prefect_deployment_id() -> str | None:
    """The deployment of the running top-level flow run, also seen from its subflows.

    Prefect sets a context variable for a deployment's top-level flow run that nested
    flows inherit (a subflow's own flow run has no deployment id); reading it costs no
    API call, unlike ``prefect.runtime.deployment.id``. None where Prefect has none.
    """
    try:
        from prefect.context import _deployment_id
    except ImportError:  # an older or newer Prefect without the variable
        return None
    value = _deployment_id.get()
    return None if value is None else str(value)


def block_document_name(block: Any) -> str | None:
    """The name a Prefect Block was saved or loaded under (None for an unsaved block)."""
    name = getattr(block, "_block_document_name", None)
    return str(name) if name else None


def ml_client_credential(ml_client: Any) -> Any:
    """The credential an ``azure.ai.ml.MLClient`` was built with (None if unknown).

    azure-ai-ml keeps it on the client without a public accessor; the workspace's MLflow
    tracking authenticates with the same credential.
    """
    return getattr(ml_client, "_credential", None)


def set_azureml_workspace_credential(
    tracking_uri: str,
    *,
    host_url: str,
    subscription_id: str,
    resource_group: str,
    workspace_name: str,
    credential: Any,
) -> None:
    """Give azureml-mlflow the credential it authenticates a workspace's tracking with.

    The way azureml-core's ``Workspace.get_mlflow_tracking_uri`` hands its own auth to the
    plugin: a service context cached per workspace URI, read by each store it builds.
    MLflow caches stores per URI, so a context already in use gets the new credential.

    Raises:
        ImportError: azureml-mlflow is not installed.
    """
    from azureml.mlflow._internal.service_context_loader import _AzureMLServiceContextLoader
    from azureml.mlflow._internal.utils import ServiceContext

    if _AzureMLServiceContextLoader.has_service_context(tracking_uri):
        _AzureMLServiceContextLoader.get_service_context(tracking_uri)._auth = credential
    else:
        _AzureMLServiceContextLoader.add_service_context(
            tracking_uri,
            ServiceContext(
                host_url=host_url,
                subscription_id=subscription_id,
                workspace_name=workspace_name,
                resource_group_name=resource_group,
                auth=credential,
            ),
        )


def register_exit_before_threads(function: Callable[..., Any], *args: Any) -> None:
    """Run ``function(*args)`` at interpreter exit, before non-daemon threads are joined.

    ``concurrent.futures``' own hook (``threading._register_atexit``): it runs while
    Prefect can still send, unlike an ``atexit`` handler. Falls back to ``atexit``.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(function, *args)
    else:
        register(function, *args)
