"""Where sweep tasks run: local worker threads (each drives its own toolkit process) by
default, or a ``dask.distributed`` cluster when the user hands in a Client."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Protocol

from workbench.rknn.session import cancel_sessions


class Executor(Protocol):
    """Runs ``fn(shared, item)`` for each item and yields the results as they finish."""

    slots: int

    def map_unordered(self, fn: Callable[[Any, Any], Any], shared: Any, items: Iterable) -> Iterator: ...


class LocalExecutor:
    """``jobs`` tasks at a time on this machine. Threads suffice: every task starts its own
    toolkit process, so the threads only wait and compare."""

    def __init__(self, jobs: int = 2):
        self.slots = max(1, int(jobs))

    def map_unordered(self, fn, shared, items) -> Iterator:
        threads: list[threading.Thread] = []
        pool = ThreadPoolExecutor(self.slots, initializer=lambda: threads.append(threading.current_thread()))
        futures = [pool.submit(fn, shared, item) for item in items]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            # Interrupted or failed: queued tasks are dropped and running ones stopped now (their
            # toolkit workers killed), so nothing half-done is returned, let alone cached.
            pool.shutdown(wait=False, cancel_futures=True)
            if not all(f.done() for f in futures):
                cancel_sessions(threads)


class DaskExecutor:
    """The same tasks on a ``dask.distributed`` cluster. ``shared`` (model, settings, float
    reference) is sent to the workers once; workers need rknn-workbench installed and the
    calibration files at the same paths (a shared file system)."""

    def __init__(self, client):
        self.client = client
        self.slots = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))

    def map_unordered(self, fn, shared, items) -> Iterator:
        from distributed import as_completed as dask_completed

        remote = self.client.scatter(shared, broadcast=True)
        futures = [self.client.submit(fn, remote, item, pure=False) for item in items]
        try:
            for future in dask_completed(futures):
                yield future.result()
        finally:
            self.client.cancel(futures)


def as_executor(executor: Executor | Any | None, jobs: int = 2) -> Executor:
    """``executor`` as an Executor: None means local with ``jobs`` workers; a dask Client is
    wrapped in a DaskExecutor."""
    if executor is None:
        return LocalExecutor(jobs)
    if hasattr(executor, "map_unordered"):
        return executor
    if type(executor).__name__ == "Client" and hasattr(executor, "scheduler_info"):
        return DaskExecutor(executor)
    raise TypeError(
        f"executor must be None (local processes), a dask.distributed Client, or have map_unordered(); "
        f"got {type(executor).__name__}."
    )
