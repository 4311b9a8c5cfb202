"""Azure ML: the real MLClient against a local TLS stand-in, studio links, the extra."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.settings import get_current_settings
from pydantic import ValidationError

from tests import helpers
from tests.conftest import AZURE_LOCAL_WORKSPACE, AZURE_WORKSPACE, AZUREML_URI
from tests.servers import (
    AzureStandin,
    FaultProxy,
    MlflowServer,
    make_self_signed_cert,
    start_azure_standin,
    start_fault_proxy,
)
from tracking_tasks import (
    AzureMLWorkspace,
    MlflowCredentials,
    RunRef,
    TrackingConfig,
    TrackingContext,
    create_mlflow_run,
    mlflow_state_hooks,
    setup_mlflow,
)
from tracking_tasks.auth._tokens import TokenProvider
from tracking_tasks.azure_ml import get_azure_tracking_uri
from tracking_tasks.errors import AzureAuthenticationError, AzureWorkspaceError, TrackingConfigError
from tracking_tasks.urls import (
    azure_studio_experiment_url,
    azure_studio_run_url,
    experiment_url,
    run_url,
)

SUB, RG = "sub-0000", "rg-ml"
WSID = f"/subscriptions/{SUB}/resourcegroups/{RG}/workspaces/{AZURE_WORKSPACE}"


class StaticCredential:
    """A TokenCredential that always hands out the same bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture
def azure_env(azure_standin: AzureStandin, monkeypatch: pytest.MonkeyPatch) -> AzureStandin:
    """Point azure-ai-ml at the stand-in and trust its self-signed certificate."""
    monkeypatch.setenv("AZUREML_DEV_URL_MFE", azure_standin.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azure_standin.ca_bundle))
    return azure_standin


