"""The MlflowCredentials Prefect Block: where to track and how to authenticate there."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tracking_tasks._private_apis import block_document_name
from tracking_tasks._validation import check_workspace_name
from tracking_tasks.auth._apply import apply_credentials, register_loader
from tracking_tasks.auth._kinds import BasicAuth, BearerToken, Credential
from tracking_tasks.auth._providers import check_token_provider, check_token_scope
from tracking_tasks.auth._tokens import TokenProvider
from tracking_tasks.config._models import AzureMLWorkspace
from tracking_tasks.config._resolve import resolve_tracking_uri
from tracking_tasks.errors import TrackingConfigError
from tracking_tasks.urls import check_uri

#: The kind of a saved block's credentials reference: ``"mlflow-credentials/<name>"``.
BLOCK_REFERENCE_KIND = "mlflow-credentials"


class MlflowCredentials(Block):
    """Credentials for an MLflow tracking server, stored as a Prefect Block.

    Secrets are ``SecretStr``: Prefect stores them encrypted and shows them as
    ``**********``. ``setup_mlflow(credentials=...)`` scopes them to the block's tracking
    server: they are sent with requests to that origin (scheme, host, port, path prefix)
    and no other, never written to ``os.environ``, and never reach a log line, a tag, a
    param, a URL or a Prefect result. Handles made with a *saved* block carry its name
    (never a secret), so a task in another process (a Dask worker) loads the block
    again where it runs. Register the block type with
    ``prefect block register -m tracking_tasks.auth``.

    Args:
        tracking_uri: The MLflow server these credentials are for (no password in it).
            ``setup_mlflow`` refuses to send them to any other tracking URI.
        username: User name for HTTP basic auth.
        password: Password for HTTP basic auth.
        token: Bearer token (instead of username and password).
        token_provider: Import path ``"package.module:name"`` of a token provider,
            instead of a fixed token: an azure-identity credential class such as
            ``"azure.identity:DefaultAzureCredential"``, or a callable returning a token
            (or ``(token, expires_at)``) that the operator allowed
            (``allow_token_provider``, or ``$TRACKING_TASKS_TOKEN_PROVIDERS``): a block
            can name nothing else. Asked for a fresh token before the last one expires,
            in whichever process uses the block. Needs ``tracking_uri`` or
            ``azure_workspace``.
        token_scope: The scope asked of an azure-identity credential; it must belong to
            the block's own server: for an Azure ML workspace Azure ML's or Resource
            Manager's (default ``https://ml.azure.com/.default``), for an HTTP(S) server a
            scope on its own host (``https://<host>/.default``), required there.
        azure_workspace: An Azure ML workspace to track into instead of
            ``tracking_uri`` (authenticated through Azure, not these secrets).
        workspace: The MLflow workspace on that server (started with
            ``--enable-workspaces``) a team tracks in; ``setup_mlflow`` uses it unless
            told another.

    Raises:
        pydantic.ValidationError: a password without a username, both a password and a
            token, both a tracking URI and an Azure workspace, a URI with a password, a
            token provider this process does not allow, or a token scope of another
            audience than the block's server.

    Example:
        >>> from pydantic import SecretStr
        >>> creds = MlflowCredentials(tracking_uri="http://127.0.0.1:5000",
        ...                           username="alice", password=SecretStr("s3cret"))
        >>> creds.password
        SecretStr('**********')
        >>> # creds.save("team-mlflow"); MlflowCredentials.load("team-mlflow")
    """

    # hide_input_in_errors: a rejected URI may carry a password; our messages show it redacted.
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name = "MLflow Credentials"
    _block_type_slug = "mlflow-credentials"
    _description = (
        "Where an MLflow tracking server is and how to authenticate to it, for "
        "tracking_tasks.setup_mlflow(credentials=...)."
    )
    _code_example = """
```python
from tracking_tasks import MlflowCredentials, setup_mlflow

credentials = MlflowCredentials.load("BLOCK_NAME")
ctx = setup_mlflow(experiment_name="ner", credentials=credentials)
```
"""

    tracking_uri: str | None = Field(
        default=None,
        description="The MLflow tracking server these credentials are for (no password in it).",
    )
    username: str | None = Field(default=None, description="User name for HTTP basic auth.")
    password: SecretStr | None = Field(default=None, description="Password for HTTP basic auth.")
    token: SecretStr | None = Field(
        default=None, description="Bearer token, instead of username and password."
    )
    token_provider: str | None = Field(
        default=None,
        description=(
            "Import path 'package.module:name' of a token provider (a callable, or an "
            "azure-identity credential class), asked for fresh tokens before they expire."
        ),
    )
    token_scope: str | None = Field(
        default=None, description="Scope asked of an azure-identity credential."
    )
    _credential: Credential | None = PrivateAttr(default=None)
    azure_workspace: AzureMLWorkspace | None = Field(
        default=None,
        description="Azure ML workspace to track into (authenticated through Azure).",
    )
    workspace: str | None = Field(
        default=None,
        description="MLflow workspace on the tracking server (--enable-workspaces).",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        return None if value is None else check_uri(value, "tracking_uri")

    @field_validator("workspace")
    @classmethod
    def _check_workspace(cls, value: str | None) -> str | None:
        return None if value is None else check_workspace_name(value)

    @model_validator(mode="after")
    def _consistent(self) -> MlflowCredentials:
        if self.password is not None and not self.username:
            raise ValueError("a password needs a username (MLflow sends them as basic auth)")
        if self.password is not None and self.token is not None:
            raise ValueError("give a username and password or a token, not both")
        if self.tracking_uri is not None and self.azure_workspace is not None:
            raise ValueError("give either tracking_uri or azure_workspace, not both")
        if self.workspace is not None and self.azure_workspace is not None:
            raise ValueError("an MLflow workspace is on an MLflow server, not in Azure ML")
        if self.token_provider is not None:
            if self.password is not None or self.token is not None:
                raise ValueError("give a token_provider or a password or a token, not two")
            self._check_token_source()
        elif self.token_scope is not None:
            raise ValueError("token_scope is the scope of a token_provider: give one, or drop it")
        return self

    def _check_token_source(self) -> str | None:
        """The scope to ask, once provider and scope are checked against the block's server."""
        assert self.token_provider is not None
        provider = check_token_provider(self.token_provider)
        return check_token_scope(
            self.token_scope,
            provider,
            self.tracking_uri,
            workspace=self.azure_workspace is not None,
        )

    def scoped_credential(self) -> Credential | None:
        """The credential to attach to requests for this block's server, or None.

        One object per block instance, so a token provider's token is reused until it
        nears expiry.

        Returns:
            ``BasicAuth``, ``BearerToken`` or ``TokenProvider``; None without a secret.

        Raises:
            TrackingConfigError: the token provider or its scope is not allowed (checked
                again here: the block may have been made without validation).

        Example:
            >>> MlflowCredentials(username="a", password=SecretStr("p")).scoped_credential()
            BasicAuth(username='a')
        """
        if self._credential is None:
            if self.token_provider is not None:
                # checked again: a block made without validation, or changed since
                scope = self._check_token_source()
                self._credential = TokenProvider(
                    self.token_provider, scope=scope, default_scope=None
                )
            elif self.token is not None:
                self._credential = BearerToken(self.token)
            elif self.username and self.password is not None:
                self._credential = BasicAuth(self.username, self.password)
        return self._credential

    def credentials_reference(self) -> str | None:
        """The secret-free reference handles carry: ``"mlflow-credentials/<name>"``.

        Only a saved (or loaded) block has one; another process loads the block by it.

        Returns:
            The reference, or None for a block that was never saved.

        Example:
            >>> MlflowCredentials(username="a").credentials_reference() is None
            True
        """
        name = block_document_name(self)
        return f"{BLOCK_REFERENCE_KIND}/{name}" if name else None

    def cache_identity(self) -> dict[str, Any]:
        """Non-secret identity of these credentials, for cache keys (never a secret's hash).

        Returns:
            The tracking URI, workspace, username, and which secrets are set.

        Example:
            >>> MlflowCredentials(username="alice").cache_identity()["username"]
            'alice'
        """
        return {
            "tracking_uri": self.tracking_uri,
            "azure_workspace": (
                self.azure_workspace.model_dump() if self.azure_workspace is not None else None
            ),
            "workspace": self.workspace,
            "username": self.username,
            "has_password": self.password is not None,
            "has_token": self.token is not None,
            "token_provider": self.token_provider,
        }


def load_block(name: str) -> MlflowCredentials:
    """Load a saved ``MlflowCredentials`` block by name (sync, from any thread or process).

    The one place a block is loaded: ``use_block``, the CLI's ``--credentials`` and a
    handle's reference in another process all come here.

    Args:
        name: The block's name.

    Returns:
        The block.

    Raises:
        TrackingConfigError: the block cannot be loaded (no such block, or no Prefect
            API reachable), or its content is refused (a token provider or scope not
            allowed); the message names the block and what to check.

    Example:
        >>> load_block("no-such-block")
        Traceback (most recent call last):
        ...
        tracking_tasks.errors.TrackingConfigError: could not load the MlflowCredentials block 'no-such-block' (ValueError): check its name and that PREFECT_API_URL reaches the Prefect API it is saved in
    """
    try:
        block = MlflowCredentials.load(name)
    except Exception as exc:
        invalid = exc if isinstance(exc, ValidationError) else exc.__cause__
        if isinstance(invalid, ValidationError):  # saved by an older version, or edited
            problems = "; ".join(str(error["msg"]) for error in invalid.errors())
            raise TrackingConfigError(
                f"the MlflowCredentials block {name!r} is refused: {problems}. Fix the "
                "block (or the operator's allowed token providers) and save it again"
            ) from exc
        raise TrackingConfigError(
            f"could not load the MlflowCredentials block {name!r} ({type(exc).__name__}): "
            "check its name and that PREFECT_API_URL reaches the Prefect API it is saved in"
        ) from exc
    assert isinstance(block, MlflowCredentials)
    return block


def use_block(credentials: MlflowCredentials | str, tracking_uri: str | None = None) -> str:
    """Scope a block's credential to its server; return the tracking URI to use.

    For callers that take no ``TrackingContext`` (the CLI, the reconcile task): the URI is
    ``tracking_uri``, else the block's, else the environment's, else the default.

    Args:
        credentials: A block, or the name of a saved one.
        tracking_uri: An explicit tracking URI, or None.

    Returns:
        The resolved tracking URI.

    Raises:
        TrackingConfigError: the block cannot be loaded, the URI is invalid, or it is
            another server than the block's.

    Example:
        >>> use_block(MlflowCredentials(tracking_uri="http://127.0.0.1:5000"))
        'http://127.0.0.1:5000'
    """
    block = load_block(credentials) if isinstance(credentials, str) else credentials
    uri = resolve_tracking_uri(tracking_uri, credentials=block)
    apply_credentials(block, uri)
    return uri


# a handle's "mlflow-credentials/<name>" reference loads the saved block, in any process
register_loader(BLOCK_REFERENCE_KIND, load_block)
