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
from dsv.version import __version__

# Not `from typing import TYPE_CHECKING`, and the notebook face imported on first use:
# `import dsv` comes before every command, and a clean `status` (dsv.quick) needs neither
# typing nor msgspec nor pyarrow (mypy knows the names either way).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import pyarrow

    from dsv.notebook import Repository

__all__ = [
    "BadInput",
    "BadState",
    "CorruptObject",
    "DsvError",
    "LockedError",
    "NotARepository",
    "RemoteError",
    "Repository",
    "__version__",
    "load",
]


def __getattr__(name: str) -> object:
    if name == "Repository":
        from dsv.notebook import Repository

        return Repository
    raise AttributeError(f"module 'dsv' has no attribute {name!r}")


def load(spec: str, *, cwd: str | os.PathLike[str] = ".") -> pyarrow.Table:
    """A dataset version as an Arrow table: 'PATH@REV' (REV defaults to HEAD)."""
    from dsv.notebook import load

    return load(spec, cwd=cwd)
