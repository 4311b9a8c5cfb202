"""Credentials reach only their own server: two basic-auth servers and a plain one, each
behind a proxy that records the Authorization headers it receives, used one after the
other, at once in threads, at once in two processes; and tokens that expire."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.settings import get_current_settings
from pydantic import SecretStr

from tests import helpers
from tests.servers import (
    AuthMlflowServer,
    FaultProxy,
    MlflowServer,
    start_auth_mlflow_server,
    start_fault_proxy,
)
from tracking_tasks import (
    MlflowCredentials,
    create_mlflow_run,
    log_metrics,
    mlflow_state_hooks,
    setup_mlflow,
    upload_artifacts,
)
from tracking_tasks.auth import ServerCredentials, clear_scoped_credentials
from tracking_tasks.auth._tokens import TokenProvider
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.ops._finders import find_mlflow_runs, get_run_summary
from tracking_tasks.ops._lifecycle import end_mlflow_run

REPO = Path(__file__).resolve().parent.parent


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass
class Scene:
    """Servers A and B (basic auth) and C (plain), each behind a recording proxy."""

    a: FaultProxy
    b: FaultProxy
    c: FaultProxy
    servers: tuple[AuthMlflowServer, AuthMlflowServer, MlflowServer]
    block_a: str
    block_b: str

    @property
    def secrets(self) -> list[str]:
        a, b, _ = self.servers
        return [a.password, b.password, _basic(a.username, a.password), _basic("admin", b.password)]

    def expected(self) -> tuple[str, str]:
        a, b, _ = self.servers
        return _digest(_basic(a.username, a.password)), _digest(_basic(b.username, b.password))

    def reset(self) -> None:
        for proxy in (self.a, self.b, self.c):
            proxy.configure(fault="none")

    def assert_each_got_its_own(self) -> None:
        header_a, header_b = self.expected()
        seen = {
            name: p.authorization() for name, p in zip("abc", (self.a, self.b, self.c), strict=True)
        }
        assert set(seen["a"]) == {header_a}, f"server A received {seen['a']}"
        assert set(seen["b"]) == {header_b}, f"server B received {seen['b']}"
        assert set(seen["c"]) == {"none"}, f"plain server C received {seen['c']}"
        assert all(sum(s.values()) > 5 for s in seen.values()), seen


@pytest.fixture(scope="module")
def scene(
    tmp_path_factory: pytest.TempPathFactory,
    auth_mlflow_server: AuthMlflowServer,
    mlflow_server: MlflowServer,
) -> Iterator[Scene]:
    server_b = start_auth_mlflow_server(
        tmp_path_factory.mktemp("mlflow-auth-b"), password="tt-pw-b-" + os.urandom(12).hex()
    )
    proxies: list[FaultProxy] = []
    try:
        for upstream in (auth_mlflow_server.url, server_b.url, mlflow_server.url):
            proxies.append(start_fault_proxy(upstream))
        names = []
        for proxy, server in zip(proxies, (auth_mlflow_server, server_b), strict=False):
            name = "tt-scoped-" + os.urandom(4).hex()
            MlflowCredentials(
                tracking_uri=proxy.url,
                username=server.username,
                password=SecretStr(server.password),
            ).save(name)
            names.append(name)
        yield Scene(
            a=proxies[0],
            b=proxies[1],
            c=proxies[2],
            servers=(auth_mlflow_server, server_b, mlflow_server),
            block_a=names[0],
            block_b=names[1],
        )
    finally:
        for proxy in proxies:
            proxy.stop()
        server_b.stop()


def _artifacts(tmp_path: Path) -> str:
    folder = tmp_path / "outputs"
    folder.mkdir(exist_ok=True)
    (folder / "report.txt").write_text("all good\n")
    return str(folder)


def _run_flow(scene: Scene, which: str, folder: str) -> tuple[str, str]:
    block = {"a": scene.block_a, "b": scene.block_b, "c": None}[which]
    uri = scene.c.url if which == "c" else None
    state = helpers.credentials_flow(block, uri, f"scoped-{which}", folder, return_state=True)
    assert state.is_completed(), state
    return str(state.state_details.flow_run_id), state.result()["run_id"]


def _assert_no_leak(secrets: list[str], flow_run_ids: list[str], texts: dict[str, str]) -> None:
    texts = {**texts, **helpers.prefect_texts(flow_run_ids)}
    leaks = [where for where, text in texts.items() for s in secrets if s in text]
    assert not leaks, f"a secret appears in: {sorted(set(leaks))}"
    files = helpers.files_with_secrets(secrets)
    assert not files, f"a secret appears in: {files}"


def test_each_server_gets_only_its_own_credentials_in_threads(
    scene: Scene,
    tmp_path: Path,
    fluent_reset: None,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    folder = _artifacts(tmp_path)
    scene.reset()
    flow_runs = [_run_flow(scene, which, folder) for which in "abac"]  # one after the other
    for _ in range(2):  # A, B and C at the same time, from three threads of one process
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            flow_runs += list(pool.map(lambda w: _run_flow(scene, w, folder), "abc"))
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ

    # MLflow's own client, outside the library, in this process: scoped the same way
    for (_, run_id), which in zip(flow_runs[:4], "abac", strict=True):
        url = {"a": scene.a.url, "b": scene.b.url, "c": scene.c.url}[which]
        run = MlflowClient(url).get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.params == {
            "experiment": f"scoped-{which}"
        }

    # the command line, in its own process, with the block's name
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PREFECT_API_URL"] = str(get_current_settings().api.url)
    cli = subprocess.run(
        [sys.executable, "-m", "tracking_tasks.cli", "runs", "find", "--credentials",
         scene.block_a, "-e", "scoped-a", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert {r["run_id"] for r in json.loads(cli.stdout)} >= {flow_runs[0][1], flow_runs[2][1]}

    scene.assert_each_got_its_own()
    out, err = capfd.readouterr()
    a, b, _ = scene.servers
    _assert_no_leak(
        scene.secrets,
        [flow_run_id for flow_run_id, _ in flow_runs],
        {
            "captured logs": caplog.text,
            "stdout": out,
            "stderr": err,
            "cli": cli.stdout + cli.stderr,
            "server logs": a.log_path.read_text(errors="replace")
            + b.log_path.read_text(errors="replace"),
        },
    )


def test_each_server_gets_only_its_own_credentials_in_two_processes(
    scene: Scene, tmp_path: Path, fluent_reset: None
) -> None:
    folder = _artifacts(tmp_path)
    scene.reset()
    # handles made here with saved blocks carry the block's name, never its secret
    refs, contexts = {}, {}
    for which, block in (("a", scene.block_a), ("b", scene.block_b)):
        contexts[which] = ctx = setup_mlflow.fn(
            experiment_name=f"scoped-{which}", credentials=MlflowCredentials.load(block)
        )
        refs[which] = create_mlflow_run.fn(ctx, run_name="made-by-parent")
        assert refs[which].credentials == f"mlflow-credentials/{block}"
        assert not any(s in refs[which].model_dump_json() for s in scene.secrets)

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PREFECT_API_URL"] = str(get_current_settings().api.url)
    procs = {
        which: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.credentials_worker",
                json.dumps(
                    {
                        "ref": refs[which].model_dump_json(),
                        "context": contexts[which].model_dump_json(),
                        "block": block,
                        "plain_uri": scene.c.url,
                        "experiment": f"scoped-{which}",
                        "artifact_dir": folder,
                    }
                ),
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for which, block in (("a", scene.block_a), ("b", scene.block_b))
    }
    outputs = {}
    for which, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        (line,) = [x for x in out.splitlines() if x.startswith('{"ref_run_id"')]
        outputs[which] = (json.loads(line), out + err)

    for which, ref in refs.items():
        run = MlflowClient(ref.tracking_uri).get_run(ref.run_id)  # logged by the other process
        assert run.data.params == {"logged_by": "worker"} and run.info.status == "FINISHED"
        assert len(outputs[which][0]["flow_runs"]) == 3
        assert ref.run_id in outputs[which][0]["found"]  # the finder authenticated by reference
    scene.assert_each_got_its_own()
    _assert_no_leak(
        scene.secrets,
        [f["id"] for result, _ in outputs.values() for f in result["flow_runs"]],
        {f"process {which}": text for which, (_, text) in outputs.items()},
    )


def test_a_finder_sends_a_block_only_to_its_own_server(
    scene: Scene, fluent_reset: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``credentials=`` on a finder and on get_run_summary: the block's server is searched
    though $MLFLOW_TRACKING_URI names another, and another server named outright is
    refused before any request reaches it."""
    clear_scoped_credentials()
    block_a = MlflowCredentials.load(scene.block_a)
    ctx = setup_mlflow.fn(experiment_name="finder-scope", credentials=block_a)
    run = create_mlflow_run.fn(ctx, "found")
    clear_scoped_credentials()  # the finder loads the block itself
    # after setup_mlflow, which points MLflow at A; undone before fluent_reset restores
    monkeypatch.setenv("MLFLOW_TRACKING_URI", scene.c.url)
    scene.reset()

    found = find_mlflow_runs("finder-scope", credentials=block_a)
    assert [r.run_id for r in found] == [run.run_id]
    assert get_run_summary(run.run_id, credentials=block_a).run_id == run.run_id
    header_a, _ = scene.expected()
    assert set(scene.a.authorization()) == {header_a}
    assert scene.c.stats()["seen"] == 0  # the environment's server was never asked

    for call in (
        lambda: find_mlflow_runs("finder-scope", tracking_uri=scene.c.url, credentials=block_a),
        lambda: get_run_summary(run.run_id, tracking_uri=scene.c.url, credentials=block_a),
    ):
        with pytest.raises(TrackingConfigError, match="never sent to another server"):
            call()
    assert scene.c.stats()["seen"] == 0
    assert end_mlflow_run(run) == "FINISHED"  # with the handle's credentials


