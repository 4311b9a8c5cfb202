"""MLflow workspaces per context, on a real `mlflow server --enable-workspaces`: two teams
hold the same experiment name; two flows in one process (threads) each write and find
only their own runs; bad names and servers are refused before anything is written."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from prefect import flow, states
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from pydantic import ValidationError

from tests.servers import MlflowServer
from tracking_tasks import (
    MlflowCredentials,
    TrackingConfig,
    create_mlflow_run,
    download_artifacts,
    find_best_run,
    find_mlflow_runs,
    find_run_by_config_hash,
    find_runs_for_flow_run,
    get_run_summary,
    log_metrics,
    log_params,
    mlflow_state_hooks,
    register_model_version,
    setup_mlflow,
    upload_artifacts,
)
from tracking_tasks.cli import main
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.ops import reconcile_runs, workspace_scope
from tracking_tasks.ops import setup_mlflow as plain_setup
from tracking_tasks.tags import FLOW_RUN_TAG, PREFECT_API_TAG
from tracking_tasks.tasks import latest_model_version, prefect_api_identity, read_flow_run_states

BAD_NAMES = ["Bad_Name", "a", "x" * 64, "api", "workspaces", "ab\n", " team-a", "-ab", "ab-"]


@pytest.fixture
def experiment(workspace_mlflow_server: MlflowServer, request: pytest.FixtureRequest) -> str:
    """An experiment name of this test's own (each team gets one of that name)."""
    return f"{request.node.name[:80]}-{uuid.uuid4().hex[:6]}"


def runs_in(url: str, workspace: str | None, experiment: str) -> list[Any]:
    """Every run of ``experiment`` as MLflow's own client sees it in ``workspace``."""
    with workspace_scope(workspace):
        client = MlflowClient(url)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        return list(client.search_runs([found.experiment_id], run_view_type=ViewType.ALL))


def experiment_in(url: str, workspace: str | None, name: str) -> Any:
    with workspace_scope(workspace):
        return MlflowClient(url).get_experiment_by_name(name)


def test_workspace_names_follow_mlflows_rule() -> None:
    from mlflow.store.workspace.abstract_store import WorkspaceNameValidator

    for name in ["team-a", "ab", "a1-b2", "x" * 63, "default", *BAD_NAMES]:
        try:
            WorkspaceNameValidator.validate(name)
            theirs = name.strip() == name and "\n" not in name
        except Exception:
            theirs = name == "default"
        try:
            TrackingConfig(workspace=name)
            ours = True
        except ValidationError:
            ours = False
        assert ours == theirs, name  # MLflow's re.match lets "ab\n" pass: ours does not


def test_a_bad_workspace_is_refused_before_anything_is_written(
    workspace_mlflow_server: MlflowServer,
    mlflow_server: MlflowServer,
    experiment: str,
    monkeypatch: pytest.MonkeyPatch,
    fluent_reset: None,
) -> None:
    url = workspace_mlflow_server.url
    for bad in BAD_NAMES:
        with pytest.raises(TrackingConfigError, match="workspace"):
            plain_setup(experiment_name=experiment, tracking_uri=url, workspace=bad)
        monkeypatch.setenv("MLFLOW_WORKSPACE", bad)
        with pytest.raises(TrackingConfigError, match=r"\$MLFLOW_WORKSPACE"):
            plain_setup(experiment_name=experiment, tracking_uri=url)
        monkeypatch.delenv("MLFLOW_WORKSPACE")
    with pytest.raises(ValidationError, match="workspace"):
        MlflowCredentials(tracking_uri=url, workspace="Team A")
    with pytest.raises(TrackingConfigError, match="does not exist on this server"):
        plain_setup(experiment_name=experiment, tracking_uri=url, workspace="no-such-team")
    with pytest.raises(TrackingConfigError, match="--enable-workspaces"):
        plain_setup(experiment_name=experiment, tracking_uri=mlflow_server.url, workspace="team-a")
    with pytest.raises(TrackingConfigError, match="needs an MLflow tracking server"):
        plain_setup(experiment_name=experiment, tracking_uri="sqlite:///w.db", workspace="team-a")
    with pytest.raises(TrackingConfigError, match="artifact_location"):
        plain_setup(
            experiment_name=experiment,
            tracking_uri=url,
            workspace="team-a",
            artifact_location="s3://bucket/x",
        )
    for workspace in ("default", "team-a", "team-b"):  # nothing was written anywhere
        assert experiment_in(url, workspace, experiment) is None
    assert MlflowClient(mlflow_server.url).get_experiment_by_name(experiment) is None
    assert "MLFLOW_WORKSPACE" not in os.environ


