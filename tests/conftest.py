"""Shared fixtures: a real Prefect API, a real `mlflow server`, and a leak guard.

Backends: ``@pytest.mark.backends`` (on a test, a class, or a module's ``pytestmark``)
runs every test under it that uses ``mlflow_server`` (directly, or through
``tracking_config`` or a fixture built on it) twice: ``[sqlite]`` against the session's
SQLite-backed `mlflow server`, and ``[postgres]`` against a second session server whose
backend store is a real PostgreSQL 16 (pgserver wheel) reached as
``postgresql+psycopg://``. The ``[postgres]`` copy also carries ``slow``, so
``pytest -m "not slow"`` keeps only the SQLite run; ``make test`` runs both. Mark tests
that exercise the tracking database (runs, metrics, searches, status changes), not
pure-validation ones (they would run twice for nothing). ``@pytest.mark.backends("sqlite")``
on one test under a module-wide mark keeps it on SQLite alone (a test of Prefect caching,
say). Unmarked tests always get the SQLite server. Each backend's server starts once
per session, on first use.
"""

from __future__ import annotations

import os
import tempfile

# Before prefect is imported anywhere: no telemetry (no internet here), and a private
# PREFECT_HOME so results and caches of one test session never leak into the next.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
# a temporary Prefect server migrating a fresh database takes 20-30 s on 2 busy cores
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tt-prefect-home-"))
if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker process: a home of its own
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tt-prefect-home-")
for _name in [n for n in os.environ if n.startswith("MLFLOW_")]:
    del os.environ[_name]  # the suite decides where it tracks

import re
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from prefect.testing.utilities import prefect_test_harness

from tests.servers import (
    AuthMlflowServer,
    AzureStandin,
    FaultProxy,
    MlflowServer,
    PostgresServer,
    PrefectServer,
    start_auth_mlflow_server,
    start_azure_standin,
    start_fault_proxy,
    start_mlflow_server,
    start_postgres_server,
    start_prefect_server,
    start_workspace_mlflow_server,
)
from tracking_tasks import TrackingConfig


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> Iterator[None]:
    """A real, temporary Prefect API server for the whole session."""
    from tracking_tasks.tasks._run_memory import RUN_MEMORY

    with prefect_test_harness(server_startup_timeout=120):
        yield
        RUN_MEMORY.writer.flush(30)  # labels and links queued for this API go out first


#: The backends a ``@pytest.mark.backends`` test runs on; the first is the default.
BACKENDS = ("sqlite", "postgres")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``mlflow_server`` over BACKENDS for tests marked ``backends``."""
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is None or "mlflow_server" not in metafunc.fixturenames:
        return
    wanted = marker.args or BACKENDS
    unknown = set(wanted) - set(BACKENDS)
    assert not unknown, f"{metafunc.definition.nodeid}: unknown backends {sorted(unknown)}"
    metafunc.parametrize(
        "mlflow_server",
        [
            pytest.param(b, id=b, marks=[pytest.mark.slow] if b != BACKENDS[0] else [])
            for b in BACKENDS
            if b in wanted
        ],
        indirect=True,
        scope="session",
    )


#: Session fixtures that start an expensive server of their own: the tests using one run
#: on one worker (``make test`` runs two, ``--dist loadgroup``), so each starts once.
SERVER_GROUPS = {
    "prefect_server": "prefect-server",
    "postgres_server": "postgres",
    "auth_mlflow_server": "auth-server",
    "workspace_mlflow_server": "workspace-server",
    "azure_standin": "azure",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put each test that uses an expensive session server in that server's xdist group
    (the ``[postgres]`` copies of ``backends`` tests join the postgres group)."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        groups = [group for fixture, group in SERVER_GROUPS.items() if fixture in names]
        if "postgres" in getattr(getattr(item, "callspec", None), "id", ""):
            groups.append("postgres")  # a [postgres] copy, or the PostgreSQL docs page
        if groups:
            item.add_marker(pytest.mark.xdist_group(groups[0]))


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real `prefect server start` on loopback with its own PREFECT_HOME, for the tiers
    whose other processes (Dask workers, Prefect workers) need an API they can reach.

    Its ``env`` is for subprocesses; the test process points at it with
    ``tests.helpers.on_prefect_api``, which also drains Prefect's EventsWorker.
    """
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-server-home"))
    try:
        yield server
    finally:
        server.stop()


def _end_runs_left_open() -> None:
    """What interpreter exit would do for runs tests opened outside a flow run, done
    while the servers still answer (at exit they are gone, and so is pytest's stderr)."""
    from tracking_tasks.tasks._task import end_left_open

    end_left_open()


