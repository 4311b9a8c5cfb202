"""MLflow's own model server serves what the library registers: `mlflow models serve -m
models:/<name>@champion --env-manager local` on loopback answers /invocations as the model
does in process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier

from tests.servers import MlflowServer, free_port, stop_process_group, wait_http_ok
from tracking_tasks import TrackingConfig, ops

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # `mlflow models serve` takes 15-30 s to answer /ping here
def test_mlflow_models_serve_answers_like_the_champion_in_process(
    tracking_config: TrackingConfig, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    classifier = SGDClassifier(loss="log_loss", random_state=0).fit(x, y)
    spec = tmp_path / "linear_model.json"
    spec.write_text(
        json.dumps(
            {
                "coef": classifier.coef_.tolist(),
                "intercept": classifier.intercept_.tolist(),
                "classes": classifier.classes_.tolist(),
            }
        )
    )
    ctx = ops.setup_mlflow(tracking_config)
    run = ops.create_mlflow_run(ctx, "serve", idempotency_key=uuid.uuid4().hex)
    # the pipeline's converted model: pyfunc from code (flows/linear_pyfunc.py), numpy only
    model = ops.log_model(
        run,
        REPO_ROOT / "flows" / "linear_pyfunc.py",
        "served",
        input_example=x[:5],
        save_kwargs={"artifacts": {"linear_model": str(spec)}},
        extra_pip_requirements=[f"numpy=={np.__version__}"],
        metrics={"test_accuracy": float(classifier.score(x, y))},
    )
    ops.end_mlflow_run(run)
    name = f"served-{uuid.uuid4().hex[:8]}"
    version = ops.register_model(model, name)
    assert ops.promote_model(version, "test_accuracy").promoted
    in_process = ops.load_model(f"models:/{name}@champion", tracking_uri=mlflow_server.url)
    expected = np.asarray(in_process.predict(x[:64])).tolist()
    assert expected == classifier.predict(x[:64]).tolist()

    port = free_port()
    venv_bin = str(Path(sys.executable).parent)  # it execs `uvicorn` from PATH
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=mlflow_server.url, PATH=f"{venv_bin}:{env.get('PATH', '')}")
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "models", "serve",
            "-m", f"models:/{name}@champion", "--env-manager", "local",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        cwd=tmp_path, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/ping", 240, server)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from exc
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": x[:64].tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            served = json.loads(answer.read())["predictions"]
        assert served == expected
    finally:
        stop_process_group(server)
