"""MlflowCredentials: the Block, its registration, and a secret that never leaves."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import get_current_settings
from pydantic import SecretStr, ValidationError

from tests.helpers import files_with_secrets, flow_run_artifacts
from tests.servers import AuthMlflowServer, MlflowServer
from tracking_tasks import (
    AzureMLWorkspace,
    MlflowCredentials,
    create_mlflow_run,
    log_metrics,
    log_params,
    mlflow_state_hooks,
    set_tags,
    setup_mlflow,
)
from tracking_tasks.config import resolve_tracking_config
from tracking_tasks.errors import ExperimentSetupError, TrackingConfigError


def _credentials(server: AuthMlflowServer) -> MlflowCredentials:
    return MlflowCredentials(
        tracking_uri=server.url, username=server.username, password=SecretStr(server.password)
    )


def test_block_is_strict_and_hides_its_secrets() -> None:
    creds = MlflowCredentials(username="alice", password=SecretStr("hunter2-xyz"))
    assert "hunter2-xyz" not in repr(creds) and "hunter2-xyz" not in str(creds.model_dump())
    credential = creds.scoped_credential()
    assert credential is not None and "hunter2-xyz" not in repr(credential)
    assert credential.authorization() == "Basic " + base64.b64encode(b"alice:hunter2-xyz").decode()
    assert creds.credentials_reference() is None  # never saved: nothing another process can load
    with pytest.raises(ValidationError):
        MlflowCredentials(password=SecretStr("p"))  # no username
    with pytest.raises(ValidationError):
        MlflowCredentials(username="a", password=SecretStr("p"), token=SecretStr("t"))
    with pytest.raises(ValidationError, match="password") as info:
        MlflowCredentials(tracking_uri="http://alice:hunter2@127.0.0.1:5000")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValidationError, match="import path"):
        MlflowCredentials(token_provider="not a path")
    with pytest.raises(ValidationError, match="not two"):
        MlflowCredentials(token_provider="tests.helpers:mint_test_token", token=SecretStr("t"))


def test_block_location_takes_its_place_in_the_resolution_order() -> None:
    ws = AzureMLWorkspace(subscription_id="s", resource_group="rg", workspace_name="ws")
    on_azure = resolve_tracking_config(credentials=MlflowCredentials(azure_workspace=ws))
    assert on_azure.azure_workspace == ws and on_azure.tracking_uri is None
    creds = MlflowCredentials(tracking_uri="http://127.0.0.1:5000", token=SecretStr("t"))
    assert resolve_tracking_config(credentials=creds).tracking_uri == "http://127.0.0.1:5000"
    credential = creds.scoped_credential()
    assert credential is not None and credential.authorization() == "Bearer t"
    with pytest.raises(TrackingConfigError, match="never sent to another server"):
        resolve_tracking_config(credentials=creds, azure_workspace=ws)


def test_block_registers_through_the_cli_and_round_trips() -> None:
    settings = get_current_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PREFECT_API_URL"] = str(settings.api.url)
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "tracking_tasks.auth._block"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Successfully registered 1 block" in result.stdout
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug("mlflow-credentials")
    assert block_type.name == "MLflow Credentials"

    name = "tt-" + os.urandom(4).hex()
    MlflowCredentials(
        tracking_uri="http://127.0.0.1:5000", username="alice", password=SecretStr("pw-rt")
    ).save(name)
    loaded = MlflowCredentials.load(name)
    assert loaded.password is not None and loaded.password.get_secret_value() == "pw-rt"


def test_prefect_discovers_the_block_through_the_collection_entry_point(tmp_path: Path) -> None:
    code = (
        "from prefect.plugins import load_prefect_collections\n"
        "from prefect.blocks.core import Block\n"
        "assert 'tracking_tasks' in load_prefect_collections()\n"
        "print(Block.get_block_class_from_key('mlflow-credentials').__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("MlflowCredentials")


def test_auth_server_refuses_anonymous_and_accepts_the_block(
    auth_mlflow_server: AuthMlflowServer, fluent_reset: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(ExperimentSetupError):
        setup_mlflow.fn(experiment_name="anonymous", tracking_uri=auth_mlflow_server.url)
    ctx = setup_mlflow.fn(
        experiment_name="with-block", credentials=_credentials(auth_mlflow_server)
    )
    assert ctx.tracking_uri == auth_mlflow_server.url  # taken from the block
    assert auth_mlflow_server.password not in ctx.model_dump_json()


def test_credentials_are_never_sent_to_another_server(
    auth_mlflow_server: AuthMlflowServer, mlflow_server: MlflowServer
) -> None:
    with pytest.raises(TrackingConfigError, match="never sent to another server") as info:
        setup_mlflow.fn(
            experiment_name="x",
            tracking_uri=mlflow_server.url,
            credentials=_credentials(auth_mlflow_server),
        )
    assert auth_mlflow_server.password not in str(info.value)
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ


def test_a_whole_tracked_flow_never_shows_the_secret(
    auth_mlflow_server: AuthMlflowServer,
    fluent_reset: None,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = auth_mlflow_server.password
    block_name = "tt-flow-" + os.urandom(4).hex()
    _credentials(auth_mlflow_server).save(block_name)
    caplog.set_level(logging.DEBUG)

    @flow(**mlflow_state_hooks())
    def tracked(block: str, lr: float = 0.1) -> dict[str, str]:
        credentials = MlflowCredentials.load(block)
        ctx = setup_mlflow(experiment_name="secret-flow", credentials=credentials)
        setup_mlflow(experiment_name="secret-flow", credentials=credentials)  # cache hit
        run = create_mlflow_run(ctx, run_name="train", config={"lr": lr}, tags={"stage": "t"})
        log_params(run, {"lr": lr})
        log_metrics(run, {"f1": 0.9}, step=0)
        set_tags(run, {"phase": "done"})
        return {"run_id": run.run_id, "experiment_id": ctx.experiment_id}

    state = tracked(block_name, return_state=True)
    assert state.is_completed()
    result = state.result()
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    texts: dict[str, str] = {"result": repr(result), "state": repr(state)}

    # MLflow: the run's tags, params and metrics (read with the process's credentials)
    run = MlflowClient(auth_mlflow_server.url).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    texts["mlflow tags/params"] = repr((run.data.tags, run.data.params, run.data.metrics))
    texts["mlflow server log"] = auth_mlflow_server.log_path.read_text(errors="replace")

    # Prefect: the flow run, its task runs, artifacts and logs, through the API
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(str(flow_run_id)))
        texts["flow run"] = flow_run.model_dump_json()
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))]))
        )
        texts["task runs"] = "".join(t.model_dump_json() for t in task_runs)
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(str(flow_run_id))]))
        )
        texts["prefect logs"] = "\n".join(log.message for log in logs)
    assert any("setup_mlflow" in t.name for t in task_runs)
    assert "scoped to" in texts["prefect logs"]  # the log line exists, values not
    texts["artifacts"] = "".join(a.model_dump_json() for a in flow_run_artifacts(flow_run_id))

    # this process: captured log records, stdout and stderr
    out, err = capfd.readouterr()
    texts.update({"captured logs": caplog.text, "stdout": out, "stderr": err})

    leaks = [where for where, text in texts.items() if secret in text]
    assert not leaks, f"the secret appears in: {leaks}"

    # every file Prefect wrote under PREFECT_HOME (persisted results, caches, the API db)
    home = Path(os.environ["PREFECT_HOME"])
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any("storage" in p.parts for p in files)  # setup_mlflow's persisted results
    leaking_files = [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert not leaking_files, f"the secret appears in: {leaking_files}"
    # and Prefect's database (the block is stored encrypted there)
    assert not files_with_secrets([secret])
