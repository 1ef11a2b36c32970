"""The index: what the next commit will contain, plus a stat cache of the working files."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from dsv.errors import BadState
from dsv.fsutil import digest_file, write_atomic

__all__ = [
    "Entry",
    "FileStat",
    "file_stat",
    "hash_file",
    "read_index",
    "stat_file",
    "trusted_stat",
    "write_index",
]

INDEX_VERSION = 1
# A file modified within one timestamp tick before we read it could change again inside that
# tick without its stat changing, so its stat is not trusted until it is older. Linux ticks
# are a few milliseconds; a timestamp on a whole second suggests a file system that keeps
# only seconds (or two), so it gets a wider margin.
_RACY_NS = 20_000_000
_RACY_COARSE_NS = 2_000_000_000


class FileStat(msgspec.Struct, frozen=True, array_like=True):
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """A staged dataset and what its working file looked like when it matched it.

    `file_hash` is the BLAKE3 of the file's bytes; `stat` is set only when it was old enough
    to trust, so a changed file whose stat did not change cannot pass for clean.
    """

    path: str
    dataset: bytes
    stat: FileStat | None = None
    file_hash: bytes = b""


class _Index(msgspec.Struct, array_like=True):
    version: int
    entries: list[Entry]
    # A commit whose tree lists exactly these entries' paths and datasets (b"" for none); a
    # reader of an index written before it sees none (docs/format.md §6).
    head: bytes = b""


_decoder = msgspec.msgpack.Decoder(_Index)
_encoder = msgspec.msgpack.Encoder()


def read_index(path: Path) -> dict[str, Entry]:
    """path -> Entry, from the index file (empty when there is none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        index = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise BadState(
            f"the index {path} is corrupt ({exc})",
            hint="remove it and run 'dsv checkout --force HEAD' to rebuild it",
        ) from exc
    if index.version != INDEX_VERSION:
        raise BadState(f"the index {path} has unknown version {index.version}")
    return {entry.path: entry for entry in index.entries}


def write_index(path: Path, entries: dict[str, Entry], *, head: bytes = b"") -> None:
    """Write the index; `head` is a commit whose tree lists exactly `entries`' datasets."""
    ordered = [entries[key] for key in sorted(entries, key=lambda p: p.encode())]
    write_atomic(path, _encoder.encode(_Index(INDEX_VERSION, ordered, head)))


def stat_file(path: Path) -> FileStat | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return file_stat(st)


def file_stat(st: os.stat_result) -> FileStat:
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def trusted_stat(stat: FileStat | None, read_started_ns: int) -> FileStat | None:
    """`stat` if it is old enough to prove the content we read, else None."""
    if stat is None:
        return None
    margin = _RACY_COARSE_NS if stat.mtime_ns % 1_000_000_000 == 0 else _RACY_NS
    if stat.mtime_ns + margin > read_started_ns:
        return None
    return stat


def hash_file(path: Path) -> bytes:
    """BLAKE3 of a file's bytes, on every core (b"" if it cannot be read)."""
    try:
        return digest_file(path)
    except OSError:
        return b""