def test_mlflow_environment_variables_keep_working_beside_a_block(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, fluent_reset: None
) -> None:
    """MLflow's own variables (for A) work as MLflow documents; B's block wins for B."""
    a = scene.servers[0]
    clear_scoped_credentials()  # A's block from the tests above: the environment alone here
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", a.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", a.password)
    scene.reset()
    on_a = setup_mlflow.fn(experiment_name="env-creds", tracking_uri=scene.a.url)
    assert on_a.credentials is None  # nothing to carry: the environment is the process's
    on_b = setup_mlflow.fn(
        experiment_name="env-creds", credentials=MlflowCredentials.load(scene.block_b)
    )
    create_mlflow_run.fn(on_a, "env")
    create_mlflow_run.fn(on_b, "block")
    header_a, header_b = scene.expected()
    assert set(scene.a.authorization()) == {header_a}
    assert set(scene.b.authorization()) == {header_b}  # not A's, though MLflow added it first
    for ref_ctx in (on_a, on_b):
        client = MlflowClient(ref_ctx.tracking_uri)
        for run in client.search_runs([ref_ctx.experiment_id]):
            client.set_terminated(run.info.run_id)


@pytest.fixture
def token_gate(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    """The plain server behind a gate that accepts each token for 2 seconds only."""
    monkeypatch.setenv("TT_TEST_TOKEN_KEY", "tt-token-key-" + os.urandom(12).hex())
    monkeypatch.setenv("TT_TEST_TOKEN_LIFETIME", "2")
    # the operator allows the test's provider for blocks (a block cannot name it itself)
    monkeypatch.setenv("TRACKING_TASKS_TOKEN_PROVIDERS", "tests.helpers:mint_test_token")
    gate = start_fault_proxy(
        mlflow_server.url, "--token-key-env", "TT_TEST_TOKEN_KEY", env=dict(os.environ)
    )
    try:
        yield gate
    finally:
        gate.stop()


@flow(**mlflow_state_hooks())
def long_flow(block: str, artifact_dir: str, seconds: float) -> str:
    ctx = setup_mlflow(experiment_name="token-rotation", credentials=MlflowCredentials.load(block))
    run = create_mlflow_run(ctx, run_name="longer-than-a-token")
    helpers.log_loss_for(run, seconds)
    upload_artifacts(run, artifact_dir, "outputs")
    return run.run_id


def test_a_flow_longer_than_its_token_keeps_logging(
    token_gate: FaultProxy, tmp_path: Path, fluent_reset: None
) -> None:
    block = "tt-token-" + os.urandom(4).hex()
    MlflowCredentials(
        tracking_uri=token_gate.url, token_provider="tests.helpers:mint_test_token"
    ).save(block)
    state = long_flow(block, _artifacts(tmp_path), 7.0, return_state=True)
    assert state.is_completed(), state
    run = MlflowClient(token_gate.url).get_run(state.result())
    assert run.info.status == "FINISHED" and len(run.data.metrics) == 1
    stats = token_gate.stats()
    tokens = {k for k in stats["authorization"] if k != "none"}
    assert stats["refused_tokens"] == 0, stats  # asked again before expiry, never refused
    assert len(tokens) >= 3, stats  # 7 s of a flow with 2 s tokens
    assert "none" not in stats["authorization"]
    _assert_no_leak(
        [os.environ["TT_TEST_TOKEN_KEY"], *helpers.MINTED],
        [str(state.state_details.flow_run_id)],
        {},
    )


def test_a_refused_token_is_asked_again_at_once(
    token_gate: FaultProxy, tmp_path: Path, fluent_reset: None
) -> None:
    """A provider that claims an hour but whose tokens die in 2 s: only a 401 tells."""
    provider = TokenProvider(helpers.mint_lying_test_token, min_refresh_interval=1.0)
    ctx = setup_mlflow.fn(
        experiment_name="token-refused",
        credentials=ServerCredentials(token_gate.url, provider),
    )
    run = create_mlflow_run.fn(ctx, run_name="refused-once")
    time.sleep(2.5)
    log_metrics.fn(run, {"loss": 0.5}, step=0)  # MLflow's client: refused, then a fresh token
    time.sleep(2.5)
    upload_artifacts.fn(run, _artifacts(tmp_path), "outputs")  # the artifact transport too
    MlflowClient(token_gate.url).set_terminated(run.run_id)
    stats = token_gate.stats()
    assert stats["refused_tokens"] >= 2 and provider.fetches >= 3, (stats, provider.fetches)
    assert MlflowClient(token_gate.url).get_run(run.run_id).data.metrics == {"loss": 0.5}
