"""Credentials for tracking servers, in one package: kinds, scope, tokens, the Block.

What a user builds: an ``MlflowCredentials`` Prefect Block (saved, loaded by name in
any process), or a ``ServerCredentials`` of a ``BasicAuth``, ``BearerToken`` or
``TokenProvider`` (for plain use, or a live token provider); either goes to
``setup_mlflow(credentials=...)``, the finders and the CLI. A credential is sent to
its own server only (scheme, host, port, path prefix), never written to the
environment, and never shown. A block names only token providers the operator allows
(``allow_token_provider``) and scopes of its own server. Register the block type with
``prefect block register -m tracking_tasks.auth``.
"""

from tracking_tasks.auth._apply import clear_scoped_credentials
from tracking_tasks.auth._block import MlflowCredentials
from tracking_tasks.auth._kinds import BasicAuth, BearerToken, Credential, ServerCredentials
from tracking_tasks.auth._providers import allow_token_provider
from tracking_tasks.auth._scope import Origin, authorization_for, scoped_origins
from tracking_tasks.auth._tokens import TokenProvider, TokenSource

__all__ = [
    "BasicAuth",
    "BearerToken",
    "Credential",
    "MlflowCredentials",
    "Origin",
    "ServerCredentials",
    "TokenProvider",
    "TokenSource",
    "allow_token_provider",
    "authorization_for",
    "clear_scoped_credentials",
    "scoped_origins",
]
