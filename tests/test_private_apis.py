"""What ``tracking_tasks/_private_apis.py`` relies on still holds in the pinned versions.

Each test names the library and the private name it checks, so an upgrade that moves one
fails here, by name, before it fails in a flow. Real objects, no mocks.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tracking_tasks import _private_apis as private


def test_mlflow_client_store_ends_a_run_in_one_request(tmp_path: Path) -> None:
    """mlflow: ``MlflowClient._tracking_client.store.update_run_info``."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    store = client._tracking_client.store
    assert hasattr(store, "update_run_info")
    run = client.create_run("0")
    private.end_run_in_one_request(client, run.info.run_id, "KILLED", 1_700_000_000_000)
    info = client.get_run(run.info.run_id).info
    assert (info.status, info.end_time) == ("KILLED", 1_700_000_000_000)


def test_mlflow_fluent_active_experiment_global(fluent_reset: None) -> None:
    """mlflow: ``mlflow.tracking.fluent._active_experiment_id``."""
    from mlflow.tracking import fluent

    assert hasattr(fluent, "_active_experiment_id")
    assert private.set_fluent_experiment_id("42") is True
    assert private.fluent_experiment_id() == "42"
    fluent._active_experiment_id = None


def test_mlflow_request_auth_provider_registry() -> None:
    """mlflow: ``mlflow.tracking.request_auth.registry._request_auth_provider_registry``."""
    from mlflow.tracking.request_auth.registry import (
        _request_auth_provider_registry,
        fetch_auth,
    )

    from tracking_tasks.auth._plugin import PROVIDER_NAME, ScopedAuth, ScopedAuthProvider

    private.register_request_auth_provider(ScopedAuthProvider)
    private.register_request_auth_provider(ScopedAuthProvider)  # once only
    names = [p.get_name() for p in _request_auth_provider_registry]
    assert names.count(PROVIDER_NAME) == 1
    assert isinstance(fetch_auth(PROVIDER_NAME), ScopedAuth)


def test_prefect_deployment_id_context_variable() -> None:
    """prefect: ``prefect.context._deployment_id`` (a ContextVar, None outside a deployment)."""
    from prefect.context import _deployment_id

    token = _deployment_id.set("0d1f7c4e-0000-4000-8000-000000000000")
    try:
        assert private.prefect_deployment_id() == "0d1f7c4e-0000-4000-8000-000000000000"
    finally:
        _deployment_id.reset(token)
    assert private.prefect_deployment_id() is None


def test_prefect_block_document_name() -> None:
    """prefect: ``Block._block_document_name``, set when a block is saved or loaded."""
    from tracking_tasks.auth import MlflowCredentials

    block = MlflowCredentials(tracking_uri="http://127.0.0.1:5000", username="a")
    assert private.block_document_name(block) is None
    name = "private-apis-check"
    block.save(name, overwrite=True)
    assert private.block_document_name(block) == name
    assert private.block_document_name(MlflowCredentials.load(name)) == name


def test_azure_ml_client_keeps_its_credential() -> None:
    """azure-ai-ml: ``MLClient._credential``."""
    pytest.importorskip("azure.ai.ml")
    from azure.ai.ml import MLClient

    from tracking_tasks.auth import TokenProvider

    credential = TokenProvider(lambda: ("t0k", 2e9))
    client = MLClient(credential, "sub", "rg", "ws")
    assert private.ml_client_credential(client) is credential


def test_azureml_mlflow_service_context_cache() -> None:
    """azureml-mlflow: ``_AzureMLServiceContextLoader`` and ``ServiceContext(... auth=)``."""
    pytest.importorskip("azureml.mlflow")
    from azureml.mlflow._internal.service_context_loader import _AzureMLServiceContextLoader

    uri = (
        "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/rg/"
        "providers/Microsoft.MachineLearningServices/workspaces/private-apis-check"
    )
    first, second = object(), object()
    for credential in (first, second):  # a second call replaces the first credential
        private.set_azureml_workspace_credential(
            uri,
            host_url="https://westeurope.api.azureml.ms",
            subscription_id="s",
            resource_group="rg",
            workspace_name="private-apis-check",
            credential=credential,
        )
    assert _AzureMLServiceContextLoader.has_service_context(uri)
    assert _AzureMLServiceContextLoader.get_service_context(uri)._auth is second


def test_threading_register_atexit_exists() -> None:
    """CPython: ``threading._register_atexit`` (concurrent.futures' own exit hook)."""
    assert callable(getattr(threading, "_register_atexit", None))


def test_mlflow_request_workspace_context_variable() -> None:
    """mlflow: ``mlflow.utils.workspace_context._WORKSPACE``, read per request by
    ``rest_utils.http_request`` (``get_request_workspace``); setting it touches no other
    thread and not ``os.environ`` (``mlflow.set_workspace`` writes both)."""
    from mlflow.utils import rest_utils
    from mlflow.utils.workspace_context import get_request_workspace
    from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME

    from tracking_tasks.auth._scope import WORKSPACE_HEADER

    assert WORKSPACE_HEADER == WORKSPACE_HEADER_NAME  # the header our transport sends
    assert rest_utils.get_request_workspace is get_request_workspace
    environment = dict(os.environ)
    seen: dict[str, str | None] = {}

    def elsewhere() -> None:
        seen["other thread"] = get_request_workspace()

    with private.request_workspace("team-a"):
        seen["here"] = get_request_workspace()
        with private.request_workspace("team-b"):
            seen["nested"] = get_request_workspace()
        seen["after nested"] = get_request_workspace()
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    assert seen == {
        "here": "team-a",
        "nested": "team-b",
        "after nested": "team-a",
        "other thread": None,
    }
    assert get_request_workspace() is None
    assert dict(os.environ) == environment
