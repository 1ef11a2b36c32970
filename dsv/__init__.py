"""dsv: git-style version control for LLM-evaluation datasets.

>>> import dsv
>>> repo = dsv.Repository.open(".")
>>> table = dsv.load("evals/qa.jsonl@production")
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dsv.errors import (
    BadInput,
    BadState,
    CorruptObject,
    DsvError,
    LockedError,
    NotARepository,
    RemoteError,
)
from dsv.repo import Repository

if TYPE_CHECKING:
    import pyarrow

__all__ = [
    "BadInput",
    "BadState",
    "CorruptObject",
    "DsvError",
    "LockedError",
    "NotARepository",
    "RemoteError",
    "Repository",
    "load",
]

__version__ = "0.1.0"


def load(spec: str, *, cwd: str | os.PathLike[str] = ".") -> pyarrow.Table:
    """A dataset version as an Arrow table: 'PATH@REV' (REV defaults to HEAD)."""
    path, _, rev = spec.rpartition("@")
    if not path:
        path, rev = rev, "HEAD"
    full = os.path.abspath(os.path.join(os.fspath(cwd), path))
    with Repository.open(os.path.dirname(os.path.abspath(full))) as repo:
        return repo.read(rev or "HEAD", full)
