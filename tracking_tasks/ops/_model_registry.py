"""The model registry: register a logged model (or a run's folder) once; aliases; read a version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks._validation import check_tags
from tracking_tasks.auth._apply import apply_credentials
from tracking_tasks.config._resolve import (
    CredentialsLocation,
    resolve_tracking_uri,
    resolve_workspace,
)
from tracking_tasks.errors import (
    InvalidArgumentError,
    ModelNotFoundError,
    ModelRegistryError,
    error_code,
    mlflow_errors,
)
from tracking_tasks.handles import ModelRef, RunRef
from tracking_tasks.ops._client import client_for, get_client
from tracking_tasks.ops._model_filters import model_version_filter
from tracking_tasks.ops._workspaces import place_of
from tracking_tasks.urls import redact_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: A version source naming a logged model: ``models:/<model id>``.
LOGGED_MODEL_SOURCE = "models:/"


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise


def register_model_version(run: RunRef, artifact_path: str, name: str) -> str:
    """Register ``runs:/<run>/<artifact_path>`` as a new version of model ``name``.

    The registered model is created if missing. A retry of the same run and path finds
    the version it already made instead of adding another. A folder that is not an
    MLflow model (no ``MLmodel`` file) registers, but MLflow cannot load it: register a
    logged model with ``register_model`` instead.

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
    client = client_for(run)
    source = f"runs:/{run.run_id}/{artifact_path}"
    with mlflow_errors(
        f"could not register {source} as model {name!r} on "
        f"{redact_uri(run.registry_uri or run.tracking_uri)}",
        default=ModelRegistryError,
    ):
        _ensure_registered_model(client, name)
        for version in client.search_model_versions(model_version_filter(name, run_id=run.run_id)):
            if version.source == source:
                return str(version.version)
        return str(client.create_model_version(name, source, run_id=run.run_id).version)


class ModelVersion(BaseModel):
    """One version of a registered model: which run and logged model made it, and its aliases.

    A frozen handle like ``RunRef``: it names its server (no secret), so the alias tasks
    take it as it is.

    Args:
        name: The registered model's name.
        version: The version (a string such as ``"3"``).
        run_id: The run the version was registered from.
        source: Where its files are (``models:/<model id>``, ``runs:/<run>/<path>``...);
            ``model_id`` reads the logged model's id from it.
        aliases: Its aliases (``champion``...), when read.
        tracking_uri: The tracking URI of its server, when known.
        registry_uri: The registry URI, if it differs.
        credentials: Secret-free reference to the server's credentials.
        workspace: The MLflow workspace it is registered in, or None for the default.

    Example:
        >>> v = ModelVersion(name="digits", version="3", run_id="abc", source="models:/m-1")
        >>> v.model_id, v.uri
        ('m-1', 'models:/digits/3')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Registered model name.")
    version: str = Field(description="The version number, as a string.")
    run_id: str = Field(description="The run it was registered from.")
    source: str = Field(description="Where its files are.")
    aliases: tuple[str, ...] = Field(default=(), description="Its aliases, when read.")
    tracking_uri: str | None = Field(default=None, description="Tracking URI of its server.")
    registry_uri: str | None = Field(default=None, description="Registry URI, if it differs.")
    credentials: str | None = Field(
        default=None, description="Secret-free reference to the server's credentials."
    )
    workspace: str | None = Field(default=None, description="Its MLflow workspace, or None.")

    @property
    def artifact_path(self) -> str | None:
        """The artifact path in its run, for a ``runs:/`` source; else None."""
        prefix = f"runs:/{self.run_id}/"
        return self.source[len(prefix) :] if self.source.startswith(prefix) else None

    @property
    def model_id(self) -> str | None:
        """The logged model it was made from (a ``models:/<model id>`` source), else None."""
        if self.source.startswith(LOGGED_MODEL_SOURCE) and "/" not in self.source[8:]:
            return self.source[len(LOGGED_MODEL_SOURCE) :] or None
        return None

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``: what ``mlflow.pyfunc.load_model`` takes."""
        return f"models:/{self.name}/{self.version}"


