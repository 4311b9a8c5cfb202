"""A credential reaches only what it belongs to, against the real `mlflow server` behind
tests/faultproxy.py: a block names no arbitrary code and no other audience; a scoped
header follows no redirect out of its prefix; a refused token is asked again a bounded
number of times; a pickled token provider carries no secret."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pickle
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from mlflow import MlflowClient
from pydantic import SecretStr, ValidationError

from tests import helpers
from tests.servers import FaultProxy, MlflowServer, start_fault_proxy
from tracking_tasks import AzureMLWorkspace, MlflowCredentials
from tracking_tasks.auth import (
    BearerToken,
    ServerCredentials,
    TokenProvider,
    clear_scoped_credentials,
)
from tracking_tasks.auth._block import load_block
from tracking_tasks.errors import ArtifactError, TrackingConfigError, TrackingTasksError
from tracking_tasks.ops import (
    create_mlflow_run,
    end_mlflow_run,
    find_mlflow_runs,
    log_params,
    setup_mlflow,
    upload_artifacts,
)

REPO = Path(__file__).resolve().parent.parent


def _digest(header: str) -> str:
    return hashlib.sha256(header.encode()).hexdigest()


@pytest.fixture(scope="module")
def proxy(mlflow_server: MlflowServer) -> Iterator[FaultProxy]:
    """The session's server behind a recording proxy that serves it under /team-a and
    /team-b too (the prefix is stripped before forwarding)."""
    started = start_fault_proxy(mlflow_server.url, "--strip-path", "^/team-[ab]")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(autouse=True)
def _forget_credentials() -> Iterator[None]:
    clear_scoped_credentials()
    yield
    clear_scoped_credentials()


def _reset(proxy: FaultProxy, **options: Any) -> None:
    proxy.configure(**{"fault": "none", "redirect_from": None, "redirect_to": None, **options})


# --- 1. a block names no arbitrary code and no other audience ------------------------


def test_a_block_can_name_neither_arbitrary_code_nor_another_audience(
    proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fluent_reset: None
) -> None:
    marker = tmp_path / "imported"
    monkeypatch.setenv("TT_IMPORT_PROBE", str(marker))
    monkeypatch.delenv("TRACKING_TASKS_TOKEN_PROVIDERS", raising=False)
    sys.modules.pop("tests.import_probe", None)
    _reset(proxy)

    # any import path: refused when the block is made (saved, or loaded), nothing imported
    with pytest.raises(ValidationError, match=r"'tests\.import_probe:token' is not a token prov"):
        MlflowCredentials(tracking_uri=proxy.url, token_provider="tests.import_probe:token")
    # a known provider asked for another audience's token: refused, for a server...
    vault = "https://vault.azure.net/.default"
    with pytest.raises(
        ValidationError, match=re.escape(f"token_scope '{vault}' is not a scope of the")
    ):
        MlflowCredentials(
            tracking_uri=proxy.url,
            token_provider="azure.identity:ManagedIdentityCredential",
            token_scope=vault,
        )
    # ... and for an Azure ML workspace (whose scopes are Azure ML's and Resource Manager's)
    ws = AzureMLWorkspace(subscription_id="s", resource_group="rg", workspace_name="ws")
    with pytest.raises(ValidationError, match="is not a scope of Azure ML"):
        MlflowCredentials(
            azure_workspace=ws, token_provider="azure.identity:DefaultAzureCredential",
            token_scope=vault,
        )  # fmt: skip
    # an azure-identity credential for an HTTP server must be given the server's own scope
    with pytest.raises(ValidationError, match="token_scope is required"):
        MlflowCredentials(
            tracking_uri=proxy.url, token_provider="azure.identity:DefaultAzureCredential"
        )
    own = MlflowCredentials(
        tracking_uri=proxy.url,
        token_provider="azure.identity:DefaultAzureCredential",
        token_scope="https://127.0.0.1/.default",
    )
    assert own.token_scope == "https://127.0.0.1/.default"

    # a block saved by an older version (no such checks): refused on load, and by setup
    stale = MlflowCredentials.model_construct(
        tracking_uri=proxy.url, token_provider="tests.import_probe:token"
    )
    name = "tt-stale-" + os.urandom(4).hex()
    stale.save(name)
    with pytest.raises(TrackingConfigError, match=f"block '{name}' is refused: .*token_provider"):
        load_block(name)
    with pytest.raises(TrackingConfigError, match="is not a token provider this process allows"):
        setup_mlflow(experiment_name="oracle", credentials=stale)
    assert not marker.exists(), "a refused provider was imported"
    assert proxy.stats()["seen"] == 0, "a refused block reached the server"

    # the operator allows it, in code: then (and only then) the block works
    from tracking_tasks.auth import allow_token_provider

    allow_token_provider("tests.import_probe:token")
    allowed = MlflowCredentials(tracking_uri=proxy.url, token_provider="tests.import_probe:token")
    ctx = setup_mlflow(experiment_name="oracle", credentials=allowed)
    assert marker.read_text() == "imported"
    from tests import import_probe

    assert proxy.authorization().get(_digest(f"Bearer {import_probe.TOKEN}"), 0) >= 1
    assert ctx.experiment_name == "oracle"


# --- 2. a scoped header follows no redirect out of its prefix ------------------------


def test_a_redirect_to_another_prefix_never_carries_the_first_prefix_secret(
    proxy: FaultProxy, tmp_path: Path, fluent_reset: None
) -> None:
    """Server A at /team-a/ answers 307 to /team-b/ (same host and port: requests keeps
    the header). Team A's token must never reach /team-b/; team B's own does, once
    scoped; the artifact transport follows no redirect at all."""
    a_token, b_token = (f"tt-{team}-{uuid.uuid4().hex}" for team in ("team-a", "team-b"))
    team_a = ServerCredentials(f"{proxy.url}/team-a", BearerToken(SecretStr(a_token)))
    _reset(proxy, redirect_from="/team-a/", redirect_to="/team-b/")
    ctx = setup_mlflow(experiment_name="redirected", credentials=team_a)
    run = create_mlflow_run(ctx, "moved")
    log_params(run, {"a": 1})
    seen = proxy.stats()["authorization_by_prefix"]
    assert set(seen["/team-a"]) == {_digest(f"Bearer {a_token}")}, seen
    assert set(seen["/team-b"]) == {"none"}, f"team A's token followed the redirect: {seen}"
    assert proxy.stats()["redirected"] >= 3

    folder = tmp_path / "outputs"
    folder.mkdir()
    (folder / "report.txt").write_text("ok\n")
    _reset(proxy, redirect_from="/team-a/", redirect_to="/team-b/")
    with pytest.raises(ArtifactError, match="HTTP 307"):
        upload_artifacts(run, folder, "reports")  # the transport does not follow
    assert "/team-b" not in proxy.stats()["authorization_by_prefix"]

    # team B scoped too: a redirected request is authorised for where it goes now
    team_b = ServerCredentials(f"{proxy.url}/team-b", BearerToken(SecretStr(b_token)))
    setup_mlflow(experiment_name="redirected", credentials=team_b)
    _reset(proxy, redirect_from="/team-a/", redirect_to="/team-b/")
    log_params(run, {"b": 2})
    seen = proxy.stats()["authorization_by_prefix"]
    assert set(seen["/team-a"]) == {_digest(f"Bearer {a_token}")}, seen
    assert set(seen["/team-b"]) == {_digest(f"Bearer {b_token}")}, seen
    stored = MlflowClient(f"{proxy.url}/team-b").get_run(run.run_id)
    assert stored.data.params == {"a": "1", "b": "2"}
    end_mlflow_run(run)


# --- 3. a refused token is asked again a bounded number of times ---------------------


@pytest.fixture
def gate(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The server behind a gate that accepts each token for 2 seconds only."""
    monkeypatch.setenv("TT_TEST_TOKEN_KEY", "tt-token-key-" + os.urandom(12).hex())
    monkeypatch.setenv("TT_TEST_TOKEN_LIFETIME", "2")
    started = start_fault_proxy(
        mlflow_server.url, "--token-key-env", "TT_TEST_TOKEN_KEY", env=dict(os.environ)
    )
    try:
        yield started
    finally:
        started.stop()


