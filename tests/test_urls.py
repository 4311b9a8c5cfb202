"""UI links: the tracking server, a proxy base, Azure ML studio, none for local stores."""

from __future__ import annotations

import pytest

from tracking_tasks import RunRef
from tracking_tasks.urls import UI_BASE_URL_ENV, azureml_workspace_id, experiment_url, run_url

AZURE = (
    "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/0000-sub/"
    "resourceGroups/my-rg/providers/Microsoft.MachineLearningServices/workspaces/my-ws"
)
WSID = "/subscriptions/0000-sub/resourcegroups/my-rg/workspaces/my-ws"


def test_http_server_links_to_itself() -> None:
    assert run_url("http://127.0.0.1:5000/", "3", "abc") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    assert experiment_url("https://mlflow.internal/base", "3") == (
        "https://mlflow.internal/base/#/experiments/3?workflowType=machine_learning"
    )


def test_local_stores_give_none() -> None:
    for uri in ("sqlite:////tmp/mlflow.db", "postgresql://db/mlflow", "databricks"):
        assert run_url(uri, "1", "abc") is None and experiment_url(uri, "1") is None
    assert (
        RunRef(run_id="a", experiment_id="1", run_name="r", tracking_uri="sqlite:///x.db").url
        is None
    )


def test_proxy_base_from_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    proxied = "https://mlflow.example.com/tracking/"
    assert run_url("http://mlflow:5000", "3", "abc", ui_base_url=proxied) == (
        "https://mlflow.example.com/tracking/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    monkeypatch.setenv(UI_BASE_URL_ENV, "https://ui.example.com")
    assert (
        experiment_url("http://mlflow:5000", "3")
        == "https://ui.example.com/#/experiments/3?workflowType=machine_learning"
    )
    # a store with no UI of its own gets the configured one
    assert run_url("postgresql://db/mlflow", "3", "abc") == (
        "https://ui.example.com/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    # the explicit argument wins over the environment
    assert experiment_url("http://mlflow:5000", "3", ui_base_url="http://other:80") == (
        "http://other:80/#/experiments/3?workflowType=machine_learning"
    )


def test_azure_ml_studio_links() -> None:
    assert azureml_workspace_id(AZURE) == WSID
    assert run_url(AZURE, "7", "abc") == f"https://ml.azure.com/runs/abc?wsid={WSID}"
    assert experiment_url(AZURE, "7") == f"https://ml.azure.com/experiments/id/7?wsid={WSID}"
    assert azureml_workspace_id("azureml://westeurope.api.azureml.ms/mlflow/v1.0") is None
    assert run_url("azureml://westeurope.api.azureml.ms/mlflow/v1.0", "7", "abc") is None


def test_credentials_never_reach_a_link(monkeypatch: pytest.MonkeyPatch) -> None:
    url = run_url("https://user:hunter2@mlflow.example.com?token=s3cret", "1", "abc")
    assert (
        url == "https://mlflow.example.com/#/experiments/1/runs/abc?workflowType=machine_learning"
    )
    monkeypatch.setenv(UI_BASE_URL_ENV, "https://me:hunter2@ui.example.com/x?sig=s3cret")
    url = run_url("http://mlflow:5000", "1", "abc")
    assert url == "https://ui.example.com/x/#/experiments/1/runs/abc?workflowType=machine_learning"