def _version(
    found: Any,
    tracking_uri: str | None,
    registry_uri: str | None,
    credentials: str | None,
    workspace: str | None,
) -> ModelVersion:
    return ModelVersion(
        name=str(found.name),
        version=str(found.version),
        run_id=str(found.run_id or ""),
        source=str(found.source or ""),
        aliases=tuple(getattr(found, "aliases", None) or ()),
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        credentials=credentials,
        workspace=workspace,
    )


def register_model(
    model: ModelRef,
    name: str,
    *,
    tags: dict[str, Any] | None = None,
    description: str | None = None,
) -> ModelVersion:
    """Register a logged model as a version of registered model ``name``, once.

    The version's source is ``models:/<model id>`` and it is linked to the model (and its
    run), as ``mlflow.register_model`` does, so ``mlflow.pyfunc.load_model`` and
    ``mlflow models serve`` load it by ``models:/<name>/<version>`` or by alias. The
    registered model is created if missing. A retry finds the version it already made
    (by its source) instead of adding another.

    Args:
        model: The logged model (``log_model``'s handle, or ``ModelSummary.to_ref()``).
        name: The registered model's name.
        tags: Tags of the new version.
        description: Its description.

    Returns:
        The ``ModelVersion``.

    Raises:
        InvalidArgumentError: ``model`` is not a ``ModelRef``.
        InvalidLogDataError: a tag MLflow would refuse.
        ModelRegistryError: the registry refused it or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def publish(model: ModelRef) -> str:
        ...     return register_model(model, "digits-sgd").uri  # models:/digits-sgd/<n>
    """
    if not isinstance(model, ModelRef):
        raise InvalidArgumentError(
            f"model must be the ModelRef returned by log_model, not {type(model).__name__}"
        )
    checked = check_tags(tags or {})
    client = client_for(model)
    place = place_of(model.registry_uri or model.tracking_uri, model.workspace)
    with mlflow_errors(
        f"could not register {model.uri} as model {name!r} on {place}", default=ModelRegistryError
    ):
        _ensure_registered_model(client, name)
        found = client.search_model_versions(model_version_filter(name, source=model.uri))
        made = (
            min(found, key=lambda v: int(v.version))
            if found
            else client.create_model_version(
                name,
                source=model.uri,
                run_id=model.source_run_id,
                tags=checked or None,
                description=description,
                model_id=model.model_id,
            )
        )
    return _version(
        made, model.tracking_uri, model.registry_uri, model.credentials, model.workspace
    )


def _registry_client(
    tracking_uri: str | None,
    registry_uri: str | None,
    credentials: CredentialsLocation | None,
    workspace: str | None,
) -> tuple[MlflowClient, str, str | None, str | None]:
    uri = resolve_tracking_uri(tracking_uri, credentials=credentials)
    reference = apply_credentials(credentials, uri)
    space = resolve_workspace(workspace, credentials=credentials, tracking_uri=uri)
    client = get_client(uri, registry_uri, credentials=reference, workspace=space)
    return client, uri, reference, space


