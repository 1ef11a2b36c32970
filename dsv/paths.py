"""The one rule for dataset paths (docs/format.md §3): what a tree may name, what dsv may write.

A path comes from a tree, which anyone with a write key can craft; it is joined to a
repository's root only after it passed this rule, so it can never leave the working tree nor
reach `.dsv`. Core layer: imports nothing above `dsv.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence

from dsv.errors import BadInput

__all__ = [
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "BadPath",
    "check_dataset_path",
    "check_tree_paths",
    "shown_path",
]

MAX_PATH_BYTES = 4096  # PATH_MAX of Linux
MAX_SEGMENT_BYTES = 255  # NAME_MAX of every common file system
_SHOWN = 100

# Code points HFS+ ignores in names, so `.ds\u200cv` is `.dsv` there (the set git refuses).
_IGNORED = dict.fromkeys(
    [0x200C, 0x200D, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
)


class BadPath(BadInput):
    """A dataset path that breaks the rule of docs/format.md §3; `reason` says how."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"invalid dataset path {shown_path(path)}: {reason}")
        self.path = path
        self.reason = reason


def shown_path(path: str) -> str:
    """The path quoted for a one-line message: repr escapes control characters; a huge one
    is cut."""
    if len(path) <= _SHOWN:
        return repr(path)
    return f"{path[:_SHOWN]!r}… ({len(path)} characters)"


def _is_dsv(segment: str) -> bool:
    """Would a case-insensitive file system (or Windows, which drops trailing dots and
    spaces) take this segment for `.dsv`?"""
    return segment.translate(_IGNORED).rstrip(". ").casefold() == ".dsv"


def _problem(path: str) -> str | None:
    if not path:
        return "it is empty"
    try:
        size = len(path.encode())
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_PATH_BYTES:
        return f"it is longer than {MAX_PATH_BYTES} UTF-8 bytes"
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in path):
        return "it contains a control character"
    if "\\" in path:
        return "it contains '\\'"
    if path.startswith("/"):
        return "it is absolute"
    for segment in path.split("/"):
        if not segment:
            return "it has an empty segment"
        if segment in (".", ".."):
            return f"it has a {segment!r} segment"
        if _is_dsv(segment):
            return f"its segment {segment!r} names .dsv, which dsv manages itself"
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            return f"a segment is longer than {MAX_SEGMENT_BYTES} UTF-8 bytes"
    return None


def check_dataset_path(path: str) -> str:
    """`path` if it is a valid dataset path, else BadPath naming it and what is wrong."""
    problem = _problem(path)
    if problem is not None:
        raise BadPath(path, problem)
    return path


def check_tree_paths(paths: Sequence[str]) -> None:
    """The paths of one tree: each valid, sorted by UTF-8 bytes, unique, and none the folder
    of another (`a` and `a/b` cannot both be files)."""
    previous = b""
    for n, path in enumerate(paths):
        check_dataset_path(path)
        encoded = path.encode()
        if n and encoded == previous:
            raise BadPath(path, "the tree lists it twice")
        if n and encoded < previous:
            raise BadPath(
                path,
                f"it comes after {shown_path(previous.decode())} "
                "(a tree's paths are sorted by UTF-8 bytes)",
            )
        previous = encoded
    files = set(paths)
    for path in paths:
        at = path.find("/")
        while at != -1:
            if path[:at] in files:
                raise BadPath(
                    path, f"{shown_path(path[:at])} is a dataset, so it cannot be a folder too"
                )
            at = path.find("/", at + 1)
