"""Finders against a real mlflow server: paging, filters, best run, config hash, caching."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from prefect import flow

from tests.servers import MlflowServer, free_port
from tracking_tasks import (
    RunSummary,
    TrackingConfig,
    TrackingContext,
    config_hash,
    create_mlflow_run,
    find_best_run,
    find_mlflow_runs,
    find_run_by_config_hash,
    find_runs_for_flow_run,
    get_run_summary,
    mlflow_state_hooks,
    setup_mlflow,
)
from tracking_tasks.errors import (
    ExperimentNotFoundError,
    InvalidArgumentError,
    InvalidSearchError,
    RunNotFoundError,
)
from tracking_tasks.tasks import allow_stale
from tracking_tasks.tasks._cache import LookupCachePolicy

# every test here that uses the server runs on SQLite and on PostgreSQL (conftest.py)
pytestmark = pytest.mark.backends

N_TRIALS = 240
T0 = 1_700_000_000_000  # start times are explicit, so the expected order is known


@dataclass
class Data:
    url: str
    experiment: str
    experiment_id: str
    other: str
    other_id: str
    trial_ids: dict[int, str] = field(default_factory=dict)
    parent_id: str = ""
    child_ids: list[str] = field(default_factory=list)
    deleted_ids: list[str] = field(default_factory=list)
    failed_star_id: str = ""
    config: dict[str, object] = field(default_factory=dict)
    config_runs: dict[str, str] = field(default_factory=dict)
    flow_run_id: str = ""
    flow_runs: list[str] = field(default_factory=list)
    tie_ids: list[str] = field(default_factory=list)


def _run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    start: int,
    *,
    metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    status: str | None = "FINISHED",
) -> str:
    run = client.create_run(experiment_id, start_time=start, run_name=name, tags=tags or {})
    run_id = run.info.run_id
    if metrics or params:
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, start, 0) for k, v in (metrics or {}).items()],
            params=[Param(k, v) for k, v in (params or {}).items()],
            tags=[RunTag("kind", "data")],
        )
    if status is not None:
        client.set_terminated(run_id, status=status, end_time=start + 500)
    return run_id


@pytest.fixture(scope="module")
def data(mlflow_server: MlflowServer) -> Data:
    """Hundreds of runs in one experiment, a few in another, made with the raw client.

    trial i: f1 = (i % 50) / 100 (so several runs tie at each value), stage hpo for even
    i, FAILED when i % 10 == 3, loss only for i % 3 == 0. Plus a nested parent with
    three children, deleted runs, a FAILED run with the highest f1 of all, runs of one
    config, and runs tagged with one Prefect flow run in both experiments.
    """
    client = MlflowClient(mlflow_server.url)
    suffix = uuid.uuid4().hex[:8]
    d = Data(
        url=mlflow_server.url,
        experiment=f"finder-{suffix}",
        experiment_id=client.create_experiment(f"finder-{suffix}"),
        other=f"finder-other-{suffix}",
        other_id=client.create_experiment(f"finder-other-{suffix}"),
    )
    for i in range(N_TRIALS):
        metrics = {"f1": (i % 50) / 100}
        if i % 3 == 0:
            metrics["loss"] = 1.0 + (i % 7)
        d.trial_ids[i] = _run(
            client,
            d.experiment_id,
            f"trial-{i:03d}",
            T0 + i * 1000,
            metrics=metrics,
            params={"i": str(i)},
            tags={"stage": "hpo" if i % 2 == 0 else "train"},
            status="FAILED" if i % 10 == 3 else "FINISHED",
        )
    t = T0 + N_TRIALS * 1000
    d.failed_star_id = _run(
        client, d.experiment_id, "failed-star", t, metrics={"f1": 0.99}, status="FAILED"
    )
    d.parent_id = _run(client, d.experiment_id, "parent", t + 1000, status=None)
    d.child_ids = [
        _run(
            client,
            d.experiment_id,
            f"child-{k}",
            t + 2000 + k,
            tags={"mlflow.parentRunId": d.parent_id},
        )
        for k in range(3)
    ]
    client.set_terminated(d.parent_id)
    d.deleted_ids = [
        _run(client, d.experiment_id, f"deleted-{k}", t + 3000 + k, metrics={"f1": 5.0})
        for k in range(5)
    ]
    for run_id in d.deleted_ids:
        client.delete_run(run_id)
    d.config = {"lr": 0.1, "layers": 2}
    digest = config_hash(d.config)
    for name, offset, stage, status in [
        ("cfg-old", 4000, "training", "FINISHED"),
        ("cfg-new", 5000, "training", "FINISHED"),
        ("cfg-eval", 6000, "eval", "FINISHED"),
        ("cfg-running", 7000, "training", None),
    ]:
        d.config_runs[name] = _run(
            client,
            d.experiment_id,
            name,
            t + offset,
            tags={"tracking_tasks.config_hash": digest, "stage": stage},
            status=status,
        )
    d.flow_run_id = str(uuid.uuid4())
    d.flow_runs = [
        _run(client, exp, f"flow-{k}", t + 8000 + k, tags={"prefect.flow_run_id": d.flow_run_id})
        for k, exp in enumerate([d.experiment_id, d.other_id, d.other_id])
    ]
    # two runs with the same start time and the same score: the smaller run id wins
    d.tie_ids = sorted(
        _run(client, d.other_id, f"tie-{k}", t + 9000, metrics={"score": 1.0}) for k in range(2)
    )
    return d


def _raw_all(d: Data, view: int = ViewType.ACTIVE_ONLY) -> list[str]:
    client = MlflowClient(d.url)
    ids: list[str] = []
    token = None
    while True:
        page = client.search_runs(
            [d.experiment_id], run_view_type=view, max_results=1000, page_token=token
        )
        ids += [r.info.run_id for r in page]
        token = page.token
        if not token:
            return ids


def _dead_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: any request would fail


# --- find_mlflow_runs --------------------------------------------------------------------


def test_follows_page_tokens_to_the_end(data: Data) -> None:
    runs = find_mlflow_runs.fn(data.experiment, tracking_uri=data.url, page_size=7)
    expected = _raw_all(data)
    assert len(expected) > 7 * 30  # many pages of 7
    assert [r.run_id for r in runs] == expected  # every run once, in MLflow's order
    assert len({r.run_id for r in runs}) == len(runs)
    assert not set(data.deleted_ids) & {r.run_id for r in runs}


def test_max_results_stops_part_way(data: Data) -> None:
    some = find_mlflow_runs.fn(data.experiment, tracking_uri=data.url, max_results=23, page_size=5)
    assert [r.run_id for r in some] == _raw_all(data)[:23]


def test_seed_call_shape_with_the_uri_from_the_environment(
    data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", data.url)
    runs = find_mlflow_runs.fn(
        experiment_name=data.experiment, filter_string="tags.stage='hpo' AND metrics.f1 > 0.4"
    )
    expected = {data.trial_ids[i] for i in range(N_TRIALS) if i % 2 == 0 and i % 50 > 40}
    assert {r.run_id for r in runs} == expected
    assert all(r.tags["stage"] == "hpo" and r.metrics["f1"] > 0.4 for r in runs)


def test_summary_fields(data: Data) -> None:
    (run,) = find_mlflow_runs.fn(
        data.experiment, "attributes.run_name = 'trial-006'", tracking_uri=data.url
    )
    assert run == RunSummary(
        run_id=data.trial_ids[6],
        run_name="trial-006",
        status="FINISHED",
        lifecycle_stage="active",
        start_time=dt.datetime.fromtimestamp((T0 + 6000) / 1000, tz=dt.UTC),
        end_time=dt.datetime.fromtimestamp((T0 + 6500) / 1000, tz=dt.UTC),
        experiment_id=data.experiment_id,
        tracking_uri=data.url,
        parent_run_id=None,
        params={"i": "6"},
        metrics={"f1": 0.06, "loss": 7.0},
        tags=run.tags,
        url=f"{data.url}/#/experiments/{data.experiment_id}/runs/{data.trial_ids[6]}?workflowType=machine_learning",
    )
    assert run.tags["stage"] == "hpo" and run.tags["mlflow.runName"] == "trial-006"
    with pytest.raises(pydantic.ValidationError):
        run.status = "FAILED"  # type: ignore[misc]
    assert run.to_ref().run_id == run.run_id


def test_order_by_status_and_several_experiments(data: Data) -> None:
    failed = find_mlflow_runs.fn(
        [data.experiment, data.other],
        tracking_uri=data.url,
        status="FAILED",
        order_by=["metrics.f1 DESC", "attributes.start_time ASC"],
    )
    assert failed[0].run_id == data.failed_star_id
    assert {r.status for r in failed} == {"FAILED"}
    assert len(failed) == 1 + N_TRIALS // 10
    f1s = [r.metrics["f1"] for r in failed]
    assert f1s == sorted(f1s, reverse=True)
    both = find_mlflow_runs.fn([data.experiment, data.other], tracking_uri=data.url)
    assert {r.experiment_id for r in both} == {data.experiment_id, data.other_id}


def test_context_names_server_and_experiment(data: Data) -> None:
    ctx = TrackingContext(
        tracking_uri=data.url,
        experiment_id=data.other_id,
        experiment_name=data.other,
        config_hash="0" * 64,
    )
    runs = find_mlflow_runs.fn(ctx)
    assert {r.experiment_id for r in runs} == {data.other_id} and len(runs) == 4


def test_nested_runs_carry_their_parent(data: Data) -> None:
    children = find_mlflow_runs.fn(
        data.experiment,
        f"tags.mlflow.parentRunId = '{data.parent_id}'",
        tracking_uri=data.url,
        order_by="attributes.start_time ASC",
    )
    assert [c.run_id for c in children] == data.child_ids
    assert {c.parent_run_id for c in children} == {data.parent_id}


def test_deleted_runs_only_on_request(data: Data) -> None:
    deleted_filter = "metrics.f1 > 1"
    assert find_mlflow_runs.fn(data.experiment, deleted_filter, tracking_uri=data.url) == []
    runs = find_mlflow_runs.fn(
        data.experiment, deleted_filter, tracking_uri=data.url, include_deleted=True
    )
    assert {r.run_id for r in runs} == set(data.deleted_ids)
    assert {r.lifecycle_stage for r in runs} == {"deleted"}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"filter_string": "metrics.f1 >"}, "malformed filter string 'metrics.f1 >'"),
        ({"filter_string": "tags.stage = hpo"}, "not quoted"),
        ({"filter_string": "metrics.f1 > 1 OR metrics.f1 < 0"}, "'OR'"),
        ({"filter_string": "foo = 1"}, "Invalid attribute key 'foo'"),
        ({"order_by": "metrics.f1 DOWN"}, "malformed order_by clause"),
        ({"status": "DONE"}, "status 'DONE' is not an MLflow run status"),
        ({"max_results": 0}, "max_results must be a positive integer"),
        ({"page_size": 60_000}, "over MLflow's limit of 50000"),
    ],
)
def test_malformed_queries_fail_before_any_request(kwargs: dict[str, object], needle: str) -> None:
    # the URI answers nothing: had a request been sent, the error would be a connection one
    with pytest.raises(InvalidSearchError) as info:
        find_mlflow_runs.fn("x", tracking_uri=_dead_uri(), **kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_unknown_or_deleted_experiment_is_a_clear_error(data: Data) -> None:
    with pytest.raises(ExperimentNotFoundError, match="'no-such-experiment' does not exist"):
        find_mlflow_runs.fn("no-such-experiment", tracking_uri=data.url)
    client = MlflowClient(data.url)
    gone = f"gone-{uuid.uuid4().hex[:8]}"
    client.delete_experiment(client.create_experiment(gone))
    with pytest.raises(ExperimentNotFoundError, match=f"'{gone}' is deleted"):
        find_best_run.fn("f1", gone, tracking_uri=data.url)


def test_credentials_in_the_uri_are_refused_and_never_shown(data: Data) -> None:
    with pytest.raises(Exception, match=r"carries a password") as info:
        find_mlflow_runs.fn("x", tracking_uri=data.url.replace("//", "//me:hunter2@"))
    assert "hunter2" not in str(info.value)


# --- find_best_run -----------------------------------------------------------------------


def test_best_run_max_breaks_ties_by_earliest_start(data: Data) -> None:
    best = find_best_run.fn("f1", data.experiment, tracking_uri=data.url, page_size=2)
    # f1 0.49 is reached by trials 49, 99, 149, 199 (all FINISHED); 49 started first.
    # The FAILED run with 0.99 and the deleted ones with 5.0 do not count by default.
    assert best is not None and best.run_id == data.trial_ids[49]
    anyone = find_best_run.fn("f1", data.experiment, tracking_uri=data.url, status=None)
    assert anyone is not None and anyone.run_id == data.failed_star_id


def test_best_run_min_ignores_runs_without_the_metric(data: Data) -> None:
    best = find_best_run.fn(
        "loss", experiment_name=data.experiment, mode="min", tracking_uri=data.url
    )
    # loss = 1 + i % 7 exists for i % 3 == 0; minimum 1.0 at i = 0, 21, 42...; 0 first
    assert best is not None and best.run_id == data.trial_ids[0]
    hpo = find_best_run.fn(
        "f1", data.experiment, filter_string="tags.stage = 'train'", tracking_uri=data.url
    )
    assert hpo is not None and hpo.run_id == data.trial_ids[49]  # 49 is odd: train


def test_best_run_same_start_goes_to_the_smaller_run_id(data: Data) -> None:
    best = find_best_run.fn("score", data.other, tracking_uri=data.url)
    assert best is not None and best.run_id == data.tie_ids[0]


def test_best_run_is_none_when_nothing_has_the_metric(data: Data) -> None:
    assert find_best_run.fn("no_such_metric", data.experiment, tracking_uri=data.url) is None
    with pytest.raises(InvalidSearchError, match="mode 'up'"):
        find_best_run.fn("f1", "x", mode="up", tracking_uri=_dead_uri())  # type: ignore[arg-type]
    with pytest.raises(InvalidSearchError, match="characters MLflow refuses"):
        find_best_run.fn("f1`; drop", "x", tracking_uri=_dead_uri())


# --- find_run_by_config_hash / find_runs_for_flow_run / get_run_summary ------------------


def test_run_by_config_hash_is_the_latest_finished(data: Data) -> None:
    by_config = find_run_by_config_hash.fn(data.config, data.experiment, tracking_uri=data.url)
    assert by_config is not None and by_config.run_id == data.config_runs["cfg-eval"]
    training = find_run_by_config_hash.fn(
        config_hash(data.config), data.experiment, stage="training", tracking_uri=data.url
    )
    assert training is not None and training.run_id == data.config_runs["cfg-new"]
    running = find_run_by_config_hash.fn(
        data.config, data.experiment, stage="training", status=None, tracking_uri=data.url
    )
    assert running is not None and running.run_id == data.config_runs["cfg-running"]
    assert find_run_by_config_hash.fn({"lr": 0.2}, data.experiment, tracking_uri=data.url) is None
    with pytest.raises(InvalidSearchError, match="not a config hash"):
        find_run_by_config_hash.fn("abc123", "x", tracking_uri=_dead_uri())


def test_runs_for_flow_run_across_experiments(data: Data) -> None:
    everywhere = find_runs_for_flow_run.fn(data.flow_run_id, tracking_uri=data.url)
    assert [r.run_id for r in everywhere] == data.flow_runs
    only_other = find_runs_for_flow_run.fn(
        uuid.UUID(data.flow_run_id), data.other, tracking_uri=data.url
    )
    assert [r.run_id for r in only_other] == data.flow_runs[1:]
    with pytest.raises(InvalidSearchError, match="not a Prefect flow run id"):
        find_runs_for_flow_run.fn("last-tuesday", tracking_uri=_dead_uri())


def test_runs_for_a_real_flow_run(tracking_config: TrackingConfig) -> None:
    @flow(**mlflow_state_hooks())
    def tracked() -> str:
        ctx = setup_mlflow(tracking_config)
        parent = create_mlflow_run(ctx, run_name="parent")
        create_mlflow_run(ctx, run_name="child", parent_run_id=parent)
        return parent.run_id

    state = tracked(return_state=True)
    parent_id = state.result()
    runs = find_runs_for_flow_run.fn(
        state.state_details.flow_run_id,
        tracking_config.experiment_name,
        tracking_uri=tracking_config.tracking_uri,
    )
    assert [r.run_name for r in runs] == ["parent", "child"]
    assert runs[1].parent_run_id == parent_id
    assert {r.status for r in runs} == {"FINISHED"}


def test_get_run_summary(data: Data) -> None:
    run = get_run_summary(data.child_ids[0], tracking_uri=data.url)
    assert run.parent_run_id == data.parent_id and run.run_name == "child-0"
    with pytest.raises(RunNotFoundError, match="does not exist"):
        get_run_summary("0" * 32, tracking_uri=data.url)


# --- caching -----------------------------------------------------------------------------


def _seen(state: Any) -> tuple[str, Any]:
    """A task state as plain data (a flow returning states would take them as its own)."""
    return state.name, state.result(raise_on_failure=False)


@pytest.fixture
def fresh(mlflow_server: MlflowServer) -> Iterator[tuple[MlflowClient, str]]:
    """An experiment of this test's own with two runs (cache entries never collide)."""
    client = MlflowClient(mlflow_server.url)
    name = f"cache-{uuid.uuid4().hex[:8]}"
    exp = client.create_experiment(name)
    for k in range(2):
        _run(client, exp, f"r{k}", T0 + k, metrics={"f1": k / 10})
    yield client, name


