"""The embedded blob store: one dsv object store per repository, under the server's root.

Every write stores a pack, so a busy repository's packs are merged in the background, one
thread per server process (as the S3 store's compaction): past `PACKS_MOST` packs, the small
ones become one (the geometric rule of `ObjectStore.consolidate`). Where packs of small blocks
are among them, every object is written anew into full blocks, datapoints in the order their
datasets list them (`write_merged`), so that a repository written by thousands of API writes
reads as one written by a push does (docs/performance.md). The merge runs on an
object store of its own, not on the one requests read through, so reads of the repository go
on while it copies blocks; the merged pack is published before any pack it replaces is
removed, so a reader of this or another process on the same root finds every object all
along (it lists the packs again when one vanishes).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from dsv.errors import CorruptObject
from dsv.fsutil import fsync_dir
from dsv.objects import OID_SIZE, Kind, decode_dataset, hash_object, split_oids
from dsv.pack import BLOCK_SIZE, Pack, PackWriter, PreparedPack
from dsv.server.storage import StorageError, check_repo_name
from dsv.server.storage.compactor import Compactor
from dsv.store import PACKS_MOST, ObjectStore, small_packs

__all__ = ["REWRITE_MOST", "LocalBlobStore", "write_merged"]

# Beside packs of small blocks, a pack of full blocks with more objects than this is copied
# block by block, not written anew: rewriting costs a map entry (about 200 bytes) and a
# compression per object in the merge, which for a pushed million would be 300 MB and half
# a minute of a server's background thread. Earlier merges of API writes stay under it
# until they are large enough that a dataset's page seldom spans two of them.
REWRITE_MOST = 1 << 17


class LocalBlobStore:
    """Objects of `OWNER/NAME` in `ROOT/repos/OWNER/NAME/objects`, laid out as in format.md §4."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stores: dict[str, tuple[ObjectStore, threading.Lock]] = {}
        self._guard = threading.Lock()
        self._compactor = Compactor(self.compact, name="dsv-compact")

    def _objects_dir(self, repo: str) -> Path:
        owner, name = check_repo_name(repo).split("/")
        return self.root / "repos" / owner / name / "objects"

    @contextlib.contextmanager
    def _store(self, repo: str) -> Iterator[ObjectStore]:
        # ObjectStore caches open packs and blocks; one thread at a time uses each.
        with self._guard:
            entry = self._stores.get(repo)
            if entry is None:
                entry = self._stores[repo] = (
                    ObjectStore(self._objects_dir(repo)),
                    threading.Lock(),
                )
        store, lock = entry
        with lock:
            try:
                yield store
            except OSError as exc:
                raise StorageError(f"object storage of {repo} failed: {exc}") from exc
            # Packs another process merged away stay open for a read that listed them; none
            # does now, and a server runs for months.
            store.close_retired()

    def missing(self, repo: str, oids: Iterable[bytes]) -> set[bytes]:
        wanted = set(oids)
        if not wanted or not self._objects_dir(repo).is_dir():
            return wanted
        with self._store(repo) as store:
            # missing() looks for packs it does not know yet before calling an object absent.
            return store.missing(wanted)

    def read(self, repo: str, kind: Kind, oids: Sequence[bytes]) -> list[bytes]:
        if not oids:
            return []
        with self._store(repo) as store:
            # read_bulk looks for packs it does not know yet before calling an object missing.
            return store.read_bulk(list(oids), kind)

    def copy_objects(
        self,
        repo: str,
        kind: Kind,
        oids: Sequence[bytes],
        writer: PackWriter,
        *,
        extra: bool = False,
    ) -> None:
        if not oids:
            return
        with self._store(repo) as store:
            store.write_parts(writer, kind, store.plan_copy(kind, oids, extra=extra))

    def put_pack(self, repo: str, pack: PreparedPack) -> None:
        pack_dir = self._objects_dir(repo) / "pack"
        try:
            pack_dir.mkdir(parents=True, exist_ok=True)
            # A pack counts only once its idx exists (format.md §4): pack first, then idx.
            os.replace(pack.pack_tmp, pack_dir / f"{pack.name}.pack")
            os.replace(pack.idx_tmp, pack_dir / f"{pack.name}.idx")
            fsync_dir(pack_dir)
        except OSError as exc:
            pack.discard()
            raise StorageError(f"cannot store a pack of {repo}: {exc.strerror}") from exc
        with self._store(repo) as store:
            store.reload()
        # Every write leaves a pack: merge the small ones as they pile up, or a busy
        # repository's reads would try hundreds of packs for each object. Not in this
        # write's time: the write that crosses the limit would pay for the whole merge.
        self.request_compaction(repo)

    # -- compaction ------------------------------------------------------------------------

    def compact(self, repo: str, *, most: int = PACKS_MOST) -> str | None:
        """Past `most` packs of `repo`, merge the small ones (the geometric rule of
        `ObjectStore.consolidate`); the merged pack's name, or None when there was nothing to
        merge."""

        def small(merger: ObjectStore) -> str | None:
            listed = sum(name.endswith(".idx") for name in os.listdir(merger.pack_dir))
            if listed <= most:  # after most writes: decided without opening a pack
                return None
            packs = merger.packs
            if len(packs) <= most:
                return None
            merging = small_packs(packs, size=lambda p: p.count)
            return _merge_packs(merger, merging) if len(merging) >= 2 else None

        return self._merge(repo, small)

    def repack(self, repo: str) -> str | None:
        """Write every object of `repo` anew, into a pack of datapoints and one of the rest
        (`dsv gc --root`), as a push lays them out; the datapoints' pack's name (the other's
        if there are none), or None when the repository has no pack."""

        def everything(merger: ObjectStore) -> str | None:
            packs = merger.packs
            return _merge_packs(merger, packs, anew=True) if packs else None

        return self._merge(repo, everything)

    def _merge(self, repo: str, merge: Callable[[ObjectStore], str | None]) -> str | None:
        objects = self._objects_dir(repo)
        if not (objects / "pack").is_dir():
            return None
        # A store of its own: the one requests use stays free for them while blocks are
        # copied, and, like another process's, it finds the packs gone when it next looks.
        merger = ObjectStore(objects)
        try:
            # Cheap when under the limit (the common case): one listing, no pack opened.
            merged = merge(merger)
        except OSError as exc:
            raise StorageError(f"cannot merge the packs of {repo}: {exc}") from exc
        finally:
            merger.close()
        if merged is not None:
            with self._store(repo) as store:
                # Let go of the replaced packs' open files and maps (on leaving `_store`), or
                # their disk space would stay taken until the server stops.
                store.reload()
        return merged

    def request_compaction(self, repo: str) -> None:
        """Merge `repo`'s small packs soon, in the background, if they are past the limit."""
        self._compactor.request(repo)

    def health(self) -> None:
        try:
            self.root.stat()
        except OSError as exc:
            raise StorageError(f"object storage {self.root}: {exc.strerror}") from exc

    def close(self) -> None:
        self._compactor.close()
        with self._guard:
            for store, _ in self._stores.values():
                store.close()
            self._stores.clear()


