"""The MlflowCredentials Prefect Block: where to track and how to authenticate there."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from tracking_tasks.config.models import AzureMLWorkspace
from tracking_tasks.urls import check_uri

__all__ = ["MlflowCredentials"]

#: MLflow's own environment variables for HTTP authentication, read on every request.
USERNAME_VAR = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VAR = "MLFLOW_TRACKING_PASSWORD"
TOKEN_VAR = "MLFLOW_TRACKING_TOKEN"


class MlflowCredentials(Block):
    """Credentials for an MLflow tracking server, stored as a Prefect Block.

    Secrets are ``SecretStr``: Prefect stores them encrypted and shows them as
    ``**********``. ``setup_mlflow(credentials=...)`` hands them to MLflow through its own
    environment variables (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or
    ``MLFLOW_TRACKING_TOKEN``), so they never reach a log line, a tag, a param, a URL or
    a Prefect result. Register the block type with
    ``prefect block register -m tracking_tasks.tasks.blocks``.

    Args:
        tracking_uri: The MLflow server these credentials are for (no password in it).
            ``setup_mlflow`` refuses to send them to any other tracking URI.
        username: User name for HTTP basic auth.
        password: Password for HTTP basic auth.
        token: Bearer token (instead of username and password).
        azure_workspace: An Azure ML workspace to track into instead of
            ``tracking_uri`` (authenticated through Azure, not these secrets).

    Raises:
        pydantic.ValidationError: a password without a username, both a password and a
            token, both a tracking URI and an Azure workspace, or a URI with a password.

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
    azure_workspace: AzureMLWorkspace | None = Field(
        default=None,
        description="Azure ML workspace to track into (authenticated through Azure).",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        return None if value is None else check_uri(value, "tracking_uri")

    @model_validator(mode="after")
    def _consistent(self) -> MlflowCredentials:
        if self.password is not None and not self.username:
            raise ValueError("a password needs a username (MLflow sends them as basic auth)")
        if self.password is not None and self.token is not None:
            raise ValueError("give a username and password or a token, not both")
        if self.tracking_uri is not None and self.azure_workspace is not None:
            raise ValueError("give either tracking_uri or azure_workspace, not both")
        return self

    def mlflow_environment(self) -> dict[str, str | None]:
        """Return MLflow's authentication variables for these credentials.

        A value of None means "remove this variable", so a token left over from
        elsewhere does not win over (or mix with) these credentials.

        Returns:
            ``{variable name: value or None}`` for ``MLFLOW_TRACKING_USERNAME``,
            ``MLFLOW_TRACKING_PASSWORD`` and ``MLFLOW_TRACKING_TOKEN``; empty when the
            block holds no secret.

        Example:
            >>> MlflowCredentials(token=SecretStr("t")).mlflow_environment()["MLFLOW_TRACKING_TOKEN"]
            't'
        """
        if self.token is not None:
            return {
                USERNAME_VAR: None,
                PASSWORD_VAR: None,
                TOKEN_VAR: self.token.get_secret_value(),
            }
        if self.username:
            password = self.password.get_secret_value() if self.password is not None else None
            return {USERNAME_VAR: self.username, PASSWORD_VAR: password, TOKEN_VAR: None}
        return {}

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
            "username": self.username,
            "has_password": self.password is not None,
            "has_token": self.token is not None,
        }