@flow(**mlflow_state_hooks())
def team_flow(url: str, workspace: str, experiment: str, folder: str) -> dict[str, Any]:
    """A team's flow: every library call of a tracked stage, all in its workspace."""
    ctx = setup_mlflow(experiment_name=experiment, tracking_uri=url, workspace=workspace)
    run = create_mlflow_run(ctx, "train", config={"team": workspace})
    log_params(run, {"team": workspace})
    log_metrics(run, {"f1": 0.5 if workspace == "team-a" else 0.7}, step=0)
    (Path(folder) / "weights.txt").write_text(f"weights of {workspace}")
    upload_artifacts(run, folder, "model")
    fetched = download_artifacts(run, "model", Path(folder) / "back")
    version = register_model_version(run, "model", f"{experiment}-model")
    with create_mlflow_run(ctx, "fluent"):  # MLflow's fluent API, in the run's workspace
        mlflow.log_metric("fluent", 1.0)
    left_open = create_mlflow_run(ctx, "left-open")  # ended by the hooks, in the workspace
    return {
        "experiment_id": ctx.experiment_id,
        "run_id": run.run_id,
        "left_open": left_open.run_id,
        "url": run.url,
        "bytes": (fetched / "weights.txt").read_text(),
        "version": version,
        "latest": latest_model_version(
            f"{experiment}-model", tracking_uri=url, workspace=workspace
        ).run_id,
        "found": sorted(r.data.params.get("team", "-") for r in find_mlflow_runs(ctx)),
        "best": find_best_run("f1", ctx, status=None).run_id,  # type: ignore[union-attr]
        "by_hash": find_run_by_config_hash({"team": workspace}, ctx, status=None).run_id,  # type: ignore[union-attr]
        "flow_runs": sorted(r.run_name for r in find_runs_for_flow_run(flow_run.id, ctx)),
        "summary": get_run_summary(run.run_id, tracking_uri=url, workspace=workspace).workspace,
    }


