"""Small frozen values passed between tasks: a tracking context, a run and a model handle, a run summary."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from tracking_tasks.tags import CONFIG_HASH_TAG, PARENT_RUN_TAG
from tracking_tasks.urls import experiment_url, model_url, run_url

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = [
    "ModelRef",
    "RunRef",
    "RunSummary",
    "RunSummaryData",
    "RunSummaryInfo",
    "TrackingContext",
]


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
        credentials: Secret-free reference to the credentials for the tracking server
            (a saved ``MlflowCredentials`` block's name), loaded again by a task that runs
            in another process; None when there are none or they cannot travel.
        workspace: The MLflow workspace the experiment is in (a server started with
            ``--enable-workspaces``), or None for the server's default. Every request
            made for this context goes there, whatever thread or process makes it.

    Example:
        >>> ctx = TrackingContext(tracking_uri="http://127.0.0.1:5000", experiment_id="1",
        ...                       experiment_name="ner", config_hash="0" * 64)
        >>> ctx.experiment_url
        'http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning'
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
    credentials: str | None = Field(
        default=None,
        description="Secret-free reference to the server's credentials (a saved block's name).",
    )
    workspace: str | None = Field(
        default=None, description="MLflow workspace of the experiment (None: the default)."
    )

    @property
    def experiment_url(self) -> str | None:
        """The experiment's MLflow UI page, or None for a local store."""
        return experiment_url(self.tracking_uri, self.experiment_id, workspace=self.workspace)


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
        credentials: Secret-free reference to the server's credentials, as in
            ``TrackingContext``.
        workspace: The MLflow workspace the run is in, or None for the default.

    Example:
        >>> ref = RunRef(run_id="abc", experiment_id="1", run_name="train",
        ...              tracking_uri="http://127.0.0.1:5000")
        >>> ref.url
        'http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str = Field(description="MLflow run id.")
    experiment_id: str = Field(description="The run's experiment id.")
    run_name: str = Field(description="The run's name.")
    tracking_uri: str = Field(description="Tracking URI the run lives on.")
    registry_uri: str | None = Field(default=None, description="Model registry URI.")
    parent_run_id: str | None = Field(default=None, description="Parent run of a nested run.")
    config_hash: str | None = Field(default=None, description="config_hash tagged on the run.")
    credentials: str | None = Field(
        default=None,
        description="Secret-free reference to the server's credentials (a saved block's name).",
    )
    workspace: str | None = Field(
        default=None, description="MLflow workspace of the run (None: the default)."
    )

    @property
    def url(self) -> str | None:
        """The run's MLflow UI page, or None for a local store."""
        return run_url(self.tracking_uri, self.experiment_id, self.run_id, workspace=self.workspace)


class ModelRef(BaseModel):
    """A handle on one MLflow 3 logged model, returned by ``log_model``.

    Like ``RunRef`` it holds strings only and names its server explicitly, so it crosses
    tasks, threads, processes and Dask workers, and pickles. ``uri`` is the
    ``models:/<model id>`` URI MLflow's own loaders take.

    Args:
        model_id: The logged model's id (``m-...``).
        name: The model's name.
        experiment_id: The experiment the model lives in.
        source_run_id: The run that produced it (the run it was logged into), or None.
        tracking_uri: Tracking URI the model lives on.
        registry_uri: Model registry URI, or None to use the tracking URI.
        artifact_uri: Where its files are (MLflow's ``artifact_location``), if known.
        credentials: Secret-free reference to the server's credentials, as in
            ``TrackingContext``.
        workspace: The MLflow workspace the model is in, or None for the default.

    Example:
        >>> ref = ModelRef(model_id="m-1f2e", name="digits", experiment_id="1",
        ...                source_run_id="abc", tracking_uri="http://127.0.0.1:5000")
        >>> ref.uri
        'models:/m-1f2e'
        >>> ref.url
        'http://127.0.0.1:5000/#/experiments/1/models/m-1f2e?workflowType=machine_learning'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(description="The logged model's id (m-...).")
    name: str = Field(description="The model's name.")
    experiment_id: str = Field(description="The model's experiment id.")
    source_run_id: str | None = Field(default=None, description="The run that produced it.")
    tracking_uri: str = Field(description="Tracking URI the model lives on.")
    registry_uri: str | None = Field(default=None, description="Model registry URI.")
    artifact_uri: str | None = Field(default=None, description="Where its files are.")
    credentials: str | None = Field(
        default=None,
        description="Secret-free reference to the server's credentials (a saved block's name).",
    )
    workspace: str | None = Field(
        default=None, description="MLflow workspace of the model (None: the default)."
    )

    @property
    def uri(self) -> str:
        """``models:/<model id>``: what ``mlflow.pyfunc.load_model`` and registering take."""
        return f"models:/{self.model_id}"

    @property
    def url(self) -> str | None:
        """The model's MLflow UI page, or None for a local store."""
        return model_url(
            self.tracking_uri, self.experiment_id, self.model_id, workspace=self.workspace
        )


