"""The run registry on its own: identity locks, memory bounds, background writes."""

from __future__ import annotations

import threading
import time
from typing import Any

from tracking_tasks import RunRef
from tracking_tasks.tasks._run_memory import RunMemory, parse_location_labels


def _ref(run_id: str, experiment_id: str = "1") -> RunRef:
    return RunRef(
        run_id=run_id, experiment_id=experiment_id, run_name="r", tracking_uri="sqlite:///m.db"
    )


def test_an_identity_lock_is_one_lock_while_held_and_gone_after() -> None:
    registry = RunMemory()
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with registry.identity_lock("a"):
            order.append("first in")
            inside.set()
            release.wait(5)
            order.append("first out")

    def second() -> None:
        inside.wait(5)
        with registry.identity_lock("a"):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(5)
    time.sleep(0.2)  # the second caller is waiting on the same lock by now
    assert registry.held_identities() == 1
    with registry.identity_lock("b"):  # another identity never waits
        assert registry.held_identities() == 2
    release.set()
    for t in threads:
        t.join(5)
    assert order == ["first in", "first out", "second in"]
    assert registry.held_identities() == 0  # nothing kept once nobody holds it


def test_many_identities_do_not_grow_the_registry() -> None:
    registry = RunMemory(max_flow_runs=3)
    for i in range(1000):
        with registry.identity_lock(f"id-{i}"):
            pass
        registry.remember_run(f"flow-{i}", _ref(f"run-{i}"), identity=f"id-{i}")
    assert registry.held_identities() == 0
    assert registry.known_run_id("flow-999", "id-999") == "run-999"
    assert registry.known_run_id("flow-0", "id-0") is None  # the oldest flow runs forgotten


def test_forget_hands_back_what_a_flow_run_opened() -> None:
    registry = RunMemory()
    registry.remember_run("flow", _ref("r1"), identity="i1")
    registry.remember_run("flow", _ref("r2", "2"), identity=None)
    locations, runs = registry.forget("flow")
    assert set(runs) == {"r1", "r2"}
    assert {location.experiment_id for location in locations} == {"1", "2"}
    assert registry.forget("flow") == (set(), {})
    assert registry.known_run_id("flow", "i1") is None


def test_labels_are_written_once_per_location_in_the_background() -> None:
    written: list[tuple[str, str, str]] = []
    started = threading.Event()
    gate = threading.Event()

    def slow_writer(client: Any, flow_run_id: str, key: str, value: str) -> None:
        started.set()
        gate.wait(5)  # a slow API: the caller must not wait for it
        written.append((flow_run_id, key, value))

    registry = RunMemory(label_writer=slow_writer)
    began = time.monotonic()
    for run_id in ("r1", "r2", "r3"):
        registry.remember_run("flow", _ref(run_id), identity=None)
    registry.remember_run("flow", _ref("r4", "2"), identity=None)
    assert time.monotonic() - began < 1.0
    assert started.wait(5)
    gate.set()
    assert registry.writer.flush(10)
    assert len(written) == 2  # one label per experiment, not per run
    labels = {key: value for _, key, value in written}
    parsed = parse_location_labels(labels)
    assert {location.experiment_id for location in parsed} == {"1", "2"}
    assert all(processes == {registry.process_token} for processes in parsed.values())
