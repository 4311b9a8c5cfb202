"""The Prefect artifacts the library publishes: each under a key of its own, written once.

A run's link (``mlflow-run-<run id>``) and a sweep's table of trials
(``mlflow-sweep-<run id>``) are keyed, so ``prefect artifact ls`` and the UI's Artifacts
page list them by name, and ``prefect artifact inspect <key>`` finds one. A write that
would repeat the latest version under its key (a retried task publishing the same link)
is skipped; a changed one (a resumed sweep's longer table) becomes the key's new version.
Writes go out on the run memory's background writer, off the flow's path.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from tracking_tasks.tasks._run_memory import RUN_MEMORY, Write

#: What a Prefect artifact key may hold: lowercase letters, digits and dashes.
_NOT_IN_KEY = re.compile(r"[^a-z0-9-]+")


def artifact_key(kind: str, run_id: str) -> str:
    """The key of the library's artifact of one kind for one MLflow run.

    Args:
        kind: ``run`` (the run's link) or ``sweep`` (a sweep's table of trials).
        run_id: The MLflow run id.

    Returns:
        ``mlflow-<kind>-<run id>``, made a valid Prefect key.

    Example:
        >>> artifact_key("run", "8f3c2b1a9d")
        'mlflow-run-8f3c2b1a9d'
    """
    return _NOT_IN_KEY.sub("-", f"mlflow-{kind}-{run_id}".lower()).strip("-")


def keyed_markdown(
    key: str,
    markdown: str,
    description: str,
    flow_run_id: str | None,
    task_run_id: str | None = None,
) -> Write:
    """A background write of a markdown artifact under ``key``, skipped if it would repeat.

    Args:
        key: The artifact's key (see :func:`artifact_key`).
        markdown: Its content (a Prefect link artifact is ``[text](url)``).
        description: Its description.
        flow_run_id: The flow run it belongs to.
        task_run_id: The task run it belongs to, if any.

    Returns:
        The write, for ``RUN_MEMORY.writer.submit``.

    Example:
        >>> write = keyed_markdown("mlflow-run-abc", "[train](http://x)", "run", None)
        >>> callable(write)
        True
    """

    def write(client: Any) -> None:
        from prefect.client.schemas.actions import ArtifactCreate
        from prefect.client.schemas.filters import (
            ArtifactCollectionFilter,
            ArtifactCollectionFilterKey,
        )

        latest = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key])),
            limit=1,
        )
        if latest and latest[0].data == markdown:
            return  # written already (a retry publishing the same thing)
        client.create_artifact(
            ArtifactCreate(
                key=key,
                type="markdown",
                data=markdown,
                description=description,
                flow_run_id=uuid.UUID(flow_run_id) if flow_run_id else None,
                task_run_id=uuid.UUID(task_run_id) if task_run_id else None,
            )
        )

    return write


def publish(write: Write) -> None:
    """Queue an artifact write on the background writer (never on the flow's path).

    Args:
        write: From :func:`keyed_markdown`.

    Example:
        >>> publish(lambda client: None)
    """
    RUN_MEMORY.writer.submit(write)
