"""Pack files: many objects in zstd-compressed blocks, with a sorted index (docs/format.md §4).

Blocks and the index are columnar (all kinds, then all lengths, then all bodies), so both are
built and read with a few C-level calls rather than a Python step per object.
"""

from __future__ import annotations

import bisect
import itertools
import mmap
import os
import struct
import sys
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import blake3
import zstandard

from dsv.errors import CorruptObject
from dsv.fsutil import fsync_dir
from dsv.objects import OID_SIZE, Kind, split_oids

__all__ = ["BLOCK_SIZE", "PACK_MAGIC", "Pack", "PackWriter", "PreparedPack", "scan_pack"]

PACK_MAGIC = b"DSVPACK\n"
IDX_MAGIC = b"DSVIDX\n\x00"
PACK_VERSION = 1
BLOCK_SIZE = 1 << 20
_HEADER = struct.Struct("<8sII")  # magic, version, reserved
_BLOCK = struct.Struct("<II")  # compressed length, raw length
_COUNT = struct.Struct("<I")
_IDX_HEADER = struct.Struct("<8sIII")  # magic, version, count, blocks
_IDX_BLOCK = struct.Struct("<QII")  # offset in pack, compressed length, raw length
_LEVEL = int(os.environ.get("DSV_ZSTD_LEVEL", "3"))
_U32 = "I"
assert array(_U32).itemsize == 4


class PackWriter:
    """Streams objects into a new pack; `finish` makes it visible atomically (idx last)."""

    def __init__(self, directory: Path, *, level: int = _LEVEL) -> None:
        self.directory = directory
        self._tmp = directory / f".tmp-{os.getpid()}-{os.urandom(4).hex()}.pack"
        self._file: IO[bytes] = open(self._tmp, "wb")  # noqa: SIM115 - closed in prepare/abort
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._hasher = blake3.blake3()
        self._offset = 0
        self._blocks: list[bytes] = []
        # The current block, columnar.
        self._kinds = bytearray()
        self._bodies: list[bytes | memoryview] = []
        self._size = 0
        # Every object so far, columnar; index i of each list is one object.
        self._oids: list[bytes] = []
        self._block_of = array(_U32)
        self._offset_of = array(_U32)
        self._length_of = array(_U32)
        self._kind_of = bytearray()
        self._put(_HEADER.pack(PACK_MAGIC, PACK_VERSION, 0))

    def __len__(self) -> int:
        return len(self._oids)

    def _put(self, data: bytes) -> None:
        self._file.write(data)
        self._hasher.update(data)
        self._offset += len(data)

    def add(self, kind: Kind, oid: bytes, body: bytes | memoryview) -> None:
        self._oids.append(oid)
        self._kinds.append(kind)
        self._bodies.append(body)
        self._size += len(body)
        if self._size >= BLOCK_SIZE:
            self._flush_block()

    def add_many(self, kind: Kind, oids: list[bytes], bodies: list[bytes]) -> None:
        """Add many objects of one kind; the same as `add` for each, with less overhead."""
        start = 0
        sizes = list(map(len, bodies))
        while start < len(bodies):
            room = BLOCK_SIZE - self._size
            ends = itertools.accumulate(sizes[start:])
            take = next(
                (n for n, total in enumerate(ends, 1) if total >= room), len(bodies) - start
            )
            stop = start + take
            self._oids += oids[start:stop]
            self._kinds += bytes([kind]) * take
            self._bodies += bodies[start:stop]
            self._size += sum(sizes[start:stop])
            if self._size >= BLOCK_SIZE:
                self._flush_block()
            start = stop

    def add_pack(self, pack: Pack) -> None:
        """Append every object of `pack` by copying its compressed blocks as they are."""
        self._flush_block()
        base = len(self._blocks)
        for block in range(pack.nblocks):
            length, frame = pack.read_frame(block)
            self._blocks.append(_IDX_BLOCK.pack(self._offset, len(frame), length))
            self._put(_BLOCK.pack(len(frame), length))
            self._put(frame)
        self._oids += split_oids(pack._oids)
        self._block_of.extend([block + base for block in pack._block_col])
        self._offset_of.extend(pack._offset_col)
        self._length_of.extend(pack._length_col)
        self._kind_of += pack._kind_col

    def _flush_block(self) -> None:
        n = len(self._bodies)
        if not n:
            return
        lengths = array(_U32, map(len, self._bodies))
        head = _COUNT.pack(n) + bytes(self._kinds) + lengths.tobytes()
        offsets = itertools.accumulate(lengths, initial=len(head))
        self._offset_of.extend(itertools.islice(offsets, n))
        self._length_of.extend(lengths)
        self._block_of.extend(itertools.repeat(len(self._blocks), n))
        self._kind_of += self._kinds
        raw = head + b"".join(self._bodies)
        frame = self._compressor.compress(raw)
        self._blocks.append(_IDX_BLOCK.pack(self._offset, len(frame), len(raw)))
        self._put(_BLOCK.pack(len(frame), len(raw)))
        self._put(frame)
        self._kinds = bytearray()
        self._bodies = []
        self._size = 0

    def prepare(self) -> PreparedPack | None:
        """Write trailer and index under temporary names and fsync both (None if empty)."""
        self._flush_block()
        if not self._oids:
            self.abort()
            return None
        checksum = self._hasher.digest()
        self._file.write(checksum)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        idx = self._encode_index(checksum)
        idx_tmp = self.directory / f".tmp-{os.getpid()}-{os.urandom(4).hex()}.idx"
        with open(idx_tmp, "wb") as handle:
            handle.write(idx)
            handle.flush()
            os.fsync(handle.fileno())
        return PreparedPack(self.directory, f"pack-{checksum.hex()}", self._tmp, idx_tmp)

    def _encode_index(self, checksum: bytes) -> bytes:
        oids = self._oids
        order = sorted(range(len(oids)), key=oids.__getitem__)
        fanout = [0] * 256
        for oid in oids:
            fanout[oid[0]] += 1
        fanout = list(itertools.accumulate(fanout))

        def column(values: array[int]) -> bytes:
            return array(_U32, [values[i] for i in order]).tobytes()

        body = b"".join(
            [
                _IDX_HEADER.pack(IDX_MAGIC, PACK_VERSION, len(oids), len(self._blocks)),
                struct.pack("<256I", *fanout),
                b"".join([oids[i] for i in order]),
                column(self._block_of),
                column(self._offset_of),
                column(self._length_of),
                bytes([self._kind_of[i] for i in order]),
                b"".join(self._blocks),
                checksum,
            ]
        )
        return body + blake3.blake3(body).digest()

    def finish(self) -> str:
        """Write trailer and index, fsync both, rename into place; return the pack name."""
        prepared = self.prepare()
        if prepared is None:
            return ""
        prepared.publish()
        return prepared.name

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class PreparedPack:
    """A complete pack under temporary names: `publish` makes it visible, `discard` drops it."""

    def __init__(self, directory: Path, name: str, pack_tmp: Path, idx_tmp: Path) -> None:
        self.directory = directory
        self.name = name
        self.pack_tmp = pack_tmp
        self.idx_tmp = idx_tmp

    def publish(self) -> None:
        # A pack counts only once its idx exists, so the pack is renamed first.
        os.replace(self.pack_tmp, self.directory / f"{self.name}.pack")
        os.replace(self.idx_tmp, self.directory / f"{self.name}.idx")
        fsync_dir(self.directory)

    def discard(self) -> None:
        self.pack_tmp.unlink(missing_ok=True)
        self.idx_tmp.unlink(missing_ok=True)


