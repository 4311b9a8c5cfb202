"""TrackingConfig: validation at construction, environment and YAML loading."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tracking_tasks import TrackingConfig
from tracking_tasks.errors import CredentialInURIError, TrackingConfigError
from tracking_tasks.urls import redact_uri


def test_valid_config_keeps_values() -> None:
    cfg = TrackingConfig(
        experiment_name=" ner ",
        tracking_uri="http://127.0.0.1:5000",
        registry_uri="sqlite:////tmp/registry.db",
        tags={"team": "nlp"},
        artifact_location="/tmp/artifacts",
    )
    assert cfg.experiment_name == "ner"
    assert cfg.tracking_uri == "http://127.0.0.1:5000"
    assert cfg.tags == {"team": "nlp"}
    with pytest.raises(ValidationError):
        cfg.experiment_name = "other"  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"experiment_nme": "x"}, "experiment_nme", "Extra inputs are not permitted"),
        ({"experiment_name": "   "}, "experiment_name", "empty"),
        ({"experiment_name": "x" * 501}, "experiment_name", "at most 500"),
        ({"tracking_uri": "ftp://host/x"}, "tracking_uri", "unknown scheme"),
        ({"tracking_uri": "http://"}, "tracking_uri", "no host"),
        ({"tracking_uri": "file:///tmp/mlruns"}, "tracking_uri", "sqlite:///"),
        ({"tracking_uri": "./mlruns"}, "tracking_uri", "MLFLOW_ALLOW_FILE_STORE"),
        ({"registry_uri": "file:///tmp/reg"}, "registry_uri", "file store"),
        ({"tags": {"bad key!": "v"}}, "tags", "characters MLflow refuses"),
        ({"tags": {"k": "v" * 8001}}, "tags", "8000"),
    ],
)
def test_invalid_values_fail_naming_the_field(kwargs: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrackingConfig(**kwargs)
    message = str(info.value)
    assert field in message
    assert words in message


def test_file_store_allowed_when_mlflow_allows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert TrackingConfig(tracking_uri="file:///tmp/mlruns").tracking_uri == "file:///tmp/mlruns"


@pytest.mark.parametrize(
    "uri",
    [
        "http://alice:s3cr3t-pw@127.0.0.1:5000",
        "postgresql://ml:s3cr3t-pw@db.local/mlflow",
        "https://mlflow.example.com/?token=s3cr3t-pw",
    ],
)
def test_credentials_in_uri_are_refused_without_echoing_them(uri: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrackingConfig(tracking_uri=uri)
    assert "s3cr3t-pw" not in str(info.value)
    assert "MLFLOW_TRACKING" in str(info.value) or "environment" in str(info.value)
    assert isinstance(info.value.errors()[0]["ctx"]["error"], CredentialInURIError)


def test_redact_uri_hides_password_and_token() -> None:
    assert redact_uri("postgresql://ml:pw@db/x") == "postgresql://ml:***@db/x"
    assert "abc" not in redact_uri("https://h/?token=abc&x=1")
    assert redact_uri("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_from_env_reads_mlflow_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    cfg = TrackingConfig.from_env()
    assert (cfg.tracking_uri, cfg.experiment_name) == ("http://127.0.0.1:5999", "from-env")
    assert TrackingConfig.from_env(experiment_name="override").experiment_name == "override"


def test_from_env_invalid_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///tmp/mlruns")
    with pytest.raises(ValidationError, match="tracking_uri"):
        TrackingConfig.from_env()


def test_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "tracking.yaml"
    path.write_text(
        "experiment_name: ner\ntracking_uri: http://127.0.0.1:5000\ntags:\n  team: nlp\n"
    )
    cfg = TrackingConfig.from_yaml(path)
    assert cfg == TrackingConfig(
        experiment_name="ner", tracking_uri="http://127.0.0.1:5000", tags={"team": "nlp"}
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("- a\n- b\n", "must hold a mapping"),
        ("experiment_name: [unclosed\n", "not valid YAML"),
        ("experimentname: x\n", "experimentname"),
        ("tracking_uri: file:///tmp/x\n", "tracking_uri"),
    ],
)
def test_from_yaml_errors_name_file_and_problem(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TrackingConfigError) as info:
        TrackingConfig.from_yaml(path)
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_from_yaml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TrackingConfigError, match="does not exist"):
        TrackingConfig.from_yaml(tmp_path / "nope.yaml")