def test_a_lookup_is_never_older_than_the_call(
    mlflow_server: MlflowServer, fresh: tuple[MlflowClient, str]
) -> None:
    client, name = fresh
    exp_id = client.get_experiment_by_name(name).experiment_id  # type: ignore[union-attr]

    @flow
    def promote() -> tuple[str, str]:
        before = find_best_run("f1", name, tracking_uri=mlflow_server.url)
        _run(client, exp_id, "better", T0 + 10, metrics={"f1": 0.9})  # a sweep just ended
        after = find_best_run("f1", name, tracking_uri=mlflow_server.url)
        assert before is not None and after is not None
        return before.run_name, after.run_name

    assert promote() == ("r1", "better")  # in one flow run
    _run(client, exp_id, "best", T0 + 20, metrics={"f1": 0.95})

    @flow
    def next_flow_run() -> tuple[str, str, int]:
        state = find_best_run("f1", name, tracking_uri=mlflow_server.url, return_state=True)
        runs = find_mlflow_runs(name, tracking_uri=mlflow_server.url)
        return state.name, state.result().run_name, len(runs)

    assert next_flow_run() == ("Completed", "best", 4)  # and in the next one


@pytest.mark.backends("sqlite")  # Prefect caching: the database is not its subject
def test_allow_stale_opts_in_to_a_cache_with_its_max_age(
    mlflow_server: MlflowServer, fresh: tuple[MlflowClient, str]
) -> None:
    client, name = fresh
    exp_id = client.get_experiment_by_name(name).experiment_id  # type: ignore[union-attr]
    stale_ok = allow_stale(find_mlflow_runs, dt.timedelta(minutes=5))
    assert stale_ok.cache_expiration == dt.timedelta(minutes=5)
    assert find_mlflow_runs.cache_expiration is None  # the finder itself: no cache

    @flow
    def lookups() -> list[tuple[str, Any]]:
        states = [stale_ok(name, tracking_uri=mlflow_server.url, return_state=True)]
        _run(client, exp_id, "late", T0 + 10)
        states.append(stale_ok(name, tracking_uri=mlflow_server.url, return_state=True))
        refreshing = stale_ok.with_options(refresh_cache=True)
        states.append(refreshing(name, tracking_uri=mlflow_server.url, return_state=True))
        states.append(stale_ok(name, tracking_uri=mlflow_server.url, return_state=True))
        short = allow_stale(find_mlflow_runs, dt.timedelta(microseconds=1))
        for _ in range(2):  # expired at once: the second call runs again
            states.append(
                short(name, "metrics.f1 >= 0", tracking_uri=mlflow_server.url, return_state=True)
            )
        return [_seen(s) for s in states]

    states = lookups()
    names = [name for name, _ in states]
    counts = [len(runs) for _, runs in states]
    assert names == ["Completed", "Cached", "Completed", "Cached", "Completed", "Completed"]
    assert counts == [2, 2, 3, 3, 2, 2]  # the refresh overwrote the stale entry
    with pytest.raises(InvalidArgumentError, match="positive timedelta"):
        allow_stale(find_best_run, dt.timedelta(0))
    with pytest.raises(InvalidArgumentError, match="finder tasks"):
        allow_stale(setup_mlflow, dt.timedelta(minutes=1))  # type: ignore[arg-type]


