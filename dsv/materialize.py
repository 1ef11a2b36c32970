"""Writing a whole dataset version out as a JSONL file, on every core.

Each worker verifies its share of the datapoints (re-hashed, or taken from pack blocks that are
trusted: docs/format.md §4) and writes it to a part file; the parts are
joined in the kernel (copy_file_range) into one temporary file, which then replaces the working
file atomically.

A worker reads its share as runs of pack blocks (dsv.blockruns). Where the order is scattered
(few ids per block), that would hash much more than it writes, so the worker goes on id by id
through a map of the packs: faster than bisecting, and a checkout can afford its memory.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from dsv.blockruns import BlockRuns, mismatch
from dsv.errors import BadState, CorruptObject
from dsv.fsutil import WriteResult, digest_fds, fsync_dir, note_temp, publish, start_writeback
from dsv.memory import return_free_memory
from dsv.objects import OID_SIZE, Kind, hash_objects, split_oids
from dsv.pack import Pack
from dsv.parallel import can_fork, fork_map
from dsv.store import ObjectStore

__all__ = ["PARALLEL_MIN", "write_jsonl"]

# Below this many datapoints, starting workers costs more than it saves.
PARALLEL_MIN = 20_000
# Bodies joined per write. Few, because a worker's memory is fresh: each page it touches
# first costs a fault, and on a virtual machine whose host has reclaimed the page, 5-12 us.
# Bodies held for a write keep their blocks alive past the block cache: at 8192 a 50k worker
# touched 34 MB (8.4k faults) and took 188 ms, at 1024 13 MB (3.4k) and 125 ms (first runs
# in fresh processes, 2026-12-08); a checkout took 0.287 s against 0.379 (medians of 7).
_WRITE_EVERY = 1024

_COPY_PIECE = 8 << 20  # bytes of the second part copied before their writeback starts

_shared: dict[str, object] = {}


def _digest_into(parts: list[tuple[int, int | None]], result: list[bytes | OSError]) -> None:
    """Thread: `digest_fds(parts)`, or the OSError that stopped it, appended to `result`."""
    try:
        result.append(digest_fds(parts))
    except OSError as exc:
        result.append(exc)


class _Mapped:
    """Bodies of a list of datapoint ids, looked up one by one in a map of every pack."""

    def __init__(self, store: ObjectStore, packs: list[Pack]) -> None:
        self.store = store
        self.maps = [(pack, pack.positions()) for pack in packs]
        self.pack, self.positions = self.maps[0]

    def take(self, wanted: list[bytes], at: int) -> list[bytes]:
        """Verified bodies of `wanted[at:at + k]` for some k >= 1."""
        chunk = wanted[at : at + _WRITE_EVERY]
        bodies = []
        unchecked = []  # where in `chunk` a body comes from a block that is not trusted
        for oid in chunk:
            position = self.positions.get(oid)
            if position is None:
                found = next(((p, m) for p, m in self.maps if oid in m), None)
                if found is None:
                    bodies.append(self.store.read(oid, Kind.DATAPOINT)[1])  # loose
                    continue
                # Neighbouring datapoints mostly share a pack: try this one first next time.
                self.pack, self.positions = found
                position = self.positions[oid]
            bodies.append(self.pack.body_at(position))
            if not self.pack.trusted_at(position, Kind.DATAPOINT):
                unchecked.append(len(bodies) - 1)
        if unchecked:
            hashes = hash_objects(Kind.DATAPOINT, [bodies[k] for k in unchecked])
            for k, got in zip(unchecked, hashes, strict=True):
                if got != chunk[k]:
                    raise mismatch(chunk[k])
        return bodies


def _write_range(first: int, stop: int, part: str, slot: int, stays: bool) -> None:
    """Worker: verify datapoints [first, stop) and write them to `part`, the file that is
    published if it `stays`, else one copied into it."""
    counter = _shared.get("counter")
    oids: bytes = _shared["oids"]  # type: ignore[assignment]
    store: ObjectStore = _shared["store"]  # type: ignore[assignment]
    packs = store.packs
    wanted = split_oids(oids[first * OID_SIZE : stop * OID_SIZE])
    reader: BlockRuns | _Mapped = BlockRuns(packs, Kind.DATAPOINT)
    with open(part, "wb") as out:
        pending: list[bytes] = []
        at = 0
        while at < len(wanted):
            bodies = reader.take(wanted, at) or [store.read(wanted[at], Kind.DATAPOINT)[1]]
            at += len(bodies)
            pending += bodies
            if isinstance(reader, BlockRuns) and reader.scattered(at):
                reader = _Mapped(store, packs)
            if len(pending) >= _WRITE_EVERY:
                _write_out(out, pending, hint=stays)
                pending = []
                if isinstance(counter, mmap.mmap):  # the caller's progress sums the slots
                    struct.pack_into("q", counter, 8 * slot, at)
        _write_out(out, pending, hint=stays)


def _write_out(out: BinaryIO, bodies: list[bytes], *, hint: bool) -> None:
    """Write `bodies` as lines; with `hint`, have the kernel start putting them on disk: the
    fsync after the workers then waits for the rest only (48 against 28 ms at 100k). Not for
    a part file that is copied and removed: its writeback was wasted, and made the fsync of
    the directory after the rename 10 ms where it takes 2.5."""
    start = out.tell()
    bodies.append(b"")
    out.write(b"\n".join(bodies))
    out.flush()
    if hint:
        start_writeback(out.fileno(), start, out.tell() - start)


def write_jsonl(
    store: ObjectStore,
    oids: bytes,
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> WriteResult | None:
    """Write the datapoints `oids` as a JSONL file; the BLAKE3 of its bytes and when they
    were published. `progress` is told the datapoints written so far, while they are.

    None when the fast path does not apply (few datapoints, loose objects, no fork, no
    copy_file_range): the caller then writes the file the ordinary way.
    """
    n = len(oids) // OID_SIZE
    if n < PARALLEL_MIN or not can_fork() or not hasattr(os, "copy_file_range"):
        return None  # (copy_file_range joins the parts: Linux, FreeBSD)
    packs = store.packs
    if not packs:
        return None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    note_temp(tmp)
    note_temp(part)
    ok = False
    try:
        _shared.update(oids=oids, store=store)
        half = n // 2
        waiting = None
        if progress is not None:
            counter = _shared["counter"] = mmap.mmap(-1, 16)

            def waiting() -> None:
                progress(sum(struct.unpack_from("2q", counter)))

        # A worker's resident set starts as this process's: what malloc holds free (a clone's
        # merge of packs left tens of MB) would count in each, and is given back first.
        return_free_memory()
        for pack in packs:
            # Damage is the business of the worker that reads it, if any does.
            with contextlib.suppress(CorruptObject):
                pack.prepare_trust()
        calls = [(0, half, str(tmp), 0, True), (half, n, str(part), 1, False)]
        fork_map(_write_range, calls, waiting=waiting)
        with open(tmp, "r+b") as out, open(part, "rb") as extra:
            first = out.seek(0, os.SEEK_END)
            size = os.fstat(extra.fileno()).st_size
            # The hash reads the file's bytes where the workers left them while the copy and
            # the fsync wait on the kernel and the disk: side by side they overlap.
            hashed: list[bytes | OSError] = []
            parts = [(out.fileno(), first), (extra.fileno(), None)]
            hashing = threading.Thread(target=_digest_into, args=(parts, hashed))
            hashing.start()
            try:
                at = first
                while at < first + size:
                    # In pieces, each sent on to the disk as the next is copied.
                    piece = min(_COPY_PIECE, first + size - at)
                    copied = os.copy_file_range(extra.fileno(), out.fileno(), piece)
                    if copied <= 0:
                        raise OSError("copy_file_range made no progress")
                    start_writeback(out.fileno(), at, copied)
                    at += copied
                os.fsync(out.fileno())
            finally:
                hashing.join()
            if isinstance(hashed[0], OSError):
                raise hashed[0]
            written = WriteResult(hashed[0])
            publish(out.fileno(), tmp, path, written)
        ok = True
    except OSError as exc:
        raise BadState(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        _shared.clear()
        for leftover in (part,) if ok else (part, tmp):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    fsync_dir(path.parent)
    return written
