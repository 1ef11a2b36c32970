"""dsv: git-style version control for LLM-evaluation datasets.

>>> import dsv
>>> repo = dsv.Repository.open(".")
>>> table = dsv.load("evals/qa.jsonl@production")
"""

from __future__ import annotations

import os

from dsv.errors import (
    BadInput,
    BadState,
    CorruptObject,
    DsvError,
    LockedError,
    NotARepository,
    RemoteError,
)

# Not `from typing import TYPE_CHECKING`, and Repository imported on first use: `import dsv`
# comes before every command, and a clean `status` (dsv.quick) needs neither typing nor
# msgspec, which dsv.repo brings (mypy knows the name either way).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import pyarrow

    from dsv.repo import Repository

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


def __getattr__(name: str) -> object:
    if name == "Repository":
        from dsv.repo import Repository

        return Repository
    raise AttributeError(f"module 'dsv' has no attribute {name!r}")


def load(spec: str, *, cwd: str | os.PathLike[str] = ".") -> pyarrow.Table:
    """A dataset version as an Arrow table: 'PATH@REV' (REV defaults to HEAD)."""
    path, _, rev = spec.rpartition("@")
    if not path:
        path, rev = rev, "HEAD"
    from dsv.repo import Repository

    full = os.path.abspath(os.path.join(os.fspath(cwd), path))
    with Repository.open(os.path.dirname(os.path.abspath(full))) as repo:
        return repo.read(rev or "HEAD", full)