def test_concurrent_refusals_of_one_token_share_one_fetch(
    gate: FaultProxy, mlflow_server: MlflowServer, fluent_reset: None
) -> None:
    """Eight requests refused with the same dead token: one fresh token for all eight
    (each 401 used to ask the provider again)."""
    provider = TokenProvider(helpers.mint_lying_test_token)  # claims an hour, lives 2 s
    ctx = setup_mlflow(
        experiment_name="refusals", credentials=ServerCredentials(gate.url, provider)
    )
    runs = [create_mlflow_run(ctx, f"r{i}") for i in range(8)]
    before = provider.fetches
    time.sleep(2.5)  # every request now goes out with a dead token
    # each refusal takes a second to arrive, so the eight overlap however busy the machine
    gate.set(fault="slow", slow_seconds=1.0, match=r"^POST .*/runs/log-batch")
    start = threading.Barrier(len(runs))

    def log(run: Any) -> None:
        start.wait()
        log_params(run, {"x": 1})

    with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
        list(pool.map(log, runs))
    assert gate.stats()["refused_tokens"] >= 2, gate.stats()  # several refused at once...
    assert provider.fetches == before + 1  # ... one fetch for all of them
    client = MlflowClient(mlflow_server.url)  # behind the gate, read and ended directly
    assert all(client.get_run(r.run_id).data.params == {"x": "1"} for r in runs)
    for run in runs:
        client.set_terminated(run.run_id)