def get_model_version(
    name: str,
    *,
    alias: str | None = None,
    version: str | int | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
) -> ModelVersion:
    """Read one version of a registered model, by alias (``champion``) or number.

    "The current model" is read by alias: ``get_model_version("digits-sgd",
    alias="champion")``.

    Args:
        name: The registered model's name.
        alias: The alias to read (give this or ``version``).
        version: The version number.
        tracking_uri: Tracking URI (default: ``$MLFLOW_TRACKING_URI``, else the embedded
            default).
        registry_uri: The model registry URI, if it differs from the tracking URI.
        credentials: An ``MlflowCredentials`` block for the server, if it needs one.
        workspace: The MLflow workspace the model is registered in (default: the
            block's, ``$MLFLOW_WORKSPACE``, else the server's default).

    Returns:
        The ``ModelVersion`` (with its aliases).

    Raises:
        InvalidArgumentError: neither or both of ``alias`` and ``version``.
        ModelNotFoundError: no such model, version or alias.
        ModelRegistryError: the registry failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def current() -> str | None:
        ...     return get_model_version("digits-sgd", alias="champion").model_id
    """
    if (alias is None) == (version is None):
        raise InvalidArgumentError("give one of alias= and version=")
    client, uri, reference, space = _registry_client(
        tracking_uri, registry_uri, credentials, workspace
    )
    asked = f"alias {alias!r}" if alias is not None else f"version {version}"
    with mlflow_errors(
        f"could not read {asked} of registered model {name!r} on {redact_uri(registry_uri or uri)}",
        default=ModelRegistryError,
        not_found=ModelNotFoundError,
        invalid=ModelNotFoundError,  # an unknown alias is INVALID_PARAMETER_VALUE
    ):
        found = (
            client.get_model_version_by_alias(name, alias)
            if alias is not None
            else client.get_model_version(name, str(version))
        )
    return _version(found, uri, registry_uri, reference, space)


def set_model_alias(version: ModelVersion, alias: str) -> ModelVersion:
    """Point ``alias`` of the registered model at ``version`` (moving it if it was elsewhere).

    Args:
        version: The version (``register_model``'s or ``get_model_version``'s).
        alias: The alias, e.g. ``champion``.

    Returns:
        The version, with the alias among its aliases.

    Raises:
        InvalidArgumentError: ``version`` is not a ``ModelVersion`` naming its server.
        ModelRegistryError: the registry refused the alias (MLflow's rules: not
            ``latest``, not ``v<number>``) or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def roll_back() -> None:
        ...     set_model_alias(get_model_version("digits-sgd", version=3), "champion")
    """
    if not isinstance(version, ModelVersion) or version.tracking_uri is None:
        raise InvalidArgumentError(
            "version must be a ModelVersion from register_model or get_model_version"
        )
    client = get_client(
        version.tracking_uri,
        version.registry_uri,
        credentials=version.credentials,
        workspace=version.workspace,
    )  # a version's tracking URI may be None: checked above
    with mlflow_errors(
        f"could not set alias {alias!r} of model {version.name!r} to version {version.version} "
        f"on {redact_uri(version.registry_uri or version.tracking_uri)}",
        default=ModelRegistryError,
    ):
        client.set_registered_model_alias(version.name, alias, version.version)
    aliases = tuple(dict.fromkeys([*version.aliases, alias]))
    return version.model_copy(update={"aliases": aliases})


def latest_model_version(
    name: str,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
) -> ModelVersion:
    """Return the newest version of a registered model.

    Args:
        name: The registered model's name.
        tracking_uri: The tracking URI (default: ``$MLFLOW_TRACKING_URI``, else the
            embedded default).
        registry_uri: The model registry URI, if it differs from the tracking URI.
        credentials: An ``MlflowCredentials`` block for the server, if it needs one.
        workspace: The MLflow workspace the model is registered in (default: the
            block's, else ``$MLFLOW_WORKSPACE``, else the server's default); names are
            per workspace.

    Returns:
        Its ``ModelVersion`` with the highest version number.

    Raises:
        ModelNotFoundError: the model has no version (or does not exist).
        ModelRegistryError: the registry failed or could not be reached.

    Example:
        >>> _ = register_model_version(run, "model", "doctest-model")
        >>> latest_model_version("doctest-model").run_id == run.run_id
        True
    """
    client, uri, reference, workspace = _registry_client(
        tracking_uri, registry_uri, credentials, workspace
    )
    place = place_of(registry_uri or uri, workspace)
    with mlflow_errors(f"could not read model {name!r} on {place}", default=ModelRegistryError):
        versions = client.search_model_versions(model_version_filter(name))
    if not versions:
        raise ModelNotFoundError(
            f"registered model {name!r} has no version on {place}: register one first "
            "(track_conversion(..., register_as=...))"
        )
    newest = max(versions, key=lambda v: int(v.version))
    return _version(newest, uri, registry_uri, reference, workspace)