class RunSummaryInfo(BaseModel):
    """``RunSummary.info``: the run's identity and status, named as MLflow's ``RunInfo`` names them.

    So code written against MLflow's ``Run`` (``run.info.run_id``, ``run.info.status``)
    reads a ``RunSummary`` unchanged. Times are milliseconds since the epoch, as MLflow's.

    Args:
        run_id: MLflow run id.
        run_name: The run's name.
        experiment_id: The run's experiment id.
        status: ``RUNNING``, ``SCHEDULED``, ``FINISHED``, ``FAILED`` or ``KILLED``.
        lifecycle_stage: ``active`` or ``deleted``.
        start_time: Start time in ms since the epoch, if known.
        end_time: End time in ms since the epoch, None while it runs.

    Example:
        >>> RunSummaryInfo(run_id="abc", run_name="t", experiment_id="1", status="FINISHED").run_id
        'abc'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str = Field(description="MLflow run id.")
    run_name: str = Field(description="The run's name.")
    experiment_id: str = Field(description="The run's experiment id.")
    status: str = Field(description="The run's MLflow status.")
    lifecycle_stage: str = Field(default="active", description="'active' or 'deleted'.")
    start_time: int | None = Field(default=None, description="Start, ms since the epoch.")
    end_time: int | None = Field(default=None, description="End, ms since the epoch.")

    @property
    def run_uuid(self) -> str:
        """MLflow's older name of ``run_id``."""
        return self.run_id


