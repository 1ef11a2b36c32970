"""Fast ingestion of JSONL dataset files: canonicalise, hash and pack on every core.

Unchanged lines of a file dsv has read before are not parsed again: a cache maps the SHA-256
of each raw line to the datapoint id it produced, which is safe because canonicalisation is a
pure function of the line's bytes.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import blake3
import msgspec

from dsv.canonical import CanonicalError, canonicalize_many
from dsv.errors import BadInput
from dsv.fsutil import write_atomic
from dsv.objects import OID_SIZE, Kind
from dsv.pack import PackWriter, PreparedPack
from dsv.store import ObjectWriter

__all__ = ["IngestResult", "LineCache", "gc_paused", "ingest_jsonl"]

RAW_HASH = 16
_BOM = b"\xef\xbb\xbf"
_TAG = Kind.DATAPOINT.tag
_BATCH = 4096
# Below this size one process is faster than starting workers.
_PARALLEL_MIN = 4 << 20
_READ = 16 << 20


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cycle collector: bulk work makes millions of acyclic objects, which it
    would otherwise scan again and again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class LineCache(msgspec.Struct):
    """For one dataset: the raw-line hashes of the file it was last read from, in order."""

    content: bytes
    hashes: bytes

    def mapping(self, oids: bytes) -> dict[bytes, bytes]:
        """raw-line hash -> datapoint id, given the dataset's ids (aligned with `hashes`)."""
        if len(self.hashes) // RAW_HASH != len(oids) // OID_SIZE:
            return {}
        h, o = self.hashes, oids
        keys = [h[i : i + RAW_HASH] for i in range(0, len(h), RAW_HASH)]
        values = [o[i : i + OID_SIZE] for i in range(0, len(o), OID_SIZE)]
        return dict(zip(keys, values, strict=True))


_cache_decoder = msgspec.msgpack.Decoder(LineCache)


def _cache_path(dsv_dir: Path, name: str) -> Path:
    return dsv_dir / "cache" / hashlib.sha256(name.encode()).hexdigest()[:32]


def read_line_cache(dsv_dir: Path, name: str) -> LineCache | None:
    try:
        return _cache_decoder.decode(_cache_path(dsv_dir, name).read_bytes())
    except (OSError, msgspec.DecodeError):
        return None  # only a cache: a bad one costs time, never correctness


def write_line_cache(dsv_dir: Path, name: str, cache: LineCache) -> None:
    path = _cache_path(dsv_dir, name)
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, msgspec.msgpack.encode(cache))


class IngestResult(msgspec.Struct):
    oids: bytes
    raw_hashes: bytes
    stored: int
    stored_bytes: int


class _Part(msgspec.Struct):
    oids: bytes
    raw_hashes: bytes
    lines: int
    stored: int
    stored_bytes: int
    pack: tuple[str, str, str] | None = None  # name, pack temp, idx temp
    error: tuple[int, bytes, str, int | None] | None = None  # line, text, message, offset


# Set before forking so workers share them copy-on-write instead of receiving pickles.
_shared: dict[str, object] = {}


def _blocks_of(path: Path, start: int, end: int) -> Iterator[bytes]:
    """Pieces of [start, end) that each end on a line boundary (the last may not).

    pread, not mmap: pages of a mapped file count as resident memory, which for a 1 GB
    file would double what a commit holds.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = start
        while pos < end:
            data = os.pread(fd, min(_READ, end - pos), pos)
            if not data:
                return
            if pos + len(data) < end:
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    # A line longer than a piece: read on until it ends.
                    more = [data]
                    while True:
                        extra = os.pread(fd, _READ, pos + sum(map(len, more)))
                        if not extra:
                            break
                        newline = extra.find(b"\n")
                        if newline >= 0:
                            more.append(extra[: newline + 1])
                            break
                        more.append(extra)
                    data = b"".join(more)
                elif cut < len(data):
                    data = data[:cut]
            yield data
            pos += len(data)
    finally:
        os.close(fd)


def _split_lines(data: bytes, first_line: int) -> tuple[list[bytes], list[int] | None]:
    """The non-blank lines of `data` and their numbers (None: consecutive from first_line)."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if b"\r" not in data and b"\n\n" not in data and not data.startswith(b"\n"):
        return lines, None
    texts: list[bytes] = []
    numbers: list[int] = []
    for n, line in enumerate(lines, first_line):
        line = line.removesuffix(b"\r")
        if line and not line.isspace():
            texts.append(line)
            numbers.append(n)
    return texts, numbers


