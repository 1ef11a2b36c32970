"""Pack files: many objects in zstd-compressed blocks, with a sorted index (docs/format.md §4).

Blocks and the index are columnar (all kinds, then all lengths, then all bodies), so both are
built and read with a few C-level calls rather than a Python step per object.
"""

from __future__ import annotations

import bisect
import itertools
import mmap
import operator
import os
import struct
import sys
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import blake3
import zstandard

from dsv.errors import CorruptObject
from dsv.frames import decompress_all, frames_checksummed
from dsv.fsutil import digest_fd, fsync_dir, note_temp
from dsv.objects import OID_SIZE, Kind, split_oids
from dsv.sorting import gatherer, invert, location_keys, location_order, permute, sort_oids

__all__ = [
    "BLOCK_SIZE",
    "PACK_MAGIC",
    "Pack",
    "PackWriter",
    "PreparedPack",
    "encode_index",
]

PACK_MAGIC = b"DSVPACK\n"
IDX_MAGIC = b"DSVIDX\n\x00"
PACK_VERSION = 2  # written; version 1 (one frame a block, no dictionaries) is still read
# Written; version 2 (no stored pack order) and 1 (and one frame a block) are still read.
IDX_VERSION = 3
BLOCK_SIZE = 1 << 20
MAX_RAW = 256 << 20  # the most raw bytes a block may hold (the protocol's limit too)
# With a dictionary, a block is cut into frames of about this many raw bytes: a reader of a
# few scattered objects (a diff) decompresses their frames, not their 1 MiB blocks.
FRAME_SIZE = 8192
# A dict lookup: calling the enum costs half a microsecond per body read.
_KINDS = {kind.value: kind for kind in Kind}
# A writer that fills this many blocks trains a dictionary on the datapoints of the first
# (if it has enough of them): in a smaller pack the dictionary would cost more than it saves.
DICTIONARY_SIZE = 64 << 10
_TRAIN_AFTER = 8
_TRAIN_SAMPLES = 64
DICTIONARY_BLOCK = 0xFFFFFFFF  # a block's dictionary field: this block is a dictionary
_HEADER = struct.Struct("<8sII")  # magic, version, reserved
_BLOCK_V1 = struct.Struct("<II")  # compressed length, raw length
_BLOCK = struct.Struct("<IIII")  # compressed length, raw length, dictionary, frames
_FRAME = struct.Struct("<II")  # a frame's compressed length, raw length
_COUNT = struct.Struct("<I")
_IDX_HEADER_V1 = struct.Struct("<8sIII")  # magic, version, count, blocks
_IDX_HEADER = struct.Struct("<8sIIII")  # magic, version, count, blocks, frames
_IDX_BLOCK_V1 = struct.Struct("<QII")  # offset in pack, compressed length, raw length
_IDX_BLOCK = struct.Struct("<QIIII")  # ... and dictionary, first frame
_LEVEL = int(os.environ.get("DSV_ZSTD_LEVEL", "3"))
_U32 = "I"
_Where = tuple[int, int, int]  # request, block, raw offset of a frame
_FINDS_BEFORE_PREFIXES = 4096
assert array(_U32).itemsize == 4


