"""The ``tracking-tasks`` request-auth plugin of MLflow: scoped credentials on its requests.

MLflow's HTTP client asks the request-auth provider named by ``MLFLOW_TRACKING_AUTH``
for a ``requests`` auth object on every request (``mlflow.utils.rest_utils.http_request``).
This package registers :class:`ScopedAuthProvider` under the entry point group
``mlflow.request_auth_provider``; its auth object adds the ``Authorization`` header of
the credential scoped to the request's origin (:mod:`tracking_tasks.auth._scope`) and
leaves any other request as MLflow prepared it (with the credentials of MLflow's own
environment variables, if the user set them). A refused token is handled by
:func:`~tracking_tasks.auth._scope.retry_authorization`'s rule. It also gives an
artifact request without an MLflow workspace header the workspace its path names
(:func:`artifact_workspace`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import requests
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from tracking_tasks._environment import name_auth_plugin
from tracking_tasks._private_apis import register_request_auth_provider
from tracking_tasks._validation import check_workspace_name
from tracking_tasks.auth._scope import (
    PROVIDER_NAME,
    WORKSPACE_HEADER,
    authorization_for,
    retry_authorization,
)
from tracking_tasks.errors import TrackingConfigError

_ARTIFACT_ROUTE = re.compile(
    r"/api/2\.0/mlflow-artifacts/(?:artifacts|mpu/create|mpu/complete|mpu/abort|presigned)"
    r"(?:/(.*))?$"
)


def artifact_workspace(url: str) -> str | None:
    """The MLflow workspace an artifact request names in its path, or None.

    With workspaces on, a run's artifacts live under ``workspaces/<name>/`` of the
    server's artifact root (``mlflow-artifacts:/workspaces/team-a/7/<run>/artifacts``),
    and the server refuses a request whose workspace header names another. The path (or
    a listing's ``?path=``) is the one place such a request says its workspace without
    the caller's context.

    Args:
        url: The request URL.

    Returns:
        The workspace name, or None for any other request.

    Example:
        >>> artifact_workspace("http://h:5000/api/2.0/mlflow-artifacts/artifacts/"
        ...                    "workspaces/team-a/7/abc/artifacts/model.pkl")
        'team-a'
        >>> artifact_workspace("http://h:5000/api/2.0/mlflow/runs/get?run_id=abc") is None
        True
    """
    parts = urlsplit(url)
    match = _ARTIFACT_ROUTE.search(unquote(parts.path))
    if match is None:
        return None
    path = match.group(1) or next((v for k, v in parse_qsl(parts.query) if k == "path"), "")
    segments = path.lstrip("/").split("/")
    if len(segments) < 2 or segments[0] != "workspaces":
        return None
    try:
        return check_workspace_name(segments[1])
    except TrackingConfigError:
        return None  # not a workspace name: the server answers the request as it is


class ScopedAuth(requests.auth.AuthBase):
    """Adds the scoped credential of the request's origin, and nothing elsewhere.

    A request that got one also gets a response hook, which (1) sends it again once
    after a 401 if :func:`~tracking_tasks.auth._scope.retry_authorization` gives a fresh
    value, and (2) on a redirect, authorises the next request for *its* URL: requests
    keeps the header on a redirect to the same host and port, so a server at
    ``/team-a/`` redirecting to ``/team-b/`` would otherwise carry team A's secret there.
    The next request gets the credential scoped to its own origin and prefix, or none.

    Also fills a missing MLflow workspace header from an artifact request's path: MLflow
    sends artifact transfers from its own worker threads, which do not see the caller's
    workspace, and the path names it (the server requires the two to agree).
    """

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if WORKSPACE_HEADER not in request.headers:
            workspace = artifact_workspace(request.url or "")
            if workspace is not None:
                request.headers[WORKSPACE_HEADER] = workspace
        value = authorization_for(request.url or "")
        if value is not None:
            request.headers["Authorization"] = value
            request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        response = self._retry_on_401(response, **kwargs)
        if response.is_redirect:
            # requests copies this request for the redirect (then drops the header only
            # for another host): set what the target's own origin and prefix allow
            target = urljoin(response.url, response.headers["Location"])
            value = authorization_for(target)
            if value is None:
                response.request.headers.pop("Authorization", None)
            else:
                response.request.headers["Authorization"] = value
        return response

    def _retry_on_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        if (
            response.status_code != 401
            or getattr(request, "_tt_retried", False)
            or not isinstance(request.body, bytes | str | type(None))  # a stream: not again
        ):
            return response
        refused = request.headers.get("Authorization")
        value = retry_authorization(
            request.url or "", refused if isinstance(refused, str) else None
        )
        if value is None:
            return response
        response.content  # noqa: B018  (read it so the connection can be reused)
        response.close()
        # the same request object, sent again: requests follows a redirect from the
        # request it was given, so a copy would leave the refused header on that path
        request.headers["Authorization"] = value
        request._tt_retried = True  # type: ignore[attr-defined]
        connection = response.connection  # type: ignore[attr-defined]
        again: requests.Response = connection.send(request, **kwargs)
        again.history.append(response)
        again.request = request
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


def activate_scoped_auth() -> bool:
    """Route MLflow's requests through the ``tracking-tasks`` request-auth plugin.

    The plugin is registered with MLflow (its entry point does that for an installed
    package) and named in ``MLFLOW_TRACKING_AUTH``; it adds a scoped credential to
    requests for its own server only.

    Returns:
        True when the variable was set now, False when it already was.

    Raises:
        TrackingConfigError: ``MLFLOW_TRACKING_AUTH`` names another plugin.

    Example:
        >>> getfixture("monkeypatch").delenv("MLFLOW_TRACKING_AUTH", raising=False)
        >>> activate_scoped_auth()
        True
    """
    register_request_auth_provider(ScopedAuthProvider)
    return name_auth_plugin(PROVIDER_NAME)
