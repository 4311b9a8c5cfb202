"""Small frozen values passed between tasks: a tracking context and a run handle."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks.urls import experiment_url, run_url

__all__ = ["RunRef", "TrackingContext"]


class TrackingContext(BaseModel):
    """Where runs go: the resolved tracking URI and experiment, returned by ``setup_mlflow``.

    A plain frozen value (no client, no connection), safe to pass to tasks on any task
    runner, pickle, or persist as a Prefect result.

    Args:
        tracking_uri: Resolved MLflow tracking URI (relative SQLite paths made absolute).
        registry_uri: Model registry URI, or None to use the tracking URI.
        experiment_id: MLflow experiment id.
        experiment_name: MLflow experiment name.
        config_hash: ``config_hash`` of the resolved tracking config.
        default_tags: Tags put on every run created under this context.

    Example:
        >>> ctx = TrackingContext(tracking_uri="http://127.0.0.1:5000", experiment_id="1",
        ...                       experiment_name="ner", config_hash="0" * 64)
        >>> ctx.experiment_url
        'http://127.0.0.1:5000/#/experiments/1'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str = Field(description="Resolved MLflow tracking URI.")
    registry_uri: str | None = Field(default=None, description="Model registry URI.")
    experiment_id: str = Field(description="MLflow experiment id.")
    experiment_name: str = Field(description="MLflow experiment name.")
    config_hash: str = Field(description="config_hash of the resolved tracking config.")
    default_tags: dict[str, str] = Field(
        default_factory=dict, description="Tags set on every run created under this context."
    )

    @property
    def experiment_url(self) -> str | None:
        """The experiment's MLflow UI page, or None for a local store."""
        return experiment_url(self.tracking_uri, self.experiment_id)


class RunRef(BaseModel):
    """A handle on one MLflow run, returned by ``create_mlflow_run``.

    Every task that logs to a run takes this handle: it names the run and the server
    explicitly, so no task depends on MLflow's thread-local "active run".

    Args:
        run_id: MLflow run id.
        experiment_id: The run's experiment id.
        run_name: The run's name.
        tracking_uri: Tracking URI the run lives on.
        registry_uri: Model registry URI, or None.
        parent_run_id: The parent run for a nested run.
        config_hash: Hash of the config the run was created for, or None.

    Example:
        >>> ref = RunRef(run_id="abc", experiment_id="1", run_name="train",
        ...              tracking_uri="http://127.0.0.1:5000")
        >>> ref.url
        'http://127.0.0.1:5000/#/experiments/1/runs/abc'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str = Field(description="MLflow run id.")
    experiment_id: str = Field(description="The run's experiment id.")
    run_name: str = Field(description="The run's name.")
    tracking_uri: str = Field(description="Tracking URI the run lives on.")
    registry_uri: str | None = Field(default=None, description="Model registry URI.")
    parent_run_id: str | None = Field(default=None, description="Parent run of a nested run.")
    config_hash: str | None = Field(default=None, description="config_hash tagged on the run.")

    @property
    def url(self) -> str | None:
        """The run's MLflow UI page, or None for a local store."""
        return run_url(self.tracking_uri, self.experiment_id, self.run_id)
