"""Reading one logged model: the model a ``models:/`` URI names, its summary by id, or the
model itself, loaded as pyfunc with the library's verified download (no global tracking
URI)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tracking_tasks.auth._apply import apply_credentials
from tracking_tasks.config._resolve import (
    CredentialsLocation,
    resolve_tracking_uri,
    resolve_workspace,
)
from tracking_tasks.errors import (
    InvalidArgumentError,
    LoggedModelError,
    ModelNotFoundError,
    mlflow_errors,
)
from tracking_tasks.handles import ModelRef
from tracking_tasks.ops._artifacts.download import download_with
from tracking_tasks.ops._artifacts.http_transport import open_transport
from tracking_tasks.ops._client import get_client
from tracking_tasks.ops._model_registry import (
    LOGGED_MODEL_SOURCE,
    get_model_version,
    latest_model_version,
)
from tracking_tasks.ops._model_search import ModelSummary
from tracking_tasks.tags import MODEL_FAILURE_TAG
from tracking_tasks.urls import redact_uri

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

#: Files MLflow itself writes into a stored model's folder: loading a registered version
#: from a local artifact store (the embedded default) adds ``registered_model_meta`` to
#: the stored folder (``ModelsArtifactRepository.download_artifacts``).
MLFLOW_WRITES_INTO_MODELS = frozenset({"registered_model_meta"})


def model_id_of(
    uri: str,
    tracking_uri: str,
    registry_uri: str | None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
) -> str:
    """The logged model a ``models:/`` URI (or a bare model id) names.

    Args:
        uri: ``models:/<model id>``, ``models:/<name>@<alias>``, ``models:/<name>/<version>``
            (``latest`` allowed), or a model id.
        tracking_uri: The resolved tracking URI.
        registry_uri: The registry URI, if it differs.
        credentials: Credentials for the server, if any.
        workspace: The MLflow workspace the registered model is in, if any.

    Returns:
        The model id.

    Raises:
        InvalidArgumentError: not a models:/ URI or model id.
        ModelNotFoundError: the version or alias does not exist, or the version was
            registered from something other than a logged model.

    Example:
        >>> model_id_of("models:/m-0123", "sqlite:///mlflow.db", None)
        'm-0123'
    """
    rest = uri.removeprefix(LOGGED_MODEL_SOURCE)
    if rest == uri and ("/" in uri or ":" in uri):
        raise InvalidArgumentError(
            f"{uri!r} names no model: write models:/<model id>, models:/<name>@<alias> or "
            "models:/<name>/<version>"
        )
    if "@" in rest:
        name, _, alias = rest.partition("@")
        found = get_model_version(
            name,
            alias=alias,
            tracking_uri=tracking_uri,
            registry_uri=registry_uri,
            credentials=credentials,
            workspace=workspace,
        )
    elif "/" in rest:
        name, _, number = rest.partition("/")
        found = (
            latest_model_version(
                name,
                tracking_uri=tracking_uri,
                registry_uri=registry_uri,
                credentials=credentials,
                workspace=workspace,
            )
            if number == "latest"
            else get_model_version(
                name,
                version=number,
                tracking_uri=tracking_uri,
                registry_uri=registry_uri,
                credentials=credentials,
                workspace=workspace,
            )
        )
    else:
        return rest
    if found.model_id is None:
        raise ModelNotFoundError(
            f"version {found.version} of {found.name!r} was registered from {found.source}, "
            "not from a logged model: MLflow cannot load it as a model. Register a logged "
            "model (log_model, then register_model)"
        )
    return found.model_id


def get_model_summary(
    model: ModelRef | str,
    *,
    tracking_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
) -> ModelSummary:
    """Fetch one logged model by id (or handle) as a ``ModelSummary`` (one request).

    Args:
        model: A ``ModelRef``, a model id (``m-...``) or ``models:/<model id>``.
        tracking_uri: Tracking URI for an id (a ``ModelRef`` names its own).
        credentials: An ``MlflowCredentials`` block for the server, if it needs one.
        workspace: The MLflow workspace of an id (a ``ModelRef`` names its own; default:
            the block's, else ``$MLFLOW_WORKSPACE``, else the server's default).

    Returns:
        The model's ``ModelSummary``.

    Raises:
        ModelNotFoundError: no model with that id on the server.
        LoggedModelError: the server failed or could not be reached.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def status(model: ModelRef) -> str:
        ...     return get_model_summary(model).status
    """
    if isinstance(model, ModelRef):
        uri, model_id, reference = model.tracking_uri, model.model_id, model.credentials
        uri = resolve_tracking_uri(tracking_uri or uri, credentials=credentials)
        given: tuple[str | None, ...] = (model.workspace,)
    else:
        model_id = str(model).removeprefix("models:/")
        uri = resolve_tracking_uri(tracking_uri, credentials=credentials)
        reference, given = None, ()
    space = resolve_workspace(workspace, given=given, credentials=credentials, tracking_uri=uri)
    reference = apply_credentials(credentials, uri) if credentials is not None else reference
    with mlflow_errors(
        f"could not read logged model {model_id!r} on {redact_uri(uri)}",
        default=LoggedModelError,
        not_found=ModelNotFoundError,
        invalid=ModelNotFoundError,
    ):
        found = get_client(uri, credentials=reference, workspace=space).get_logged_model(model_id)
    return ModelSummary.from_logged_model(found, uri, space)


def load_model(
    model: ModelRef | str,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    credentials: CredentialsLocation | None = None,
    dst_dir: str | Path | None = None,
    workspace: str | None = None,
) -> PyFuncModel:
    """Load a logged or registered model as MLflow's pyfunc, with no global tracking URI.

    ``mlflow.pyfunc.load_model("models:/...")`` reads MLflow's process-wide tracking URI
    (shared by every thread); this resolves the model with an explicit client instead,
    downloads its files with the library's verified download (checked against the
    manifest stored with them) and loads them from ``dst_dir``. Only a READY model is
    loaded.

    Args:
        model: A ``ModelRef``, ``models:/<model id>``, ``models:/<name>@<alias>``,
            ``models:/<name>/<version>`` or a model id.
        tracking_uri: Tracking URI (default: the ``ModelRef``'s, else
            ``$MLFLOW_TRACKING_URI``, else the embedded default).
        registry_uri: Model registry URI, if it differs from the tracking URI.
        credentials: An ``MlflowCredentials`` block for the server, if it needs one.
        dst_dir: Where the files go (kept: a model may read them when it predicts); a
            new temporary folder by default.
        workspace: The MLflow workspace of a URI (a ``ModelRef`` names its own; default:
            the block's, else ``$MLFLOW_WORKSPACE``, else the server's default).

    Returns:
        The ``mlflow.pyfunc.PyFuncModel`` (``.predict(...)``, ``.model_id``).

    Raises:
        InvalidArgumentError: a URI that names no model.
        ModelNotFoundError: the model, version or alias does not exist, or the version
            was registered from a folder that is not a logged model.
        LoggedModelError: the model is not READY, or the server failed.
        ArtifactError: its files could not be downloaded or verified.

    Example:
        >>> from prefect import flow
        >>> @flow
        ... def score(rows: list[list[float]]) -> list[int]:
        ...     champion = load_model("models:/digits-sgd@champion")
        ...     return champion.predict(rows).tolist()
    """
    from mlflow.pyfunc import load_model as load_pyfunc

    if isinstance(model, ModelRef):
        uri = resolve_tracking_uri(tracking_uri or model.tracking_uri, credentials=credentials)
        registry = registry_uri or model.registry_uri
        reference = model.credentials
        model_id = model.model_id
        space = resolve_workspace(
            workspace, given=(model.workspace,), credentials=credentials, tracking_uri=uri
        )
    else:
        if not isinstance(model, str) or not model.strip():
            raise InvalidArgumentError(f"model must be a ModelRef or a models:/ URI, not {model!r}")
        uri = resolve_tracking_uri(tracking_uri, credentials=credentials)
        registry, reference = registry_uri, None
        space = resolve_workspace(workspace, credentials=credentials, tracking_uri=uri)
        model_id = model_id_of(model.strip(), uri, registry, credentials, space)
    if credentials is not None:
        reference = apply_credentials(credentials, uri)
    summary = get_model_summary(
        ModelRef(
            model_id=model_id,
            name="",
            experiment_id="",
            tracking_uri=uri,
            credentials=reference,
            workspace=space,
        )
    )
    if summary.status != "READY":
        raise LoggedModelError(
            f"logged model {model_id} on {redact_uri(uri)} is {summary.status}, not READY "
            f"({summary.tags.get(MODEL_FAILURE_TAG, 'its upload has not finished')}): load a "
            "READY model"
        )
    dst = Path(dst_dir) if dst_dir is not None else Path(tempfile.mkdtemp(prefix="tt-model-"))
    transport = open_transport(
        summary.source_run_id or "",
        uri,
        registry,
        credentials=reference,
        workspace=space,
        artifact_uri=summary.artifact_uri,
    )
    try:
        folder = download_with(
            transport,
            f"model {model_id}",
            uri,
            "",
            "",
            dst.resolve(),
            max_workers=8,
            extract=False,
            foreign=MLFLOW_WRITES_INTO_MODELS,
        )
    finally:
        transport.close()
    return load_pyfunc(str(folder))
