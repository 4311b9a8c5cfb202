"""The library's tasks called outside a flow run: their plain function, in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.servers import MlflowServer

SCRIPT = """
import sys
import tracking_tasks as tt

ctx = tt.setup_mlflow(experiment_name="outside-a-flow", tracking_uri=sys.argv[1])
ended = tt.create_mlflow_run(ctx, run_name="ended")
tt.log_metrics(ended, {"f1": 0.5})
tt.end_mlflow_run(ended)
left = tt.create_mlflow_run(ctx, run_name="left-open")
tt.log_params(left, {"lr": 0.1})
print("RUNS", ended.run_id, left.run_id, flush=True)
if sys.argv[2] == "raise":
    raise RuntimeError("the script failed")
"""


@pytest.mark.parametrize(("how", "status"), [("return", "FINISHED"), ("raise", "FAILED")])
def test_tasks_outside_a_flow_are_plain_calls_and_leave_no_run_running(
    mlflow_server: MlflowServer, tmp_path: Path, how: str, status: str
) -> None:
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = subprocess.run(
        [sys.executable, str(script), mlflow_server.url, how],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=tmp_path,
    )
    text = out.stdout + out.stderr
    assert (out.returncode == 0) == (how == "return"), text
    ended_id, left_id = next(
        line.split()[1:] for line in out.stdout.splitlines() if line.startswith("RUNS")
    )
    # no Prefect start-up: no temporary server (no database in PREFECT_HOME), no task run
    # logs it could not send
    assert not (home / "prefect.db").exists(), text
    assert "temporary server" not in text.lower(), text
    assert "without a flow run id" not in text, text
    client = MlflowClient(mlflow_server.url)
    assert client.get_run(ended_id).info.status == "FINISHED"
    assert client.get_run(ended_id).data.metrics == {"f1": 0.5}
    left = client.get_run(left_id)
    assert left.info.status == status and left.data.params == {"lr": "0.1"}
    # the user is told which run was ended, and how to end it next time
    told = [line for line in text.splitlines() if left_id in line and "end_mlflow_run" in line]
    assert len(told) == 1 and status in told[0], text
    assert not any(ended_id in line and "exit" in line for line in text.splitlines()), text
