"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect import flow

from tests.helpers import experiment_runs
from tracking_tasks import TrackingConfig, create_mlflow_run, setup_mlflow


def _python_blocks(repo_root: Path) -> list[str]:
    text = (repo_root / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_quick_start_runs(
    repo_root: Path, tracking_config: TrackingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick_start = _python_blocks(repo_root)[0]
    assert "mlflow_state_hooks" in quick_start
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tracking_config.tracking_uri))
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(quick_start, "README.md", "exec"), namespace)
    namespace["train"]()  # type: ignore[operator]
    (run,) = experiment_runs(tracking_config.model_copy(update={"experiment_name": "ner"}))[-1:]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"} and run.data.metrics == {"f1": 0.91}
    assert run.data.tags["stage"] == "training"


def test_run_logger_example_runs(repo_root: Path, tracking_config: TrackingConfig) -> None:
    block = next(b for b in _python_blocks(repo_root) if "RunLogger(run)" in b)
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(block, "README.md", "exec"), namespace)
    fit = namespace["fit"]

    @flow
    def pipeline() -> str:
        run = create_mlflow_run(setup_mlflow(tracking_config), run_name="fit")
        fit(run, 7)  # type: ignore[operator]
        return run.run_id

    run_id = pipeline()
    client = MlflowClient(tracking_config.tracking_uri)
    assert len(client.get_metric_history(run_id, "loss")) == 7
    data = client.get_run(run_id).data
    assert data.params == {"epochs": "7"} and data.tags["phase"] == "done"
    client.set_terminated(run_id)


def test_artifacts_example_runs(
    repo_root: Path,
    tracking_config: TrackingConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    block = next(b for b in _python_blocks(repo_root) if "log_best_checkpoint" in b)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tracking_config.tracking_uri))
    checkpoint = tmp_path / "mnt" / "step-900"
    (checkpoint / "optimizer").mkdir(parents=True)
    (checkpoint / "model.bin").write_bytes(bytes(range(256)) * 4096)
    (checkpoint / "optimizer" / "state.bin").write_bytes(b"adam" * 1000)
    configs = tmp_path / "code" / "configs"
    configs.mkdir(parents=True)
    (configs / "train.yaml").write_text("lr: 0.1\n")

    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(block, "README.md", "exec"), namespace)
    run_id = namespace["train"](str(checkpoint), config_dir=str(configs))  # type: ignore[operator]
    restored = namespace["restore"](run_id, str(tmp_path / "restored"))  # type: ignore[operator]

    assert restored == (tmp_path / "restored" / "checkpoint").resolve()
    for name in ("model.bin", "optimizer/state.bin"):
        assert (restored / name).read_bytes() == (checkpoint / name).read_bytes()
    assert (tmp_path / "restored" / "config" / "train.yaml").read_text() == "lr: 0.1\n"
    run = MlflowClient(tracking_config.tracking_uri).get_run(run_id)
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize("tracker", ["track_sweep", "track_training", "track_benchmark",
                                     "track_conversion"])  # fmt: skip
def test_tracker_examples_run(
    tracker: str,
    repo_root: Path,
    tracking_config: TrackingConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block = next(b for b in _python_blocks(repo_root) if f"import {tracker}" in b or
                 f", {tracker}" in b)  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tracking_config.tracking_uri))
    exec(compile(block, "README.md", "exec"), {"__name__": "__main__"})
    runs = experiment_runs(tracking_config.model_copy(update={"experiment_name": "Default"}))
    stage = tracker.removeprefix("track_")
    mine = [r for r in runs if r.data.tags.get("stage") == stage]
    assert mine and mine[-1].info.status == "FINISHED"


def test_every_python_block_compiles(repo_root: Path) -> None:
    blocks = _python_blocks(repo_root)
    assert any("ml_client=ml_client" in b for b in blocks)  # the Azure ML quick start
    assert any("MlflowCredentials.load" in b for b in blocks)
    for block in blocks:
        compile(block, "README.md", "exec")


def test_finding_runs_example_runs(
    repo_root: Path, tracking_config: TrackingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = next(b for b in _python_blocks(repo_root) if "def pick_best" in b)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tracking_config.tracking_uri))
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(block, "README.md", "exec"), namespace)
    namespace["sweep"]()  # type: ignore[operator]
    assert namespace["pick_best"]() == (2, "lr=0.1")  # type: ignore[operator]
