"""Repository operations: the library behind every command. Returns data, never prints.

One module a topic: `stage` (add, rm, mv, status, commit), `history` (log, show,
cat-object, reading a version) and `checkout` (checkout, restore, switch).
"""

from __future__ import annotations

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