def _ml_client(standin: AzureStandin, workspace: str, token: str | None = None) -> Any:
    from azure.ai.ml import MLClient

    return MLClient(StaticCredential(token or standin.token), SUB, RG, workspace)


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_importing_the_library_imports_no_azure_package(tmp_path: Path) -> None:
    result = _run_python(
        """
        import sys
        import tracking_tasks
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"azure", "azureml", "mlflow"})
        print(loaded)
        assert not loaded, loaded
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_azure_feature_without_the_extra_names_the_extra(tmp_path: Path) -> None:
    # azure and azureml made unimportable, as on a base install
    result = _run_python(
        """
        import sys
        sys.modules["azure"] = None
        sys.modules["azureml"] = None
        from tracking_tasks import AzureMLWorkspace, setup_mlflow
        from tracking_tasks.azure_ml import get_azure_tracking_uri
        from tracking_tasks.errors import MissingExtraError
        ws = AzureMLWorkspace(subscription_id="s", resource_group="rg", workspace_name="ws")
        for call in (lambda: setup_mlflow.fn(experiment_name="x", azure_workspace=ws),
                     lambda: get_azure_tracking_uri(ws)):
            try:
                call()
            except MissingExtraError as exc:
                assert isinstance(exc, ImportError)
                print("ERROR:", exc)
            else:
                raise SystemExit("no MissingExtraError")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 2
    assert all("pip install 'tracking-tasks[azure]'" in line for line in errors)


def test_real_ml_client_resolves_the_workspace_tracking_uri(azure_env: AzureStandin) -> None:
    before = len(azure_env.requests())
    uri = get_azure_tracking_uri(ml_client=_ml_client(azure_env, AZURE_WORKSPACE))
    # azure-ai-ml rewrites the API version in the path (v1.0 -> v2.0); the rest is the service's
    assert uri.startswith("azureml://westeurope.api.azureml.ms/mlflow/")
    assert uri.endswith(AZUREML_URI.split("/mlflow/v1.0", 1)[1])
    (request,) = azure_env.requests()[before:]
    assert request.startswith(
        f"GET /subscriptions/{SUB}/resourceGroups/{RG}/providers/"
        f"Microsoft.MachineLearningServices/workspaces/{AZURE_WORKSPACE}?api-version="
    )
    assert azure_studio_run_url(uri, "r1") == f"https://ml.azure.com/runs/r1?wsid={WSID}"


def test_workspace_and_credential_resolve_the_same(azure_env: AzureStandin) -> None:
    ws = AzureMLWorkspace(subscription_id=SUB, resource_group=RG, workspace_name=AZURE_WORKSPACE)
    uri = get_azure_tracking_uri(ws, credential=StaticCredential(azure_env.token))
    assert uri == get_azure_tracking_uri(ml_client=_ml_client(azure_env, AZURE_WORKSPACE))
    with pytest.raises(TrackingConfigError, match="bound to"):
        get_azure_tracking_uri(
            ws.model_copy(update={"workspace_name": "other"}),
            ml_client=_ml_client(azure_env, AZURE_WORKSPACE),
        )


def test_flow_tracks_through_an_ml_client(
    azure_env: AzureStandin, mlflow_server: MlflowServer, fluent_reset: None
) -> None:
    ml_client = _ml_client(azure_env, AZURE_LOCAL_WORKSPACE)  # answered with the real server
    before = len(azure_env.requests())

    @flow(**mlflow_state_hooks())
    def pipeline() -> tuple[TrackingContext, RunRef, list[str]]:
        first = setup_mlflow(experiment_name="azure-seed-shape", ml_client=ml_client)
        again = setup_mlflow(experiment_name="azure-seed-shape", ml_client=ml_client,
                             return_state=True)  # fmt: skip
        run = create_mlflow_run(first, run_name="train")
        return first, run, [again.name]

    ctx, run, states = pipeline()
    assert states == ["Cached"]  # keyed by subscription/rg/workspace, not by the live client
    assert len(azure_env.requests()) - before == 1
    assert ctx.tracking_uri == mlflow_server.url  # plain strings only
    assert set(ctx.model_dump()) == {
        "tracking_uri", "registry_uri", "experiment_id", "experiment_name", "config_hash",
        "default_tags", "credentials", "workspace",
    }  # fmt: skip
    assert ctx.credentials is None  # at most a saved block's name; none here
    stored = MlflowClient(mlflow_server.url).get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.experiment_id == ctx.experiment_id


def test_setup_with_workspace_config(
    azure_env: AzureStandin, mlflow_server: MlflowServer, fluent_reset: None
) -> None:
    ws = AzureMLWorkspace(
        subscription_id=SUB, resource_group=RG, workspace_name=AZURE_LOCAL_WORKSPACE
    )
    config = TrackingConfig(experiment_name="azure-config", azure_workspace=ws)
    ctx = setup_mlflow.fn(config, azure_credential=StaticCredential(azure_env.token))
    assert ctx.tracking_uri == mlflow_server.url
    assert MlflowClient(mlflow_server.url).get_experiment(ctx.experiment_id).name == "azure-config"


def test_wrong_token_is_a_clear_error_without_the_token(
    azure_env: AzureStandin, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    bad_token = "tt-wrong-token-" + os.urandom(8).hex()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AzureAuthenticationError) as info:
        setup_mlflow.fn(
            experiment_name="x", ml_client=_ml_client(azure_env, AZURE_WORKSPACE, bad_token)
        )
    message = str(info.value)
    assert f"/workspaces/{AZURE_WORKSPACE}" in message and "HTTP 401" in message
    assert info.value.__cause__ is None  # the SDK's exception (and its response) is not chained
    out, err = capfd.readouterr()
    for text in (message, repr(info.value), caplog.text, out, err):
        assert bad_token not in text
        assert azure_env.token not in text


def test_unknown_workspace_is_a_clear_error(azure_env: AzureStandin) -> None:
    with pytest.raises(AzureWorkspaceError, match="does not exist"):
        get_azure_tracking_uri(ml_client=_ml_client(azure_env, "no-such-ws"))


def test_agreeing_mlflow_variables_stay(
    tracking_config: TrackingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", str(tracking_config.experiment_name))
    setup_mlflow.fn(tracking_uri=tracking_config.tracking_uri)
    assert os.environ["MLFLOW_EXPERIMENT_NAME"] == tracking_config.experiment_name


def test_studio_urls_for_azureml_uris() -> None:
    assert azure_studio_experiment_url(AZUREML_URI, "e-1") == (
        f"https://ml.azure.com/experiments/id/e-1?wsid={WSID}"
    )
    assert run_url(AZUREML_URI, "e-1", "r-1") == f"https://ml.azure.com/runs/r-1?wsid={WSID}"
    assert experiment_url(AZUREML_URI, "e-1") == azure_studio_experiment_url(AZUREML_URI, "e-1")
    ref = RunRef(run_id="r-1", experiment_id="e-1", run_name="t", tracking_uri=AZUREML_URI)
    assert ref.url == f"https://ml.azure.com/runs/r-1?wsid={WSID}"
    # not an Azure ML workspace URI: no studio link, and http servers keep the MLflow UI
    assert azure_studio_run_url("azureml://westeurope.api.azureml.ms/mlflow/v1.0", "r") is None
    assert azure_studio_run_url("http://127.0.0.1:5000", "r") is None
    assert (
        run_url("http://127.0.0.1:5000", "1", "r")
        == "http://127.0.0.1:5000/#/experiments/1/runs/r?workflowType=machine_learning"
    )


def test_workspace_config_is_strict() -> None:
    ws = AzureMLWorkspace(subscription_id=SUB, resource_group=RG, workspace_name="w")
    assert ws.workspace_id == f"/subscriptions/{SUB}/resourcegroups/{RG}/workspaces/w"
    with pytest.raises(ValidationError):
        AzureMLWorkspace(subscription_id=SUB, resource_group=RG, workspace_name="w", x=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AzureMLWorkspace(subscription_id=SUB, resource_group="a/b", workspace_name="w")
    with pytest.raises(ValidationError, match="not both"):
        TrackingConfig(tracking_uri="http://127.0.0.1:5000", azure_workspace=ws)
    with pytest.raises(TrackingConfigError, match="not both"):
        setup_mlflow.fn(tracking_uri="http://127.0.0.1:5000", azure_workspace=ws)


#: MLflow's API under an Azure ML workspace's path, as azureml-mlflow calls it
WORKSPACE_PREFIX = (
    r"^/mlflow/v[12]\.0/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/[^/]+"
)


@pytest.fixture
def rotating_workspace(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[AzureStandin, FaultProxy]]:
    """An Azure ML workspace whose tokens live 2 s: the management stand-in, and its
    azureml:// MLflow endpoint (HTTPS, the workspace path prefix) in front of the real
    server, through a gate that refuses any token past its expiry."""
    key = "tt-token-key-" + os.urandom(12).hex()
    monkeypatch.setenv("TT_TEST_TOKEN_KEY", key)
    monkeypatch.setenv("TT_TEST_TOKEN_LIFETIME", "2")
    # the operator allows the test's provider for blocks, here and in worker processes
    monkeypatch.setenv("TRACKING_TASKS_TOKEN_PROVIDERS", "tests.helpers:mint_test_token")
    tls = make_self_signed_cert(tmp_path / "tls")
    gate = start_fault_proxy(
        mlflow_server.url,
        "--token-key-env", "TT_TEST_TOKEN_KEY", "--strip-path", WORKSPACE_PREFIX,
        env=dict(os.environ), tls=tls,
    )  # fmt: skip
    host = gate.url.removeprefix("https://")
    workspace_uri = (
        f"azureml://{host}/mlflow/v1.0/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
        "Microsoft.MachineLearningServices/workspaces/ws-rotating"
    )
    standin = start_azure_standin(
        tmp_path / "standin", token="unused-" + os.urandom(8).hex(),
        workspaces={"ws-rotating": workspace_uri}, token_key=key, tls=tls,
    )  # fmt: skip
    monkeypatch.setenv("AZUREML_DEV_URL_MFE", standin.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[0]))
    try:
        yield standin, gate
    finally:
        standin.stop()
        gate.stop()


@flow(**mlflow_state_hooks())
def workspace_flow(credential: Any, seconds: float) -> RunRef:
    ws = AzureMLWorkspace(subscription_id=SUB, resource_group=RG, workspace_name="ws-rotating")
    ctx = setup_mlflow(experiment_name="azure-rotation", azure_workspace=ws,
                       azure_credential=credential)  # fmt: skip
    run = create_mlflow_run(ctx, run_name="longer-than-a-token")
    helpers.log_loss_for(run, seconds)
    return run


def test_a_workspace_token_provider_keeps_a_long_flow_logging(
    rotating_workspace: tuple[AzureStandin, FaultProxy],
    mlflow_server: MlflowServer,
    fluent_reset: None,
) -> None:
    standin, gate = rotating_workspace
    provider = TokenProvider(helpers.mint_test_token)
    state = workspace_flow(provider, 7.0, return_state=True)
    assert state.is_completed(), state
    run = state.result()
    assert run.tracking_uri.startswith("azureml://127.0.0.1:")
    stored = MlflowClient(mlflow_server.url).get_run(run.run_id)  # behind the gate
    assert stored.info.status == "FINISHED"
    history = MlflowClient(mlflow_server.url).get_metric_history(run.run_id, "loss")
    assert [m.step for m in history] == list(range(len(history))) and len(history) >= 20
    stats = gate.stats()
    assert stats["refused_tokens"] == 0, stats  # asked again before expiry, never refused
    assert "none" not in stats["authorization"]  # every workspace call carried a token
    assert len(stats["authorization"]) >= 3, stats  # 7 s of logging with 2 s tokens
    assert provider.fetches >= 3
    assert len(standin.requests()) >= 1  # the workspace's URI came from the real MLClient


def test_a_workspace_block_is_loaded_again_in_another_process(
    rotating_workspace: tuple[AzureStandin, FaultProxy], tmp_path: Path, fluent_reset: None
) -> None:
    """The handle carries the block's name; a worker process finds the runs with its token
    provider (not azureml-mlflow's own chain, which has no Azure login here)."""
    _, gate = rotating_workspace
    ws = AzureMLWorkspace(subscription_id=SUB, resource_group=RG, workspace_name="ws-rotating")
    block = "tt-azure-" + os.urandom(4).hex()
    MlflowCredentials(azure_workspace=ws, token_provider="tests.helpers:mint_test_token").save(
        block
    )
    ctx = setup_mlflow.fn(experiment_name="azure-worker", credentials=MlflowCredentials.load(block))
    assert (
        ctx.tracking_uri.startswith("azureml://")
        and ctx.credentials == f"mlflow-credentials/{block}"
    )
    run = create_mlflow_run.fn(ctx, run_name="found-elsewhere")
    MlflowClient(ctx.tracking_uri).set_terminated(run.run_id)
    before = gate.stats()["authorization"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PREFECT_API_URL"] = str(get_current_settings().api.url)
    worker = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from tracking_tasks.handles import TrackingContext
            from tracking_tasks.ops._finders import find_mlflow_runs
            ctx = TrackingContext.model_validate_json(sys.argv[1])
            print(*[run.run_id for run in find_mlflow_runs(ctx)])
        """), ctx.model_dump_json()],
        env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert worker.stdout.split() == [run.run_id]
    after = gate.stats()
    assert after["refused_tokens"] == 0 and "none" not in after["authorization"], after
    assert set(after["authorization"]) - set(before), "the worker sent tokens of its own"