def test_two_flows_in_one_process_each_write_and_find_only_their_own_workspace(
    workspace_mlflow_server: MlflowServer, experiment: str, tmp_path: Path, fluent_reset: None
) -> None:
    url = workspace_mlflow_server.url
    results: dict[str, Any] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def team(workspace: str) -> None:
        try:
            folder = tmp_path / workspace
            folder.mkdir()
            start.wait()
            results[workspace] = team_flow(url, workspace, experiment, str(folder))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=team, args=(w,)) for w in ("team-a", "team-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    a, b = results["team-a"], results["team-b"]
    assert a["experiment_id"] != b["experiment_id"]  # the same name, one per workspace
    for workspace, got in results.items():
        runs = runs_in(url, workspace, experiment)
        assert sorted(r.info.run_name for r in runs) == ["fluent", "left-open", "train"]
        assert {r.info.status for r in runs} == {"FINISHED"}  # the hooks reached their workspace
        assert {r.info.experiment_id for r in runs} == {got["experiment_id"]}
        train = next(r for r in runs if r.info.run_name == "train")
        assert train.data.params == {"team": workspace}
        assert next(r for r in runs if r.info.run_name == "fluent").data.metrics == {"fluent": 1.0}
        assert got["bytes"] == f"weights of {workspace}"
        assert got["found"] == ["-", "-", workspace]
        assert got["best"] == got["by_hash"] == got["latest"] == got["run_id"]
        assert got["flow_runs"] == ["fluent", "left-open", "train"]
        assert got["summary"] == workspace and got["version"] == "1"
        assert got["url"].endswith(f"&workspace={workspace}")
        with workspace_scope(workspace):
            client = MlflowClient(url)
            stored = client.list_artifacts(got["run_id"], "model")
            assert "model/weights.txt" in [f.path for f in stored]
            # MLflow's own threads download too: the auth plugin names the workspace
            back = client.download_artifacts(got["run_id"], "model", str(tmp_path / workspace))
            assert (Path(back) / "weights.txt").read_text() == f"weights of {workspace}"
    assert runs_in(url, "default", experiment) == []
    assert "MLFLOW_WORKSPACE" not in os.environ


def test_the_workspace_comes_from_the_block_then_the_environment_and_is_never_written(
    workspace_mlflow_server: MlflowServer,
    experiment: str,
    monkeypatch: pytest.MonkeyPatch,
    fluent_reset: None,
) -> None:
    url = workspace_mlflow_server.url
    block = MlflowCredentials(tracking_uri=url, workspace="team-a")
    assert plain_setup(experiment_name=experiment, credentials=block).workspace == "team-a"
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-b")
    ctx = plain_setup(experiment_name=experiment, tracking_uri=url)
    assert ctx.workspace == "team-b"
    assert (
        plain_setup(
            TrackingConfig(workspace="team-a"), experiment_name=experiment, tracking_uri=url
        ).workspace
        == "team-a"
    )
    assert os.environ["MLFLOW_WORKSPACE"] == "team-b"  # read, left as it was
    assert experiment_in(url, "team-b", experiment).experiment_id == ctx.experiment_id


@pytest.fixture
def two_teams(workspace_mlflow_server: MlflowServer, experiment: str) -> Iterator[dict[str, str]]:
    """In each workspace, a RUNNING run (tagged as this suite's Prefect API opens runs)
    whose flow run is Crashed; yields workspace -> run id."""
    url = workspace_mlflow_server.url
    made = {}
    for workspace in ("team-a", "team-b"):
        with get_client(sync_client=True) as prefect:
            flow_run_id = str(prefect.create_flow_run(team_flow, state=states.Crashed()).id)
        with workspace_scope(workspace):
            client = MlflowClient(url)
            experiment_id = client.create_experiment(experiment)
            tags = {FLOW_RUN_TAG: flow_run_id, PREFECT_API_TAG: prefect_api_identity()}
            made[workspace] = client.create_run(experiment_id, tags=tags).info.run_id
    yield made


def test_reconcile_and_the_command_line_stay_in_their_workspace(
    workspace_mlflow_server: MlflowServer,
    experiment: str,
    two_teams: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fluent_reset: None,
) -> None:
    url = workspace_mlflow_server.url
    base = ["--tracking-uri", url, "--format", "json"]
    assert main(["runs", "find", "-e", experiment, *base, "--workspace", "team-a"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [two_teams["team-a"]]
    assert main(["runs", "show", two_teams["team-b"], *base, "--workspace", "team-a"]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-b")
    assert main(["runs", "show", two_teams["team-b"], *base]) == 0
    assert json.loads(capsys.readouterr().out)["workspace"] == "team-b"
    monkeypatch.delenv("MLFLOW_WORKSPACE")

    args = ["runs", "reconcile", "-e", experiment, *base, "--grace-seconds", "0"]
    assert main([*args, "--workspace", "team-a"]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == [two_teams["team-a"]]
    assert [r.info.status for r in runs_in(url, "team-a", experiment)] == ["FAILED"]
    assert [r.info.status for r in runs_in(url, "team-b", experiment)] == ["RUNNING"]
    report = reconcile_runs(
        read_flow_run_states,
        experiment,
        prefect_api=prefect_api_identity(),
        tracking_uri=url,
        workspace="team-b",
        grace_seconds=0,
    )
    assert report.failed == (two_teams["team-b"],) and report.workspace == "team-b"
    assert main(["runs", "find", "-e", experiment, "--tracking-uri", url]) == 2  # not in default
    assert "does not exist" in capsys.readouterr().err


def test_runs_left_open_outside_a_flow_end_in_their_workspace_with_their_pending_models(
    workspace_mlflow_server: MlflowServer, experiment: str, fluent_reset: None
) -> None:
    """What interpreter exit does for a script's runs: each is searched and ended in its
    own workspace, and a logged model it left PENDING is finalised FAILED (no hook and no
    reconcile ever sees a run opened outside a flow run)."""
    from tracking_tasks.tags import MODEL_FAILURE_TAG
    from tracking_tasks.tasks._task import end_left_open

    url = workspace_mlflow_server.url
    ctx = plain_setup(experiment_name=experiment, tracking_uri=url, workspace="team-a")
    run = create_mlflow_run(ctx, run_name="left-open")  # outside a flow: remembered for exit
    with workspace_scope("team-a"):
        client = MlflowClient(url)
        pending = client.create_logged_model(
            run.experiment_id, name="half-logged", source_run_id=run.run_id
        ).model_id
    assert run.run_id in end_left_open()
    with workspace_scope("team-a"):
        assert client.get_run(run.run_id).info.status == "FINISHED"
        model = client.get_logged_model(pending)
    assert model.status == "FAILED"
    assert model.tags[MODEL_FAILURE_TAG].startswith("process exit (outside a flow run)")


def test_model_metrics_and_the_latest_version_stay_in_their_workspace(
    workspace_mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """A model's metrics are never logged into a run of another workspace, and the newest
    version is refused a workspace on a store that has none, as every registry read is."""
    from tracking_tasks.errors import InvalidArgumentError
    from tracking_tasks.handles import ModelRef, RunRef
    from tracking_tasks.ops import log_model_metrics

    url = workspace_mlflow_server.url
    model = ModelRef(
        model_id="m-1", name="m", experiment_id="1", tracking_uri=url, workspace="team-a"
    )
    run = RunRef(run_id="a" * 32, experiment_id="1", run_name="r", tracking_uri=url,
                 workspace="team-b")  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="workspace"):
        log_model_metrics(model, {"acc": 0.5}, run=run)
    with pytest.raises(TrackingConfigError, match="team-a"):
        latest_model_version.fn(
            "m", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", workspace="team-a"
        )
