"""dsv: git-style version control for LLM-evaluation datasets.

>>> import dsv
>>> repo = dsv.Repository.open(".")
>>> table = dsv.load("evals/qa.jsonl@production")
>>> for record in dsv.iter_records("evals/qa.jsonl", locked=True): ...
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
    from collections.abc import Iterator
    from typing import Any

    from dsv.notebook import Into, Repository

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
    "iter_records",
    "load",
    "to_hf",
    "to_polars",
]


def __getattr__(name: str) -> object:
    if name in ("Repository", "to_hf", "to_polars"):
        from dsv import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'dsv' has no attribute {name!r}")


def load(
    spec: str,
    *,
    cwd: str | os.PathLike[str] = ".",
    locked: bool = False,
    remote: str | None = None,
    key_env: str | None = None,
    into: Into = "arrow",
) -> Any:
    """A dataset version as an Arrow table: 'PATH@REV' (REV defaults to HEAD), a remote
    'http://HOST/OWNER/NAME/PATH@REV', or PATH as dsv.lock pins it (`locked`); see
    dsv.notebook.load and docs/python.md."""
    from dsv.notebook import load

    return load(spec, cwd=cwd, locked=locked, remote=remote, key_env=key_env, into=into)


def iter_records(
    spec: str,
    *,
    cwd: str | os.PathLike[str] = ".",
    locked: bool = False,
    remote: str | None = None,
    key_env: str | None = None,
) -> Iterator[dict[str, Any]]:
    """A dataset version's records as dicts, streamed: the same `spec` forms as `load`."""
    from dsv.notebook import iter_records

    return iter_records(spec, cwd=cwd, locked=locked, remote=remote, key_env=key_env)