def _merge_packs(store: ObjectStore, packs: list[Pack], *, anew: bool = False) -> str:
    """Replace `packs` of `store` by two holding their objects, datapoints and the rest, as a
    push stores them; the datapoints' pack's name.

    As `ObjectStore.merge_packs`, but beside a pack of small blocks (an API write's, a small
    push's) every object is written anew (`write_merged`): ten thousand writes would otherwise
    leave ten thousand blocks of a few datapoints, each a decompression of its own for a read
    of a few of them. Datapoints get a pack of their own, whose dictionary is trained on them
    and whose blocks are cut in small frames; manifests and commits compress best in whole
    blocks. `anew`: written anew whatever the packs.
    """
    packs = sorted(packs, key=_age)  # oldest first: a version's objects stay in write order
    for pack in packs:
        # Blocks copied unread get a fresh checksum: damage must be found before.
        problem = pack.verify()
        if problem is not None:
            raise CorruptObject(f"pack {pack.name}: {problem}", hint="run 'dsv fsck'")
    datapoints, rest = PackWriter(store.pack_dir), PackWriter(store.pack_dir)
    try:
        write_merged(datapoints, packs, anew=anew, rest=rest)
        merged = [datapoints.finish(), rest.finish()]
    except BaseException:
        datapoints.abort()
        rest.abort()
        raise
    for pack in packs:
        if pack.name not in merged:
            store.remove_pack(pack.name)
    store.reload()
    return merged[0] or merged[1]


def write_merged(
    writer: PackWriter, packs: list[Pack], *, anew: bool = False, rest: PackWriter | None = None
) -> None:
    """Add the objects of `packs` to `writer`. Packs of full blocks only (pushes') are
    copied block by block (they are verified by their checksums before); where any pack is
    of small blocks (an API write's, a small push's), every object of those packs and of the
    full ones of up to `REWRITE_MOST` objects (earlier merges') is written anew and
    re-hashed, datapoints first, and larger full packs are copied after them; with `anew`,
    every pack is written anew. With `rest`, the objects written anew that are not
    datapoints go there.

    Written anew, datapoints go in the order the datasets stored in those packs list them,
    newest version first (`_listed_order`), as a push sends them, and the pages of those
    lists first among the rest, in that order. API writes interleave the datasets ten
    datapoints at a time: in the order written, a page of 100 of one dataset was spread over
    ten writes' blocks. The full packs of earlier merges are written anew with the new
    writes for the same reason: copied, each kept its own generation's order, and a
    dataset's page still spanned several of them. The geometric rule (`small_packs`) bounds
    what this costs: an object is rewritten about log2(objects) times over its life, as it
    was copied.
    """
    if anew:
        copied: list[Pack] = []
    elif all(_dense(pack) for pack in packs):
        copied = packs
    else:
        copied = [pack for pack in packs if _dense(pack) and pack.count > REWRITE_MOST]
    rewritten = [pack for pack in packs if pack not in copied]
    # An object in two packs (two merges at once, a resumed push) is written once.
    written: set[bytes] = set()

    def write(pack: Pack, i: int, kind: Kind, into: PackWriter) -> None:
        oid = pack.oid_at(i)
        if oid in written:
            return
        written.add(oid)
        body = pack.read_at(i)[1]
        if hash_object(kind, body) != oid:
            raise CorruptObject(
                f"pack {pack.name}: object {oid.hex()} does not match its id",
                hint="run 'dsv fsck'",
            )
        into.add(kind, oid, body)

    # Datapoints first: a writer trains its dictionary on its first full block, and
    # without one a block is a single frame, so a read of one datapoint would decompress
    # all of it.
    listed, pages = _listed_order(rewritten) if rewritten else ([], [])
    for pack, i in listed:
        write(pack, i, Kind.DATAPOINT, writer)
    for datapoints in (True, False):
        into = writer if datapoints or rest is None else rest
        if not datapoints:
            for pack, i in pages:
                write(pack, i, Kind.PAGE, into)
        for pack in rewritten:
            for i in pack.pack_order():
                kind = pack.kind_at(i)
                if (kind == Kind.DATAPOINT) == datapoints:
                    write(pack, i, kind, into)
    for pack in copied:
        writer.add_pack(pack)


