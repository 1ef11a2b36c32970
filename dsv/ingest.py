"""Fast ingestion of JSONL dataset files: canonicalise, hash and pack on every core.

Unchanged stretches of a file dsv has read before are not parsed again. The file is cut into
*line groups* at content-defined points (after a raw line whose length is a multiple of
`GROUP_MODULUS` or whose CRC-32 is a multiple of `GROUP_CRC`, or after `GROUP_MAX` lines),
and a cache (docs/format.md §6) keeps a SHA-256
prefix of each group's bytes and of each line. A re-read confirms the expected next group with
one hash of its bytes; in a group that changed, a line whose key is among the base lines near
it reuses their id, and only the rest is parsed. That is safe because canonicalisation is a
pure function of a line's bytes; it is fast because an edit invalidates only the group around
it, and the cut points move with the content, so an insertion shifts no other group.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import hashlib
import itertools
import mmap
import os
import re
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec

from dsv.canonical import CanonicalError, canonicalize_many
from dsv.errors import BadInput
from dsv.fsutil import READ_SIZE, write_atomic
from dsv.keys import key_reader
from dsv.manifest import Runs
from dsv.memory import gc_paused
from dsv.objects import OID_SIZE, Kind, hash_objects, split_oids
from dsv.pack import PackWriter, PreparedPack
from dsv.parallel import can_fork, fork_map
from dsv.store import ObjectWriter

__all__ = [
    "GROUP_CRC",
    "GROUP_MAX",
    "GROUP_MODULUS",
    "GroupCache",
    "IngestResult",
    "ends_group",
    "group_ends",
    "ingest_jsonl",
    "read_group_cache",
    "write_group_cache",
]

GROUP_KEY = 16
LINE_KEY = 16
# A raw line whose length (without its newline) is a multiple of this ends a group: groups of
# about four lines, a balance between one hash per group on every re-read and the lines of an
# edited group that must be hashed one by one.
GROUP_MODULUS = 4
# So does one whose CRC-32 is a multiple of this. Lengths alone fail on records of one fixed
# length (a template with numbered ids): no line would end a group, groups would be cut only
# every GROUP_MAX lines counted from wherever a reading started, and a reading that started
# elsewhere (another worker's range, or after an edit that made a line end a group) would
# match none of the cached groups. The CRC cuts such runs where their content says.
GROUP_CRC = 32
GROUP_MAX = 128
_BOM = b"\xef\xbb\xbf"
# Records canonicalised per call. Small on purpose: the decoded dicts of 128 records stay in
# the CPU's caches through encoding and freeing, and the next batch reuses their memory; with
# 4096, each pass over them went out to RAM (the worker's CPU time 1.59 -> 1.41 s, 50k records).
_BATCH = 128
_BATCH_BYTES = 4 << 20  # of groups waiting to be parsed
# Below this size one process is faster than starting workers.
_PARALLEL_MIN = 4 << 20
_READ = READ_SIZE  # a module name of its own, so that tests can cut pieces small
_LENGTHS = "I"  # array type code of GroupCache.lengths
_split_line_keys = re.compile(b".{%d}" % LINE_KEY, re.DOTALL).findall


class GroupCache(msgspec.Struct):
    """For one dataset: the line groups of the file it was last read from, in file order.

    Per group: a GROUP_KEY-byte SHA-256 prefix of its bytes in `keys`, its byte length in
    `lengths` (little-endian u32s) and the number of datapoints it gave in `counts` (bytes).
    Per datapoint, in dataset order: a LINE_KEY-byte SHA-256 prefix of its line in `lines`,
    so that the unchanged lines of an edited group need no parsing either.
    """

    content: bytes
    keys: bytes
    lengths: bytes
    counts: bytes
    lines: bytes

    def fits(self, oids: bytes) -> bool:
        """Is this the cache of the dataset whose ids are `oids`, and whole?"""
        n = len(self.counts)
        return (
            len(self.keys) == n * GROUP_KEY
            and len(self.lengths) == 4 * n
            and sum(self.counts) == len(oids) // OID_SIZE
            and len(self.lines) == LINE_KEY * (len(oids) // OID_SIZE)
        )


_cache_decoder = msgspec.msgpack.Decoder(GroupCache)


def _cache_path(dsv_dir: Path, name: str) -> Path:
    # Named by layout as well: a reader never takes another layout's groups for its own.
    return dsv_dir / "cache" / hashlib.sha256(b"groups-3\0" + name.encode()).hexdigest()[:32]


def _old_cache_path(dsv_dir: Path, name: str) -> Path:
    """Where format version 2 kept the cache (groups cut by length alone)."""
    return dsv_dir / "cache" / hashlib.sha256(name.encode()).hexdigest()[:32]


def read_group_cache(dsv_dir: Path, name: str) -> GroupCache | None:
    try:
        return _cache_decoder.decode(_cache_path(dsv_dir, name).read_bytes())
    except (OSError, msgspec.DecodeError):
        return None  # only a cache: a bad one (or one of an older layout) costs time only


def write_group_cache(dsv_dir: Path, name: str, cache: GroupCache) -> None:
    path = _cache_path(dsv_dir, name)
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, msgspec.msgpack.encode(cache))
    with contextlib.suppress(FileNotFoundError):
        _old_cache_path(dsv_dir, name).unlink()


class IngestResult(msgspec.Struct):
    oids: bytes
    groups: GroupCache  # content left empty: the caller knows it once the manifest is built
    runs: tuple[Runs, bytes] | None  # how `oids` reuse the base's ids (see build_dataset)
    stored: int
    stored_bytes: int
    bodies: dict[bytes, bytes]  # with `collect`: what would have been stored, by id
    keys: tuple[bytes, bytes] | None = None  # with `key`: the parsed ids, their keys (dsv.keys)


class _Part(msgspec.Struct):
    oids: bytes
    keys: bytes
    lengths: bytes
    counts: bytes
    lines: bytes
    sources: bytes  # (old group or -1, groups) pairs of i32: see _Range.sources
    stored: int
    stored_bytes: int
    pack: tuple[str, str, str] | None = None  # name, pack temp, idx temp
    error: tuple[int, bytes, str, int | None] | None = None  # offset, text, message, column
    bodies: dict[bytes, bytes] = {}  # collected instead of packed (see ingest_jsonl)
    key_oids: bytes = b""  # with a key: the ids this part canonicalised...
    key_values: bytes = b""  # ...and their keys, joined by b"\n" (see dsv.keys)


class _Old:
    """The cache of the file's previous reading, in the shape lookups want."""

    def __init__(self, cache: GroupCache | None, oids: bytes) -> None:
        if cache is None or not cache.fits(oids):
            cache = GroupCache(b"", b"", b"", b"", b"")
        self.oids = oids
        self.keys = cache.keys
        self.lengths = array.array(_LENGTHS, cache.lengths)
        if sys.byteorder != "little":
            self.lengths.byteswap()
        self.counts = cache.counts
        self.lines = cache.lines
        self.starts = list(itertools.accumulate(cache.counts, initial=0))
        # Datapoints a worker may store without asking whether the base has them (see
        # _Range._store): past this, it builds the set of every base id.
        self.unchecked_limit = max(256, len(oids) // OID_SIZE // 64)
        keys = self.keys
        self._all_ids: set[bytes] | None = None
        self.index = {
            keys[i : i + GROUP_KEY]: i // GROUP_KEY for i in range(0, len(keys), GROUP_KEY)
        }

    def is_every_id(self, ids: set[bytes]) -> bool:
        """Is `ids` the set `all_ids` built (without building it)?"""
        return ids is self._all_ids

    def all_ids(self) -> set[bytes]:
        """Every base id (built once): with no groups to go by, any of them may recur."""
        if self._all_ids is None:
            self._all_ids = set(split_oids(self.oids))
        return self._all_ids


class _Pending(NamedTuple):
    """A group no earlier reading knew, waiting to be parsed."""

    slot: int  # its place in the walk's id and line-key lists
    group: int  # its number among the groups of the range
    at: int  # file offset
    data: bytes
    expect: int  # the old group expected there, or -1: its lines are looked for around it


# Set before forking so workers share them copy-on-write instead of receiving pickles.
_shared: dict[str, object] = {}


def _texts_of(raws: list[bytes], *, has_cr: bool) -> list[int]:
    """Which raw lines are datapoints (not blank), as indexes; CRs are dropped in place."""
    if not has_cr and all(raws) and not any(map(bytes.isspace, raws)):
        return list(range(len(raws)))
    keep: list[int] = []
    for i, line in enumerate(raws):
        line = raws[i] = line.removesuffix(b"\r")
        if line and not line.isspace():
            keep.append(i)
    return keep


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


def ends_group(line: bytes | memoryview) -> bool:
    """Does this raw line (without its newline) end a line group, wherever a reading began?"""
    return not len(line) & (GROUP_MODULUS - 1) or not zlib.crc32(line) & (GROUP_CRC - 1)


def group_ends(raws: list[bytes]) -> list[int]:
    """Where the line groups of these consecutive raw lines end (exclusive).

    Lines after the last natural end stay open unless there are more than GROUP_MAX of them.
    """
    mask, crc_mask, crc32 = GROUP_MODULUS - 1, GROUP_CRC - 1, zlib.crc32
    natural = [
        i for i, raw in enumerate(raws, 1) if not len(raw) & mask or not crc32(raw) & crc_mask
    ]
    ends: list[int] = []
    last = 0
    for end in [*natural, len(raws) + GROUP_MAX + 1]:
        while end - last > GROUP_MAX and last + GROUP_MAX <= len(raws):
            last += GROUP_MAX
            ends.append(last)
        if end <= len(raws):
            ends.append(end)
            last = end
    return ends


class _Range:
    """One worker's pass over a byte range of the file.

    With a cache it walks the file group by group (`_walk`): where the previous reading's next
    group is expected, one hash of that many bytes confirms it; elsewhere the group is found by
    scanning lines and looked up by its hash; the lines of groups nobody knew are looked up by
    their keys, and the rest are canonicalised and packed (or collected). Without one it cuts
    whole pieces into groups and parses every line (`_walk_fresh`).
    """

    def __init__(self, start: int, end: int) -> None:
        self.path: Path = _shared["path"]  # type: ignore[assignment]
        self.old: _Old = _shared["old"]  # type: ignore[assignment]
        self.pack_dir: Path | None = _shared["pack_dir"]  # type: ignore[assignment]
        self.collect: bool = _shared["collect"]  # type: ignore[assignment]
        self.collected: dict[bytes, bytes] = {}
        self.read_keys: Callable[[list[bytes]], bytes] | None = _shared["read_keys"]  # type: ignore[assignment]
        self.key_oids: list[bytes] = []
        self.key_values: list[bytes] = []
        self.size: int = _shared["size"]  # type: ignore[assignment]
        self.start, self.end = start, end
        self.oids: list[bytes] = []
        self.keys: list[bytes] = []
        self.lengths = array.array(_LENGTHS)
        self.counts = bytearray()
        self.lines: list[bytes] = []  # per group, its datapoints' line keys
        # Where the groups came from, as pairs: (g, n) for n groups found as old groups g,
        # g + 1, ...; (-1, n) for n groups parsed. Pairs, not a number per group: an
        # unchanged stretch is one pair however long, and _base_runs walks pairs.
        self.sources = array.array("i")
        self.pending: list[_Pending] = []
        self.pending_size = 0
        self.writer: PackWriter | None = None
        self.seen: set[bytes] = set()
        self.unchecked = 0  # datapoints stored without asking the whole base
        self.stored = self.stored_bytes = 0
        self.error: tuple[int, bytes, str, int | None] | None = None
        self.fd = -1
        self.buf = b""
        self.buf_at = start  # file offset of buf[0]

    def _fill(self, keep: int, upto: int) -> bool:
        """Hold file bytes [keep, upto) at least, reading on; False at the range's end."""
        have = self.buf_at + len(self.buf)
        if upto <= have:
            return True
        if have >= self.end:
            return False
        # Read again from `keep` rather than join onto the old buffer: the kept tail is a
        # group at most, and the page cache serves it without a copy of the whole buffer.
        want = min(max(_READ, upto - keep), self.end - keep)
        data = os.pread(self.fd, want, keep)
        if keep + len(data) <= have:
            return False
        _mark_done(keep + len(data) - self.start)
        self.buf = data
        self.buf_at = keep
        return True

    def _group_end(self, at: int) -> int:
        """Where the group starting at file offset `at` ends."""
        mask, crc_mask, crc32 = GROUP_MODULUS - 1, GROUP_CRC - 1, zlib.crc32
        lines = 0
        pos = at
        while True:
            nl = self.buf.find(b"\n", pos - self.buf_at)
            if nl < 0:
                # Grow by at least the buffer's size: a group longer than one read must not
                # be read again for every further piece of it.
                if self._fill(at, self.buf_at + len(self.buf) + max(_READ, len(self.buf))):
                    continue
                return self.end  # the range's last line, without a newline
            begin = pos - self.buf_at
            length = nl - begin
            pos = nl + self.buf_at + 1
            lines += 1
            if pos >= self.end or not length & mask or lines == GROUP_MAX:
                return pos
            if not crc32(memoryview(self.buf)[begin:nl]) & crc_mask:
                return pos

    def run(self) -> _Part:
        self.fd = os.open(self.path, os.O_RDONLY)
        try:
            with gc_paused():
                if len(self.old.lengths):
                    self._walk()
                else:
                    self._walk_fresh()
        finally:
            os.close(self.fd)
        if self.error is not None:
            if self.writer is not None:
                self.writer.abort()
            return _Part(b"", b"", b"", b"", b"", b"", 0, 0, error=self.error)
        prepared = self.writer.prepare() if self.writer is not None else None
        pack = (prepared.name, str(prepared.pack_tmp), str(prepared.idx_tmp)) if prepared else None
        return _Part(
            b"".join(self.oids),
            b"".join(self.keys),
            _little(self.lengths),
            bytes(self.counts),
            b"".join(self.lines),
            _little(self.sources),
            self.stored,
            self.stored_bytes,
            pack,
            bodies=self.collected,
            key_oids=b"".join(self.key_oids),
            key_values=b"\n".join(self.key_values),
        )

    def _walk(self) -> None:
        old = self.old
        old_keys, old_lengths, old_counts, index = old.keys, old.lengths, old.counts, old.index
        old_oids, old_lines, starts = old.oids, old.lines, old.starts
        lines = self.lines
        n_old = len(old_lengths)
        oids, keys, lengths, counts = self.oids, self.keys, self.lengths, self.counts
        sha = hashlib.sha256
        mask, crc_mask, crc32 = GROUP_MODULUS - 1, GROUP_CRC - 1, zlib.crc32
        at, end, size = self.start, self.end, self.size
        if at == 0 and self._fill(0, len(_BOM)) and self.buf.startswith(_BOM):
            at = len(_BOM)
        buf, buf_at = self.buf, self.buf_at
        view = memoryview(buf)
        expect = -1  # the old group that would follow the last one taken, if known
        while at < end:
            if 0 <= expect < n_old:
                # The common case: the previous reading's groups again, one after another.
                # Per group only its hash and the group-end test run; the run is copied from
                # the old arrays in one slice each. (No pending group can be waiting for an
                # expectation here: `expect` is only known after a lookup that settled them.)
                g = expect
                while g < n_old and at < end:
                    length = old_lengths[g]
                    stop = at + length
                    if stop > buf_at + len(buf):
                        if stop > end or not self._fill(at, stop):
                            break
                        buf, buf_at = self.buf, self.buf_at
                        view = memoryview(buf)
                    lo = at - buf_at
                    hi = lo + length
                    # Taken only when it ends as a reading from here would end it: on a line
                    # that ends a group (`ends_group`), or at the end of the file.
                    if (
                        sha(view[lo:hi]).digest()[:GROUP_KEY]
                        != old_keys[g * GROUP_KEY : (g + 1) * GROUP_KEY]
                    ):
                        break
                    if stop != size:
                        if buf[hi - 1] != 10:
                            break
                        begin = buf.rfind(b"\n", lo, hi - 1) + 1 or lo
                        if (hi - 1 - begin) & mask and crc32(view[begin : hi - 1]) & crc_mask:
                            break
                    at = stop
                    g += 1
                if g > expect:
                    keys.append(old_keys[expect * GROUP_KEY : g * GROUP_KEY])
                    lengths.extend(old_lengths[expect:g])
                    self._source(expect, g - expect)
                    first, last = starts[expect], starts[g]
                    oids.append(old_oids[first * OID_SIZE : last * OID_SIZE])
                    lines.append(old_lines[first * LINE_KEY : last * LINE_KEY])
                    counts += old_counts[expect:g]
                    expect = g
                    if at >= end:
                        break
            # Not the expected group: find where it ends, and look it up by its hash.
            stop = self._group_end(at)
            buf, buf_at = self.buf, self.buf_at
            view = memoryview(buf)
            lo = at - buf_at
            data = buf[lo : lo + stop - at]
            key = sha(data).digest()[:GROUP_KEY]
            found = index.get(key, -1)
            keys.append(key)
            lengths.append(stop - at)
            self._source(found, 1)
            if found >= 0:
                if self.pending and self.pending[-1].expect < 0:
                    self._expect_before(found)
                first, stop_id = starts[found], starts[found + 1]
                oids.append(old_oids[first * OID_SIZE : stop_id * OID_SIZE])
                lines.append(old_lines[first * LINE_KEY : stop_id * LINE_KEY])
                counts.append(old_counts[found])
                expect = found + 1
            else:
                self.pending.append(_Pending(len(oids), len(counts), at, data, expect))
                self.pending_size += len(data)
                oids.append(b"")
                lines.append(b"")
                counts.append(0)
                if self.pending_size >= _BATCH_BYTES and not self._parse():
                    return
                if expect >= 0:
                    expect += 1
            at = stop
        self._parse()

    def _source(self, first: int, count: int) -> None:
        """Record that the next `count` groups are old groups from `first` on (or parsed: -1)."""
        sources = self.sources
        last = sources[-2] if sources else None
        if last is None:
            joins = False
        elif first < 0:
            joins = last < 0
        else:
            joins = last >= 0 and last + sources[-1] == first
        if joins:
            sources[-1] += count
        else:
            sources.append(first)
            sources.append(count)

    def _parse(self) -> bool:
        """Fill the pending groups' slots: a line seen nearby before by its key, the rest by
        canonicalising it. False on a bad line."""
        if not self.pending:
            return True
        texts: list[bytes] = []
        sizes: list[int] = []
        for pending in self.pending:
            raws = pending.data.split(b"\n")
            if not raws[-1]:
                raws.pop()
            keep = _texts_of(raws, has_cr=b"\r" in pending.data)
            texts += [raws[i] for i in keep] if len(keep) < len(raws) else raws
            sizes.append(len(keep))
        sha = hashlib.sha256
        keys = [sha(t).digest()[:LINE_KEY] for t in texts]
        stored, seen = self._nearby()
        ids: list[bytes | None] = [seen.get(k) for k in keys]
        todo = [i for i, oid in enumerate(ids) if oid is None]
        parsed = self._hash_texts([texts[i] for i in todo], stored)
        if isinstance(parsed, int):
            self.error = self._first_error()
            return False
        for i, oid in zip(todo, parsed, strict=True):
            ids[i] = oid
        at = 0
        for pending, size in zip(self.pending, sizes, strict=True):
            self.oids[pending.slot] = b"".join(ids[at : at + size])  # type: ignore[arg-type]
            self.lines[pending.slot] = b"".join(keys[at : at + size])
            self.counts[pending.group] = size
            at += size
        self.pending.clear()
        self.pending_size = 0
        return True

    def _expect_before(self, found: int) -> None:
        """Pending groups that followed no known group precede old group `found`: look for
        their lines just before it (as after lines inserted at the top of a file)."""
        pending = self.pending
        k = len(pending) - 1
        while k >= 0 and pending[k].expect < 0:
            pending[k] = pending[k]._replace(expect=max(found - 1, 0))
            k -= 1

    def _nearby(self) -> tuple[set[bytes], dict[bytes, bytes]]:
        """Base ids around the pending groups, and their line keys -> ids.

        That is where the unchanged lines of an edited group come from. A line moved from
        afar is parsed, and may be stored once more: a duplicate that costs a few bytes, where
        maps of every base line would cost a tenth of a recommit to build. `_store` bounds
        how many such duplicates one reading may make.
        """
        old = self.old
        base, old_lines, starts = old.oids, old.lines, old.starts
        n_old = len(starts) - 1
        stored: set[bytes] = set()
        seen: dict[bytes, bytes] = {}
        spans: list[list[int]] = []  # [lo, hi) in base ids, merged where they touch
        for expect in (pending.expect for pending in self.pending):
            if expect >= 0:
                lo = starts[min(max(expect - 1, 0), n_old)]
                hi = starts[min(expect + 2, n_old)]
                if spans and spans[-1][0] <= lo <= spans[-1][1]:
                    spans[-1][1] = max(spans[-1][1], hi)
                else:
                    spans.append([lo, hi])
        for lo, hi in spans:
            oids = split_oids(base[lo * OID_SIZE : hi * OID_SIZE])
            keys = _split_line_keys(old_lines[lo * LINE_KEY : hi * LINE_KEY])
            stored.update(oids)
            seen.update(zip(keys, oids, strict=True))
        return stored, seen

    def _hash_texts(self, texts: list[bytes], known: set[bytes]) -> list[bytes] | int:
        """Canonicalise, hash and store records (but those in `known`); their ids, or the index
        of a bad one."""
        ids: list[bytes] = []
        for at in range(0, len(texts), _BATCH):
            batch = texts[at : at + _BATCH]
            try:
                bodies = canonicalize_many(batch)
            except CanonicalError:
                for i, text in enumerate(batch, at):
                    try:
                        canonicalize_many([text])
                    except CanonicalError:
                        return i
                raise AssertionError("a batch failed but none of its records does") from None
            batch_oids = hash_objects(Kind.DATAPOINT, bodies)
            ids += batch_oids
            if self.read_keys is not None:
                self.key_oids += batch_oids
                self.key_values.append(self.read_keys(bodies))
            if self.pack_dir is not None or self.collect:
                self._store(batch_oids, bodies, known)
        return ids

    def _walk_fresh(self) -> None:
        """No earlier reading to reuse: cut whole pieces into groups and parse every line."""
        carry = b""
        at = self.start
        for piece in _blocks_of(self.path, self.start, self.end):
            if at == 0 and not carry and piece.startswith(_BOM):
                piece = piece[len(_BOM) :]
                at = len(_BOM)
            data = carry + piece if carry else piece
            final = at + len(data) >= self.end
            taken = self._fresh_groups(data, at, final=final)
            if taken < 0:
                return
            carry = data[taken:]
            at += taken
            _mark_done(at - self.start)

    def _fresh_groups(self, data: bytes, data_at: int, *, final: bool) -> int:
        """Parse the whole groups of `data` (at file offset `data_at`); bytes taken, or -1."""
        raws = data.split(b"\n")
        rest = raws.pop()  # b"" after a final newline, else a line without one
        if rest:
            raws.append(rest)
        widths = list(map(len, raws))
        ends = group_ends(raws)
        if rest and not final and ends and ends[-1] == len(raws):
            ends.pop()
        if final and (not ends or ends[-1] < len(raws)):
            ends.append(len(raws))
        if not ends:
            return 0
        last = ends[-1]
        offsets = list(itertools.accumulate(widths, initial=0))
        view = memoryview(data)
        sha = hashlib.sha256
        keys, lengths = self.keys, self.lengths
        prev = 0
        for end in ends:
            stop = min(offsets[end] + end, len(data))
            keys.append(sha(view[prev:stop]).digest()[:GROUP_KEY])
            lengths.append(stop - prev)
            prev = stop
        self._source(-1, len(ends))
        lines = raws[:last]
        keep = _texts_of(lines, has_cr=b"\r" in data)
        if len(keep) == last:
            texts = lines
            self.counts.extend(b - a for a, b in itertools.pairwise([0, *ends]))
        else:
            texts = [lines[i] for i in keep]
            before = [bisect.bisect_left(keep, end) for end in ends]
            self.counts.extend(b - a for a, b in itertools.pairwise([0, *before]))
        sha = hashlib.sha256
        self.lines.append(b"".join([sha(t).digest()[:LINE_KEY] for t in texts]))
        known = self.old.all_ids()
        ids = self._canonical_known(texts, known) if known else None
        if ids is None:
            ids = self._hash_texts(texts, known)
        if isinstance(ids, int):
            line = keep[ids]
            text = texts[ids]
            try:
                canonicalize_many([text])
            except CanonicalError as exc:
                self.error = (data_at + offsets[line] + line, text, exc.message, exc.offset)
            return -1
        self.oids.append(b"".join(ids))
        return prev

    def _canonical_known(self, texts: list[bytes], known: set[bytes]) -> list[bytes] | int | None:
        """Ids of lines that are already the canonical body of a base datapoint, as in a file
        dsv checked out: one hash each instead of a parse (canonicalising is idempotent, so
        such a line's id is the hash of the line). The others are parsed. None when too few
        lines are canonical to be worth it."""
        sample = hash_objects(Kind.DATAPOINT, texts[:64])
        if sum(oid in known for oid in sample) < len(sample) // 2:
            return None
        ids = hash_objects(Kind.DATAPOINT, texts)
        todo = [i for i, oid in enumerate(ids) if oid not in known]
        parsed = self._hash_texts([texts[i] for i in todo], known)
        if isinstance(parsed, int):
            return todo[parsed]
        for i, oid in zip(todo, parsed, strict=True):
            ids[i] = oid
        return ids

    def _first_error(self) -> tuple[int, bytes, str, int | None]:
        """(file offset of its line, text, message, offset in it) of the first bad line."""
        for pending in self.pending:
            pos, data = pending.at, pending.data
            for raw in data.split(b"\n"):
                line = raw.removesuffix(b"\r")
                if line and not line.isspace():
                    try:
                        canonicalize_many([line])
                    except CanonicalError as exc:
                        return pos, line, exc.message, exc.offset
                pos += len(raw) + 1
        raise AssertionError("a batch failed but none of its records does")

    def _store(self, oids: list[bytes], bodies: list[bytes], known: set[bytes]) -> None:
        seen = self.seen
        fresh: dict[bytes, int] = {}
        for k, oid in enumerate(oids):
            if oid not in known and oid not in seen:
                fresh.setdefault(oid, k)
        if fresh and self.old.oids and not self.old.is_every_id(known):
            # `known` holds only the base ids near the edits. Past a few such datapoints (many
            # lines moved, or groups that no longer match), ask the whole base: a reading must
            # not store again what the base holds, whatever the cache says (format.md §6).
            self.unchecked += len(fresh)
            if self.unchecked > self.old.unchecked_limit:
                base = self.old.all_ids()
                fresh = {oid: k for oid, k in fresh.items() if oid not in base}
        if not fresh:
            return
        new_oids = list(fresh)
        new_bodies = [bodies[k] for k in fresh.values()]
        seen.update(new_oids)
        if self.pack_dir is None:
            self.collected.update(zip(new_oids, new_bodies, strict=True))
            return
        if self.writer is None:
            assert self.pack_dir is not None
            self.writer = PackWriter(self.pack_dir)
        self.writer.add_many(Kind.DATAPOINT, new_oids, new_bodies)
        self.stored += len(new_oids)
        self.stored_bytes += sum(map(len, new_bodies))


def _little(values: array.array[int]) -> bytes:
    if sys.byteorder != "little":
        values = array.array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _ingest_range(start: int, end: int, slot: int = 0) -> _Part:
    """Worker: the datapoints of one byte range of the file."""
    _shared["slot"] = slot
    return _Range(start, end).run()


def _mark_done(done: int) -> None:
    """A reading is `done` bytes into its range: noted in its slot of the shared counters
    that the caller's progress sums (once per piece read, so it costs nothing)."""
    counter = _shared.get("counter")
    if isinstance(counter, mmap.mmap):
        struct.pack_into("q", counter, 8 * int(_shared["slot"]), done)  # type: ignore[call-overload]


def _ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """Byte ranges for the workers, cut where a line group ends, so that each range's groups
    are the ones a whole-file pass would find."""
    size = path.stat().st_size
    if parts <= 1 or size < _PARALLEL_MIN:
        return [(0, size)]
    bounds = [0]
    with open(path, "rb") as handle:
        for k in range(1, parts):
            handle.seek(size * k // parts)
            handle.readline()
            for _ in range(GROUP_MAX):
                line = handle.readline()
                if not line or ends_group(line.removesuffix(b"\n")):
                    break
            pos = handle.tell()
            if bounds[-1] < pos < size:
                bounds.append(pos)
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def _workers() -> int:
    if not can_fork():
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def ingest_jsonl(
    path: Path,
    name: str,
    writer: ObjectWriter | None,
    *,
    cache: GroupCache | None = None,
    base: bytes = b"",
    collect: bool = False,
    progress: Callable[[int], None] | None = None,
    key: tuple[str, ...] = (),
) -> IngestResult:
    """Read a JSONL file into datapoints; new ones go into packs adopted by `writer`.

    `cache` is the line groups of the file that gave the dataset whose ids are `base`. With
    `collect` and no writer, the datapoints a writer would have stored come back as bodies
    instead: what a comparison with the base needs, and no more. `progress` is told the
    bytes read so far while workers read (a single process reads small files: no report).
    With a `key`, the result also holds the keys of the records it parsed, for dsv.keys.
    """
    if not path.exists():
        raise BadInput(f"{name}: no such file")
    pack_dir = writer.store.pack_dir if writer is not None else None
    if pack_dir is not None:
        pack_dir.mkdir(parents=True, exist_ok=True)
    ranges = _ranges(path, _workers())
    old = _Old(cache, base)
    _shared.update(path=path, old=old, pack_dir=pack_dir, collect=collect, size=ranges[-1][1])
    _shared["read_keys"] = key_reader(key) if key else None
    try:
        if len(ranges) > 1:
            waiting = None
            if progress is not None:
                # Anonymous and shared: each worker writes its own slot, the parent sums them.
                counter = _shared["counter"] = mmap.mmap(-1, 8 * len(ranges))
                slots = f"{len(ranges)}q"

                def waiting() -> None:
                    progress(sum(struct.unpack_from(slots, counter)))

            calls = [(start, end, k) for k, (start, end) in enumerate(ranges)]
            outcomes = fork_map(_ingest_range, calls, return_exceptions=True, waiting=waiting)
        else:
            outcomes = [_ingest_range(*ranges[0])]
    finally:
        _shared.clear()
    failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
    parts = [o for o in outcomes if not isinstance(o, BaseException)]
    if failure is not None:
        # The other workers' packs are ready but must not be kept half a file's worth.
        for part in parts:
            if part.pack is not None and pack_dir is not None:
                _prepared(pack_dir, part.pack).discard()
        raise failure
    error = next((p.error for p in parts if p.error is not None), None)
    for part in parts:
        if part.pack is None or pack_dir is None or writer is None:
            continue
        prepared = _prepared(pack_dir, part.pack)
        if error is not None:
            prepared.discard()
        else:
            writer.adopt(prepared, objects=part.stored, size=part.stored_bytes)
    if error is not None:
        offset, text, message, column = error
        raise _error(name, _line_at(path, offset), text, message, column)
    groups = GroupCache(
        b"",
        b"".join(p.keys for p in parts),
        b"".join(p.lengths for p in parts),
        b"".join(p.counts for p in parts),
        b"".join(p.lines for p in parts),
    )
    oids = b"".join(p.oids for p in parts)
    sources = array.array("i", b"".join(p.sources for p in parts))
    if sys.byteorder != "little":
        sources.byteswap()
    # Without the old groups there is nothing to say: the manifest finds the shared runs itself.
    runs = _base_runs(old, oids, sources, groups.counts) if len(old.lengths) else None
    return IngestResult(
        oids,
        groups,
        runs,
        sum(p.stored for p in parts),
        sum(p.stored_bytes for p in parts),
        {oid: body for p in parts for oid, body in p.bodies.items()},
        _parsed_keys(parts) if key else None,
    )


def _parsed_keys(parts: list[_Part]) -> tuple[bytes, bytes]:
    with_keys = [p for p in parts if p.key_oids]
    return b"".join(p.key_oids for p in with_keys), b"\n".join(p.key_values for p in with_keys)


def _prepared(pack_dir: Path, pack: tuple[str, str, str]) -> PreparedPack:
    name, pack_tmp, idx_tmp = pack
    return PreparedPack(pack_dir, name, Path(pack_tmp), Path(idx_tmp))


def _base_runs(
    old: _Old, oids: bytes, sources: array.array[int], counts: bytes
) -> tuple[Runs, bytes]:
    """How `oids` reuse the base's ids, from where each group was found (`sources`, the
    workers' pairs joined: see _Range.sources).

    A group found in the old file is a run of base ids. Parsed groups usually replace the old
    groups between the found ones around them, so their ids are looked up there; an id found
    nowhere near is written as fresh (a moved line costs 32 bytes of manifest, not a search).
    """
    runs: Runs = []
    fresh = bytearray()
    starts = old.starts
    n_old = len(starts) - 1
    # The run being built: from the base?, where it starts, its length.
    kind, first, length = True, 0, 0
    position = 0  # in oids, in ids
    previous = -1  # the old group the last found group was
    g = 0  # in groups
    k = 0  # in source pairs
    n = len(sources)
    while k < n:
        found, groups = sources[k], sources[k + 1]
        k += 2
        if found >= 0:
            start = starts[found]
            size = starts[found + groups] - start
            if kind and first + length == start:
                length += size
            else:
                if length:
                    runs.append((kind, first, length))
                kind, first, length = True, start, size
            position += size
            previous = found + groups - 1
            g += groups
            continue
        # Parts are joined as they came: a parsed stretch may span several pairs.
        while k < n and sources[k] < 0:
            groups += sources[k + 1]
            k += 2
        stretch_end = g + groups
        after = sources[k] if k < n else n_old
        lo, hi = starts[previous + 1], starts[max(after, previous + 1)]
        base = old.oids
        nearby = {base[i * OID_SIZE : (i + 1) * OID_SIZE]: i for i in range(lo, min(hi, lo + 4096))}
        parsed = sum(counts[g:stretch_end])
        for j in range(position, position + parsed):
            oid = oids[j * OID_SIZE : (j + 1) * OID_SIZE]
            at = nearby.get(oid)
            if at is None:
                at = len(fresh) // OID_SIZE
                fresh += oid
                if not kind and first + length == at:
                    length += 1
                    continue
                if length:
                    runs.append((kind, first, length))
                kind, first, length = False, at, 1
            elif kind and first + length == at:
                length += 1
            else:
                if length:
                    runs.append((kind, first, length))
                kind, first, length = True, at, 1
        position += parsed
        g = stretch_end
    if length:
        runs.append((kind, first, length))
    return runs, bytes(fresh)


def _line_at(path: Path, offset: int) -> int:
    """The number of the line that starts at byte `offset`."""
    newlines = 0
    with open(path, "rb") as handle:
        while offset > 0:
            piece = handle.read(min(_READ, offset))
            if not piece:
                break
            newlines += piece.count(b"\n")
            offset -= len(piece)
    return newlines + 1


def _error(name: str, line: int, text: bytes, message: str, offset: int | None) -> BadInput:
    column = 1
    if offset is not None:
        column = len(text[: min(offset, len(text))].decode("utf-8", errors="replace")) + 1
    return BadInput(f"{name}:{line}:{column}: {message}")
