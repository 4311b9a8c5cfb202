"""Limits the tracking server (or its database, or a proxy in front of it) enforces, kept
by the library before anything is written: a run name's length on every backend, a
filter value ending in a backslash, and the size of every log_batch request as sent."""

from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from tests.servers import FaultProxy
from tracking_tasks import TrackingConfig, setup_mlflow
from tracking_tasks.errors import InvalidArgumentError
from tracking_tasks.ops._filters import tag_equals
from tracking_tasks.ops._finders import find_mlflow_runs, find_run_by_config_hash
from tracking_tasks.ops._lifecycle import end_mlflow_run
from tracking_tasks.ops._logging import RunLogger, log_params, set_tags
from tracking_tasks.ops._runs import create_mlflow_run

LOG_BATCH = r"^POST /api/2\.0/mlflow/runs/log-batch"
#: MLflow's limit on one log_batch request (``MAX_BATCH_LOG_REQUEST_SIZE``), in bytes.
BATCH_REQUEST_LIMIT = 1_000_000


@pytest.mark.backends
def test_a_run_name_over_250_characters_is_refused_before_anything_is_written(
    tracking_config: TrackingConfig,
) -> None:
    """SQLite stored a 251-character name; PostgreSQL refused it inside MLflow (a
    RunCreationError from the database). Now it is one clear error on both, and no run."""
    ctx = setup_mlflow.fn(tracking_config)
    with pytest.raises(InvalidArgumentError, match="251 characters; MLflow stores at most 250"):
        create_mlflow_run(ctx, "r" * 251, config={"lr": 0.1})
    client = MlflowClient(ctx.tracking_uri)
    assert client.search_runs([ctx.experiment_id], run_view_type=ViewType.ALL) == []
    longest = create_mlflow_run(ctx, "r" * 250)  # the limit itself is fine everywhere
    assert client.get_run(longest.run_id).info.run_name == "r" * 250
    end_mlflow_run(longest)


@pytest.mark.backends
def test_a_tag_value_ending_in_a_backslash_is_found(tracking_config: TrackingConfig) -> None:
    """MLflow's tokenizer reads ``\\'`` as an escaped quote: ``tags.dir = 'C:\\'`` followed
    by another clause was a malformed filter. The clause now goes last, where it parses."""
    ctx = setup_mlflow.fn(tracking_config)
    config = {"data": "windows"}
    wanted = create_mlflow_run(ctx, "wanted", config=config, tags={"dir": "C:\\data\\"})
    other = create_mlflow_run(ctx, "other", config=config, tags={"dir": "C:\\data"})
    for ref in (wanted, other):
        MlflowClient(ctx.tracking_uri).set_tag(ref.run_id, "stage", f"eval-{ref.run_name}\\")
        end_mlflow_run(ref)

    found = find_mlflow_runs(ctx, tag_equals("dir", "C:\\data\\"), status="FINISHED")
    assert [r.run_id for r in found] == [wanted.run_id]
    found = find_mlflow_runs(ctx, tag_equals("dir", "C:\\data"), status="FINISHED")
    assert [r.run_id for r in found] == [other.run_id]
    best = find_run_by_config_hash(config, ctx, stage="eval-wanted\\")  # two clauses + status
    assert best is not None and best.run_id == wanted.run_id


@pytest.mark.parametrize(
    ("kind", "char"),
    [("cjk", "\u6f22"), ("control", "\x01"), ("emoji", "\U0001f600")],
)
def test_every_log_batch_request_stays_under_the_limit_as_sent(
    tracking_config: TrackingConfig,
    module_proxy: FaultProxy,
    fluent_reset: None,
    kind: str,
    char: str,
) -> None:
    """A CJK character is 3 bytes of UTF-8 but 6 in the JSON MLflow sends (``\\u6f22``), a
    control character 1 and 6, an emoji 4 and 12: counted as UTF-8, 100 params of 6,000
    such characters went out in requests of up to 3.6 MB. Every request is now under
    MLflow's 1 MB, and every value arrives intact."""
    recorder = module_proxy  # records the size of every log_batch request it forwards
    via = tracking_config.model_copy(update={"tracking_uri": recorder.url})
    ctx = setup_mlflow.fn(via)
    run = create_mlflow_run(ctx, f"batch-{kind}")
    params = {f"p{i:03d}": char * 6000 for i in range(100)}
    tags = {f"t{i:03d}": char * 8000 for i in range(100)}
    recorder.configure(match=LOG_BATCH)
    log_params(run, params)
    set_tags(run, tags)
    with RunLogger(run, flush_interval_seconds=None) as logger:  # the same split, buffered
        logger.log_params({f"q{i:03d}": char * 6000 for i in range(100)})
        key = f"m-{uuid.uuid4().hex[:6]}"
        for step in range(3000):
            logger.log_metric(key, step / 3, step)
    bodies = recorder.stats()["candidate_bodies"]
    assert max(bodies) <= BATCH_REQUEST_LIMIT, sorted(bodies)[-5:]
    assert len(bodies) >= 10  # 5.4 MB of escaped text could not go in fewer
    data = MlflowClient(tracking_config.tracking_uri).get_run(run.run_id).data
    assert {k: v for k, v in data.params.items() if k.startswith("p")} == params
    assert {k: v for k, v in data.tags.items() if k in tags} == tags
    assert len([k for k in data.params if k.startswith("q")]) == 100
    end_mlflow_run(run)
