"""Checking received datapoints beside the rest of a pack's work, in worker processes.

A server re-checks that every datapoint it receives is canonical JSON (format.md §2): a
decode and an encode of each, the largest cost of receiving a push. msgspec holds the GIL,
so a thread would not help; a worker process checks one block's datapoints while the
receiving thread inflates, hashes and indexes the next. Workers start from a fork server
(never a fork of this threaded process), once, on the first pack large enough to pay.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence

from dsv.errors import CorruptObject, DsvError
from dsv.protocol import check_datapoints

__all__ = ["DatapointChecker"]

# Below this many datapoints a block is checked at once, in the receiving thread: sending it
# to a worker costs more than the check.
_WORKER_BATCH = 256
# How often a worker looks whether its server is still there.
_WATCH_SECONDS = 1.0


def _watch(server: int) -> None:
    """In a worker: exit once the server is gone. A server killed outright (SIGKILL, the OOM
    killer) never shuts its pool down, and a worker waiting for work would wait forever,
    with the fork server it came from."""

    def watch() -> None:
        while True:
            time.sleep(_WATCH_SECONDS)
            try:
                os.kill(server, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # another user's process took the id: ours is gone
                os._exit(0)

    threading.Thread(target=watch, name="dsv-watch-server", daemon=True).start()


def _problem(oids: Sequence[bytes], bodies: list[bytes]) -> str | None:
    """In a worker: what is wrong with this batch, or None. A message, not an exception, so
    that nothing but a string is pickled back."""
    try:
        check_datapoints(oids, bodies)
    except DsvError as exc:
        return exc.message
    return None


class DatapointChecker:
    """Checks of received datapoints, in `workers` processes (none: in the caller)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(0, (os.cpu_count() or 1) - 1) if workers is None else workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._guard = threading.Lock()

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._guard:
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_watch,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def start(self) -> Batch:
        """The checks of one pack: `add` each block's datapoints, then `finish`."""
        return Batch(self)

    def close(self) -> None:
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(cancel_futures=True)


class Batch:
    """The datapoint checks of one received pack."""

    def __init__(self, checker: DatapointChecker) -> None:
        self._checker = checker
        self._pending: list[concurrent.futures.Future[str | None]] = []

    def add(self, oids: list[bytes], bodies: list[bytes]) -> None:
        if self._checker.workers and len(bodies) >= _WORKER_BATCH:
            future = self._checker._executor().submit(_problem, oids, bodies)
            self._pending.append(future)
        else:
            check_datapoints(oids, bodies)

    def finish(self) -> None:
        """Wait for every check; CorruptObject naming the first bad datapoint."""
        try:
            for future in self._pending:
                problem = future.result()
                if problem is not None:
                    raise CorruptObject(problem)
        finally:
            self.cancel()

    def cancel(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending = []
