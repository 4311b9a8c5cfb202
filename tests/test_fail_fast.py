"""Fail fast where nothing can succeed: a server that cannot be reached, a parent run
that cannot hold a nested one. Transient faults on a server that answered keep retrying."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import experiment_runs
from tests.servers import (
    MlflowServer,
    Resetter,
    free_port,
    make_self_signed_cert,
    start_fault_proxy,
)
from tracking_tasks import TrackingConfig, create_mlflow_run, find_best_run, setup_mlflow
from tracking_tasks.errors import (
    ExperimentSetupError,
    InvalidArgumentError,
    InvalidParentRunError,
    RunSearchError,
    TrackingTasksError,
)
from tracking_tasks.handles import RunRef

#: The issue's bound: a clear error within 15 s (MLflow's retries took 280 s).
FAST = 15.0


def _setup_fails(uri: str, match: str) -> ExperimentSetupError:
    started = time.monotonic()
    with pytest.raises(ExperimentSetupError, match=match) as info:
        setup_mlflow.fn(experiment_name="x", tracking_uri=uri)
    elapsed = time.monotonic() - started
    assert elapsed < FAST, f"took {elapsed:.1f}s"
    assert uri in str(info.value)  # names the URI
    return info.value


def test_connection_refused_fails_fast() -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    _setup_fails(uri, "could not reach the tracking server")


def test_unknown_host_fails_fast() -> None:
    _setup_fails("http://tt-no-such-host.invalid:5000", "does not resolve")


@pytest.fixture
def untrusted_tls_server(tmp_path: Path) -> Iterator[str]:
    """A real HTTPS server on loopback whose self-signed certificate nobody trusts."""
    cert, key = make_self_signed_cert(tmp_path / "tls")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_untrusted_tls_fails_fast(untrusted_tls_server: str) -> None:
    error = _setup_fails(untrusted_tls_server, "TLS")
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH" in str(error)


def test_a_server_that_answered_keeps_its_bounded_retries(
    mlflow_server: MlflowServer, fluent_reset: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = start_fault_proxy(mlflow_server.url)
    try:
        setup_mlflow.fn(experiment_name="blips", tracking_uri=proxy.url)
        proxy.configure(fault="503", first=1, match="experiments/get-by-name")
        ctx = setup_mlflow.fn(experiment_name="blips", tracking_uri=proxy.url)  # retried
        assert proxy.stats()["injected"] == 1 and ctx.experiment_name == "blips"
    finally:
        proxy.stop()


def test_a_parent_that_does_not_exist_is_refused_before_a_run_is_created(
    tracking_config: TrackingConfig,
) -> None:
    ctx = setup_mlflow.fn(tracking_config)
    with pytest.raises(InvalidParentRunError, match="does not exist"):
        create_mlflow_run.fn(ctx, "child", parent_run_id="0" * 32)
    assert experiment_runs(tracking_config) == []
    assert issubclass(InvalidParentRunError, InvalidArgumentError | TrackingTasksError)


def test_a_parent_in_another_experiment_or_server_is_refused(
    tracking_config: TrackingConfig,
) -> None:
    ctx = setup_mlflow.fn(tracking_config)
    other = setup_mlflow.fn(tracking_config.model_copy(update={"experiment_name": "elsewhere"}))
    parent = create_mlflow_run.fn(other, "parent")
    try:
        with pytest.raises(InvalidParentRunError, match="experiment"):
            create_mlflow_run.fn(ctx, "child", parent_run_id=parent)  # a RunRef: no request
        with pytest.raises(InvalidParentRunError, match="experiment"):
            create_mlflow_run.fn(ctx, "child", parent_run_id=parent.run_id)  # an id: read
        on_another_server = RunRef.model_validate(
            {**parent.model_dump(), "tracking_uri": "http://127.0.0.1:1", "experiment_id": "0"}
        )
        with pytest.raises(InvalidParentRunError, match="lives on"):
            create_mlflow_run.fn(ctx, "child", parent_run_id=on_another_server)
        assert experiment_runs(tracking_config) == []
        nested = create_mlflow_run.fn(other, "child", parent_run_id=parent)  # its own: fine
        assert nested.parent_run_id == parent.run_id
        MlflowClient(nested.tracking_uri).set_terminated(nested.run_id)
    finally:
        MlflowClient(parent.tracking_uri).set_terminated(parent.run_id)


def test_a_finder_fails_at_one_probe_on_a_server_that_cannot_be_talked_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # few retries keep the old behaviour (7 retries, minutes) short to watch fail
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    server = Resetter()
    try:
        with pytest.raises(RunSearchError, match="could not reach the tracking server") as info:
            find_best_run("f1", "x", tracking_uri=server.url)  # outside a flow: the plain call
    finally:
        server.close()
    assert server.accepted == 1  # one probe, no retry
    assert server.url in str(info.value)
