"""Each use of another library's private API (tracking_tasks/_private_apis.py) still does
what the library relies on, with the pinned versions: an upgrade that changes one fails
here, by name."""

from __future__ import annotations

import os
import threading

from tracking_tasks._private_apis import request_workspace


def test_request_workspace_is_mlflows_request_workspace_in_this_context_only() -> None:
    """MLflow's client names each request's workspace from this context variable
    (``get_request_workspace``, read by ``rest_utils.http_request``); setting it touches
    no other thread and not ``os.environ`` (``mlflow.set_workspace`` writes both)."""
    from mlflow.utils import rest_utils
    from mlflow.utils.workspace_context import get_request_workspace

    assert rest_utils.get_request_workspace is get_request_workspace
    environment = dict(os.environ)
    seen: dict[str, str | None] = {}

    def elsewhere() -> None:
        seen["other thread"] = get_request_workspace()

    with request_workspace("team-a"):
        seen["here"] = get_request_workspace()
        with request_workspace("team-b"):
            seen["nested"] = get_request_workspace()
        seen["after nested"] = get_request_workspace()
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    assert seen == {
        "here": "team-a",
        "nested": "team-b",
        "after nested": "team-a",
        "other thread": None,
    }
    assert get_request_workspace() is None
    assert dict(os.environ) == environment