def _listed_order(packs: list[Pack]) -> tuple[list[tuple[Pack, int]], list[tuple[Pack, int]]]:
    """The datapoint entries of `packs` in the order the datasets stored in `packs` list
    them, newest dataset first (`packs` are oldest first, each in the order written), each
    datapoint once; and the entries of the pages they walked, in that order. A page of a
    dataset reads the pages of its manifest that cover it: together, they are a block or
    two, where in the order written they were one block each. Pages not in `packs` are
    passed over: this orders, it does not check."""
    where: dict[bytes, tuple[Pack, int]] = {}
    for pack in packs:
        for i in range(pack.count):
            if pack.kind_at(i) == Kind.DATAPOINT:
                where.setdefault(pack.oid_at(i), (pack, i))
    datapoints: list[tuple[Pack, int]] = []
    pages: list[tuple[Pack, int]] = []
    # A dataset's versions share their pages (manifest.build_dataset reuses runs of them):
    # a slice of a page already walked is passed over, so that ten thousand versions of
    # forty datasets cost their distinct pages, not their lengths.
    walked: dict[bytes, list[int]] = {}
    for pack in reversed(packs):
        for i in reversed(pack.pack_order()):
            if pack.kind_at(i) != Kind.DATASET:
                continue
            try:
                dataset = decode_dataset(pack.read_at(i)[1])
            except CorruptObject:
                continue
            for piece in dataset.slices:
                spans = walked.get(piece.page)
                if spans is not None and _covered(spans, piece.start, piece.stop):
                    continue
                found = _find_page(packs, piece.page)
                if spans is None:
                    spans = walked[piece.page] = []
                    if found is not None:
                        pages.append(found)
                _cover(spans, piece.start, piece.stop)
                if found is None:
                    continue
                page = found[0].read_at(found[1])[1]
                for oid in split_oids(page[piece.start * OID_SIZE : piece.stop * OID_SIZE]):
                    point = where.pop(oid, None)
                    if point is not None:
                        datapoints.append(point)
    return datapoints, pages


def _covered(spans: list[int], start: int, stop: int) -> bool:
    """Whether [start, stop) lies within one of `spans` (disjoint, sorted, flattened as
    start, stop, start, stop, ...)."""
    if stop <= start:
        return True
    # An odd count of bounds at or before `start` puts it inside the span they end with.
    k = bisect.bisect_right(spans, start)
    return k % 2 == 1 and stop <= spans[k]


def _cover(spans: list[int], start: int, stop: int) -> None:
    """Add [start, stop) to `spans` (see `_covered`), joining the spans it meets."""
    if stop <= start:
        return
    lo = bisect.bisect_left(spans, start)
    hi = bisect.bisect_right(spans, stop)
    # Ends that fall inside a span (odd positions) extend [start, stop) to that span's ends.
    new_start = spans[lo - 1] if lo % 2 == 1 else start
    new_stop = spans[hi] if hi % 2 == 1 else stop
    spans[lo - (lo % 2) : hi + (hi % 2)] = [new_start, new_stop]


def _find_page(packs: list[Pack], oid: bytes) -> tuple[Pack, int] | None:
    for pack in packs:
        i = pack.find(oid)
        if i >= 0:
            return (pack, i) if pack.kind_at(i) == Kind.PAGE else None
    return None


def _age(pack: Pack) -> tuple[float, str]:
    try:
        return pack.pack_path.stat().st_mtime, pack.name
    except OSError:
        return 0.0, pack.name


def _dense(pack: Pack) -> bool:
    """Whether `pack`'s blocks are about full: copied as they are when merged."""
    return bool(pack.raw_bytes >= pack.nblocks * (BLOCK_SIZE // 2))