def encode_index(
    oids: bytes | bytearray,
    block_of: array[int],
    offset_of: array[int],
    length_of: array[int],
    kind_of: bytearray,
    blocks: list[bytes],
    frames: array[int],
    checksum: bytes,
    *,
    in_pack_order: bool = True,
) -> list[bytes | memoryview]:
    """The idx of a pack (format.md §4), in parts to write in order, from its entries (`oids`
    packed, 32 bytes each, in pack order: by block, then offset, as its order column states),
    block table and frame ends; without `in_pack_order`, the entries are in any order and are
    sorted by location for the order column. (Joined, a 1M pack's 45 MB index was one more
    copy at a fetch's peak.)"""
    count = len(oids) // OID_SIZE
    assert block_of.itemsize == offset_of.itemsize == length_of.itemsize == 4  # u32 columns
    order, table = sort_oids(oids)
    del oids  # a writer hands its ids over: from here the sorted table stands for them
    # Each entry's index position, in pack order: a reader of whole blocks needs it, and
    # sorting the index to find it cost a checkout a tenth of its time.
    rank = invert(order)
    if not in_pack_order:
        rank = array(_U32, permute(rank, location_order(block_of, offset_of, count)))
    # Entry k of the fan-out counts the ids whose first byte is k or less: in the sorted
    # table, where the first byte k + 1 begins.
    firsts = bytes(memoryview(table)[::OID_SIZE])
    fanout = array(_U32, [bisect.bisect_right(firsts, k) for k in range(256)])

    parts: list[bytes | memoryview] = [
        _IDX_HEADER.pack(IDX_MAGIC, IDX_VERSION, count, len(blocks), len(frames) // 2),
        fanout.tobytes(),
        table,
        permute(block_of, order),
        permute(offset_of, order),
        permute(length_of, order),
        memoryview(rank).cast("B"),
        permute(kind_of, order),
        b"".join(blocks),
        frames.tobytes(),
        checksum,
    ]
    hasher = blake3.blake3()
    for part in parts:
        hasher.update(part)
    parts.append(hasher.digest())
    return parts


class PackWriter:
    """Streams objects into a new pack; `finish` makes it visible atomically (idx last)."""

    def __init__(
        self,
        directory: Path,
        *,
        level: int = _LEVEL,
        samples: Sequence[bytes] | None = None,
        threads: int = 0,
    ) -> None:
        """`level` is zstd's. A writer that knows its datapoints ahead (gc) passes `samples`
        of them, drawn from all of them: a pack large enough for a dictionary trains it on
        those instead of on its first full block's. `threads` compress each block's frames
        (0: this thread)."""
        self.directory = directory
        self._tmp = directory / f".tmp-{os.getpid()}-{os.urandom(4).hex()}.pack"
        note_temp(self._tmp)
        self._file: IO[bytes] = open(self._tmp, "wb")  # noqa: SIM115 - closed in prepare/abort
        self._level = level
        # Each frame carries zstd's checksum of its content, which every decompression
        # verifies: what lets a reader skip re-hashing bodies (docs/format.md §4, trust).
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._hasher = blake3.blake3()
        self._offset = 0
        self._blocks: list[bytes] = []  # index entries
        self._frames = array(_U32)  # index frame table: compressed end, raw end, ...
        self._dictionary = 0  # the blocks' dictionary field: 1 + its block number, or 0
        self._trained = False  # whether a dictionary was decided on (trained or not)
        self._held: list[tuple[bytearray, list[bytes | memoryview]]] = []
        # The current block, columnar.
        self._kinds = bytearray()
        self._bodies: list[bytes | memoryview] = []
        self._size = 0
        # Every object so far, columnar; index i of each list is one object.
        self._oids = bytearray()  # packed, 32 bytes an id
        self._in_pack_order = True  # entries are added in pack order (not after add_pack)
        self._block_of = array(_U32)
        self._offset_of = array(_U32)
        self._length_of = array(_U32)
        self._kind_of = bytearray()
        # Dictionaries copied from other packs: (pack name, its dictionary field) -> ours.
        self._copied: dict[tuple[str, int], int] = {}
        self._threads = threads
        self._samples = samples
        self._put(_HEADER.pack(PACK_MAGIC, PACK_VERSION, 0))

    def __len__(self) -> int:
        return len(self._oids) // OID_SIZE

    def _put(self, data: bytes) -> None:
        self._file.write(data)
        self._hasher.update(data)
        self._offset += len(data)

    def add(self, kind: Kind, oid: bytes, body: bytes | memoryview) -> None:
        self._oids += oid
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
            self._oids += b"".join(oids[start:stop])
            self._kinds += bytes([kind]) * take
            self._bodies += bodies[start:stop]
            self._size += sum(sizes[start:stop])
            if self._size >= BLOCK_SIZE:
                self._flush_block()
            start = stop

    def add_pack(self, pack: Pack) -> None:
        """Append every object of `pack` by copying its blocks (and dictionaries) as they are."""
        self._flush_block()
        base = len(self._blocks)
        for block in range(pack.nblocks):
            rlen, dictionary, frames, data = pack.read_block_data(block)
            if dictionary not in (0, DICTIONARY_BLOCK):
                dictionary += base
            self._write_block(data, rlen, dictionary, frames)
        # In the source's index order, not pack order: `encode_index` then sorts the entries
        # by location for the order column (laying them out in pack order here instead took
        # 40 MB more at a 1M clone's merge).
        self._in_pack_order = False
        self._oids += pack._oids
        self._block_of.extend([block + base for block in pack._block_col])
        self._offset_of.extend(pack._offset_col)
        self._length_of.extend(pack._length_col)
        self._kind_of += pack._kind_col

    def copy_block(self, pack: Pack, block: int, entries: Sequence[int]) -> None:
        """Append data block `block` of `pack` as it is stored (its dictionary first, once
        per writer); `entries` are the index positions in `pack` of the objects it holds."""
        self._flush_block()
        rlen, dictionary, frames, data = pack.read_block_data(block)
        if dictionary == DICTIONARY_BLOCK:
            raise CorruptObject(f"pack {pack.name}: block {block} is a dictionary")
        if dictionary:
            ours = self._copied.get((pack.name, dictionary))
            if ours is None:
                _, _, _, words = pack.read_block_data(dictionary - 1)
                self._write_block(words, len(words), DICTIONARY_BLOCK, [])
                ours = self._copied[(pack.name, dictionary)] = len(self._blocks)
            dictionary = ours
        self._write_block(data, rlen, dictionary, frames)
        at = len(self._blocks) - 1
        for i in entries:
            self._oids += pack._oids[i * OID_SIZE : (i + 1) * OID_SIZE]
            self._block_of.append(at)
            self._offset_of.append(pack._offset_col[i])
            self._length_of.append(pack._length_col[i])
            self._kind_of.append(pack._kind_col[i])

    def copy_cost(self, pack: Pack, block: int) -> int:
        """Bytes `copy_block` of that block would add: the block, and its dictionary if this
        writer has not copied it yet."""
        cost = pack.block_stored_len(block)
        dictionary = pack.block_dictionary(block)
        if dictionary and (pack.name, dictionary) not in self._copied:
            cost += pack.block_stored_len(dictionary - 1)
        return cost

    @property
    def bytes_written(self) -> int:
        """Bytes of the pack so far, blocks still held in memory aside."""
        return self._offset

    def _write_block(
        self, data: bytes, rlen: int, dictionary: int, frames: list[tuple[int, int]]
    ) -> None:
        """Append one block: its compressed `data` and the (compressed, raw) size of each frame."""
        self._blocks.append(
            _IDX_BLOCK.pack(self._offset, len(data), rlen, dictionary, len(self._frames) // 2)
        )
        self._put(_BLOCK.pack(len(data), rlen, dictionary, len(frames)))
        self._put(b"".join(_FRAME.pack(c, r) for c, r in frames))
        self._put(data)
        ends = [0, 0]
        for c, r in frames:
            ends[0] += c
            ends[1] += r
            self._frames.extend(ends)

    def _train(self, kinds: bytearray, bodies: list[bytes | memoryview]) -> None:
        """A dictionary from the datapoints of one full block, if they are enough."""
        pairs = zip(kinds, bodies, strict=True)
        self._train_on([bytes(body) for kind, body in pairs if kind == Kind.DATAPOINT])

    def _train_on(self, samples: Sequence[bytes | bytearray | memoryview]) -> None:
        """A dictionary from `samples`, written as the next block, if they are enough."""
        if len(samples) < _TRAIN_SAMPLES:
            return
        try:
            # Fixed parameters: a search for the best ones takes 4x as long for no gain here.
            trained = zstandard.train_dictionary(
                DICTIONARY_SIZE, list(samples), k=200, d=8, level=self._level
            )
        except zstandard.ZstdError:
            return  # too few or too alike to learn from: frames without a dictionary
        data = trained.as_bytes()
        self._write_block(data, len(data), DICTIONARY_BLOCK, [])
        self._dictionary = len(self._blocks)
        trained.precompute_compress(level=self._level)
        self._compressor = zstandard.ZstdCompressor(
            level=self._level,
            dict_data=trained,
            write_dict_id=False,
            write_content_size=False,
            write_checksum=True,
        )

    def _flush_block(self) -> None:
        if self._bodies:
            block = (self._kinds, self._bodies)
            full = self._size >= BLOCK_SIZE
            self._kinds, self._bodies, self._size = bytearray(), [], 0
            if not self._trained and full:
                # Full blocks wait until the pack is surely large enough for a dictionary
                # to pay for its own bytes.
                self._held.append(block)
                if len(self._held) < _TRAIN_AFTER:
                    return
                if self._samples is not None:
                    self._train_on(self._samples)
                    self._samples = None
                else:
                    self._train(*self._held[0])
            else:
                self._held.append(block)
        self._trained = True
        for kinds, bodies in self._held:
            self._write_data(kinds, bodies)
        self._held = []

    def _write_data(self, kinds: bytearray, bodies: list[bytes | memoryview]) -> None:
        n = len(bodies)
        lengths = array(_U32, map(len, bodies))
        head = _COUNT.pack(n) + bytes(kinds) + lengths.tobytes()
        offsets = array(_U32, itertools.accumulate(lengths, initial=len(head)))
        self._offset_of.extend(offsets[:n])
        self._length_of.extend(lengths)
        self._block_of.extend(itertools.repeat(len(self._blocks), n))
        self._kind_of += kinds
        raw = head + b"".join(bodies)
        # Small frames pay only with a dictionary; without one a block is one frame.
        cuts = [0]
        if self._dictionary:
            while cuts[-1] + FRAME_SIZE < len(raw):
                # A frame ends where a body ends (the first holds the header and at least one
                # body), and none is left empty at the end.
                at = bisect.bisect_left(offsets, cuts[-1] + FRAME_SIZE, 1)
                if at >= n or offsets[at] >= len(raw):
                    break
                cuts.append(offsets[at])
        cuts.append(len(raw))
        view = memoryview(raw)
        spans = list(itertools.pairwise(cuts))
        if self._threads and len(spans) > 1:
            found = self._compressor.multi_compress_to_buffer(
                [view[a:b] for a, b in spans], threads=self._threads
            )
            compressed = [found[k].tobytes() for k in range(len(spans))]
        else:
            compressed = [self._compressor.compress(view[a:b]) for a, b in spans]
        frames = [(len(c), b - a) for c, (a, b) in zip(compressed, spans, strict=True)]
        self._write_block(b"".join(compressed), len(raw), self._dictionary, frames)

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
        note_temp(idx_tmp)
        with open(idx_tmp, "wb") as handle:
            handle.writelines(idx)
            handle.flush()
            os.fsync(handle.fileno())
        return PreparedPack(self.directory, f"pack-{checksum.hex()}", self._tmp, idx_tmp)

    def _encode_index(self, checksum: bytes) -> list[bytes | memoryview]:
        return encode_index(
            self._hand_over_oids(),
            self._block_of,
            self._offset_of,
            self._length_of,
            self._kind_of,
            self._blocks,
            self._frames,
            checksum,
            in_pack_order=self._in_pack_order,
        )

    def _hand_over_oids(self) -> bytearray:
        """The ids in pack order, given up for the index (the writer is done, and counts none
        from here): its sorted table replaces them, freed once sorted (32 MB at a 1M clone's
        peak)."""
        oids, self._oids = self._oids, bytearray()
        return oids

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
        idx = self._idx
        problem = ""
        if len(idx) < _IDX_HEADER.size + 1024 + 64:
            problem = "is truncated"
        else:
            magic, version, count, nblocks, nframes = _IDX_HEADER.unpack_from(idx, 0)
            if magic != IDX_MAGIC or version not in (1, 2, IDX_VERSION):
                problem = "has an unknown format"
            else:
                # Version 1: a smaller header and block entries, and no frame table.
                header, entry = (
                    (_IDX_HEADER_V1.size, _IDX_BLOCK_V1.size)
                    if version == 1
                    else (_IDX_HEADER.size, _IDX_BLOCK.size)
                )
                table = 0 if version == 1 else nframes * 8
                per_entry = OID_SIZE + (17 if version >= 3 else 13)
                expected = header + 1024 + count * per_entry + nblocks * entry + table + 64
                if len(idx) != expected:
                    problem = "has the wrong size"
        if problem:
            self._pack_file.close()
            idx.close()
            raise CorruptObject(f"pack index {name}.idx {problem}")
        if version == 1:
            nframes = nblocks
        self.version = min(version, PACK_VERSION)  # of the pack: indexes 2 and 3 go with 2
        self.idx_version = version
        view = memoryview(idx)
        self.count = count
        self.nblocks = nblocks
        pos = header
        self._fanout = struct.unpack_from("<256I", view, pos)
        pos += 1024
        self._oid_base = pos
        self._oids = view[pos : pos + count * OID_SIZE]
        pos += count * OID_SIZE
        columns = []
        for _ in range(4 if version >= 3 else 3):
            columns.append(view[pos : pos + 4 * count].cast("I"))
            pos += 4 * count
        self._block_col, self._offset_col, self._length_col = columns[:3]
        # Index positions in pack order (by block, then offset): stored from version 3.
        self._stored_order: memoryview | None = columns[3] if version >= 3 else None
        self._order: array[int] | memoryview | None = None
        self._order_stored_holds: bool | None = None
        self._kind_col = view[pos : pos + count]
        pos += count
        # Per block: offset, compressed length, raw length, dictionary, first frame; a
        # version-1 block is one frame without a dictionary.
        table = view[pos : pos + nblocks * entry]
        pos += nblocks * entry
        if version == 1:
            self._block_table = [(o, c, r, 0, b) for b, (o, c, r) in
                                 enumerate(_IDX_BLOCK_V1.iter_unpack(table))]  # fmt: skip
            ends = array(_U32, itertools.chain.from_iterable((c, r) for _, c, r, _, _ in
                                                             self._block_table))  # fmt: skip
            self._frame_ends: memoryview = memoryview(ends.tobytes()).cast("I")
        else:
            self._block_table = list(_IDX_BLOCK.iter_unpack(table))
            self._frame_ends = view[pos : pos + nframes * 8].cast("I")
        table.release()
        self._nframes = nframes
        self._views = [self._oids, *columns, self._kind_col, self._frame_ends]
        # Sizes a damaged idx gives would be allocated before any read found them wrong.
        size = os.fstat(self._pack_file.fileno()).st_size
        for block, (offset, clen, rlen, _, first) in enumerate(self._block_table):
            stop = self._block_table[block + 1][4] if block + 1 < nblocks else nframes
            head = self._head_size(stop - first)
            if offset + head + clen > size - OID_SIZE or rlen > MAX_RAW or not first <= stop:
                self.close(view)
                raise CorruptObject(f"pack index {name}.idx names bytes its pack does not hold")
        self._oid_view = _OidView(self._oids, count)
        self._positions: dict[bytes, int] | None = None
        self._prefix_col: array[int] | None = None
        self._finds = 0
        self._dictionaries: dict[int, zstandard.ZstdCompressionDict] = {}
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_size = cache_blocks
        self._last_block = -1
        self._last_data = b""
        # What a read needs to trust bodies without re-hashing them (docs/format.md §4).
        self._intact: bool | None = None  # the index matches its checksum
        self._summed: dict[int, bool] = {}  # block -> every frame carries a checksum

    @property
    def oid_column(self) -> memoryview:
        """Every id, sorted, back to back (a view of the index: valid until `close`)."""
        return self._oids

    def location_columns(self) -> tuple[bytes, bytes]:
        """Copies of the block and offset columns (u32 each, in id order)."""
        return self._block_col.tobytes(), self._offset_col.tobytes()

    @property
    def dictionaries(self) -> int:
        """How many compression dictionaries the pack holds."""
        return sum(entry[3] == DICTIONARY_BLOCK for entry in self._block_table)

    def verify(self) -> str | None:
        """What is wrong with the index's or the pack's checksum, or None. It reads both files
        whole, so it finds damage that no read of an object would reach."""
        idx = self._idx
        if blake3.blake3(idx[:-32]).digest() != idx[-32:]:
            return "index checksum mismatch"
        trailer = idx[-64:-32]
        if trailer.hex() != self.name.removeprefix("pack-"):
            return "index belongs to another pack"
        size = os.fstat(self._pack_file.fileno()).st_size
        if size < _HEADER.size + OID_SIZE:
            return "pack is truncated"
        checksum = digest_fd(self._pack_file.fileno(), end=size - OID_SIZE)
        if checksum != trailer or self._pread(OID_SIZE, size - OID_SIZE) != trailer:
            return "pack checksum mismatch"
        if self._stored_order is not None and not self._order_holds(self._stored_order):
            return "index pack order is wrong"
        return None

    def _order_holds(self, stored: memoryview) -> bool:
        """Whether a stored pack order lists every entry once, by block, then offset (a
        faulty writer's order passes every checksum). Found once, on the first ask."""
        if self._order_stored_holds is None:
            count = self.count
            blocks, offsets = self._block_col.tobytes(), self._offset_col.tobytes()
            keys = memoryview(location_keys(blocks, offsets, count)).cast("Q")  # block, offset
            holds = len(stored) == count
            # One pass, in a byte a position: a set of a million positions, and lists of
            # their keys, had been 100 MB at a push's peak.
            seen = bytearray(count)
            last = 0
            for i in stored if holds else ():
                if i >= count or seen[i] or keys[i] < last:
                    holds = False
                    break
                seen[i] = 1
                last = keys[i]
            self._order_stored_holds = holds
        return self._order_stored_holds

    def index_intact(self) -> bool:
        """Whether the index matches its own checksum; found once, on the first ask."""
        if self._intact is None:
            body = memoryview(self._idx)[:-32]
            try:
                # One thread: blake3's pool does not survive the fork of checkout's workers.
                digest = blake3.blake3(body).digest()
            finally:
                body.release()
            self._intact = digest == self._idx[-32:]
        return self._intact

    def block_trusted(self, block: int) -> bool:
        """Whether bodies of `block`, once read, may be taken without re-hashing them
        (docs/format.md §4, trust): every frame of the block carries a zstd content checksum,
        which decompressing it verified, and the index matches its checksum. False for a block
        not read yet, and for blocks written before frames had checksums."""
        return self._summed.get(block, False) and self.index_intact()

    def trusted_at(self, i: int, kind: Kind) -> bool:
        """`block_trusted` for entry `i`'s block, and the index says the entry is a `kind`."""
        return self._kind_col[i] == kind and self.block_trusted(self._block_col[i])

    def pack_order(self) -> array[int] | memoryview:
        """Index positions of every entry in the order of the pack (by block, then offset):
        stored in the index (version 3) and checked to be that order, or found by sorting it
        (an index of version 2, or a stored order that does not hold)."""
        if self._order is None:
            stored = self._stored_order
            if stored is not None and self._order_holds(stored):
                self._order = stored
            else:
                self._order = location_order(self._block_col, self._offset_col, self.count)
        return self._order

    def prepare_trust(self) -> None:
        """Check the index and order it by pack now if the first data block is trusted:
        readers forked after this share the work instead of each doing it."""
        first = next(
            (b for b, entry in enumerate(self._block_table) if entry[3] != DICTIONARY_BLOCK), None
        )
        if first is None:
            return
        self._block_data(first)  # notes whether its frames carry checksums
        if self.block_trusted(first) and self._stored_order is None:
            self.pack_order()

    def vouched_oids(
        self, block: int, kind: Kind, starts: list[int], bodies: list[bytes]
    ) -> list[bytes] | None:
        """The ids of `block`'s entries (as `block_bodies` gave them) from the index, b"" for
        an entry of another kind than `kind`; None unless the block is trusted
        (`block_trusted`), or if the index's pack order places other entries (or none) in it
        than the block holds, or an entry is empty (entries at one offset could pair ids with
        bodies wrongly). The caller then takes bodies by these ids without re-hashing them."""
        if not self.block_trusted(block):
            return None
        # A stored order is taken without checking it whole (a tenth of a 100k checkout): the
        # checks below of what it names in this block are what makes its ids safe to take.
        order = self.pack_order() if self._stored_order is None else self._stored_order
        column = self._block_col.__getitem__
        lo = bisect.bisect_left(order, block, key=column)
        at = order[lo : bisect.bisect_right(order, block, lo, key=column)]
        if not at or len(at) != len(starts) or len(starts) != len(bodies) or not all(bodies):
            return None
        # One C-level gather per column (an itemgetter of the entries), where a map called
        # back per entry: vouching took 12 against 21 ms a 50k worker (2026-12-08).
        gather = gatherer(at)
        # The order is the index's word for where each entry is: it must name this block's
        # entries at the offsets the block itself gives, or the ids would pair wrongly.
        located = gather(self._block_col)
        if located.count(block) != len(at) or list(gather(self._offset_col)) != starts:
            return None
        # Each id sliced from the index's map as bytes: what replaces hashing every body. (The
        # index is in id order, so each entry costs a cache miss or two: reading fewer of its
        # columns here is what makes this pay.)
        idx = self._idx
        oids = [idx[p : p + OID_SIZE] for p in map(operator.add,
                map(operator.mul, at, itertools.repeat(OID_SIZE)),
                itertools.repeat(self._oid_base))]  # fmt: skip
        kinds = bytes(gather(self._kind_col))
        if kinds.count(kind) == len(kinds):
            return oids
        return [oid if k == kind else b"" for oid, k in zip(oids, kinds, strict=True)]

    def close(self, *views: memoryview) -> None:
        for view in (*self._views, *views):
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
        if self._prefix_col is None:
            self._finds += 1
            if self._finds <= _FINDS_BEFORE_PREFIXES:
                i = bisect.bisect_left(self._oid_view, oid, lo, hi)
                return i if i < hi and self._oid_view[i] == oid else -1
        # Bisecting the prefix column runs in C, where bisecting whole oids calls a Python
        # method for every probe (a server's page read of 100 ids made thousands of calls).
        # Building it reads the whole id table: worth it only to a pack looked up often.
        col, table = self._prefixes(), self._oids
        key = int.from_bytes(oid[:8], "big")
        at = bisect.bisect_left(col, key, lo, hi)
        while at < hi and col[at] == key:  # oids sharing 8 bytes sit together
            if table[at * OID_SIZE : (at + 1) * OID_SIZE] == oid:
                return at
            at += 1
        return -1

    def positions(self) -> dict[bytes, int]:
        """oid -> index position for every object: worth building for bulk lookups."""
        if self._positions is None:
            self._positions = dict(zip(split_oids(self._oids), range(self.count), strict=True))
        return self._positions

    def _prefixes(self) -> array[int]:
        """Every oid's first 8 bytes as a big-endian integer, in index order (built once)."""
        col = self._prefix_col
        if col is None:
            col = array("Q")
            col.frombytes(self._oids.cast("Q")[::4].tobytes())
            if sys.byteorder == "little":
                col.byteswap()
            self._prefix_col = col
        return col

    def find_sorted(self, oids: list[bytes]) -> list[int]:
        """Index position of each of `oids` (given in sorted order), or -1.

        Bisects a column of every oid's first 8 bytes as big-endian integers, built at C
        speed and kept: a list of every oid (what bisecting whole oids needs) costs a
        million objects in a large pack, where this costs one 8 MB array.
        """
        col, table, count = self._prefixes(), self._oids, self.count
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

    @property
    def raw_bytes(self) -> int:
        """What its objects' bodies take uncompressed."""
        return sum(self._length_col)

    def oid_at(self, i: int) -> bytes:
        return bytes(self._oids[i * OID_SIZE : (i + 1) * OID_SIZE])

    def oids(self) -> Iterator[bytes]:
        """Every oid in the pack, in sorted order."""
        data = bytes(self._oids)
        for i in range(0, len(data), OID_SIZE):
            yield data[i : i + OID_SIZE]

    def kind_at(self, i: int) -> Kind:
        try:
            return _KINDS[self._kind_col[i]]
        except KeyError:
            raise CorruptObject(
                f"pack {self.name}: unknown object kind {self._kind_col[i]}"
            ) from None

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
        data = self._load_block(block)
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

    def _block_info(self, block: int) -> tuple[int, int, int, int, int]:
        """(offset, compressed length, raw length, dictionary, first frame) of `block`."""
        if not 0 <= block < self.nblocks:
            raise CorruptObject(f"pack {self.name}: index names a block that does not exist")
        return self._block_table[block]

    def _frame_range(self, block: int) -> tuple[int, int]:
        first = self._block_info(block)[4]
        stop = self._block_table[block + 1][4] if block + 1 < self.nblocks else self._nframes
        if not first <= stop <= self._nframes:
            raise CorruptObject(f"pack {self.name}: block {block} has a bad frame table")
        return first, stop

    def _read_stored(self, block: int) -> tuple[bytes, int, int, int, int]:
        """Block `block`'s data as stored, raw length, dictionary, first frame and the frame
        after its last."""
        offset, clen, rlen, dictionary, first = self._block_info(block)
        stop = self._frame_range(block)[1]
        return (
            self._pread(clen, offset + self._head_size(stop - first)),
            rlen,
            dictionary,
            first,
            stop,
        )

    def _head_size(self, frames: int) -> int:
        """Bytes of a block's header in the pack, before its data."""
        return _BLOCK_V1.size if self.version == 1 else _BLOCK.size + _FRAME.size * frames

    def _pread(self, size: int, offset: int) -> bytes:
        try:
            data = os.pread(self._pack_file.fileno(), size, offset)
        except OverflowError:  # an offset past any file: the idx is damaged
            data = b""
        if len(data) != size:
            raise CorruptObject(f"pack {self.name} is truncated")
        return data

    def block_raw_len(self, block: int) -> int:
        return self._block_info(block)[2]

    def block_dictionary(self, block: int) -> int:
        """The block's dictionary field: 0, or 1 + the dictionary block's number."""
        return self._block_info(block)[3]

    def block_stored_len(self, block: int) -> int:
        """Bytes of `block` in the pack: its header, frame table and data."""
        clen = self._block_info(block)[1]
        first, stop = self._frame_range(block)
        return self._head_size(stop - first) + clen

    def read_block_data(self, block: int) -> tuple[int, int, list[tuple[int, int]], bytes]:
        """Block `block` as stored: raw length, dictionary, (compressed, raw) size of each
        frame, and its data."""
        data, rlen, dictionary, first, stop = self._read_stored(block)
        ends = self._frame_ends
        frames = []
        previous = (0, 0)
        for f in range(first, stop):
            end = (ends[2 * f], ends[2 * f + 1])
            frames.append((end[0] - previous[0], end[1] - previous[1]))
            previous = end
        return rlen, dictionary, frames, data

    def _dictionary_of(self, block: int, dictionary: int) -> zstandard.ZstdCompressionDict | None:
        """The dictionary `block`'s frames were compressed with (None for none)."""
        if not dictionary:
            return None
        found = self._dictionaries.get(dictionary)
        if found is None:
            number = dictionary - 1
            if not 0 <= number < block or self._block_table[number][3] != DICTIONARY_BLOCK:
                raise CorruptObject(f"pack {self.name}: block {block} names no dictionary")
            data = self.read_block_data(number)[3]
            try:
                found = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
                zstandard.ZstdDecompressor(dict_data=found)  # digests it: fails if damaged
            except zstandard.ZstdError as exc:
                raise CorruptObject(f"pack {self.name}: block {number} is corrupt ({exc})") from exc
            self._dictionaries[dictionary] = found
        return found

    def _block_data(self, block: int) -> tuple[bytes, int, int, int, int]:
        """`_read_stored` of a data block, its frame table checked against its sizes."""
        data, rlen, dictionary, first, stop = self._read_stored(block)
        if dictionary == DICTIONARY_BLOCK:
            raise CorruptObject(f"pack {self.name}: index places objects in a dictionary")
        ends = self._frame_ends
        if stop == first or (ends[2 * stop - 2], ends[2 * stop - 1]) != (len(data), rlen):
            raise CorruptObject(f"pack {self.name}: block {block} has a bad frame table")
        if block not in self._summed:
            self._summed[block] = frames_checksummed(data, ends, first, stop)
        return data, rlen, dictionary, first, stop

    def _load_block(self, block: int) -> bytes:
        data, rlen, dictionary, _, _ = self._block_data(block)
        decompressor = zstandard.ZstdDecompressor(dict_data=self._dictionary_of(block, dictionary))
        try:
            # Every frame in one call; reading one byte past the raw length bounds the output
            # whatever the frames claim.
            raw = decompressor.stream_reader(data, read_across_frames=True).read(rlen + 1)
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"pack {self.name}: block {block} is corrupt ({exc})") from exc
        if len(raw) != rlen:
            raise CorruptObject(f"pack {self.name}: block {block} has the wrong size")
        return raw

    def load_frames(
        self, requests: list[tuple[int, list[int]]], *, threads: int = 0
    ) -> list[list[tuple[int, memoryview]]]:
        """For each (block, frames numbered across the pack) asked, the (raw offset in the
        block, raw bytes) of each frame, decompressed and checked: on `threads` threads (0:
        this one) in one call per dictionary, so the GIL is released once, not per frame."""
        ends = self._frame_ends
        groups: dict[int, tuple[list[bytes | bytearray | memoryview], list[int], list[_Where]]] = {}
        for n, (block, frames) in enumerate(requests):
            data, rlen, dictionary, first, stop = self._block_data(block)
            self._dictionary_of(block, dictionary)
            view = memoryview(data)
            pieces, sizes, where = groups.setdefault(dictionary, ([], [], []))
            for f in frames:
                c0, r0 = (ends[2 * f - 2], ends[2 * f - 1]) if f > first else (0, 0)
                c1, r1 = ends[2 * f], ends[2 * f + 1]
                if not (first <= f < stop and c0 < c1 <= len(data) and r0 < r1 <= rlen):
                    raise CorruptObject(f"pack {self.name}: block {block} has a bad frame table")
                pieces.append(view[c0:c1])
                sizes.append(r1 - r0)
                where.append((n, block, r0))
        out: list[list[tuple[int, memoryview]]] = [[] for _ in requests]
        for dictionary, (pieces, sizes, where) in groups.items():
            decompressor = zstandard.ZstdDecompressor(dict_data=self._dictionaries.get(dictionary))
            try:
                found = decompress_all(decompressor, pieces, sizes, threads)
            except (zstandard.ZstdError, ValueError) as exc:
                blocks = sorted({b for _, b, _ in where})
                raise CorruptObject(
                    f"pack {self.name}: a frame of blocks {blocks[0]}-{blocks[-1]} is corrupt"
                    f" ({exc})"
                ) from exc
            for k, (n, block, r0) in enumerate(where):
                raw = memoryview(found[k])  # type: ignore[arg-type]  # a buffer either way
                if len(raw) != sizes[k]:
                    raise CorruptObject(f"pack {self.name}: block {block} has the wrong size")
                out[n].append((r0, raw))
        return out

    def frame_of(self, i: int) -> int:
        """The frame (numbered across the pack) holding entry `i`'s body."""
        block = self._block_col[i]
        first, stop = self._frame_range(block)
        # Raw ends sit at odd places of the table; an entry starting at a frame's end
        # belongs to the next frame (an empty entry at the very end, to the last).
        at = bisect.bisect_right(self._frame_ends[1::2], self._offset_col[i], first, stop)
        return min(at, stop - 1)

    def block_bodies(self, block: int) -> tuple[list[int], list[bytes]]:
        """Block `block`'s entries in pack order: their offsets in the block, their bodies."""
        raw = self._load_block(block)
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

    def entry_in(
        self, data: bytes | memoryview, i: int, start: int = 0
    ) -> tuple[Kind, bytes | memoryview]:
        """Kind and body of entry `i` from raw bytes of its block beginning at `start` (a
        frame from `load_frames`)."""
        offset = self._offset_col[i] - start
        return self.kind_at(i), data[offset : offset + self._length_col[i]]

    def read_at(self, i: int) -> tuple[Kind, bytes]:
        """Kind and body of entry `i` (not re-hashed: the store does that)."""
        data = self.read_block(self._block_col[i])
        offset = self._offset_col[i]
        return self.kind_at(i), data[offset : offset + self._length_col[i]]
