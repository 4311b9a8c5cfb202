"""The model registry: register a run's artifact as a model version once; find the newest."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks.config._resolve import resolve_tracking_uri, resolve_workspace
from tracking_tasks.errors import ModelRegistryError, NotFoundError, error_code, mlflow_errors
from tracking_tasks.handles import RunRef
from tracking_tasks.ops._client import get_client
from tracking_tasks.ops._filters import and_, quote_value
from tracking_tasks.urls import redact_uri


def register_model_version(run: RunRef, artifact_path: str, name: str) -> str:
    """Register ``runs:/<run>/<artifact_path>`` as a new version of model ``name``.

    The registered model is created if missing. A retry of the same run and path finds
    the version it already made instead of adding another.

    Args:
        run: The run holding the model artifact.
        artifact_path: The model's artifact path in that run.
        name: Registered model name.

    Returns:
        The model version (a string such as ``"3"``).

    Raises:
        ModelRegistryError: the registry refused the model or could not be reached.
        InvalidSearchError: ``name`` holds both quote characters.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def publish(run: RunRef) -> str:
        ...     return register_model_version(run, "converted", "digits-classifier")
    """
    from mlflow.exceptions import MlflowException

    client = get_client(
        run.tracking_uri, run.registry_uri, credentials=run.credentials, workspace=run.workspace
    )
    source = f"runs:/{run.run_id}/{artifact_path}"
    query = and_(f"name = {quote_value(name)}", f"run_id = {quote_value(run.run_id)}")
    with mlflow_errors(
        f"could not register {source} as model {name!r} on "
        f"{redact_uri(run.registry_uri or run.tracking_uri)}",
        default=ModelRegistryError,
    ):
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
        for version in client.search_model_versions(query):
            if version.source == source:
                return str(version.version)
        return str(client.create_model_version(name, source, run_id=run.run_id).version)


class ModelVersion(BaseModel):
    """One version of a registered model: which run made it, and from which artifact.

    Args:
        name: The registered model's name.
        version: The version (a string such as ``"3"``).
        run_id: The run the version was registered from.
        source: Where its files are (``runs:/<run>/<path>``, or a store URI).

    Example:
        >>> ModelVersion(name="digits", version="3", run_id="abc",
        ...              source="runs:/abc/converted").artifact_path
        'converted'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Registered model name.")
    version: str = Field(description="The version number, as a string.")
    run_id: str = Field(description="The run it was registered from.")
    source: str = Field(description="Where its files are.")

    @property
    def artifact_path(self) -> str | None:
        """The artifact path in its run, for a ``runs:/`` source; else None."""
        prefix = f"runs:/{self.run_id}/"
        return self.source[len(prefix) :] if self.source.startswith(prefix) else None


def latest_model_version(
    name: str,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    workspace: str | None = None,
) -> ModelVersion:
    """Return the newest version of a registered model.

    Args:
        name: The registered model's name.
        tracking_uri: The tracking URI (default: ``$MLFLOW_TRACKING_URI``, else the
            embedded default).
        registry_uri: The model registry URI, if it differs from the tracking URI.
        workspace: The MLflow workspace the model is registered in (default:
            ``$MLFLOW_WORKSPACE``, else the server's default); names are per workspace.

    Returns:
        Its ``ModelVersion`` with the highest version number.

    Raises:
        NotFoundError: the model has no version (or does not exist).
        ModelRegistryError: the registry failed or could not be reached.

    Example:
        >>> _ = register_model_version(run, "model", "doctest-model")
        >>> latest_model_version("doctest-model").run_id == run.run_id
        True
    """
    uri = resolve_tracking_uri(tracking_uri)
    workspace = resolve_workspace(workspace)
    where = redact_uri(registry_uri or uri) + (f" in workspace {workspace!r}" if workspace else "")
    with mlflow_errors(f"could not read model {name!r} on {where}", default=ModelRegistryError):
        versions = get_client(uri, registry_uri, workspace=workspace).search_model_versions(
            f"name = {quote_value(name)}"
        )
    if not versions:
        raise NotFoundError(
            f"registered model {name!r} has no version on {where}: register one first "
            "(track_conversion(..., register_as=...))"
        )
    newest = max(versions, key=lambda v: int(v.version))
    return ModelVersion(
        name=name,
        version=str(newest.version),
        run_id=str(newest.run_id),
        source=str(newest.source or ""),
    )
