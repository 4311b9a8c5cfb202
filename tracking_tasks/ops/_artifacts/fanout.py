"""Moving many files at once: a thread fan-out that stops on the first permanent failure."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tracking_tasks.errors import (
    ArtifactError,
    LocalArtifactPathError,
    TransientArtifactError,
    is_transient,
)

_T = TypeVar("_T")

#: Called with the percentage sent (0-100), at most once a second and once at the end,
#: always from the thread that started the transfer.
ProgressCallback = Callable[[float], None]


class Progress:
    """Bytes sent, counted from worker threads, reported from the starting thread.

    Args:
        total: Bytes to send.
        callback: Where the percentage goes (None: not reported).
    """

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.sent = 0
        self._lock = threading.Lock()
        self._callback = callback if total > 0 else None
        self._last = 0.0

    def add(self, count: int) -> None:
        """Count ``count`` more bytes sent (any thread)."""
        with self._lock:
            self.sent += count

    def report(self, final: bool = False) -> None:
        """Hand the percentage to the callback, at most once a second unless ``final``."""
        if self._callback is None:
            return
        now = time.monotonic()
        if not final and now - self._last < 1.0:
            return
        self._last = now
        with self._lock:
            percent = 100.0 if final else min(99.9, 100.0 * self.sent / self.total)
        self._callback(percent)


def run_all(
    pool: ThreadPoolExecutor,
    work: Callable[[_T], Any],
    items: Iterable[_T],
    progress: Progress | None = None,
) -> list[tuple[_T, BaseException]]:
    """Run ``work`` on every item; collect failures; start no more after a permanent one.

    Completion is counted in each worker, so the waiting thread costs nothing per item
    (a ``wait(FIRST_COMPLETED)`` loop re-registers on every pending future each time
    one finishes: quadratic, and it competed with the senders for the GIL).
    """
    todo = list(items)
    failures: list[tuple[_T, BaseException]] = []
    lock = threading.Lock()
    stop = threading.Event()
    finished = threading.Event()
    remaining = len(todo)

    def guarded(item: _T) -> None:
        nonlocal remaining
        try:
            if not stop.is_set():
                work(item)
        except BaseException as exc:
            with lock:
                failures.append((item, exc))
            if not is_transient(exc):
                stop.set()
        finally:
            with lock:
                remaining -= 1
                if remaining == 0:
                    finished.set()

    if not todo:
        return failures
    for item in todo:
        pool.submit(guarded, item)
    while not finished.wait(1.0):
        if progress is not None:
            progress.report()
    return failures


def raise_failures(failures: list[tuple[Any, BaseException]], total: int, verb: str) -> None:
    if not failures:
        return
    permanent = [exc for _, exc in failures if not is_transient(exc)]
    if permanent:
        exc = permanent[0]
        if isinstance(exc, ArtifactError):
            raise exc
        if isinstance(exc, OSError):
            raise LocalArtifactPathError(f"could not read a local file to {verb}: {exc}") from exc
        raise exc
    first = failures[0][1]
    raise TransientArtifactError(
        f"{len(failures)} of {total} files failed to {verb} on transient faults (first: "
        f"{first}); a retry sends only what is missing"
    ) from first