class RunSummaryData(BaseModel):
    """``RunSummary.data``: metrics, params and tags, named as MLflow's ``RunData`` names them.

    Args:
        metrics: Metric name -> latest value.
        params: Param name -> value.
        tags: Tag name -> value.

    Example:
        >>> RunSummaryData(metrics={"f1": 0.9}).metrics.get("f1")
        0.9
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: dict[str, float] = Field(default_factory=dict, description="Latest metric values.")
    params: dict[str, str] = Field(default_factory=dict, description="Params.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags.")


class RunSummary(BaseModel):
    """One MLflow run as a finder returns it: a frozen, picklable value.

    It also reads as MLflow's ``Run`` does: ``run.info.run_id``, ``run.info.run_name``,
    ``run.info.status``, ``run.data.metrics``, ``run.data.params``, ``run.data.tags``
    (``info`` and ``data`` are small frozen views made on access, not stored).

    Args:
        run_id: MLflow run id.
        run_name: The run's name.
        status: ``RUNNING``, ``SCHEDULED``, ``FINISHED``, ``FAILED`` or ``KILLED``.
        lifecycle_stage: ``active``, or ``deleted`` for a deleted run.
        start_time: When the run started (UTC), if known.
        end_time: When the run ended (UTC), None while it runs.
        experiment_id: The run's experiment id.
        tracking_uri: Tracking URI the run lives on (never carries credentials).
        parent_run_id: The parent of a nested run, else None.
        params: Param name -> value.
        metrics: Metric name -> latest value.
        tags: Tag name -> value, MLflow's own ``mlflow.*`` tags included.
        url: The run's UI page, or None for a local store (see ``run_url``).
        workspace: The MLflow workspace the run is in, or None for the default.

    Example:
        >>> summary = RunSummary(run_id="abc", run_name="train", status="FINISHED",
        ...                      experiment_id="1", tracking_uri="http://127.0.0.1:5000")
        >>> summary.to_ref().run_id, summary.info.status, summary.data.metrics
        ('abc', 'FINISHED', {})
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str = Field(description="MLflow run id.")
    run_name: str = Field(description="The run's name.")
    status: str = Field(description="The run's MLflow status.")
    lifecycle_stage: str = Field(default="active", description="'active' or 'deleted'.")
    start_time: dt.datetime | None = Field(default=None, description="Start time, UTC.")
    end_time: dt.datetime | None = Field(default=None, description="End time, UTC.")
    experiment_id: str = Field(description="The run's experiment id.")
    tracking_uri: str = Field(description="Tracking URI the run lives on.")
    parent_run_id: str | None = Field(default=None, description="Parent run of a nested run.")
    params: dict[str, str] = Field(default_factory=dict, description="Params.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Latest metric values.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags.")
    url: str | None = Field(default=None, description="The run's UI page, or None.")
    workspace: str | None = Field(
        default=None, description="MLflow workspace of the run (None: the default)."
    )

    @classmethod
    def from_run(cls, run: Run, tracking_uri: str, workspace: str | None = None) -> RunSummary:
        """Summarise an MLflow ``Run`` fetched from ``tracking_uri``.

        Args:
            run: An ``mlflow.entities.Run``.
            tracking_uri: The server it came from (no credentials in it).
            workspace: The MLflow workspace it came from, or None.

        Returns:
            The run's ``RunSummary``.

        Example:
            >>> from mlflow.entities import Run, RunData, RunInfo
            >>> info = RunInfo(run_id="abc", experiment_id="1", user_id="u", status="FINISHED",
            ...                start_time=0, end_time=None, lifecycle_stage="active")
            >>> RunSummary.from_run(Run(info, RunData()), "sqlite:///m.db").status
            'FINISHED'
        """
        info, data = run.info, run.data
        return cls(
            run_id=info.run_id,
            run_name=info.run_name or info.run_id,
            status=info.status,
            lifecycle_stage=info.lifecycle_stage,
            start_time=_time(info.start_time),
            end_time=_time(info.end_time),
            experiment_id=str(info.experiment_id),
            tracking_uri=tracking_uri,
            parent_run_id=data.tags.get(PARENT_RUN_TAG),
            params=dict(data.params),
            metrics=dict(data.metrics),
            tags=dict(data.tags),
            url=run_url(tracking_uri, str(info.experiment_id), info.run_id, workspace=workspace),
            workspace=workspace,
        )

    @property
    def info(self) -> RunSummaryInfo:
        """The run's identity and status, as MLflow's ``run.info`` names them."""
        return RunSummaryInfo(
            run_id=self.run_id,
            run_name=self.run_name,
            experiment_id=self.experiment_id,
            status=self.status,
            lifecycle_stage=self.lifecycle_stage,
            start_time=_ms(self.start_time),
            end_time=_ms(self.end_time),
        )

    @property
    def data(self) -> RunSummaryData:
        """The run's metrics, params and tags, as MLflow's ``run.data`` names them."""
        return RunSummaryData(metrics=self.metrics, params=self.params, tags=self.tags)

    def to_ref(self) -> RunRef:
        """Return a ``RunRef`` for this run, to log to it with the logging tasks.

        Returns:
            A ``RunRef`` naming the same run on the same server.

        Example:
            >>> RunSummary(run_id="abc", run_name="t", status="FINISHED", experiment_id="1",
            ...            tracking_uri="sqlite:///mlflow.db").to_ref().experiment_id
            '1'
        """
        return RunRef(
            run_id=self.run_id,
            experiment_id=self.experiment_id,
            run_name=self.run_name,
            tracking_uri=self.tracking_uri,
            parent_run_id=self.parent_run_id,
            config_hash=self.tags.get(CONFIG_HASH_TAG),
            workspace=self.workspace,
        )


def _time(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _ms(when: dt.datetime | None) -> int | None:
    return None if when is None else round(when.timestamp() * 1000)
