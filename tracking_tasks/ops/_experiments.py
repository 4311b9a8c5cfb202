"""Experiments: make sure one exists (create, restore), look names up, list them all."""

from __future__ import annotations

from collections.abc import Sequence

from tracking_tasks.errors import (
    ExperimentNotFoundError,
    ExperimentSetupError,
    RunSearchError,
    error_code,
    mlflow_errors,
)
from tracking_tasks.ops._client import get_client
from tracking_tasks.ops._workspaces import place_of

#: Experiments asked for per ``search_experiments`` request.
PAGE_SIZE = 1000


def ensure_experiment(
    tracking_uri: str,
    name: str,
    *,
    registry_uri: str | None = None,
    artifact_location: str | None = None,
    workspace: str | None = None,
) -> str:
    """Return the experiment's id, creating it if missing and restoring it if deleted.

    Safe to call from several processes at once: a concurrent creation is found again.

    Args:
        tracking_uri: The tracking URI (resolved).
        name: The experiment name.
        registry_uri: The model registry URI, or None.
        artifact_location: Artifact root used if the experiment is created.
        workspace: The MLflow workspace the experiment is in, or None.

    Returns:
        The experiment id.

    Raises:
        ExperimentSetupError: the store is unreachable or refuses the experiment.

    Example:
        >>> import tempfile
        >>> uri = f"sqlite:///{tempfile.mkdtemp()}/mlflow.db"
        >>> ensure_experiment(uri, "ner") == ensure_experiment(uri, "ner")
        True
    """
    from mlflow.exceptions import MlflowException

    client = get_client(tracking_uri, registry_uri, workspace=workspace)
    with mlflow_errors(
        f"could not find, create or restore experiment {name!r} on "
        f"{place_of(tracking_uri, workspace)}",
        default=ExperimentSetupError,
    ):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return str(client.create_experiment(name, artifact_location=artifact_location))
            except MlflowException as exc:
                if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)  # created concurrently
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)


def experiment_ids(
    tracking_uri: str, names: Sequence[str], *, workspace: str | None = None
) -> list[str]:
    """Look each experiment name up (one request each); unknown or deleted names raise.

    Args:
        tracking_uri: The tracking URI (resolved).
        names: Experiment names.
        workspace: The MLflow workspace they are in, or None.

    Returns:
        Their ids, in the same order.

    Raises:
        ExperimentNotFoundError: a name does not exist or is deleted.
        RunSearchError: the server failed or could not be reached.

    Example:
        >>> import tempfile
        >>> uri = f"sqlite:///{tempfile.mkdtemp()}/mlflow.db"
        >>> experiment_ids(uri, [ensure_experiment(uri, "ner") and "ner"]) != []
        True
    """
    client = get_client(tracking_uri, workspace=workspace)
    ids = []
    for name in names:
        with mlflow_errors(
            f"could not look up experiment {name!r} on {place_of(tracking_uri, workspace)}",
            default=RunSearchError,
        ):
            experiment = client.get_experiment_by_name(name)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            state = "is deleted" if experiment is not None else "does not exist"
            raise ExperimentNotFoundError(
                f"experiment {name!r} {state} on {place_of(tracking_uri, workspace)}: "
                "check the name (setup_mlflow creates it), the tracking URI and the workspace"
            )
        ids.append(str(experiment.experiment_id))
    return ids


def all_experiment_ids(tracking_uri: str, *, workspace: str | None = None) -> list[str]:
    """Every active experiment on the server (in the workspace), paged.

    Args:
        tracking_uri: The tracking URI (resolved).
        workspace: The MLflow workspace, or None.

    Returns:
        The ids of every active experiment.

    Raises:
        RunSearchError: the server failed or could not be reached.

    Example:
        >>> import tempfile
        >>> all_experiment_ids(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
        ['0']
    """
    client = get_client(tracking_uri, workspace=workspace)
    ids: list[str] = []
    token: str | None = None
    with mlflow_errors(
        f"could not list the experiments on {place_of(tracking_uri, workspace)}",
        default=RunSearchError,
    ):
        while True:
            page = client.search_experiments(max_results=PAGE_SIZE, page_token=token)
            ids.extend(str(e.experiment_id) for e in page)
            token = page.token
            if not token:
                return ids
