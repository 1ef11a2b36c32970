"""The background thread a blob store compacts the repositories written with, after each write.

A write only asks; one thread per store merges, one repository at a time, so no write waits
for a merge. A repository asked for again while it is being merged is merged once more.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dsv.errors import DsvError

__all__ = ["Compactor"]

log = logging.getLogger("dsv.serve")


class Compactor:
    """Runs `compact(repo)` in a thread named `name` for each repository asked for."""

    def __init__(self, compact: Callable[[str], object], *, name: str) -> None:
        self._compact = compact
        self._name = name
        self._guard = threading.Lock()
        self._wanted: set[str] = set()
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def busy(self) -> bool:
        """Whether a repository asked for is still being merged or waiting."""
        with self._guard:
            return self._thread is not None

    def request(self, repo: str) -> None:
        with self._guard:
            if self._closing:
                return
            self._wanted.add(repo)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._guard:
                if self._closing or not self._wanted:
                    self._thread = None
                    return
                repo = self._wanted.pop()
            try:
                self._compact(repo)
            except DsvError as exc:
                # A merged pack is stored before any pack it replaces goes: the packs are as
                # they were, or merged. The next write tries again.
                log.warning("compacting the packs of %s failed: %s", repo, exc.message)
            except Exception:
                # A bug must not end compaction for the life of the server, nor go unseen.
                log.exception("compacting the packs of %s failed", repo)

    def close(self) -> None:
        """Wait for the merge under way; what is still asked for is dropped."""
        with self._guard:
            self._closing = True
            thread = self._thread
        if thread is not None:
            thread.join()