@pytest.mark.backends("sqlite")  # Prefect caching: the database is not its subject
def test_cache_never_crosses_experiments_or_servers(
    mlflow_server: MlflowServer, fresh: tuple[MlflowClient, str], tmp_path: Path
) -> None:
    client, name = fresh
    other = f"{name}-b"
    _run(client, client.create_experiment(other), "b0", T0)
    local = f"sqlite:///{tmp_path / 'other.db'}"
    local_client = MlflowClient(local)
    _run(local_client, local_client.create_experiment(name), "local-0", T0)  # same name

    @flow
    def lookups() -> list[tuple[str, Any]]:
        cached = allow_stale(find_mlflow_runs, dt.timedelta(minutes=5))
        states = [
            cached(name, tracking_uri=mlflow_server.url, return_state=True),
            cached(other, tracking_uri=mlflow_server.url, return_state=True),
            cached(name, tracking_uri=local, return_state=True),
            cached(name, tracking_uri=local, return_state=True),
        ]
        return [_seen(s) for s in states]

    server_a, server_b, local_a, local_again = lookups()
    assert [s[0] for s in (server_a, server_b, local_a, local_again)] == [
        "Completed",
        "Completed",
        "Completed",
        "Cached",
    ]
    assert {r.run_name for r in server_a[1]} == {"r0", "r1"}
    assert {r.run_name for r in server_b[1]} == {"b0"}
    assert {r.run_name for r in local_a[1]} == {"local-0"}
    assert {r.tracking_uri for r in local_again[1]} == {local}
    assert all(r.url is None for r in local_a[1])


@pytest.mark.backends("sqlite")  # Prefect caching: the database is not its subject
def test_equal_inputs_of_two_tasks_never_share_an_entry(data: Data) -> None:
    from prefect import task

    policy = LookupCachePolicy()

    @task(cache_policy=policy)
    def one(experiments: str, tracking_uri: str) -> str:
        return "one"

    @task(cache_policy=policy)
    def two(experiments: str, tracking_uri: str) -> str:
        return "two"

    @flow
    def both() -> list[tuple[str, Any]]:
        where = {"experiments": data.experiment, "tracking_uri": data.url}
        states = [
            one(**where, return_state=True),
            two(**where, return_state=True),
            one(**where, return_state=True),
        ]
        return [_seen(s) for s in states]

    assert both() == [("Completed", "one"), ("Completed", "two"), ("Cached", "one")]


@pytest.mark.backends("sqlite")  # Prefect caching: the database is not its subject
def test_a_refused_lookup_is_not_cached(data: Data) -> None:
    cached = allow_stale(find_mlflow_runs, dt.timedelta(minutes=5))

    @flow
    def lookup() -> list[tuple[str, Any]]:
        return [
            _seen(cached("no-such-experiment", tracking_uri=data.url, return_state=True))
            for _ in range(2)
        ]

    (first, error), (second, _) = lookup()
    assert (first, second) == ("Failed", "Failed")  # no key: the body runs and raises each time
    assert isinstance(error, ExperimentNotFoundError)