class _OidView:
    """Sequence view of the sorted oid table, for bisect."""

    def __init__(self, buf: memoryview, count: int) -> None:
        self._buf = buf
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> bytes:
        return bytes(self._buf[i * OID_SIZE : (i + 1) * OID_SIZE])


class Pack:
    """A read-only pack and its index, memory-mapped."""

    def __init__(self, directory: Path, name: str, *, cache_blocks: int = 8) -> None:
        self.name = name
        self.pack_path = directory / f"{name}.pack"
        self.idx_path = directory / f"{name}.idx"
        try:
            with open(self.idx_path, "rb") as handle:
                self._idx = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._pack_file = open(self.pack_path, "rb")  # noqa: SIM115 - lives with the Pack
        except (OSError, ValueError) as exc:
            raise CorruptObject(f"cannot open pack {name}: {exc}") from exc
        view = memoryview(self._idx)
        if len(view) < _IDX_HEADER.size + 1024 + 64:
            raise CorruptObject(f"pack index {name}.idx is truncated")
        magic, version, count, nblocks = _IDX_HEADER.unpack_from(view, 0)
        if magic != IDX_MAGIC or version != PACK_VERSION:
            raise CorruptObject(f"pack index {name}.idx has an unknown format")
        expected = _IDX_HEADER.size + 1024 + count * (OID_SIZE + 13) + nblocks * 16 + 64
        if len(view) != expected:
            raise CorruptObject(f"pack index {name}.idx has the wrong size")
        self.count = count
        self.nblocks = nblocks
        pos = _IDX_HEADER.size
        self._fanout = struct.unpack_from("<256I", view, pos)
        pos += 1024
        self._oids = view[pos : pos + count * OID_SIZE]
        pos += count * OID_SIZE
        columns = []
        for _ in range(3):
            columns.append(view[pos : pos + 4 * count].cast("I"))
            pos += 4 * count
        self._block_col, self._offset_col, self._length_col = columns
        self._kind_col = view[pos : pos + count]
        pos += count
        self._blocks = view[pos : pos + nblocks * _IDX_BLOCK.size]
        self._views = [self._oids, *columns, self._kind_col, self._blocks]
        self._oid_view = _OidView(self._oids, count)
        self._positions: dict[bytes, int] | None = None
        self._prefix_col: array[int] | None = None
        self._decompressor = zstandard.ZstdDecompressor()
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_size = cache_blocks
        self._last_block = -1
        self._last_data = b""

    def close(self) -> None:
        for view in self._views:
            view.release()
        self._pack_file.close()
        self._idx.close()

    def find(self, oid: bytes) -> int:
        """Index position of `oid`, or -1."""
        if self._positions is not None:
            return self._positions.get(oid, -1)
        first = oid[0]
        lo = self._fanout[first - 1] if first else 0
        hi = self._fanout[first]
        i = bisect.bisect_left(self._oid_view, oid, lo, hi)
        if i < hi and self._oid_view[i] == oid:
            return i
        return -1

    def positions(self) -> dict[bytes, int]:
        """oid -> index position for every object: worth building for bulk lookups."""
        if self._positions is None:
            self._positions = dict(zip(split_oids(self._oids), range(self.count), strict=True))
        return self._positions

    def find_sorted(self, oids: list[bytes]) -> list[int]:
        """Index position of each of `oids` (given in sorted order), or -1.

        Bisects a column of every oid's first 8 bytes as big-endian integers, built at C
        speed and kept: a list of every oid (what bisecting whole oids needs) costs a
        million objects in a large pack, where this costs one 8 MB array.
        """
        col = self._prefix_col
        if col is None:
            col = array("Q")
            col.frombytes(self._oids.cast("Q")[::4].tobytes())
            if sys.byteorder == "little":
                col.byteswap()
            self._prefix_col = col
        table, count = self._oids, self.count
        out: list[int] = []
        lo = 0
        for oid in oids:
            key = int.from_bytes(oid[:8], "big")
            at = lo = bisect.bisect_left(col, key, lo)
            # Oids sharing 8 bytes sit together; the whole oid decides.
            while at < count and col[at] == key:
                if table[at * OID_SIZE : (at + 1) * OID_SIZE] == oid:
                    break
                at += 1
            else:
                at = -1
            out.append(at)
        return out

    def oid_at(self, i: int) -> bytes:
        return bytes(self._oids[i * OID_SIZE : (i + 1) * OID_SIZE])

    def oids(self) -> Iterator[bytes]:
        """Every oid in the pack, in sorted order."""
        data = bytes(self._oids)
        for i in range(0, len(data), OID_SIZE):
            yield data[i : i + OID_SIZE]

    def kind_at(self, i: int) -> Kind:
        return Kind(self._kind_col[i])

    def location(self, i: int) -> tuple[int, int, int]:
        """(block, offset, length) of entry `i`."""
        return self._block_col[i], self._offset_col[i], self._length_col[i]

    def prefix_range(self, prefix: bytes) -> Iterator[bytes]:
        """Oids starting with `prefix` (at least one byte)."""
        lo = bisect.bisect_left(self._oid_view, prefix)
        for i in range(lo, self.count):
            oid = self._oid_view[i]
            if not oid.startswith(prefix):
                break
            yield oid

    def read_block(self, block: int) -> bytes:
        cached = self._cache.get(block)
        if cached is not None:
            self._cache.move_to_end(block)
            return cached
        data = self._load_block(block, self._decompressor)
        self._cache[block] = data
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return data

    def body_at(self, i: int) -> bytes:
        """Body of entry `i`, for bulk readers that check kinds through the hash."""
        block = self._block_col[i]
        if block == self._last_block:
            data = self._last_data
        else:
            data = self._last_data = self.read_block(block)
            self._last_block = block
        offset = self._offset_col[i]
        return data[offset : offset + self._length_col[i]]

    def _load_block(
        self, block: int, decompressor: zstandard.ZstdDecompressor | None = None
    ) -> bytes:
        rlen, frame = self.read_frame(block)
        decompressor = decompressor or zstandard.ZstdDecompressor()
        try:
            data = decompressor.decompress(frame, max_output_size=rlen)
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"pack {self.name}: block {block} is corrupt ({exc})") from exc
        if len(data) != rlen:
            raise CorruptObject(f"pack {self.name}: block {block} has the wrong size")
        return data

    def read_frame(self, block: int) -> tuple[int, bytes]:
        """Block `block` as stored: its raw length and its compressed frame."""
        if not 0 <= block < self.nblocks:
            raise CorruptObject(f"pack {self.name}: index names a block that does not exist")
        offset, clen, rlen = _IDX_BLOCK.unpack_from(self._blocks, block * _IDX_BLOCK.size)
        frame = os.pread(self._pack_file.fileno(), clen, offset + _BLOCK.size)
        if len(frame) != clen:
            raise CorruptObject(f"pack {self.name} is truncated")
        return rlen, frame

    def block_bodies(self, block: int) -> tuple[list[int], list[bytes]]:
        """Block `block`'s entries in pack order: their offsets in the block, their bodies."""
        raw = self._load_block(block, self._decompressor)
        try:
            (count,) = _COUNT.unpack_from(raw, 0)
            lengths = memoryview(raw)[4 : 4 + 5 * count][count:].cast("I")
        except (struct.error, TypeError) as exc:
            raise CorruptObject(f"pack {self.name}: block {block} is corrupt ({exc})") from exc
        starts = list(itertools.accumulate(lengths, initial=4 + 5 * count))
        if len(starts) != count + 1 or starts[-1] != len(raw):
            raise CorruptObject(f"pack {self.name}: block {block} has the wrong size")
        bodies = [raw[start:end] for start, end in itertools.pairwise(starts)]
        starts.pop()
        return starts, bodies

    def load_block(self, block: int) -> bytes:
        """Block `block` decompressed, bypassing the cache; safe to call from several threads."""
        return self._load_block(block)

    def entry_in(self, data: bytes, i: int) -> tuple[Kind, bytes]:
        """Kind and body of entry `i` from its block's data (from `load_block`)."""
        offset = self._offset_col[i]
        return Kind(self._kind_col[i]), data[offset : offset + self._length_col[i]]

    def read_at(self, i: int) -> tuple[Kind, bytes]:
        """Kind and body of entry `i` (not re-hashed: the store does that)."""
        data = self.read_block(self._block_col[i])
        offset = self._offset_col[i]
        return Kind(self._kind_col[i]), data[offset : offset + self._length_col[i]]