def _ingest_range(index: int, start: int, end: int) -> _Part:
    """Worker: canonicalise, hash and pack the lines of one byte range of the file."""
    path: Path = _shared["path"]  # type: ignore[assignment]
    known: set[bytes] = _shared["known"]  # type: ignore[assignment]
    cache: dict[bytes, bytes] = _shared["cache"]  # type: ignore[assignment]
    pack_dir: Path | None = _shared["pack_dir"]  # type: ignore[assignment]
    sha = hashlib.sha256
    b3 = blake3.blake3
    tag = _TAG
    oids: list[bytes] = []
    raws: list[bytes] = []
    writer: PackWriter | None = None
    seen: set[bytes] = set()
    stored = stored_bytes = 0
    line_no = 0
    with gc_paused():
        for data in _blocks_of(path, start, end):
            if index == 0 and line_no == 0 and data.startswith(_BOM):
                data = data[len(_BOM) :]
            texts, numbers = _split_lines(data, line_no + 1)
            line_no += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            hashes = [sha(t).digest()[:RAW_HASH] for t in texts]
            if cache:
                ids: list[bytes | None] = list(map(cache.get, hashes))
                missing = [i for i, oid in enumerate(ids) if oid is None]
            else:
                ids = [None] * len(texts)
                missing = list(range(len(texts)))
            for at in range(0, len(missing), _BATCH):
                batch = missing[at : at + _BATCH]
                try:
                    bodies = canonicalize_many([texts[i] for i in batch])
                except CanonicalError:
                    if writer is not None:
                        writer.abort()
                    return _Part(
                        b"", b"", line_no, 0, 0, error=_first_error(texts, numbers, batch, line_no)
                    )
                batch_oids = [b3(tag + body).digest() for body in bodies]
                for i, oid in zip(batch, batch_oids, strict=True):
                    ids[i] = oid
                if pack_dir is None:
                    continue
                fresh = [
                    k for k, oid in enumerate(batch_oids) if oid not in known and oid not in seen
                ]
                if len(fresh) < len(batch_oids) or len(set(batch_oids)) < len(batch_oids):
                    unique: dict[bytes, int] = {}
                    for k in fresh:
                        unique.setdefault(batch_oids[k], k)
                    fresh = list(unique.values())
                if not fresh:
                    continue
                new_oids = [batch_oids[k] for k in fresh]
                new_bodies = [bodies[k] for k in fresh]
                seen.update(new_oids)
                if writer is None:
                    writer = PackWriter(pack_dir)
                writer.add_many(Kind.DATAPOINT, new_oids, new_bodies)
                stored += len(new_oids)
                stored_bytes += sum(map(len, new_bodies))
            oids.append(b"".join(ids))  # type: ignore[arg-type]
            raws.append(b"".join(hashes))
    prepared = writer.prepare() if writer is not None else None
    pack = (prepared.name, str(prepared.pack_tmp), str(prepared.idx_tmp)) if prepared else None
    return _Part(b"".join(oids), b"".join(raws), line_no, stored, stored_bytes, pack)


def _first_error(
    texts: list[bytes], numbers: list[int] | None, batch: list[int], last_line: int
) -> tuple[int, bytes, str, int | None]:
    """(line, text, message, offset) of the first record of `batch` that fails."""
    first = last_line - len(texts) + 1
    for i in batch:
        try:
            canonicalize_many([texts[i]])
        except CanonicalError as exc:
            line = numbers[i] if numbers is not None else first + i
            return line, texts[i], exc.message, exc.offset
    raise AssertionError("a batch failed but none of its records does")


def _ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    size = path.stat().st_size
    if parts <= 1 or size < _PARALLEL_MIN:
        return [(0, size)]
    bounds = [0]
    with open(path, "rb") as handle:
        for k in range(1, parts):
            handle.seek(size * k // parts)
            handle.readline()
            pos = handle.tell()
            if bounds[-1] < pos < size:
                bounds.append(pos)
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def _workers() -> int:
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def ingest_jsonl(
    path: Path,
    name: str,
    writer: ObjectWriter | None,
    *,
    known: set[bytes],
    cache: dict[bytes, bytes],
) -> IngestResult:
    """Read a JSONL file into datapoints; new ones go into packs adopted by `writer`."""
    if not path.exists():
        raise BadInput(f"{name}: no such file")
    pack_dir = writer.store.pack_dir if writer is not None else None
    if pack_dir is not None:
        pack_dir.mkdir(parents=True, exist_ok=True)
    _shared.update(path=path, known=known, cache=cache, pack_dir=pack_dir)
    ranges = _ranges(path, _workers())
    try:
        if len(ranges) == 1:
            parts = [_ingest_range(0, *ranges[0])]
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(len(ranges)) as pool:
                parts = pool.starmap(_ingest_range, [(i, a, b) for i, (a, b) in enumerate(ranges)])
    finally:
        _shared.clear()
    first_line = 0
    error = None
    for part in parts:
        if part.error is not None and error is None:
            line, text, message, offset = part.error
            error = _error(name, first_line + line, text, message, offset)
        first_line += part.lines
    for part in parts:
        if part.pack is None or pack_dir is None or writer is None:
            continue
        prepared = PreparedPack(pack_dir, part.pack[0], Path(part.pack[1]), Path(part.pack[2]))
        if error is not None:
            prepared.discard()
        else:
            writer.adopt(prepared, objects=part.stored, size=part.stored_bytes)
    if error is not None:
        raise error
    return IngestResult(
        b"".join(p.oids for p in parts),
        b"".join(p.raw_hashes for p in parts),
        sum(p.stored for p in parts),
        sum(p.stored_bytes for p in parts),
    )


def _error(name: str, line: int, text: bytes, message: str, offset: int | None) -> BadInput:
    column = 1
    if offset is not None:
        column = len(text[: min(offset, len(text))].decode("utf-8", errors="replace")) + 1
    return BadInput(f"{name}:{line}:{column}: {message}")
