"""The object store: loose objects and packs under `.dsv/objects`.

Objects are verified by their id when they enter a repository. A read re-hashes what it reads,
except bulk reads of pack blocks whose frames carry checksums (docs/format.md §4, trust): those
trust the pack, and `dsv fsck` re-hashes everything.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, TypeVar

import zstandard

from dsv.blockindex import BlockIndex, common_run
from dsv.blockruns import BlockRuns
from dsv.errors import CorruptObject
from dsv.fsutil import fsync_dir, write_atomic
from dsv.objects import OID_SIZE, Kind, hash_object, split_oids
from dsv.pack import Pack, PackWriter, PreparedPack
from dsv.sorting import absent_oids

__all__ = [
    "LOOSE_LIMIT",
    "PACKS_MOST",
    "CopyPart",
    "ObjectStore",
    "ObjectWriter",
    "small_packs",
]

# Up to this many new objects (and bytes) a write stays loose (one file each); more go into
# one pack, so a commit of 100,000 datapoints adds a few files, not 100,000.
LOOSE_LIMIT = 64
# A store with more packs than this merges its small ones (`ObjectStore.consolidate`).
PACKS_MOST = 12
# What looking an id up in a pack's index costs, in steps of a walk of the whole index: when
# ids asked times this reaches a pack's size, the pack is walked instead (store.missing).
_BISECT_STEPS = 8
# From this many ids on, `missing` looks them up by hash, in C (dsv.sorting.absent_oids).
_HASHED_LOOKUP = 1 << 16
# Listings of the pack directory a reload may take while packs vanish under it.
_RELISTS = 20
LOOSE_BYTES = 1 << 20
# read_many takes ids this many at a time: a run of blocks never needs more in view.
_RUN_BATCH = 8192
# From this many ids a copy plan compares whole blocks (dsv.blockindex) rather than look up
# each id: building a pack's block index costs a sort of its entries.
_INDEXED_PLAN = 4096

_P = TypeVar("_P")


# Below this many blocks, bodies are read one by one through the block cache.
_PARALLEL_BLOCKS = 16
# Blocks whose frames one call decompresses: at most 16 MiB in memory at once.
_BATCH_BLOCKS = 16


def _workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))


def small_packs(packs: Iterable[_P], *, size: Callable[[_P], int]) -> list[_P]:
    """The packs a geometric repack merges: all but the large ones that each hold at least
    twice what all smaller packs hold together (sizes in objects or bytes)."""
    by_size = sorted(packs, key=size, reverse=True)
    sizes = [size(pack) for pack in by_size]
    tails = list(itertools.accumulate(reversed(sizes)))[::-1]  # tails[i] = sum(sizes[i:])
    first = next((i for i, n in enumerate(sizes) if n < 2 * (tails[i] - n)), len(sizes))
    return by_size[first:]


class CopyPart(NamedTuple):
    """Objects to copy into a pack: a stored block as it is (`pack` set), or bodies to read."""

    oids: list[bytes]
    sizes: list[int]  # raw bytes of each body
    pack: Pack | None = None
    block: int = 0
    entries: Sequence[int] = ()

    @property
    def stored(self) -> int:
        """Bytes the part adds to a pack at most (a copied block's dictionary aside)."""
        if self.pack is not None:
            return self.pack.block_stored_len(self.block)
        return sum(self.sizes) + 5 * len(self.sizes) + 512


class ObjectStore:
    """Write-once objects addressed by oid."""

    def __init__(self, path: Path, *, before_pack: Callable[[], None] | None = None) -> None:
        self.path = path
        self.pack_dir = path / "pack"
        self._before_pack = before_pack
        self._block_indexes: dict[str, BlockIndex] = {}
        self._packs: dict[str, Pack] | None = None
        self._retired: list[Pack] = []  # removed by others since listed; closed by `close`
        self._compressor = zstandard.ZstdCompressor(level=3)
        self._decompressor = zstandard.ZstdDecompressor()

    # -- packs -------------------------------------------------------------------------

    def before_pack(self) -> None:
        """Call before publishing a pack written here: the repository may need to say its
        format allows it (`Repository._upgrade_format`)."""
        if self._before_pack is not None:
            self._before_pack()

    @property
    def packs(self) -> list[Pack]:
        if self._packs is None:
            self._packs = {}
            self.reload()
        return list(self._packs.values())

    def reload(self) -> None:
        """Pick up packs written (or removed) since the last look."""
        if self._packs is None:
            self._packs = {}
        for _ in range(_RELISTS):
            try:
                names = {
                    p[:-4]
                    for p in os.listdir(self.pack_dir)
                    if p.endswith(".idx") and not p.startswith(".")
                }
            except FileNotFoundError:
                names = set()
            for gone in set(self._packs) - names:
                # Not closed: a bulk read may still hold it in its list of packs, and its
                # open file and map stay readable after the unlink (until `close`).
                self._retired.append(self._packs.pop(gone))
            vanished = False
            for name in sorted(names - set(self._packs)):
                try:
                    self._packs[name] = Pack(self.pack_dir, name)
                except CorruptObject as exc:
                    if not isinstance(exc.__cause__, FileNotFoundError):
                        raise
                    vanished = True
            if not vanished:
                return
            # A merge (gc, or another process's consolidation) removed a listed pack after
            # the listing; the pack holding its objects was published before, so list again.

    def remove_pack(self, name: str) -> None:
        """Delete pack `name`: its index first, so that no reader lists it without its data."""
        if self._packs is not None and name in self._packs:
            self._packs.pop(name).close()
        for ext in (".idx", ".pack"):
            with contextlib.suppress(FileNotFoundError):
                (self.pack_dir / f"{name}{ext}").unlink()

    def merge_packs(self, names: list[str]) -> str:
        """Replace packs `names` by one holding their objects, in that order; its name.

        Compressed blocks are copied as they are. The new pack is published before the old
        ones are removed, so a reader finds every object all along.
        """
        self.reload()
        rank = {name: n for n, name in enumerate(names)}
        packs = sorted((p for p in self.packs if p.name in rank), key=lambda p: rank[p.name])
        if not packs:
            return ""
        # Blocks are copied unread under a fresh checksum: damage must be found before.
        for pack in packs:
            problem = pack.verify()
            if problem is not None:
                raise CorruptObject(f"pack {pack.name}: {problem}", hint="run 'dsv fsck'")
        writer = PackWriter(self.pack_dir)
        try:
            for pack in packs:
                writer.add_pack(pack)
            self.before_pack()
            merged = writer.finish()
        except BaseException:
            writer.abort()
            raise
        for pack in packs:
            if pack.name != merged:
                self.remove_pack(pack.name)
        self.reload()
        return merged

    def consolidate(self, *, most: int = PACKS_MOST) -> str | None:
        """Past `most` packs, merge the small ones; the merged pack's name, or None.

        Every commit and fetch adds a pack, and every lookup may try each pack in turn, so
        left alone a store slows down with its history. The packs kept are the large ones that
        each hold at least twice as many objects as all smaller packs together; the rest are
        merged, oldest first. Each object is thus copied about log2(objects) times over its
        life, and a store holds O(log objects) packs (a geometric repack, as git's).
        """
        try:
            listed = sum(name.endswith(".idx") for name in os.listdir(self.pack_dir))
        except FileNotFoundError:
            return None
        if listed <= most:  # the common case, decided without opening a pack
            return None
        self.reload()
        packs = self.packs
        if len(packs) <= most:
            return None
        merging = small_packs(packs, size=lambda p: p.count)
        if len(merging) < 2:
            return None

        def age(pack: Pack) -> tuple[float, str]:
            try:
                return pack.pack_path.stat().st_mtime, pack.name
            except OSError:
                return 0.0, pack.name

        return self.merge_packs([pack.name for pack in sorted(merging, key=age)])

    def tidy(self) -> None:
        """`consolidate`, as a write's last step: a failure leaves the packs as they were
        (the merged pack is published before any is removed) and is not the write's."""
        with contextlib.suppress(OSError, CorruptObject):
            self.consolidate()

    def close_retired(self) -> None:
        """Close the packs others removed since they were opened, once no read can hold them
        (their disk space is freed only then)."""
        for pack in self._retired:
            pack.close()
        self._retired = []

    def close(self) -> None:
        self._block_indexes.clear()
        if self._packs:
            for pack in self._packs.values():
                pack.close()
        self._packs = None
        for pack in self._retired:
            pack.close()
        self._retired = []

    # -- lookup ------------------------------------------------------------------------

    def _loose_path(self, oid: bytes) -> Path:
        text = oid.hex()
        return self.path / text[:2] / text[2:]

    def _find_packed(self, oid: bytes) -> tuple[Pack, int] | None:
        for pack in self.packs:
            i = pack.find(oid)
            if i >= 0:
                return pack, i
        return None

    def contains(self, oid: bytes) -> bool:
        if self._find_packed(oid) is not None or self._loose_path(oid).exists():
            return True
        self.reload()
        return self._find_packed(oid) is not None

    def _read_raw(self, oid: bytes) -> tuple[Kind, bytes]:
        opened = self._packs is not None
        if opened:
            found = self._find_packed(oid)
            if found is not None:
                return found[0].read_at(found[1])
        # Until its packs are open, a store tries the loose file first: a command that reads
        # a few fresh objects (status reads HEAD's commit and tree) then never opens a pack.
        # Once they are open, packs come first, so that reading many packed objects one by
        # one (fsck, gc) does not pay a failed open for each.
        try:
            data = self._loose_path(oid).read_bytes()
        except FileNotFoundError:
            found = None if opened else self._find_packed(oid)  # (opened: just looked)
            if found is None:
                # A repack may have packed it (and dropped the loose file) since the packs
                # were listed.
                self.reload()
                found = self._find_packed(oid)
            if found is None:
                raise CorruptObject(f"missing object {oid.hex()}") from None
            return found[0].read_at(found[1])
        try:
            return Kind(data[0]), self._decompressor.decompress(data[1:])
        except (IndexError, ValueError, zstandard.ZstdError) as exc:
            raise CorruptObject(f"corrupt object {oid.hex()}: unreadable") from exc

    def read(self, oid: bytes, kind: Kind | None = None) -> tuple[Kind, bytes]:
        """Kind and body of `oid`, verified against its id.

        Always re-hashed, wherever it is stored: one object costs little to hash, and fsck
        and gc rely on it."""
        found_kind, body = self._read_raw(oid)
        if hash_object(found_kind, body) != oid:
            raise CorruptObject(f"corrupt object {oid.hex()}: content does not match its id")
        if kind is not None and found_kind != kind:
            raise CorruptObject(
                f"object {oid.hex()} is a {found_kind.name.lower()}, expected a {kind.name.lower()}"
            )
        return found_kind, body

    def read_body(self, oid: bytes, kind: Kind) -> bytes:
        return self.read(oid, kind)[1]

    def _checked(
        self, oid: bytes, kind: Kind, found_kind: Kind, body: bytes, *, trusted: bool = False
    ) -> bytes:
        """`body` if it is a `kind` and hashes to `oid`, which a `trusted` body (of a block
        whose frames verified their checksums, `Pack.block_trusted`) is taken to; else the
        slow path's error."""
        if found_kind != kind or (not trusted and hash_object(found_kind, body) != oid):
            return self.read(oid, kind)[1]  # the slow path names the exact problem
        return body

    def read_many(self, oids: Iterable[bytes], kind: Kind) -> Iterator[bytes]:
        """Bodies of `oids` in the order given, each verified (re-hashed or taken from a
        trusted block, `Pack.block_trusted`), in memory that does not grow
        with their number (a million-datapoint dataset streams in a few blocks' worth).

        Ids are read as runs of the pack blocks holding them (dsv.blockruns); where the order
        is scattered and that hashes much more than it yields, id by id.
        """
        runs: BlockRuns | None = BlockRuns(self.packs, kind)
        done = 0
        it = iter(oids)
        while wanted := list(itertools.islice(it, _RUN_BATCH)):
            at = 0
            while at < len(wanted):
                if runs is None:
                    yield self._read_one(wanted[at], kind)
                    at += 1
                    continue
                try:
                    bodies = runs.take(wanted, at)
                except CorruptObject:
                    bodies = []  # the slow path names the exact problem
                bodies = bodies or [self.read(wanted[at], kind)[1]]
                at += len(bodies)
                yield from bodies
                if runs.scattered(done + at):
                    runs = None
            done += len(wanted)

    def _read_one(self, oid: bytes, kind: Kind) -> bytes:
        found = self._find_packed(oid)
        if found is None:
            return self.read(oid, kind)[1]
        pack, at = found
        found_kind, body = pack.read_at(at)
        return self._checked(oid, kind, found_kind, body, trusted=pack.trusted_at(at, kind))

    def read_bulk(self, oids: list[bytes], kind: Kind) -> list[bytes]:
        """Bodies of scattered `oids`, in their order, each verified; each frame is
        decompressed once however the ids are spread over it."""
        out = [b""] * len(oids)
        for i, body in self.iter_bulk(oids, kind):
            out[i] = body
        return out

    def iter_bulk(self, oids: list[bytes], kind: Kind) -> Iterator[tuple[int, bytes]]:
        """(position in `oids`, verified body) of each of `oids`, in the order they are
        stored: each frame holding one is decompressed once, and only a few blocks' worth are
        in memory at a time, however many ids are asked for."""
        # The pack holding most of a sample goes first, then by size: a version's new
        # datapoints sit in one small pack, and each pack tried before it is a miss per id.
        # Sixteen ids rank them well enough; a sample of every id of a small read had cost
        # more lookups than the read itself, in each pack.
        packs = self.packs
        if len(packs) > 1:
            sample = oids[:: max(1, len(oids) // 16)]
            packs = sorted(
                packs, key=lambda p: (-sum(p.find(oid) >= 0 for oid in sample), -p.count)
            )
        located: list[tuple[int, int, int, int]] = []
        # In id order, so that each pack's lookups walk its sorted table forwards.
        pending = sorted(range(len(oids)), key=oids.__getitem__)
        for n, pack in enumerate(packs):
            if not pending:
                break
            wanted = [oids[i] for i in pending]
            if len(wanted) > 256:
                found = pack.find_sorted(wanted)
            else:
                found = [pack.find(oid) for oid in wanted]
            rest = []
            for i, at in zip(pending, found, strict=True):
                if at < 0:
                    rest.append(i)
                else:
                    located.append((n, pack.location(at)[0], at, i))
            pending = rest
        for i in pending:
            yield i, self.read(oids[i], kind)[1]
        located.sort()
        blocks: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for n, block, at, i in located:
            blocks.setdefault((n, block), []).append((at, i))
        if len(blocks) < _PARALLEL_BLOCKS:
            for n, _, at, i in located:
                found_kind, body = packs[n].read_at(at)
                trusted = packs[n].trusted_at(at, kind)
                yield i, self._checked(oids[i], kind, found_kind, body, trusted=trusted)
            return
        # Batches of blocks are decompressed on every core by zstd's own threads in one call
        # per pack, and of each block only the frames holding asked-for bodies. (A pool of
        # Python threads, a call per block, spent its time waiting for the GIL this thread
        # holds while it checks bodies.)
        keys = list(blocks)
        for at_batch in range(0, len(keys), _BATCH_BLOCKS):
            batch = keys[at_batch : at_batch + _BATCH_BLOCKS]
            for n, group in itertools.groupby(batch, key=operator.itemgetter(0)):
                pack = packs[n]
                requests = []
                for key in group:
                    entries = blocks[key]
                    frames = [pack.frame_of(at) for at, _ in entries]
                    requests.append((key[1], entries, frames, sorted(set(frames))))
                loaded = pack.load_frames(
                    [(block, wanted) for block, _, _, wanted in requests], threads=_workers()
                )
                for (_, entries, frames, wanted), parts in zip(requests, loaded, strict=True):
                    by_frame = dict(zip(wanted, parts, strict=True))
                    for f, (at, i) in zip(frames, entries, strict=True):
                        start, data = by_frame[f]
                        found_kind, body = pack.entry_in(data, at, start)
                        checked = self._checked(
                            oids[i],
                            kind,
                            found_kind,
                            bytes(body),
                            trusted=pack.trusted_at(at, kind),
                        )
                        yield i, checked

    def plan_copy(
        self, kind: Kind, oids: Sequence[bytes], *, extra: bool = False
    ) -> list[CopyPart]:
        """`oids` in their order as parts to copy: each run of them that is exactly a stored
        block, in its order, is a part copied as stored (compressed, never read); the others
        are read (and verified) when written. What a push sends and a server answers, so a
        version's datapoints cross the wire in the blocks `add` made, not recompressed.

        With `extra`, a block of datapoints of which most entries are asked is copied whole,
        its other entries with it, where the first asked one comes; the parts then hold
        every id asked, once, and fewer others than that (protocol.md §5, version 2)."""
        self.reload()
        if extra and kind == Kind.DATAPOINT and len(oids) >= _INDEXED_PLAN:
            return self._plan_blocks(oids)
        parts: list[CopyPart] = []
        reads: list[bytes] = []
        sizes: list[int] = []

        def read_part() -> None:
            if reads:
                parts.append(CopyPart(reads.copy(), sizes.copy()))
                reads.clear()
                sizes.clear()

        # Each lookup finds where a run starts; the run is then compared against the ids of
        # the block holding it at once (dsv.blockindex), so the cost goes by block, not id.
        bulk = len(oids) >= _INDEXED_PLAN
        i = 0
        while i < len(oids):
            found = self._find_packed(oids[i])
            if found is None or found[0].kind_at(found[1]) != kind:
                reads.append(oids[i])
                sizes.append(len(self.read(oids[i], kind)[1]))  # loose: few, small
                i += 1
                continue
            pack, at = found
            block = pack.location(at)[0]
            if bulk:
                index = self._block_index(pack)
                start, stop = index.members(block)
                first = index.rank[at]
                run = common_run(oids, i, index.block_oids(block), first - start)
                entries = list(index.order[first : first + run])
                whole = first == start and run == stop - start
            else:
                entries = [at]
                whole = self._run_in_block(pack, oids, i, entries)
                run = len(entries)
            if whole:
                read_part()
                lengths = [pack.location(e)[2] for e in entries]
                parts.append(CopyPart(list(oids[i : i + run]), lengths, pack, block, entries))
            else:
                reads.extend(oids[i : i + run])
                sizes.extend(pack.location(e)[2] for e in entries)
            i += run
        read_part()
        return parts

    def _plan_blocks(self, oids: Sequence[bytes]) -> list[CopyPart]:
        """`plan_copy` with `extra`: whole blocks where at least 7/8 of a block is asked (a
        version with 1% of its records edited leaves no block whole, but every block mostly
        asked), the rest read."""
        kind = Kind.DATAPOINT
        runs: list[tuple[int, int, Pack | None, int]] = []  # first id, count, pack, block
        asked: dict[tuple[str, int], int] = {}
        i = 0
        while i < len(oids):
            found = self._find_packed(oids[i])
            if found is None or found[0].kind_at(found[1]) != kind:
                runs.append((i, 1, None, 0))
                i += 1
                continue
            pack, at = found
            block = pack.location(at)[0]
            index = self._block_index(pack)
            start = index.members(block)[0]
            run = common_run(oids, i, index.block_oids(block), index.rank[at] - start)
            runs.append((i, run, pack, block))
            asked[(pack.name, block)] = asked.get((pack.name, block), 0) + run
            i += run
        parts: list[CopyPart] = []
        reads: list[bytes] = []
        sizes: list[int] = []
        copied: set[tuple[str, int]] = set()
        partial: set[tuple[str, int]] = set()  # blocks read, not copied
        for i, run, holder, block in runs:
            if holder is not None:
                key = (holder.name, block)
                index = self._block_index(holder)
                start, stop = index.members(block)
                if key in copied:
                    continue
                entries = index.order[start:stop]
                if (
                    key not in partial
                    and 8 * asked[key] >= 7 * (stop - start)
                    # Only datapoints may come unasked: a page would need its datapoints.
                    and all(holder.kind_at(e) == kind for e in entries)
                ):
                    copied.add(key)
                    if reads:
                        parts.append(CopyPart(reads, sizes))
                        reads, sizes = [], []
                    members = index.block_oids(block)
                    parts.append(CopyPart(members, [], holder, block, list(entries)))
                    continue
                partial.add(key)
                sizes += [holder.location(holder.find(o))[2] for o in oids[i : i + run]]
            else:
                sizes.append(len(self.read(oids[i], kind)[1]))  # loose: few, small
            reads.extend(oids[i : i + run])
        if reads:
            parts.append(CopyPart(reads, sizes))
        return parts

    def _run_in_block(self, pack: Pack, oids: Sequence[bytes], i: int, entries: list[int]) -> bool:
        """Extend `entries` (holding where `oids[i]` is) while the next ids are the next
        entries of its block, looking each up; whether they make the whole block."""
        block, offset, length = pack.location(entries[0])
        expected = offset + length
        j = i + 1
        while j < len(oids):
            at = pack.find(oids[j])
            if at < 0:
                break
            b, o, n = pack.location(at)
            if b != block or o != expected:
                break
            entries.append(at)
            expected = o + n
            j += 1
        return offset == 4 + 5 * len(entries) and expected == pack.block_raw_len(block)

    def _block_index(self, pack: Pack) -> BlockIndex:
        index = self._block_indexes.get(pack.name)
        if index is None or index.pack is not pack:
            index = self._block_indexes[pack.name] = BlockIndex(pack)
        return index

    def write_parts(self, writer: PackWriter, kind: Kind, parts: Iterable[CopyPart]) -> None:
        """Add the objects of `parts` (of `plan_copy`) to `writer`, in order."""
        for part in parts:
            if part.pack is not None:
                writer.copy_block(part.pack, part.block, part.entries)
            else:
                writer.add_many(kind, part.oids, self.read_bulk(part.oids, kind))

    def missing(self, oids: Iterable[bytes]) -> set[bytes]:
        """Which of `oids` the store lacks; the cost follows the ids asked, not the store."""
        given = oids if isinstance(oids, Collection) else list(oids)
        if len(given) >= _HASHED_LOOKUP:
            self.reload()
            # Packed as given (a repeat is found twice, harmlessly): a set of a million ids
            # first was 32 MB more at a receiving server's peak. The largest packs first:
            # they leave the fewest ids for the next.
            packs = sorted(self.packs, key=lambda p: -p.count)
            left = absent_oids(b"".join(given), [p.oid_column for p in packs])
            return self._missing_loose(set(split_oids(left)))
        wanted = set(given)
        if not wanted:
            return wanted
        self.reload()
        remaining = sorted(wanted)
        for pack in self.packs:
            if not remaining:
                return set()
            if len(remaining) * _BISECT_STEPS < pack.count:
                # Bisect the pack's sorted index for each id, in order.
                if len(remaining) > 256:
                    found = pack.find_sorted(remaining)
                else:
                    found = [pack.find(oid) for oid in remaining]
                remaining = [oid for oid, at in zip(remaining, found, strict=True) if at < 0]
            else:
                # As many ids as the pack holds objects: one walk of its index costs less.
                held = set(remaining)
                held.difference_update(pack.oids())
                remaining = sorted(held)
        return self._missing_loose(set(remaining))

    def _missing_loose(self, wanted: set[bytes]) -> set[bytes]:
        """Which of `wanted` (in no pack) are not loose objects either."""
        if not wanted:
            return wanted
        if len(wanted) > 4096:
            # One listing of the loose objects instead of one stat per remaining id.
            wanted.difference_update(self.iter_loose())
            return wanted
        return {oid for oid in wanted if not self._loose_path(oid).exists()}

    def iter_loose(self) -> Iterator[bytes]:
        try:
            fans = os.listdir(self.path)
        except FileNotFoundError:
            return
        for fan in fans:
            if len(fan) != 2 or fan == "pa":
                continue
            with contextlib.suppress(NotADirectoryError, FileNotFoundError):
                for rest in os.listdir(self.path / fan):
                    if len(rest) == 2 * OID_SIZE - 2 and not rest.startswith("."):
                        with contextlib.suppress(ValueError):
                            yield bytes.fromhex(fan + rest)

    def iter_oids(self) -> Iterator[bytes]:
        """Every stored oid (an oid in several places may repeat)."""
        yield from self.iter_loose()
        for pack in self.packs:
            yield from pack.oids()

    def find_prefix(self, prefix: str) -> set[bytes]:
        """All oids whose hex starts with `prefix`."""
        found: set[bytes] = set()
        if len(prefix) >= 2:
            fan = self.path / prefix[:2]
            with contextlib.suppress(FileNotFoundError):
                for rest in os.listdir(fan):
                    if rest.startswith(prefix[2:]) and not rest.startswith("."):
                        with contextlib.suppress(ValueError):
                            found.add(bytes.fromhex(prefix[:2] + rest))
        whole = bytes.fromhex(prefix[: len(prefix) // 2 * 2])
        for pack in self.packs:
            for oid in pack.prefix_range(whole):
                if oid.hex().startswith(prefix):
                    found.add(oid)
        return found

    # -- writing -----------------------------------------------------------------------

    def writer(self) -> ObjectWriter:
        return ObjectWriter(self)

    def write_loose(self, kind: Kind, oid: bytes, body: bytes) -> Path:
        path = self._loose_path(oid)
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, bytes([kind]) + self._compressor.compress(body), mode=0o444)
        return path

    def delete_loose(self, oid: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._loose_path(oid).unlink()


class ObjectWriter:
    """Collects the new objects of one operation; small batches go loose, larger ones to a pack.

    Nothing written is referenced until `close` returns, so an interrupted operation leaves at
    most unreferenced objects, which gc removes.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._pending: list[tuple[Kind, bytes, bytes]] = []
        self._pending_bytes = 0
        self._pack: PackWriter | None = None
        self._seen: set[bytes] = set()
        self._adopted: list[PreparedPack] = []
        self.published: list[str] = []  # names of the packs `close` made visible
        self.written = 0
        self.bytes_written = 0

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write(self, kind: Kind, body: bytes, *, check_store: bool = True) -> bytes:
        """Store `body` as an object of `kind` unless present; return its oid."""
        oid = hash_object(kind, body)
        self.add(kind, oid, body, check_store=check_store)
        return oid

    def add(self, kind: Kind, oid: bytes, body: bytes, *, check_store: bool = True) -> None:
        """Store an object whose oid the caller computed."""
        if oid in self._seen:
            return
        self._seen.add(oid)
        if check_store and self.store.contains(oid):
            return
        self.written += 1
        self.bytes_written += len(body)
        if self._pack is not None:
            self._pack.add(kind, oid, body)
            return
        self._pending.append((kind, oid, body))
        self._pending_bytes += len(body)
        if len(self._pending) > LOOSE_LIMIT or self._pending_bytes > LOOSE_BYTES:
            self.store.pack_dir.mkdir(parents=True, exist_ok=True)
            self._pack = PackWriter(self.store.pack_dir)
            for item in self._pending:
                self._pack.add(*item)
            self._pending = []

    def adopt(self, prepared: PreparedPack, *, objects: int, size: int) -> None:
        """Take over a pack another process wrote; it is published with this writer's objects."""
        self._adopted.append(prepared)
        self.written += objects
        self.bytes_written += size

    def close(self) -> None:
        """Make every object written durable."""
        if self._adopted or self._pack is not None:
            self.store.before_pack()
        for prepared in self._adopted:
            prepared.publish()
            self.published.append(prepared.name)
        if self._adopted:
            self._adopted = []
            self.store.reload()
        if self._pack is not None:
            self.published.append(self._pack.finish())
            self._pack = None
            self.store.reload()
        dirs: set[Path] = set()
        for kind, oid, body in self._pending:
            dirs.add(self.store.write_loose(kind, oid, body).parent)
        self._pending = []
        for directory in dirs:
            fsync_dir(directory)

    def abort(self) -> None:
        for prepared in self._adopted:
            prepared.discard()
        self._adopted = []
        if self._pack is not None:
            self._pack.abort()
            self._pack = None
        self._pending = []
