"""The README's quick start runs as written; its other examples live in docs/ and run in
test_docs.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tracking_tasks import RunRef, TrackingConfig

STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


def _python_blocks(repo_root: Path) -> list[str]:
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_quick_start_runs(
    repo_root: Path, tracking_config: TrackingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick_start = _python_blocks(repo_root)[0]
    assert "mlflow_state_hooks" in quick_start
    # the startup timeout is raised before Prefect is first imported
    assert quick_start.index(STARTUP_TIMEOUT) < quick_start.index("from prefect")
    monkeypatch.delenv(STARTUP_TIMEOUT, raising=False)  # set by the quick start; undone after
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tracking_config.tracking_uri))

    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(quick_start, "README.md", "exec"), namespace)
    run = namespace["train"]()  # type: ignore[operator]

    assert isinstance(run, RunRef) and run.tracking_uri == tracking_config.tracking_uri
    client = MlflowClient(tracking_config.tracking_uri)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert client.get_experiment(stored.info.experiment_id).name == "ner"
    assert stored.data.params == {"lr": "0.1"}
    assert stored.data.metrics == {"loss": 0.3, "f1": 0.91}
    assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [0.9, 0.5, 0.3]
    assert stored.data.tags["stage"] == "training"
    assert stored.data.tags["prefect.final_state"] == "Completed"


def test_every_python_block_compiles(repo_root: Path) -> None:
    blocks = _python_blocks(repo_root)
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")


def test_links_into_the_repository_exist(repo_root: Path) -> None:
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\((?!https?://)([^)#\s]+)", text)
    assert any(t.startswith("docs/guides/") for t in targets)
    missing = [t for t in targets if not (repo_root / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_stays_short(repo_root: Path) -> None:
    """Reference material belongs in docs/, where its examples run."""
    assert len((repo_root / "README.md").read_text(encoding="utf-8").splitlines()) <= 200
