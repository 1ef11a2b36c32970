"""Repository operations: the library behind every command. Returns data, never prints.

One module a topic: `stage` (add, rm, mv, status, commit), `history` (log, show,
cat-object, reading a version) and `checkout` (checkout, restore, switch). The names of
`stage` are imported when first used: it brings the merge machinery, which a checkout does not
need. (`checkout` is imported at once: importing the module of that name binds the name to
the module, so only an import that rebinds it keeps `ops.checkout` the function.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dsv.ops.checkout import checkout, restore, switch
from dsv.ops.history import (
    DatasetSummary,
    LogEntry,
    VersionSummary,
    cat_object,
    dataset_at,
    dataset_table,
    iter_records,
    log,
    read_table,
    show,
)

if TYPE_CHECKING:
    from dsv.ops.stage import DatasetStatus, add, commit, move, remove, status, untracked

__all__ = [
    "DatasetStatus",
    "DatasetSummary",
    "LogEntry",
    "VersionSummary",
    "add",
    "cat_object",
    "checkout",
    "commit",
    "dataset_at",
    "dataset_table",
    "iter_records",
    "log",
    "move",
    "read_table",
    "remove",
    "restore",
    "show",
    "status",
    "switch",
    "untracked",
]

_STAGE = frozenset(("DatasetStatus", "add", "commit", "move", "remove", "status", "untracked"))


def __getattr__(name: str) -> Any:
    if name not in _STAGE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from dsv.ops import stage

    value = getattr(stage, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