@pytest.fixture(scope="session")
def sqlite_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` process: SQLite backend, served artifacts, loopback port."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        _end_runs_left_open()
        server.stop()


@pytest.fixture(scope="session")
def workspace_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server --enable-workspaces` holding workspaces ``team-a`` and
    ``team-b`` (``tests.servers.WORKSPACES``); requests without one go to ``default``."""
    server = start_workspace_mlflow_server(tmp_path_factory.mktemp("mlflow-workspaces"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL 16 (pgserver wheel) on a loopback port, stopped at session end."""
    server = start_postgres_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[MlflowServer]:
    """A real `mlflow server` whose backend store is a fresh PostgreSQL database."""
    server = start_mlflow_server(
        tmp_path_factory.mktemp("mlflow-server-postgres"),
        backend_store_uri=postgres_server.create_database("mlflow_tests"),
    )
    try:
        yield server
    finally:
        _end_runs_left_open()
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(request: pytest.FixtureRequest) -> MlflowServer:
    """The `mlflow server` of this test's backend: SQLite unless ``backends`` made it
    ``[postgres]`` (see the module docstring)."""
    backend = getattr(request, "param", BACKENDS[0])
    return request.getfixturevalue(f"{backend}_mlflow_server")  # type: ignore[no-any-return]


@pytest.fixture
def rdb_storage(mlflow_server: MlflowServer, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLAlchemy database (an Optuna study's storage) on this test's backend:
    a SQLite file, or a new database in the session's PostgreSQL."""
    if not mlflow_server.backend_store_uri.startswith("postgresql"):
        return f"sqlite:///{tmp_path / 'storage.db'}"
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    return postgres.create_database("storage_" + os.urandom(6).hex())


#: The one workspace name the Azure stand-in answers with an azureml:// URI, and the one
#: it answers with the session's real MLflow server (so a whole flow can run through it).
AZURE_WORKSPACE = "ws-azure"
AZURE_LOCAL_WORKSPACE = "ws-local"
AZUREML_URI = (
    "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/sub-0000/resourceGroups/"
    "rg-ml/providers/Microsoft.MachineLearningServices/workspaces/ws-azure"
)


@pytest.fixture(scope="session")
def azure_standin(
    tmp_path_factory: pytest.TempPathFactory, sqlite_mlflow_server: MlflowServer
) -> Iterator[AzureStandin]:
    """A TLS stand-in of the Azure ML management endpoint the real MLClient calls."""
    standin = start_azure_standin(
        tmp_path_factory.mktemp("azure-standin"),
        token="tt-test-token-" + os.urandom(8).hex(),
        workspaces={AZURE_WORKSPACE: AZUREML_URI, AZURE_LOCAL_WORKSPACE: sqlite_mlflow_server.url},
    )
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture(scope="session")
def auth_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMlflowServer]:
    """MLflow's own basic-auth server: anonymous requests are refused."""
    server = start_auth_mlflow_server(
        tmp_path_factory.mktemp("mlflow-auth-server"), password="tt-pw-" + os.urandom(12).hex()
    )
    try:
        yield server
    finally:
        server.stop()


def _fluent_state() -> tuple[dict[str, str], str | None]:
    env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    return env, mlflow.tracking._tracking_service.utils._tracking_uri


def _restore_fluent_state(env: dict[str, str]) -> None:
    mlflow.set_tracking_uri(None)  # also unsets MLFLOW_TRACKING_URI
    mlflow.tracking.fluent._active_experiment_id = None
    for name in [n for n in os.environ if n.startswith("MLFLOW_")]:
        del os.environ[name]
    os.environ.update(env)


@pytest.fixture
def fluent_reset() -> Iterator[None]:
    """For tests whose code points the fluent API (setup_mlflow does): undo it after."""
    env, _ = _fluent_state()
    yield
    _restore_fluent_state(env)


@pytest.fixture
def tracking_config(
    mlflow_server: MlflowServer, request: pytest.FixtureRequest, fluent_reset: None
) -> TrackingConfig:
    """A TrackingConfig for the real server, with an experiment of this test's own."""
    name = re.sub(r"[^\w.-]+", "-", request.node.nodeid)[-200:]
    return TrackingConfig(experiment_name=name, tracking_uri=mlflow_server.url)


@pytest.fixture(autouse=True)
def leak_guard() -> Iterator[None]:
    """Fail any test that leaves an active MLflow run or changed MLFLOW_* variables behind.

    Declared autouse, it is set up before and torn down after the test's own fixtures,
    so fixtures such as ``fluent_reset`` have cleaned up by the time it checks.
    """
    env_before, uri_before = _fluent_state()
    yield
    problems = []
    active = mlflow.active_run()
    if active is not None:
        problems.append(f"left MLflow run {active.info.run_id} active")
        while mlflow.active_run() is not None:
            mlflow.end_run()
    env_after, uri_after = _fluent_state()
    if env_after != env_before:
        changed = sorted(set(env_after.items()) ^ set(env_before.items()))
        problems.append(
            f"changed MLFLOW_* environment variables: {sorted({k for k, _ in changed})}"
        )
    if uri_after != uri_before:
        problems.append(f"left the fluent tracking URI at {uri_after!r}")
    if problems:
        _restore_fluent_state(env_before)
        pytest.fail("test leaked MLflow state: " + "; ".join(problems))


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def module_proxy(mlflow_server: MlflowServer) -> Iterator[FaultProxy]:
    """tests/faultproxy.py in front of the session's mlflow server, one per test module:
    each test configures what it injects or records (``configure`` resets the counters)."""
    proxy = start_fault_proxy(mlflow_server.url)
    try:
        yield proxy
    finally:
        proxy.stop()
