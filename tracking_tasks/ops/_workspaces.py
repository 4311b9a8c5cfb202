"""MLflow workspaces per context: every request made for a handle goes to its workspace.

MLflow's client picks a request's workspace (the ``X-MLFLOW-WORKSPACE`` header) from a
context variable, then from ``MLFLOW_WORKSPACE``; its own switch, ``mlflow.set_workspace``,
writes the process environment, so two flows in one process (or one Dask worker) would
send each other's requests to one workspace. Here a workspace is a property of the
handle instead, and is applied where the request is made:

- :func:`scoped` wraps the client (or an artifact repository) a handle's calls go
  through: each call runs inside :func:`workspace_scope` of the handle's workspace,
  whatever thread makes it (``ops._client.get_client`` returns one per workspace);
- the library's own artifact transport sends the header from the handle itself;
- MLflow's own worker threads (artifact downloads, multipart uploads) do not see the
  caller's context: the request-auth plugin fills a missing header from the artifact
  path, which names the workspace (``auth._plugin``).

The environment is never written.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tracking_tasks._private_apis import request_workspace
from tracking_tasks._validation import check_workspace_name
from tracking_tasks.handles import RunRef, RunSummary, TrackingContext
from tracking_tasks.urls import redact_uri

log = logging.getLogger(__name__)

_plugin_lock = threading.Lock()
_plugin_warned = False


@contextlib.contextmanager
def workspace_scope(
    workspace: str | TrackingContext | RunRef | RunSummary | None,
) -> Iterator[str | None]:
    """Send the MLflow requests made inside the block, in this thread, to a workspace.

    For your own MLflow calls (``MlflowClient``, ``mlflow.*``) next to the library's:
    the library's own calls need no block, each handle carries its workspace. Only this
    thread (or task) is affected, never ``os.environ``: two flows in one process can
    each be in their own workspace. None (or a handle without a workspace) changes
    nothing.

    Args:
        workspace: A workspace name, or a ``TrackingContext``, ``RunRef`` or
            ``RunSummary`` whose workspace to use.

    Yields:
        The workspace name, or None.

    Raises:
        TrackingConfigError: the name is not a valid MLflow workspace name.

    Example:
        >>> from mlflow.utils.workspace_context import get_request_workspace
        >>> with workspace_scope("team-a"):
        ...     get_request_workspace()
        'team-a'
        >>> get_request_workspace() is None
        True
    """
    name = workspace if isinstance(workspace, str | None) else workspace.workspace
    if name is None:
        yield None
        return
    with request_workspace(check_workspace_name(name)):
        yield name


class Scoped:
    """A view of an object whose every call runs in one MLflow workspace's scope.

    Attributes reached through it are views too (``client._tracking_client.store``), so a
    call made through any of them is scoped; what a call returns is the plain value.
    Whichever thread calls, the request goes to the workspace: the scope is entered per
    call, not inherited from the thread that made the view.
    """

    __slots__ = ("_tt_target", "_tt_workspace")

    def __init__(self, target: Any, workspace: str) -> None:
        object.__setattr__(self, "_tt_target", target)
        object.__setattr__(self, "_tt_workspace", workspace)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._tt_target, name)
        if callable(value):
            return _scoped_call(value, self._tt_workspace)
        if value is None or isinstance(
            value, str | bytes | int | float | bool | tuple | list | dict | set | frozenset
        ):
            return value  # plain data: nothing in it sends a request
        return Scoped(value, self._tt_workspace)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with request_workspace(self._tt_workspace):
            return self._tt_target(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Scoped({self._tt_target!r}, workspace={self._tt_workspace!r})"


def _scoped_call(method: Callable[..., Any], workspace: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with request_workspace(workspace):
            return method(*args, **kwargs)

    return call


def scoped(target: Any, workspace: str | None) -> Any:
    """``target`` itself without a workspace, else a :class:`Scoped` view of it.

    The first view of the process also names the library's request-auth plugin (the
    workspace header of MLflow's own artifact threads comes from it), unless another
    plugin is named: then those threads' requests fail loudly rather than going
    elsewhere (the server refuses an artifact path of another workspace).
    """
    if workspace is None:
        return target
    _name_plugin()
    return Scoped(target, check_workspace_name(workspace))


def _name_plugin() -> None:
    """Name the library's request-auth plugin (cheap when it already is named)."""
    global _plugin_warned
    from tracking_tasks._environment import AUTH_VAR
    from tracking_tasks.auth._plugin import activate_scoped_auth
    from tracking_tasks.auth._scope import PROVIDER_NAME
    from tracking_tasks.errors import TrackingConfigError

    if os.environ.get(AUTH_VAR) == PROVIDER_NAME:
        return
    try:
        activate_scoped_auth()
    except TrackingConfigError:
        with _plugin_lock:
            warned, _plugin_warned = _plugin_warned, True
        if not warned:
            log.warning(
                "%s names another request-auth plugin: the artifact transfers MLflow runs "
                "on its own threads carry no MLflow workspace header",
                AUTH_VAR,
            )


def place_of(uri: str, workspace: str | None = None) -> str:
    """The place a message names: the server's URI, redacted, and the workspace, if any.

    Example:
        >>> place_of("http://u:p@127.0.0.1:5000", "team-a")
        "http://u:***@127.0.0.1:5000 in workspace 'team-a'"
    """
    return redact_uri(uri) + (f" in workspace {workspace!r}" if workspace else "")
