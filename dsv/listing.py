"""Which files of a work tree are dataset files, and how to show their names.

The standard library only: the quick status (dsv.quick) answers from this without msgspec.
"""

from __future__ import annotations

import os

# Not `from typing import TYPE_CHECKING`: the quick status does without typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Container

__all__ = [
    "DATASET_SUFFIXES",
    "ONLY_UNTRACKED",
    "SKIPPED_DIRS",
    "UNTRACKED_HEADER",
    "quote_path",
    "untracked_files",
]

_DSV_DIR = ".dsv"
# What dsv.formats reads (format_kind); a test keeps the two in step.
DATASET_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet"})
# Directories no one keeps eval data in that can hold thousands of .json files; besides these,
# every directory whose name starts with '.' (.git, .dsv, .venv, ...) is skipped.
SKIPPED_DIRS = frozenset({"node_modules", "__pycache__", "venv"})
UNTRACKED_HEADER = 'Untracked files (use "dsv add <file>" to track):\n'
ONLY_UNTRACKED = 'nothing added to commit but untracked files present (use "dsv add" to track)\n'


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def quote_path(name: str) -> str:
    """`name` as a terminal may show it: as is when printable, else in double quotes with
    `\\`, `"` and every unprintable character escaped (a file name must not drive the terminal)."""
    if name.isprintable() and '"' not in name and "\\" not in name:
        return name
    out = []
    for ch in name:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def untracked_files(root: str, tracked: Container[str]) -> list[str]:
    """Dataset files under `root` (POSIX paths relative to it, sorted by their bytes) that
    `tracked` lacks. Skipped: dot-directories, SKIPPED_DIRS, directories holding a `.dsv` (other
    repositories) and symbolic links to directories; names without a dataset suffix."""
    found = []
    stack = [("", root)]
    while stack:
        rel, path = stack.pop()
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
        except OSError:
            continue  # unreadable: not ours to report
        if rel and any(entry.name == _DSV_DIR for entry in entries):
            continue
        for entry in entries:
            name = entry.name
            if entry.is_dir(follow_symlinks=False):
                if not name.startswith(".") and name not in SKIPPED_DIRS:
                    stack.append((f"{rel}{name}/", entry.path))
                continue
            dot = name.rfind(".")
            if dot > 0 and name[dot:].lower() in DATASET_SUFFIXES and rel + name not in tracked:
                found.append(rel + name)
    found.sort(key=lambda name: name.encode("utf-8", "surrogateescape"))
    return found