def test_a_server_refusing_every_token_is_not_asked_for_one_per_request(
    gate: FaultProxy, monkeypatch: pytest.MonkeyPatch, fluent_reset: None
) -> None:
    """Tokens the server will never accept (signed with another key): twenty refused
    requests cost one fresh token, not twenty."""
    monkeypatch.setenv("TT_TEST_TOKEN_KEY", "another-key-" + os.urandom(8).hex())
    provider = TokenProvider(helpers.mint_lying_test_token)  # no expiry within the test
    refused = ServerCredentials(gate.url, provider)
    started = time.monotonic()
    for _ in range(20):
        with pytest.raises(TrackingTasksError):
            find_mlflow_runs("anything", tracking_uri=gate.url, credentials=refused)
    elapsed = time.monotonic() - started
    assert gate.stats()["refused_tokens"] >= 20
    assert provider.fetches < 20, provider.fetches  # not one per refused request
    # the first token, and one more per min_refresh_interval at most
    bound = 2 + int(elapsed / provider.min_refresh_interval)
    assert provider.fetches <= bound < 20, (provider.fetches, elapsed)


# --- 3. a pickled token provider carries no secret -----------------------------------


class _Vault:
    """A live credential object holding a secret (as a ClientSecretCredential does)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.secret, int(time.time()) + 3600)


def test_a_pickled_token_provider_carries_its_import_path_and_no_secret(
    gate: FaultProxy, fluent_reset: None
) -> None:
    secret = "tt-live-secret-" + os.urandom(8).hex()
    live = [
        TokenProvider(_Vault(secret)),  # a credential instance
        TokenProvider(lambda: secret),  # a closure over a secret
    ]
    for provider in live:
        for dumps in (pickle.dumps, cloudpickle.dumps):
            with pytest.raises(TypeError, match="cannot be pickled"):
                dumps(provider)
        with pytest.raises(TypeError, match="import path"):  # as a Dask task argument
            cloudpickle.dumps(ServerCredentials(gate.url, provider))

    # a module-level function travels as its import path: no token, no key, after use
    provider = TokenProvider(helpers.mint_test_token)
    ctx = setup_mlflow(experiment_name="pickled", credentials=ServerCredentials(gate.url, provider))
    run = create_mlflow_run(ctx, "made-here")
    token = provider.current()[0]
    data = cloudpickle.dumps(ServerCredentials(gate.url, provider))
    assert token.encode() not in data and os.environ["TT_TEST_TOKEN_KEY"].encode() not in data
    assert b"tests.helpers:mint_test_token" in data
    # ... and works in another process, asking its own tokens from the real gate
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.pop("TRACKING_TASKS_TOKEN_PROVIDERS", None)  # a pickle is code: no allowing needed
    worker = subprocess.run(
        [sys.executable, "-c", (
            "import pickle, sys\n"
            "from tracking_tasks.ops import find_mlflow_runs\n"
            "creds = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
            "print(*[r.run_id for r in find_mlflow_runs('pickled', credentials=creds)])\n"
        ), data.hex()],
        env=env, capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert worker.stdout.split() == [run.run_id]
    assert gate.stats()["refused_tokens"] == 0
    end_mlflow_run(run)
