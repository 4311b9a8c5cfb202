"""The ``tracking-tasks`` request-auth plugin of MLflow: scoped credentials on its requests.

MLflow's HTTP client asks the request-auth provider named by ``MLFLOW_TRACKING_AUTH``
for a ``requests`` auth object on every request (``mlflow.utils.rest_utils.http_request``).
This package registers :class:`ScopedAuthProvider` under the entry point group
``mlflow.request_auth_provider``; its auth object adds the ``Authorization`` header of
the credential scoped to the request's origin (:mod:`tracking_tasks.ops.credentials`)
and leaves any other request as MLflow prepared it (with the credentials of MLflow's own
environment variables, if the user set them). A token refused with HTTP 401 is asked
again from its provider and the request sent once more.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from tracking_tasks.ops.credentials import PROVIDER_NAME, authorization_for, is_refreshable

__all__ = ["PROVIDER_NAME", "ScopedAuth", "ScopedAuthProvider", "register_provider"]

log = logging.getLogger(__name__)


class ScopedAuth(requests.auth.AuthBase):
    """Adds the scoped credential of the request's origin, and nothing elsewhere."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = request.url or ""
        value = authorization_for(url)
        if value is not None:
            request.headers["Authorization"] = value
            if is_refreshable(url):
                request.register_hook("response", self._retry_on_401)
        return request

    def _retry_on_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        if (
            response.status_code != 401
            or getattr(request, "_tt_retried", False)
            or not isinstance(request.body, bytes | str | type(None))
        ):
            return response
        value = authorization_for(request.url or "", refresh=True)
        if value is None:
            return response
        log.info("The tracking server refused the token; asked its provider for a fresh one")
        response.content  # noqa: B018  (read it so the connection can be reused)
        response.close()
        retry = request.copy()
        retry.headers["Authorization"] = value
        retry._tt_retried = True  # type: ignore[attr-defined]
        connection = response.connection  # type: ignore[attr-defined]
        again: requests.Response = connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScopedAuth)

    def __hash__(self) -> int:
        return hash(ScopedAuth)


_AUTH = ScopedAuth()


class ScopedAuthProvider(RequestAuthProvider):
    """MLflow request-auth provider ``tracking-tasks``: credentials scoped per origin."""

    def get_name(self) -> str:
        return PROVIDER_NAME

    def get_auth(self) -> ScopedAuth:
        return _AUTH


def register_provider() -> None:
    """Make sure MLflow's registry knows the provider (the entry point normally does).

    When the package runs from a source tree without being installed, its entry point is
    not visible; the provider is then registered through the same registry MLflow's
    entry-point loading fills.
    """
    from mlflow.tracking.request_auth.registry import _request_auth_provider_registry

    if not any(p.get_name() == PROVIDER_NAME for p in _request_auth_provider_registry):
        _request_auth_provider_registry.register(ScopedAuthProvider)  # type: ignore[no-untyped-call]
