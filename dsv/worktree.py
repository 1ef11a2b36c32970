"""Working files: reading them into datapoints, writing versions back, and knowing cheaply
whether a file still holds what the index says."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Container
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from dsv.errors import BadInput
from dsv.index import Entry, file_stat, hash_file, stat_file, trusted_stat
from dsv.manifest import Runs, build_dataset, iter_oids
from dsv.objects import OID_SIZE, Dataset, Format, Kind, content_id, hash_object
from dsv.paths import check_dataset_path
from dsv.repo import Repository
from dsv.store import ObjectWriter

if TYPE_CHECKING:
    from dsv.ingest import GroupCache

__all__ = [
    "FileScan",
    "check_entry",
    "repo_path",
    "scan_against",
    "scan_file",
    "stage_file",
    "write_file",
]


class FileScan(msgspec.Struct):
    """What a working file holds: its format and datapoint ids (and line groups, JSONL)."""

    format: Format
    oids: bytes
    groups: GroupCache | None = None
    runs: tuple[Runs, bytes] | None = None  # how oids reuse the base's, when known
    bodies: dict[bytes, bytes] | None = None  # with `collect`: datapoints the base lacks
    keys: tuple[bytes, bytes] | None = None  # with `key` (JSONL): parsed ids and their keys


def scan_file(
    repo: Repository,
    name: str,
    *,
    writer: ObjectWriter | None,
    base: Dataset | None = None,
    base_oids: bytes | None = None,
    collect: bool = False,
    progress: Callable[[int], None] | None = None,
    key: tuple[str, ...] = (),
) -> FileScan:
    """Read a working file; with a writer, store the datapoints the base does not have.

    With `collect` instead (JSONL), return those datapoints' bodies. `progress` is told the
    bytes read so far, where a reading can tell (a big JSONL file). With a `key`, a JSONL
    file's scan also holds the keys of the records it parsed (see dsv.keys).
    """
    # Imported here: they pull in csv, decimal…, which status rarely needs.
    from dsv.formats import format_kind, read_dataset
    from dsv.ingest import ingest_jsonl, read_group_cache
    from dsv.memory import gc_paused

    full = repo.root / name
    if full.is_dir():
        raise BadInput(f"{name}: is a directory")
    if not full.exists():
        raise BadInput(f"{name}: no such file")
    with gc_paused():
        if format_kind(name) == "jsonl":
            cached = None
            if base is not None and base_oids is not None:
                cached = read_group_cache(repo.dsv_dir, name)
                if cached is not None and cached.content != base.content:
                    cached = None
            result = ingest_jsonl(
                full,
                name,
                writer,
                cache=cached,
                base=base_oids or b"",
                collect=collect,
                progress=progress,
                key=key,
            )
            bodies = result.bodies if collect else None
            return FileScan(
                Format("jsonl"), result.oids, result.groups, result.runs, bodies, result.keys
            )
        fmt, records = read_dataset(full, name=name)
        known = set(iter_oids(base_oids)) if base_oids else set()
        ids = bytearray()
        fresh: dict[bytes, bytes] = {}
        for body in records:
            oid = hash_object(Kind.DATAPOINT, body)
            ids += oid
            if oid not in known:
                known.add(oid)
                if writer is not None:
                    writer.add(Kind.DATAPOINT, oid, body, check_store=False)
                elif collect:
                    fresh[oid] = body
        return FileScan(fmt, bytes(ids), bodies=fresh if collect else None)


def scan_against(repo: Repository, name: str, staged: Dataset, *, collect: bool) -> FileScan:
    """Read a working file against its staged version, storing nothing: with `collect`, the
    bodies of the datapoints the staged version lacks (any other id is in the store)."""
    return scan_file(
        repo, name, writer=None, base=staged, base_oids=repo.read_oid_list(staged), collect=collect
    )


def stage_file(
    repo: Repository,
    writer: ObjectWriter,
    name: str,
    *,
    key: tuple[str, ...] | None,
    base_oid: bytes | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Entry, Dataset]:
    """Store a working file's datapoints and manifest; return its index entry and dataset.

    `progress` is told the bytes of the file read so far, where a reading can tell.
    """
    from dsv.ingest import write_group_cache
    from dsv.keys import write_key_cache

    full = repo.root / name
    base = repo.read_dataset(base_oid) if base_oid else None
    base_oids = repo.read_oid_list(base) if base else None
    if key is None:
        key = base.key if base else ()
    started = time.time_ns()
    before = stat_file(full)
    scan = scan_file(
        repo, name, writer=writer, base=base, base_oids=base_oids, progress=progress, key=key
    )
    # A key is a contract: every record has it, and no two share it (README, "Keys").
    keys = _check_keys(repo, name, key, scan, base, base_oids) if key else None
    after = stat_file(full)
    oid, dataset = build_dataset(
        writer, scan.oids, scan.format, key, base=base, base_oids=base_oids, runs=scan.runs
    )
    if scan.groups is not None:
        groups = msgspec.structs.replace(scan.groups, content=dataset.content)
        write_group_cache(repo.dsv_dir, name, groups)
    if keys is not None and before == after:  # keys of these bytes, not of a write since
        write_key_cache(repo.dsv_dir, name, content=dataset.content, key=key, keys=keys)
    # No hash of the bytes: a trusted stat proves the file clean, and hashing it would add a
    # tenth to a recommit. Should the stat change, status reads the file once and keeps both.
    return _proven_entry(name, oid, before, after, started), dataset


def _check_keys(
    repo: Repository,
    name: str,
    key: tuple[str, ...],
    scan: FileScan,
    base: Dataset | None,
    base_oids: bytes | None,
) -> list[bytes] | None:
    """Refuse a file whose records lack a key field or share a key; the keys of a JSONL
    file's datapoints in order (for the key cache), when known.

    From the keys the scan parsed and the cache of the base's, when they cover every
    datapoint: a set, not a second reading. The file is read again (`check_keys`) only to
    name the lines of a problem so found, or when the keys of some datapoint are not known.
    """
    from dsv.formats import check_keys
    from dsv.keys import keys_in_order, keys_ok, read_key_cache

    if scan.keys is not None:
        cached = None
        if base is not None and base_oids is not None:
            count = len(base_oids) // OID_SIZE
            cached = read_key_cache(repo.dsv_dir, name, content=base.content, key=key, count=count)
        keys = keys_in_order(
            scan.oids, scan.keys, base_oids=base_oids, cached=cached, runs=scan.runs
        )
        if keys is not None and keys_ok(keys):
            return keys
    found = check_keys(repo.root / name, name, key)
    if scan.keys is None or len(found) * OID_SIZE != len(scan.oids):
        return None
    return [b"\0".join(values) for values in found]


def _proven_entry(
    name: str, oid: bytes, before: object, after: object, started: int, file_hash: bytes = b""
) -> Entry:
    """The index entry for a file read between two stats: its stat (and `file_hash`, the hash
    of its bytes) are kept only when no write can have slipped in while it was read."""
    stat = trusted_stat(after, started) if before == after else None  # type: ignore[arg-type]
    if stat is None:
        return Entry(name, oid)
    return Entry(name, oid, stat, file_hash)


def check_entry(
    repo: Repository, entry: Entry, *, collect: bool = False
) -> tuple[str, Entry | None, FileScan | None]:
    """Is the working file still what `entry` staged? ('clean'|'modified'|'deleted').

    Also returns an entry to record when the file was proven clean again, and the file's
    scan when it had to be read (with `collect`, holding the bodies the staged version lacks).
    """
    full = repo.root / entry.path
    stat = stat_file(full)
    if stat is None:
        return "deleted", None, None
    if entry.stat is not None and entry.stat == stat:
        return "clean", None, None
    started = time.time_ns()
    if entry.file_hash and hash_file(full) == entry.file_hash:
        if stat_file(full) == stat and trusted_stat(stat, started) is not None:
            return "clean", Entry(entry.path, entry.dataset, stat, entry.file_hash), None
        return "clean", None, None
    staged = repo.read_dataset(entry.dataset)
    scan = scan_against(repo, entry.path, staged, collect=collect)
    if scan.format == staged.format and content_id(scan.oids) == staged.content:
        digest = hash_file(full)  # before the second stat, so that it vouches for these bytes
        after = stat_file(full)
        return "clean", _proven_entry(entry.path, entry.dataset, stat, after, started, digest), scan
    return "modified", None, scan


def write_file(
    repo: Repository,
    name: str,
    dataset_oid: bytes,
    *,
    progress: Callable[[int], None] | None = None,
) -> Entry:
    """Write a dataset version as its working file; return its index entry.

    `progress` is told the datapoints written so far, where the writing can tell (JSONL).
    """
    from dsv.materialize import write_jsonl
    from dsv.memory import gc_paused

    # Again right before the join, whatever the caller checked: a name from a tree is hostile
    # until it passed the rule, and this is where one would leave the working tree.
    check_dataset_path(name)
    dataset = repo.read_dataset(dataset_oid)
    full = repo.root / name
    full.parent.mkdir(parents=True, exist_ok=True)
    with gc_paused():
        written = None
        if dataset.format.kind == "jsonl":
            written = write_jsonl(repo.store, repo.read_oid_list(dataset), full, progress=progress)
        if written is None:
            from dsv.formats import write_dataset  # here: a large JSONL file needs none

            written = write_dataset(full, dataset.format, repo.read_datapoints(dataset))
    # The stat proves these bytes when it is the one the written inode had just after the
    # rename (another file renamed over it, or any write or utime since, changes it: ctime)
    # and their last write came a racy margin before the rename (a large file's fsync is
    # that margin). Otherwise the hash of what we wrote lets the next status prove the file
    # clean by reading it, without parsing it.
    stat = stat_file(full)
    if written.stat is None or stat != file_stat(written.stat):
        stat = None
    return Entry(name, dataset_oid, trusted_stat(stat, written.published_ns), written.digest)


def repo_path(
    repo: Repository, path: str | os.PathLike[str], *, tracked: Container[str] = ()
) -> str:
    """A dataset name (POSIX, relative to the root) for an absolute or root-relative path.

    A name in `tracked` is taken as it is: `rm` and `mv` can then undo a name an earlier dsv
    let in before the path rule was complete (a `\\` in it, say).
    """
    text = os.fspath(path)
    absolute = Path(os.path.normpath(repo.root / text))
    try:
        rel = absolute.relative_to(repo.root)
    except ValueError:
        shown = os.path.normpath(text) if os.path.isabs(text) else text
        raise BadInput(f"path '{shown}' is outside the repository {repo.root}") from None
    parts = rel.parts
    if not parts:
        raise BadInput("the repository root is not a dataset file")
    name = rel.as_posix()
    if name in tracked:
        return name
    # The rule every tree obeys: a name `add` takes is exactly a name a server takes.
    return check_dataset_path(name)
