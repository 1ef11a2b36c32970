"""dsv for eval code: a repository that reads, logs, diffs and commits, and `load`.

The core `dsv.repo.Repository` knows objects, refs and revision names only; this face adds
the commands a notebook or an eval script wants, as calls into the command modules, without
printing. `dsv.Repository` and `dsv.load` are these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pyarrow

from dsv import diff as diff_module
from dsv import ops
from dsv.diff import DiffResult
from dsv.ops import LogEntry
from dsv.progress import ProgressFn
from dsv.repo import Repository as CoreRepository

__all__ = ["Repository", "load"]


class Repository(CoreRepository):
    """A repository with the commands eval code uses (`dsv.Repository`)."""

    def add(
        self,
        paths: list[str],
        *,
        key: tuple[str, ...] | None = None,
        progress: ProgressFn | None = None,
    ) -> list[str]:
        return ops.add(self, paths, key=key, progress=progress)

    def commit(
        self,
        message: str,
        *,
        all: bool = False,
        author: str | None = None,
        progress: ProgressFn | None = None,
    ) -> bytes:
        return ops.commit(self, message, all=all, author=author, progress=progress)

    def log(
        self,
        rev: str | None = None,
        *,
        max_count: int | None = None,
        paths: list[str] | None = None,
    ) -> Iterator[LogEntry]:
        return ops.log(self, rev, max_count=max_count, paths=paths)

    def read(self, rev: str, path: str) -> pyarrow.Table:
        """A dataset version as an Arrow table."""
        return ops.read_table(self, rev, path)

    def records(self, rev: str, path: str) -> Iterator[dict[str, Any]]:
        """A dataset version's records, decoded, in order."""
        return ops.iter_records(self, rev, path)

    def diff(self, a: str | None = None, b: str | None = None, **options: Any) -> DiffResult:
        return diff_module.diff(self, a, b, **options)


def load(spec: str, *, cwd: str | os.PathLike[str] = ".") -> pyarrow.Table:
    """A dataset version as an Arrow table: 'PATH@REV' (REV defaults to HEAD)."""
    path, _, rev = spec.rpartition("@")
    if not path:
        path, rev = rev, "HEAD"
    full = os.path.abspath(os.path.join(os.fspath(cwd), path))
    with Repository.open(os.path.dirname(full)) as repo:
        return repo.read(rev or "HEAD", full)
