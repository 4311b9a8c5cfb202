"""The tracking-tasks console script, run as a real subprocess against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from tests.servers import MlflowServer, Resetter, free_port


@dataclass
class Runs:
    url: str
    experiment: str
    ids: dict[str, str]


@pytest.fixture(scope="module")
def runs(mlflow_server: MlflowServer) -> Runs:
    client = MlflowClient(mlflow_server.url)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    exp = client.create_experiment(name)
    ids = {}
    for k, (stage, f1) in enumerate([("hpo", 0.7), ("hpo", 0.9), ("train", 0.95)]):
        run = client.create_run(exp, start_time=1_700_000_000_000 + k, run_name=f"run-{k}")
        client.log_batch(run.info.run_id, metrics=[Metric("f1", f1, 0, 0)])
        client.set_tag(run.info.run_id, "stage", stage)
        client.set_terminated(run.info.run_id)
        ids[f"run-{k}"] = run.info.run_id
    return Runs(url=mlflow_server.url, experiment=name, ids=ids)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "tracking_tasks.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_find_json_and_table(runs: Runs) -> None:
    out = cli(
        "runs", "find", "-e", runs.experiment, "--filter", "tags.stage = 'hpo'",
        "--order-by", "metrics.f1 DESC", "--format", "json", "--tracking-uri", runs.url,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert [r["run_id"] for r in found] == [runs.ids["run-1"], runs.ids["run-0"]]
    assert found[0]["metrics"] == {"f1": 0.9} and found[0]["url"].startswith(runs.url)
    # the tracking URI from the environment, table output
    table = cli("runs", "find", "-e", runs.experiment, env={"MLFLOW_TRACKING_URI": runs.url})
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["RUN", "ID", "NAME"] and len(rows) == 3
    assert rows[0].split()[:3] == [runs.ids["run-2"], "run-2", "FINISHED"]


def test_best_and_show(runs: Runs) -> None:
    best = cli("runs", "best", "f1", "-e", runs.experiment, "--filter", "tags.stage = 'hpo'",
               "--tracking-uri", runs.url, "--format", "json")  # fmt: skip
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["run_id"] == runs.ids["run-1"]
    none = cli("runs", "best", "nothing", "-e", runs.experiment, "--tracking-uri", runs.url)
    assert none.returncode == 1 and "no FINISHED run has metric 'nothing'" in none.stderr
    show = cli("runs", "show", runs.ids["run-2"], "--tracking-uri", runs.url)
    assert show.returncode == 0, show.stderr
    assert f"run id:      {runs.ids['run-2']}" in show.stdout
    assert "  f1 = 0.95" in show.stdout and "  stage = train" in show.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "find", "--filter", "metrics.f1 >"], "malformed filter string 'metrics.f1 >'"),
        (["runs", "find", "-e", "no-such-exp"], "experiment 'no-such-exp' does not exist"),
        (["runs", "show", "0" * 32], f"MLflow run '{'0' * 32}' does not exist"),
        (["runs", "best", "f1", "--mode", "up"], "invalid choice: 'up'"),
        (["runs", "find", "--tracking-uri", "http://me:hunter2@127.0.0.1:1"], "carries a password"),
    ],
)
def test_user_errors_exit_2_with_one_line(runs: Runs, args: list[str], message: str) -> None:
    uses_server = "--filter" not in args and "--tracking-uri" not in args
    out = cli(*args, *(["--tracking-uri", runs.url] if uses_server else []))
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "hunter2" not in out.stderr + out.stdout


def test_help_reads_well() -> None:
    out = subprocess.run(
        [Path(sys.executable).parent / "tracking-tasks", "runs", "find", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    for flag in ("--filter", "--order-by", "--format {table,json}", "--tracking-uri", "-e"):
        assert flag in out.stdout


def test_malformed_filter_sends_nothing() -> None:
    out = cli("runs", "find", "--filter", "tags.a = b", "--tracking-uri",
              f"http://127.0.0.1:{free_port()}")  # fmt: skip
    assert out.returncode == 2 and "not quoted" in out.stderr


# MLflow's client retries such a failure itself (7 times over about 4 minutes by
# default); two retries with no backoff keep the old behaviour short to watch fail
FEW_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}


@pytest.mark.parametrize(
    "command",
    [
        ["runs", "find", "-e", "x"],
        ["runs", "best", "f1", "-e", "x"],
        ["runs", "show", "0" * 32],
        ["runs", "reconcile", "--dry-run"],
    ],
    ids=["find", "best", "show", "reconcile"],
)
def test_a_server_that_cannot_be_talked_to_fails_at_one_probe_without_retries(
    command: list[str],
) -> None:
    server = Resetter()
    try:
        out = cli(*command, "--tracking-uri", server.url, env=FEW_RETRIES)
    finally:
        server.close()
    assert out.returncode == 3, out.stderr
    assert server.accepted == 1, out.stderr  # one probe, no retry
    assert "could not reach the tracking server" in out.stderr and server.url in out.stderr
    assert "--tracking-uri (else $MLFLOW_TRACKING_URI)" in out.stderr  # the CLI's terms
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_an_unknown_host_fails_at_once_naming_the_flag() -> None:
    out = cli("runs", "find", "-e", "x", "--tracking-uri", "http://tt-no-such-host.invalid:5000")
    assert out.returncode == 3, out.stderr
    assert "does not resolve" in out.stderr and "the host in --tracking-uri" in out.stderr


def test_hints_speak_the_command_lines_terms(runs: Runs) -> None:
    missing = cli("runs", "find", "-e", "no-such-exp", "--tracking-uri", runs.url)
    assert missing.returncode == 2
    assert "check -e/--experiment" in missing.stderr and "--tracking-uri" in missing.stderr
    schemeless = runs.url.removeprefix("http://")
    bare = cli("runs", "find", "-e", runs.experiment, "--tracking-uri", schemeless)
    assert bare.returncode == 2
    assert f"--tracking-uri {schemeless!r} has no scheme" in bare.stderr
    assert f"did you mean 'http://{schemeless}'?" in bare.stderr


def test_runs_best_says_did_you_mean_from_the_runs_metrics(runs: Runs) -> None:
    typo = cli("runs", "best", "f_1", "-e", runs.experiment, "--tracking-uri", runs.url)
    assert typo.returncode == 1
    assert "no FINISHED run has metric 'f_1'; did you mean 'f1'?" in typo.stderr
    unknown = cli("runs", "best", "bleu", "-e", runs.experiment, "--tracking-uri", runs.url)
    assert unknown.returncode == 1 and "(the runs' metrics: f1)" in unknown.stderr


def test_a_filter_the_server_refuses_fails_before_any_request() -> None:
    server = Resetter()
    try:
        out = cli("runs", "find", "--filter", "tags.stage == 'sweep'", "--tracking-uri", server.url)
    finally:
        server.close()
    assert out.returncode == 2, out.stderr
    assert "writes equality as a single '='" in out.stderr
    assert server.accepted == 0  # nothing was sent
