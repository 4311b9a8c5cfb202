"""Small helpers the tests share: reading what landed in MLflow and Prefect."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from prefect import flow
from prefect.client.orchestration import get_client

from tracking_tasks import (
    MlflowCredentials,
    TrackingConfig,
    create_mlflow_run,
    log_metrics,
    log_params,
    mlflow_state_hooks,
    setup_mlflow,
    upload_artifacts,
)


def experiment_runs(config: TrackingConfig) -> list[Run]:
    """Every run (active or deleted) in the config's experiment, oldest first."""
    assert config.tracking_uri is not None
    client = MlflowClient(config.tracking_uri)
    experiment = client.get_experiment_by_name(str(config.experiment_name))
    if experiment is None:
        return []
    return list(
        client.search_runs(
            [experiment.experiment_id],
            run_view_type=ViewType.ALL,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
        )
    )


def flow_run_artifacts(flow_run_id: UUID | str) -> list[Any]:
    """Prefect artifacts created under a flow run (after the background writes land)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tracking_tasks.tasks._run_memory import RUN_MEMORY

    assert RUN_MEMORY.writer.flush(30), "the background Prefect writes did not finish"

    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run_id))])
                )
            )
        )


def task_run_states(flow_run_id: UUID | str, task_name_prefix: str) -> list[list[str]]:
    """The state names each task run of a flow run went through, oldest first."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))]))
        )
        histories = []
        for task_run in task_runs:
            if task_run.name.startswith(task_name_prefix):
                states = client.read_task_run_states(task_run.id)
                histories.append([s.name for s in sorted(states, key=lambda s: s.timestamp)])
        return histories


#: Every token minted in this process (the secret-grep looks for each).
MINTED: list[str] = []


def mint_test_token() -> tuple[str, float]:
    """A token provider for the token-rotation tests (``token_provider="tests.helpers:..."``).

    Signs a token with ``$TT_TEST_TOKEN_KEY`` that tests/faultproxy.py's token gate accepts
    for ``$TT_TEST_TOKEN_LIFETIME`` seconds; returns ``(token, expires_at)``.
    """
    from tests.faultproxy import mint_token

    token, expires = mint_token(
        os.environ["TT_TEST_TOKEN_KEY"], float(os.environ["TT_TEST_TOKEN_LIFETIME"])
    )
    MINTED.append(token)
    return token, expires


def mint_lying_test_token() -> tuple[str, float]:
    """Like :func:`mint_test_token`, but claims an hour of life: only a 401 shows it expired."""
    token, _ = mint_test_token()
    return token, time.time() + 3600


def prefect_texts(flow_run_ids: list[str]) -> dict[str, str]:
    """Everything Prefect holds about these flow runs: runs, task runs, logs, artifacts."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    ids = [UUID(str(i)) for i in flow_run_ids]
    texts: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        texts["flow runs"] = "".join(client.read_flow_run(i).model_dump_json() for i in ids)
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
        )
        texts["task runs"] = "".join(t.model_dump_json() for t in task_runs)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        texts["prefect logs"] = "\n".join(log.message for log in logs)
    texts["artifacts"] = "".join(
        a.model_dump_json() for i in flow_run_ids for a in flow_run_artifacts(i)
    )
    return texts


def files_with_secrets(secrets: list[str]) -> list[str]:
    """Files under PREFECT_HOME (results, caches) and Prefect's database holding a secret."""
    from prefect.settings import get_current_settings

    roots = [Path(os.environ["PREFECT_HOME"])]
    db_url = str(get_current_settings().server.database.connection_url.get_secret_value())
    if ":///" in db_url:
        roots.append(Path(db_url.split(":///", 1)[1]).parent)  # the db, its -wal and -shm
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found.extend(f"{path}: {i}" for i, s in enumerate(secrets) if s.encode() in data)
    return found


def log_loss_for(run: Any, seconds: float) -> int:
    """Inside a flow: log a ``loss`` point every 0.25 s for ``seconds`` (the token-rotation
    tests outlive their tokens this way); returns how many points were logged."""
    from tracking_tasks import log_metrics

    deadline, step = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        log_metrics(run, {"loss": 1.0 / (step + 1)}, step=step)
        step += 1
        time.sleep(0.25)
    return step


@contextlib.contextmanager
def on_prefect_api(api_url: str) -> Iterator[None]:
    """Point this process at another Prefect API for a while, events included.

    ``temporary_settings`` alone is not enough: Prefect's ``EventsWorker`` is one per
    process whatever the API URL, and its client keeps the URL it was built with, so task
    run states (sent as events) would go to whichever API the worker first met. It is
    drained before and after, so each API gets its own.
    """
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    EventsWorker.drain_all(timeout=30)
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):  # type: ignore[dict-item]
            yield
            EventsWorker.drain_all(timeout=30)
    finally:
        EventsWorker.drain_all(timeout=30)


@flow(**mlflow_state_hooks())
def credentials_flow(
    block: str | None, tracking_uri: str | None, experiment: str, artifact_dir: str
) -> dict[str, str]:
    """The credentials tests' flow (in this process and in tests/credentials_worker.py):
    a saved block's name (or a plain URI) in, one run with params, a metric and files."""
    credentials = MlflowCredentials.load(block) if block else None
    ctx = setup_mlflow(
        experiment_name=experiment, tracking_uri=tracking_uri, credentials=credentials
    )
    run = create_mlflow_run(ctx, run_name="train", config={"experiment": experiment})
    log_params(run, {"experiment": experiment})
    log_metrics(run, {"f1": 0.5}, step=0)
    upload_artifacts(run, artifact_dir, "outputs")
    return {"run_id": run.run_id, "tracking_uri": ctx.tracking_uri}


def prefect_api(
    url: str, path: str, body: dict[str, Any] | None = None, method: str = "POST"
) -> Any:
    """Call a Prefect server's REST API (``url`` ends in ``/api``) and return its JSON.

    A busy server (its SQLite store locked) answers 503: wait and retry, as Prefect's own
    client does."""
    request = urllib.request.Request(
        f"{url}{path}",
        data=None if method == "GET" else json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    for attempt in range(20):
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 503) or attempt == 19:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def prefect_cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run ``prefect <args>`` in ``cwd``; assert it succeeded; return what it printed."""
    out = subprocess.run(
        [sys.executable, "-m", "prefect", *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout
