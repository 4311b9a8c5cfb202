"""The configuration models: where to track (a URI or an Azure ML workspace), and under which experiment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tracking_tasks._validation import check_tags, check_workspace_name
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.urls import check_uri

#: The MLflow environment variable each field falls back to when neither argument nor
#: config sets it.
ENV_VARS = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "registry_uri": "MLFLOW_REGISTRY_URI",
    "experiment_name": "MLFLOW_EXPERIMENT_NAME",
    "workspace": "MLFLOW_WORKSPACE",
}
MAX_EXPERIMENT_NAME_LENGTH = 500


class AzureMLWorkspace(BaseModel):
    """An Azure ML workspace whose MLflow tracking URI ``setup_mlflow`` resolves.

    Plain identifiers only (no credential): safe to log, hash, persist and pass between
    tasks. The credential comes from ``DefaultAzureCredential`` or from the ``MLClient``
    you pass to ``setup_mlflow``.

    Args:
        subscription_id: The Azure subscription id.
        resource_group: The workspace's resource group.
        workspace_name: The workspace's name.

    Raises:
        pydantic.ValidationError: a field is empty or unknown.

    Example:
        >>> ws = AzureMLWorkspace(subscription_id="0000", resource_group="ml-rg",
        ...                       workspace_name="ml-ws")
        >>> ws.workspace_id
        '/subscriptions/0000/resourcegroups/ml-rg/workspaces/ml-ws'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscription_id: str = Field(description="Azure subscription id.", min_length=1)
    resource_group: str = Field(description="Resource group of the workspace.", min_length=1)
    workspace_name: str = Field(description="Azure ML workspace name.", min_length=1)

    @field_validator("subscription_id", "resource_group", "workspace_name")
    @classmethod
    def _check_part(cls, value: str, info: Any) -> str:
        value = value.strip()
        if not value or "/" in value:
            raise ValueError(f"{info.field_name} must be a non-empty name without '/'")
        return value

    @property
    def workspace_id(self) -> str:
        """The ``wsid`` that Azure ML studio links carry."""
        return (
            f"/subscriptions/{self.subscription_id}/resourcegroups/{self.resource_group}"
            f"/workspaces/{self.workspace_name}"
        )


class TrackingConfig(BaseModel):
    """Where and how to track: the input of :func:`~tracking_tasks.setup_mlflow`.

    Every field is optional; :func:`~tracking_tasks.setup_mlflow` fills what is unset
    from the environment and then from the embedded default (a SQLite store
    ``mlflow.db`` in the working directory, experiment ``Default``).

    Args:
        experiment_name: MLflow experiment to track under.
        tracking_uri: MLflow tracking URI (``http(s)://``, ``sqlite:///``, ``postgresql://``...).
        registry_uri: Model registry URI, when it differs from the tracking URI.
        tags: Tags put on every run created through this config.
        artifact_location: Artifact root for the experiment when it is created.
        azure_workspace: An Azure ML workspace; its MLflow tracking URI is resolved by
            ``setup_mlflow`` (needs ``pip install 'tracking-tasks[azure]'``). Exclusive
            with ``tracking_uri``.
        workspace: The MLflow workspace to track in, on a server started with
            ``mlflow server --enable-workspaces`` (``team-a``); None: the server's
            default. Exclusive with ``artifact_location`` (the server places a
            workspace's artifacts itself).

    Raises:
        pydantic.ValidationError: a field is invalid; the message names the field and the
            fix (an unknown field, a file-store URI, a password inside a URI...).

    Example:
        >>> cfg = TrackingConfig(experiment_name="ner", tracking_uri="http://127.0.0.1:5000")
        >>> cfg.experiment_name
        'ner'
    """

    # hide_input_in_errors: a rejected URI may carry a password; our messages show it redacted.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    experiment_name: str | None = Field(
        default=None, description="MLflow experiment name; created if missing."
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI. Never put a password in it: MLflow reads "
        "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD from the environment.",
    )
    registry_uri: str | None = Field(
        default=None, description="Model registry URI; defaults to the tracking URI."
    )
    tags: Annotated[dict[str, str], Field(description="Tags set on every run.")] = Field(
        default_factory=dict
    )
    artifact_location: str | None = Field(
        default=None, description="Artifact root used when the experiment is created."
    )
    azure_workspace: AzureMLWorkspace | None = Field(
        default=None,
        description="Azure ML workspace whose MLflow tracking URI setup_mlflow resolves; "
        "exclusive with tracking_uri.",
    )

    workspace: str | None = Field(
        default=None,
        description="MLflow workspace on a server with --enable-workspaces; None: the default.",
    )

    @field_validator("workspace")
    @classmethod
    def _check_workspace(cls, value: str | None) -> str | None:
        return None if value is None else check_workspace_name(value)

    @field_validator("experiment_name")
    @classmethod
    def _check_experiment_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("experiment_name is empty: give a name such as 'ner'")
        if len(value) > MAX_EXPERIMENT_NAME_LENGTH:
            raise ValueError(
                f"experiment_name is {len(value)} characters; MLflow allows at most "
                f"{MAX_EXPERIMENT_NAME_LENGTH}"
            )
        return value

    @field_validator("tracking_uri", "registry_uri")
    @classmethod
    def _check_uri(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else check_uri(value, info.field_name)

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: dict[str, str]) -> dict[str, str]:
        return check_tags(value)

    @model_validator(mode="after")
    def _one_location(self) -> TrackingConfig:
        if self.azure_workspace is not None and self.tracking_uri is not None:
            raise ValueError(
                "give either tracking_uri or azure_workspace, not both: the workspace's "
                "tracking URI is resolved from Azure"
            )
        if self.workspace is not None and self.artifact_location is not None:
            raise ValueError(
                f"artifact_location cannot be set in MLflow workspace {self.workspace!r}: a "
                "server with workspaces places each workspace's artifacts itself (an "
                "administrator sets a workspace's default_artifact_root). Drop one of them"
            )
        return self

    @classmethod
    def from_env(cls, **overrides: Any) -> TrackingConfig:
        """Build a config from ``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
        ``MLFLOW_EXPERIMENT_NAME`` and ``MLFLOW_WORKSPACE``; keyword arguments override the
        environment.

        Args:
            **overrides: Field values that win over the environment.

        Returns:
            A validated ``TrackingConfig``.

        Raises:
            pydantic.ValidationError: an environment value is invalid (the message names
                the field).

        Example:
            >>> TrackingConfig.from_env(experiment_name="ner").experiment_name
            'ner'
        """
        values: dict[str, Any] = {
            field: os.environ[var] for field, var in ENV_VARS.items() if os.environ.get(var)
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TrackingConfig:
        """Load a config from a YAML mapping of the same field names.

        Args:
            path: A YAML file such as ``{experiment_name: ner, tracking_uri: ...}``.

        Returns:
            A validated ``TrackingConfig``.

        Raises:
            TrackingConfigError: the file is missing, is not YAML, is not a mapping, or
                holds an invalid value (the message names the file and the field).

        Example:
            >>> import pathlib, tempfile
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "tracking.yaml"
            >>> _ = p.write_text("experiment_name: ner\\n")
            >>> TrackingConfig.from_yaml(p).experiment_name
            'ner'
        """
        file = Path(path)
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise TrackingConfigError(f"tracking config file {file} does not exist") from exc
        except yaml.YAMLError as exc:
            raise TrackingConfigError(
                f"tracking config file {file} is not valid YAML: {exc}"
            ) from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise TrackingConfigError(
                f"tracking config file {file} must hold a mapping of TrackingConfig fields "
                f"({', '.join(cls.model_fields)}), not a {type(data).__name__}"
            )
        try:
            return cls(**data)
        except ValidationError as exc:
            raise TrackingConfigError(f"tracking config file {file}: {exc}") from exc


def workspace_of(ml_client: Any) -> AzureMLWorkspace:
    """Return the workspace an ``MLClient`` is bound to, as plain identifiers.

    Args:
        ml_client: An ``azure.ai.ml.MLClient`` built with a workspace name.

    Returns:
        The client's ``AzureMLWorkspace`` (subscription, resource group, workspace).

    Raises:
        TrackingConfigError: the object is not an MLClient bound to a workspace.

    Example:
        >>> from azure.ai.ml import MLClient
        >>> from azure.identity import DefaultAzureCredential
        >>> workspace_of(MLClient(DefaultAzureCredential(), "sub", "rg", "ws")).workspace_name
        'ws'
    """
    parts = {
        "subscription_id": getattr(ml_client, "subscription_id", None),
        "resource_group": getattr(ml_client, "resource_group_name", None),
        "workspace_name": getattr(ml_client, "workspace_name", None),
    }
    missing = sorted(name for name, value in parts.items() if not value)
    if missing:
        raise TrackingConfigError(
            f"ml_client must be an azure.ai.ml.MLClient bound to a workspace; "
            f"{type(ml_client).__name__} has no {', '.join(missing)}: build it as "
            "MLClient(credential, subscription_id, resource_group_name, workspace_name)"
        )
    return AzureMLWorkspace(
        subscription_id=str(parts["subscription_id"]),
        resource_group=str(parts["resource_group"]),
        workspace_name=str(parts["workspace_name"]),
    )