def _block_entries(raw: bytes) -> Iterator[tuple[int, bytes]]:
    (count,) = _COUNT.unpack_from(raw, 0)
    kinds = raw[4 : 4 + count]
    lengths = memoryview(raw)[4 + count : 4 + 5 * count].cast("I")
    at = 4 + 5 * count
    for kind, length in zip(kinds, lengths, strict=True):
        yield kind, raw[at : at + length]
        at += length
    if at != len(raw):
        raise ValueError("block length does not match its entries")


def scan_pack(path: Path) -> Iterator[tuple[Kind, bytes]]:
    """Every (kind, body) of a pack file in order, checking framing and the trailer checksum."""
    decompressor = zstandard.ZstdDecompressor()
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) < _HEADER.size + OID_SIZE:
        raise CorruptObject(f"{path.name}: truncated pack")
    magic, version, _ = _HEADER.unpack_from(data, 0)
    if magic != PACK_MAGIC or version != PACK_VERSION:
        raise CorruptObject(f"{path.name}: not a dsv pack of version {PACK_VERSION}")
    end = len(data) - OID_SIZE
    if blake3.blake3(memoryview(data)[:end]).digest() != data[end:]:
        raise CorruptObject(f"{path.name}: pack checksum mismatch")
    pos = _HEADER.size
    while pos < end:
        clen, rlen = _BLOCK.unpack_from(data, pos)
        pos += _BLOCK.size
        try:
            raw = decompressor.decompress(data[pos : pos + clen], max_output_size=rlen)
            entries = list(_block_entries(raw))
        except (zstandard.ZstdError, ValueError, struct.error) as exc:
            raise CorruptObject(f"{path.name}: corrupt block ({exc})") from exc
        pos += clen
        for kind, body in entries:
            try:
                yield Kind(kind), body
            except ValueError as exc:
                raise CorruptObject(f"{path.name}: unknown object kind {kind}") from exc
