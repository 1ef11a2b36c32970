"""Dataset manifests: ordered datapoint ids kept in pages, reused across versions (format.md §3)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Protocol

from dsv.errors import CorruptObject
from dsv.objects import (
    OID_SIZE,
    Dataset,
    Format,
    Kind,
    Slice,
    content_hasher,
    content_id,
    encode_object,
    split_oids,
)
from dsv.store import ObjectStore


class ObjectSink(Protocol):
    """Where a new manifest's objects go: a local ObjectWriter, or a server's pending pack."""

    def write(self, kind: Kind, body: bytes) -> bytes: ...


__all__ = [
    "PAGE_MAX",
    "PAGE_MIN",
    "ObjectSink",
    "Runs",
    "build_dataset",
    "check_slices",
    "chunk_pages",
    "iter_datapoint_oids",
    "iter_oids",
    "join_slices",
    "read_oid_list",
]

# Content-defined page boundaries: a page ends after an id whose first 12 bits are zero
# (1 in 4096), clamped to [PAGE_MIN, PAGE_MAX] ids. Boundaries depend only on nearby ids,
# so equal runs of ids in different versions fall into equal, shared pages.
PAGE_MIN = 512
PAGE_MAX = 16384
# A manifest whose slices cost more than a quarter of its id list is rewritten as fresh pages.
_COMPACT_RATIO = 4
_SLICE_COST = 48
_STRIDE = 16


def chunk_pages(oids: bytes) -> list[bytes]:
    """Split an id list into content-defined pages."""
    n = len(oids) // OID_SIZE
    # Every id's first and second bytes, sliced out at C speed, so that only the 1 in 256 ids
    # that start with a zero byte take a Python step.
    firsts = oids[::OID_SIZE]
    seconds = oids[1::OID_SIZE]
    pages: list[bytes] = []
    start = 0
    i = firsts.find(0)
    while i >= 0:
        end = i + 1
        i = firsts.find(0, end)
        if seconds[end - 1] >= 16:
            continue
        while end - start > PAGE_MAX:
            pages.append(oids[start * OID_SIZE : (start + PAGE_MAX) * OID_SIZE])
            start += PAGE_MAX
        if end - start >= PAGE_MIN:
            pages.append(oids[start * OID_SIZE : end * OID_SIZE])
            start = end
    while n - start >= PAGE_MAX:
        pages.append(oids[start * OID_SIZE : (start + PAGE_MAX) * OID_SIZE])
        start += PAGE_MAX
    if start < n:
        pages.append(oids[start * OID_SIZE :])
    return pages


def _fresh_slices(writer: ObjectSink, oids: bytes) -> list[Slice]:
    slices = []
    for page in chunk_pages(oids):
        page_oid = writer.write(Kind.PAGE, page)
        slices.append(Slice(page_oid, 0, len(page) // OID_SIZE))
    return slices


Runs = list[tuple[bool, int, int]]  # (from the base?, start there or in the fresh ids, length)


def _runs(new: bytes, old: bytes) -> tuple[Runs, bytes]:
    """Cover `new` with runs of `old` positions (True) or of a buffer of unseen ids (False)."""
    n_old = len(old) // OID_SIZE
    keys = split_oids(old)
    # Built backwards so that a repeated id maps to its first position.
    first = dict(zip(reversed(keys), range(n_old - 1, -1, -1), strict=True))
    runs: Runs = []
    fresh = bytearray()
    from_old = False
    start = length = 0
    next_old = -1
    j = 0
    total = len(new)
    stride = _STRIDE * OID_SIZE
    while j < total:
        if length and from_old:
            # Inside a run of old ids: a new version mostly copies long runs, so whole
            # strides are compared before falling back to one id at a time.
            at = next_old * OID_SIZE
            while j + stride <= total and new[j : j + stride] == old[at : at + stride]:
                j += stride
                at += stride
                length += _STRIDE
                next_old += _STRIDE
            if j >= total:
                break
            if next_old < n_old and new[j : j + OID_SIZE] == old[at : at + OID_SIZE]:
                length += 1
                next_old += 1
                j += OID_SIZE
                continue
        oid = new[j : j + OID_SIZE]
        j += OID_SIZE
        found = first.get(oid)
        if found is not None:
            if length:
                runs.append((from_old, start, length))
            from_old, start, length, next_old = True, found, 1, found + 1
            continue
        if length and not from_old:
            length += 1
        else:
            if length:
                runs.append((from_old, start, length))
            from_old, start, length = False, len(fresh) // OID_SIZE, 1
        fresh += oid
    if length:
        runs.append((from_old, start, length))
    return runs, bytes(fresh)


def _rebuilds(runs: tuple[Runs, bytes], base_oids: bytes, oids: bytes) -> bool:
    """Do `runs` over the base's and the fresh ids give exactly `oids`? (A few ms at 100k,
    against a manifest that would otherwise only be caught wrong when read.)"""
    spans, fresh = runs
    parts = []
    for from_base, start, length in spans:
        source = base_oids if from_base else fresh
        parts.append(source[start * OID_SIZE : (start + length) * OID_SIZE])
    return b"".join(parts) == oids


def _map_runs(runs: Runs, which: bool, slices: list[Slice]) -> dict[int, list[Slice]]:
    """Translate runs over a concatenation of `slices` into slices of their pages."""
    starts = []
    total = 0
    for s in slices:
        starts.append(total)
        total += s.stop - s.start
    out: dict[int, list[Slice]] = {}
    for r, (src, pos, length) in enumerate(runs):
        if src != which:
            continue
        parts = []
        while length:
            k = bisect.bisect_right(starts, pos) - 1
            s = slices[k]
            off = pos - starts[k]
            take = min(length, s.stop - s.start - off)
            parts.append(Slice(s.page, s.start + off, s.start + off + take))
            pos += take
            length -= take
        out[r] = parts
    return out


def build_dataset(
    writer: ObjectSink,
    oids: bytes,
    fmt: Format,
    key: tuple[str, ...] = (),
    *,
    base: Dataset | None = None,
    base_oids: bytes | None = None,
    runs: tuple[Runs, bytes] | None = None,
) -> tuple[bytes, Dataset]:
    """Write the manifest of a dataset whose datapoints (already stored) are `oids`.

    With a `base` version, runs of ids it shares with the base point into the base's pages,
    so the bytes written grow with the change, not with the dataset. `runs` (with the fresh
    ids they refer to) may say where those runs are, when the caller already knows.
    """
    count = len(oids) // OID_SIZE
    content = content_id(oids)
    if base is not None and base.content == content:
        slices = list(base.slices)
    elif base is not None and base_oids is not None and base.count:
        if runs is None or not _rebuilds(runs, base_oids, oids):
            runs = _runs(oids, base_oids)
        runs_, fresh = runs
        fresh_slices = _fresh_slices(writer, fresh) if fresh else []
        old_parts = _map_runs(runs_, True, list(base.slices))
        new_parts = _map_runs(runs_, False, fresh_slices)
        slices = []
        for r in range(len(runs_)):
            for part in old_parts.get(r) or new_parts[r]:
                last = slices[-1] if slices else None
                if last is not None and last.page == part.page and last.stop == part.start:
                    slices[-1] = Slice(last.page, last.start, part.stop)
                else:
                    slices.append(part)
        if len(slices) > 16 and len(slices) * _SLICE_COST * _COMPACT_RATIO > len(oids):
            slices = _fresh_slices(writer, oids)
    else:
        slices = _fresh_slices(writer, oids)
    dataset = Dataset(format=fmt, key=key, count=count, content=content, slices=tuple(slices))
    return writer.write(Kind.DATASET, encode_object(dataset)), dataset


def read_oid_list(store: ObjectStore, dataset: Dataset) -> bytes:
    """The dataset's datapoint ids, concatenated, checked against its content id."""
    unique = list(dict.fromkeys(s.page for s in dataset.slices))
    return join_slices(dataset, {oid: store.read_body(oid, Kind.PAGE) for oid in unique})


