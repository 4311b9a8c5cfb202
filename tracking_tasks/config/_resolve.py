"""The resolution order: which tracking URI and experiment a call means, and where from."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Protocol

from pydantic import ValidationError

from tracking_tasks._validation import check_workspace_name
from tracking_tasks.config._models import ENV_VARS, AzureMLWorkspace, TrackingConfig, workspace_of
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.urls import (
    DEFAULT_TRACKING_URI,
    absolute_local_uri,
    check_uri,
    is_http_uri,
    redact_uri,
    same_server,
)

DEFAULT_EXPERIMENT_NAME = "Default"


class CredentialsLocation(Protocol):
    """Credentials for one server: where they belong, the credential, its reference.

    ``tracking_tasks.auth.MlflowCredentials`` is one, and so is the plain
    ``tracking_tasks.auth.ServerCredentials``; resolution only needs this much of them.
    """

    @property
    def tracking_uri(self) -> str | None: ...

    @property
    def azure_workspace(self) -> AzureMLWorkspace | None: ...

    def scoped_credential(self) -> Any: ...

    def credentials_reference(self) -> str | None: ...


def resolve_tracking_uri(
    tracking_uri: str | None = None, *, credentials: CredentialsLocation | None = None
) -> str:
    """Resolve a tracking URI: the argument > the credentials' server >
    ``$MLFLOW_TRACKING_URI`` > the embedded default.

    The one place a tracking URI is resolved: ``setup_mlflow``, the finders and the
    artifact tasks all come here. The URI is checked (no password, no unknown scheme, no
    file store unless ``MLFLOW_ALLOW_FILE_STORE``) and a relative SQLite path is made
    absolute, so tasks in other processes reach the same file.

    Args:
        tracking_uri: An explicit tracking URI, or None.
        credentials: Credentials to use there: their server is the default, and another
            server is refused (an Azure ML workspace block names none: pass its URI).

    Returns:
        The resolved tracking URI.

    Raises:
        TrackingConfigError: the URI is invalid (the message says where it came from), or
            the credentials are for another server.

    Example:
        >>> resolve_tracking_uri("http://127.0.0.1:5000")
        'http://127.0.0.1:5000'
    """
    if credentials is not None and credentials.tracking_uri is None:
        credentials = None  # a workspace block: the URI given is the workspace's
    resolved = resolve_tracking_config(tracking_uri=tracking_uri, credentials=credentials)
    assert resolved.tracking_uri is not None
    return resolved.tracking_uri


def resolve_tracking_config(
    config: TrackingConfig | None = None,
    *,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    artifact_location: str | None = None,
    azure_workspace: AzureMLWorkspace | None = None,
    ml_client: Any = None,
    credentials: CredentialsLocation | None = None,
    workspace: str | None = None,
) -> TrackingConfig:
    """Fill every field: explicit argument > ``config`` > credentials > environment > default.

    Where to track is one setting: a tracking URI or an Azure ML workspace, taken from the
    first of these that gives one: the ``tracking_uri`` / ``azure_workspace`` /
    ``ml_client`` arguments, ``config``, the ``credentials`` block, ``$MLFLOW_TRACKING_URI``,
    the embedded default. The embedded default is a SQLite store ``mlflow.db`` in the
    working directory (made absolute, so tasks in other processes reach the same file)
    and the ``Default`` experiment. Nothing is read from Azure here: a workspace stays a
    workspace, and ``setup_mlflow`` asks Azure for its tracking URI.

    Args:
        config: A ``TrackingConfig``, or None.
        experiment_name: Overrides the config's experiment name.
        tracking_uri: Overrides the config's tracking URI.
        registry_uri: Overrides the config's registry URI.
        artifact_location: Overrides the config's artifact location.
        azure_workspace: Overrides the config's location with an Azure ML workspace.
        ml_client: An ``azure.ai.ml.MLClient``: its workspace, like ``azure_workspace``.
        credentials: An ``MlflowCredentials`` block: its tracking URI or workspace is used
            when neither the arguments nor the config name one; when it names a tracking
            URI, no other may be resolved (credentials never go to another server).
        workspace: Overrides the config's MLflow workspace; else the block's, else
            ``$MLFLOW_WORKSPACE`` (read, never written), else None (the server's
            default). A workspace needs an ``http(s)://`` tracking server.

    Returns:
        A ``TrackingConfig`` with the experiment name and either the tracking URI or the
        Azure workspace set.

    Raises:
        TrackingConfigError: a value is invalid, two sources conflict, or the credentials
            are for another server; the message names the field, where the value came
            from, and the fix.

    Example:
        >>> cfg = resolve_tracking_config(tracking_uri="http://127.0.0.1:5000",
        ...                               experiment_name="ner")
        >>> cfg.tracking_uri, cfg.experiment_name
        ('http://127.0.0.1:5000', 'ner')
    """
    base = config if config is not None else TrackingConfig()
    if not isinstance(base, TrackingConfig):
        raise TrackingConfigError(
            f"config must be a TrackingConfig, not {type(base).__name__}: "
            "write TrackingConfig(**your_mapping)"
        )
    if credentials is not None and not (
        hasattr(credentials, "tracking_uri") and hasattr(credentials, "azure_workspace")
    ):
        raise TrackingConfigError(
            f"credentials must be an MlflowCredentials block, not {type(credentials).__name__}"
        )
    if workspace is None and base.workspace is None and credentials is not None:
        workspace = getattr(credentials, "workspace", None)  # a block may name one
    azure = _argument_workspace(azure_workspace, ml_client)
    if azure is not None and tracking_uri is not None:
        raise TrackingConfigError(
            "give either tracking_uri or an Azure workspace (azure_workspace / ml_client), "
            "not both: the workspace's tracking URI is resolved from Azure"
        )
    if azure is None and tracking_uri is None and base.tracking_uri is None:
        azure = base.azure_workspace
        if azure is None and credentials is not None and credentials.tracking_uri is None:
            azure = credentials.azure_workspace
    if azure is not None:
        resolved_ws = _resolve_fields(
            base.model_copy(update={"tracking_uri": None, "azure_workspace": None}),
            experiment_name=experiment_name,
            tracking_uri="azureml://placeholder",  # checked by TrackingConfig, replaced below
            registry_uri=registry_uri,
            artifact_location=artifact_location,
            workspace=workspace,
        )
        if credentials is not None and credentials.tracking_uri is not None:
            raise TrackingConfigError(
                f"the credentials are for {redact_uri(credentials.tracking_uri)} but the "
                f"tracking location is Azure ML workspace {azure.workspace_id}: MLflow "
                "credentials are never sent to another server"
            )
        check_workspace_server(resolved_ws.workspace, "azureml://")
        return resolved_ws.model_copy(update={"tracking_uri": None, "azure_workspace": azure})
    if tracking_uri is None and base.tracking_uri is None and credentials is not None:
        tracking_uri = credentials.tracking_uri
    resolved = _resolve_fields(
        base,
        experiment_name=experiment_name,
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        artifact_location=artifact_location,
        workspace=workspace,
    )
    if resolved.tracking_uri is not None:
        check_credentials_server(credentials, resolved.tracking_uri)
        check_workspace_server(resolved.workspace, resolved.tracking_uri)
    return resolved


def check_workspace_server(workspace: str | None, tracking_uri: str) -> None:
    """Refuse an MLflow workspace where no tracking server can hold one (a local store).

    Raises:
        TrackingConfigError: a workspace with a tracking URI that is not ``http(s)://``.
    """
    if workspace is not None and not is_http_uri(tracking_uri):
        raise TrackingConfigError(
            f"MLflow workspace {workspace!r} needs an MLflow tracking server (http(s)://, "
            f"started with --enable-workspaces), and the tracking URI is "
            f"{redact_uri(tracking_uri)}: track to such a server, or drop workspace= "
            "(and MLFLOW_WORKSPACE)"
        )


def resolve_workspace(
    workspace: str | None = None,
    *,
    given: Iterable[str | None] = (),
    credentials: CredentialsLocation | None = None,
    tracking_uri: str | None = None,
) -> str | None:
    """Resolve the MLflow workspace a lookup means: the argument > the handles' > the
    credentials block's > ``$MLFLOW_WORKSPACE`` > None (the server's default).

    The order ``setup_mlflow`` resolves a context's workspace in, for the calls that take
    no context (the finders by experiment name, reconcile, the command line). The
    environment is read, never written.

    Args:
        workspace: An explicit workspace name, or None.
        given: The workspaces of the ``TrackingContext`` values a call was given.
        credentials: An ``MlflowCredentials`` block, whose workspace is the default.
        tracking_uri: The resolved tracking URI, to refuse a workspace on a local store.

    Returns:
        The checked workspace name, or None.

    Raises:
        TrackingConfigError: an invalid name (the message says where it came from),
            handles in different workspaces, an argument that contradicts them, or a
            workspace with a tracking URI that is not ``http(s)://``.

    Example:
        >>> resolve_workspace("team-a")
        'team-a'
    """
    resolved = _workspace(workspace, set(given), credentials)
    if tracking_uri is not None:
        check_workspace_server(resolved, tracking_uri)
    return resolved


def _workspace(
    workspace: str | None, named: set[str | None], credentials: CredentialsLocation | None
) -> str | None:
    if len(named) > 1:
        raise TrackingConfigError(
            "the TrackingContexts are in different MLflow workspaces "
            f"({', '.join(sorted(str(n) for n in named))}): look up one workspace at a time"
        )
    if named:
        (theirs,) = named
        if workspace is not None and workspace != theirs:
            raise TrackingConfigError(
                f"workspace {workspace!r} differs from the TrackingContext's {theirs!r}: "
                "drop one of them"
            )
        return theirs
    if workspace is not None:
        return check_workspace_name(workspace, "the workspace argument")
    from_block = getattr(credentials, "workspace", None)
    if from_block is not None:
        return check_workspace_name(from_block, "the credentials block's workspace")
    variable = ENV_VARS["workspace"]
    if os.environ.get(variable, "").strip():
        return check_workspace_name(os.environ[variable], f"${variable}")
    return None


def check_credentials_server(credentials: CredentialsLocation | None, tracking_uri: str) -> None:
    """Refuse credentials that belong to another server than ``tracking_uri``.

    The one home of the rule that a credential is sent to its own server only:
    ``setup_mlflow``, the finders, ``get_run_summary`` and every other place that applies
    a block come here (through ``resolve_tracking_config``, ``resolve_tracking_uri`` or
    ``ops.client.apply_credentials``). Credentials that name no server (an Azure ML
    workspace block) pass.

    Args:
        credentials: An ``MlflowCredentials`` block or ``ServerCredentials``, or None.
        tracking_uri: The resolved tracking URI they would be used for.

    Raises:
        TrackingConfigError: the credentials are for another server.

    Example:
        >>> check_credentials_server(None, "http://127.0.0.1:5000")
    """
    if credentials is None or credentials.tracking_uri is None:
        return
    if not same_server(tracking_uri, str(credentials.tracking_uri)):
        raise TrackingConfigError(
            f"the credentials are for {redact_uri(str(credentials.tracking_uri))} but the "
            f"tracking URI resolved to {redact_uri(tracking_uri)}: MLflow "
            "credentials are never sent to another server. Drop the other tracking URI "
            "or use credentials for it"
        )


def _argument_workspace(
    azure_workspace: AzureMLWorkspace | None, ml_client: Any
) -> AzureMLWorkspace | None:
    """The workspace named by the arguments (the ``MLClient``'s own, if one is given)."""
    if azure_workspace is not None and not isinstance(azure_workspace, AzureMLWorkspace):
        raise TrackingConfigError(
            f"azure_workspace must be an AzureMLWorkspace, not {type(azure_workspace).__name__}"
        )
    if ml_client is None:
        return azure_workspace
    bound = workspace_of(ml_client)
    if azure_workspace is not None and azure_workspace != bound:
        raise TrackingConfigError(
            f"ml_client is bound to {bound.workspace_id} but azure_workspace is "
            f"{azure_workspace.workspace_id}: pass one of them"
        )
    return bound


def _resolve_fields(
    base: TrackingConfig,
    *,
    experiment_name: str | None,
    tracking_uri: str | None,
    registry_uri: str | None,
    artifact_location: str | None,
    workspace: str | None,
) -> TrackingConfig:
    explicit = {
        "experiment_name": experiment_name,
        "tracking_uri": tracking_uri,
        "registry_uri": registry_uri,
        "artifact_location": artifact_location,
        "workspace": workspace,
    }
    defaults = {"experiment_name": DEFAULT_EXPERIMENT_NAME, "tracking_uri": DEFAULT_TRACKING_URI}
    values: dict[str, Any] = {"tags": base.tags}
    sources: dict[str, str] = {}
    for field, value in explicit.items():
        if value is not None:
            values[field], sources[field] = value, f"the {field} argument"
        elif getattr(base, field) is not None:
            values[field], sources[field] = getattr(base, field), f"config.{field}"
        elif field in ENV_VARS and os.environ.get(ENV_VARS[field], "").strip():
            values[field], sources[field] = os.environ[ENV_VARS[field]], f"${ENV_VARS[field]}"
        elif field in defaults:
            values[field], sources[field] = defaults[field], "the embedded default"
    for field in ("tracking_uri", "registry_uri"):
        if isinstance(values.get(field), str):
            try:
                check_uri(values[field], field)
            except TrackingConfigError as exc:  # keep the class (CredentialInURIError...)
                raise type(exc)(f"{exc} (from {sources[field]})") from None
    try:
        resolved = TrackingConfig(**values)
    except ValidationError as exc:
        where = ", ".join(
            f"{err['loc'][0]} (from {sources.get(str(err['loc'][0]), 'config')})"
            for err in exc.errors()
            if err["loc"]
        )
        raise TrackingConfigError(f"invalid tracking settings in {where}: {exc}") from exc
    assert resolved.tracking_uri is not None
    return resolved.model_copy(update={"tracking_uri": absolute_local_uri(resolved.tracking_uri)})