def join_slices(dataset: Dataset, pages: Mapping[bytes, bytes], oid: bytes | None = None) -> bytes:
    """The ids `dataset`'s slices of `pages` give; CorruptObject unless they match its content."""
    check_slices(dataset, pages, oid)
    return b"".join([pages[s.page][s.start * OID_SIZE : s.stop * OID_SIZE] for s in dataset.slices])


def check_slices(dataset: Dataset, pages: Mapping[bytes, bytes], oid: bytes | None = None) -> None:
    """CorruptObject unless `dataset`'s slices of `pages` give its content: the slices are
    hashed where they lie, not joined (a server checking a pushed 1M dataset had held its
    32 MB of ids twice over)."""
    what = f"corrupt object {oid.hex()}" if oid else "corrupt dataset manifest"
    hasher = content_hasher()
    total = 0
    for s in dataset.slices:
        page = pages[s.page]
        if s.stop * OID_SIZE > len(page) or s.start > s.stop:
            raise CorruptObject(f"{what}: slice outside its page {s.page.hex()}")
        hasher.update(memoryview(page)[s.start * OID_SIZE : s.stop * OID_SIZE])
        total += s.stop - s.start
    if total != dataset.count or hasher.digest() != dataset.content:
        raise CorruptObject(f"{what}: its pages do not give its content id")


def iter_datapoint_oids(store: ObjectStore, dataset: Dataset) -> Iterator[bytes]:
    """The dataset's datapoint ids one by one, checked against its content id before the first
    is given, holding one page at a time (a million ids are 32 MB joined)."""
    what = "corrupt dataset manifest"
    hasher = content_hasher()
    total = 0
    for s, page in _slice_pages(store, dataset):
        if s.stop * OID_SIZE > len(page) or s.start > s.stop:
            raise CorruptObject(f"{what}: slice outside its page {s.page.hex()}")
        hasher.update(page[s.start * OID_SIZE : s.stop * OID_SIZE])
        total += s.stop - s.start
    if total != dataset.count or hasher.digest() != dataset.content:
        raise CorruptObject(f"{what}: its pages do not give its content id")
    for s, page in _slice_pages(store, dataset):
        for i in range(s.start * OID_SIZE, s.stop * OID_SIZE, OID_SIZE):
            yield page[i : i + OID_SIZE]


def _slice_pages(store: ObjectStore, dataset: Dataset) -> Iterator[tuple[Slice, bytes]]:
    """Each slice of `dataset` with its page, read once per run of slices of one page."""
    page_oid, page = b"", b""
    for s in dataset.slices:
        if s.page != page_oid:
            page_oid, page = s.page, store.read_body(s.page, Kind.PAGE)
        yield s, page


def iter_oids(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), OID_SIZE):
        yield data[i : i + OID_SIZE]
