"""dsv.server.storage.stored: the server's decoded reads, in particular a range of a dataset's
datapoints read from only the pages that hold them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsv.canonical import canonicalize
from dsv.errors import CorruptObject
from dsv.manifest import build_dataset
from dsv.objects import Format, Kind, hash_object
from dsv.pack import PackWriter
from dsv.server.storage.local import LocalBlobStore
from dsv.server.storage.stored import StoredObjects

REPO = "acme/evals"


class Collect:
    def __init__(self) -> None:
        self.objects: dict[bytes, tuple[Kind, bytes]] = {}

    def write(self, kind: Kind, body: bytes) -> bytes:
        oid = hash_object(kind, body)
        self.objects[oid] = (kind, body)
        return oid


def store(tmp_path: Path, blobs: LocalBlobStore, objects: dict[bytes, tuple[Kind, bytes]]) -> None:
    writer = PackWriter(tmp_path)
    for oid, (kind, body) in objects.items():
        writer.add(kind, oid, body)
    prepared = writer.prepare()
    assert prepared is not None
    blobs.put_pack(REPO, prepared)


def test_a_range_of_datapoints_spans_slices_of_shared_pages(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "root")
    sink = Collect()
    bodies = [canonicalize(f'{{"i": {i}}}'.encode()) for i in range(3000)]
    oids = [sink.write(Kind.DATAPOINT, b) for b in bodies]
    first, base = build_dataset(sink, b"".join(oids), Format("jsonl"))
    # A second version reuses runs of the first's pages: several slices, some of one page.
    new = sink.write(Kind.DATAPOINT, b'{"i":"new"}')
    edited = [*oids[:1000], new, *oids[1500:], *oids[:10]]
    second, dataset = build_dataset(
        sink, b"".join(edited), Format("jsonl"), base=base, base_oids=b"".join(oids)
    )
    assert len(dataset.slices) > 2
    store(tmp_path, blobs, sink.objects)
    objects = StoredObjects(blobs)
    assert objects.oids(REPO, second) == b"".join(edited)
    for start, stop in ((0, 5), (995, 1005), (2490, 2600), (2495, 10**6), (7, 7)):
        got = list(objects.datapoints(REPO, second, start, stop))
        assert [oid for oid, _ in got] == edited[start:stop]
        assert all(hash_object(Kind.DATAPOINT, body) == oid for oid, body in got)
    assert objects.same(REPO, first, first) and not objects.same(REPO, first, second)
    blobs.close()


def test_a_slice_outside_its_page_is_corrupt(tmp_path: Path) -> None:
    from dsv.objects import Dataset, Slice, content_id, encode_object

    blobs = LocalBlobStore(tmp_path / "root")
    sink = Collect()
    point = sink.write(Kind.DATAPOINT, b'{"i":1}')
    page = sink.write(Kind.PAGE, point)
    bad = Dataset(Format("jsonl"), (), 2, content_id(point * 2), (Slice(page, 0, 2),))
    oid = sink.write(Kind.DATASET, encode_object(bad))
    store(tmp_path, blobs, sink.objects)
    objects = StoredObjects(blobs)
    with pytest.raises(CorruptObject, match="slice outside its page"):
        list(objects.datapoints(REPO, oid))
    with pytest.raises(CorruptObject, match="slice outside its page"):
        objects.oids(REPO, oid)
    blobs.close()


def test_datapoint_batches_give_every_datapoint_in_order_a_batch_at_a_time(
    tmp_path: Path,
) -> None:
    blobs = LocalBlobStore(tmp_path / "root")
    sink = Collect()
    oids = [sink.write(Kind.DATAPOINT, canonicalize(b'{"i": %d}' % i)) for i in range(3000)]
    _, base = build_dataset(sink, b"".join(oids), Format("jsonl"))
    new = sink.write(Kind.DATAPOINT, b'{"i":"new"}')
    edited = [*oids[:1000], new, *oids[1500:], *oids[:10]]
    second, dataset = build_dataset(
        sink, b"".join(edited), Format("jsonl"), base=base, base_oids=b"".join(oids)
    )
    assert len(dataset.slices) > 2  # batches run across slices of several pages
    store(tmp_path, blobs, sink.objects)
    objects = StoredObjects(blobs)
    batches = list(objects.datapoint_batches(REPO, second, size=7))
    assert [len(b) for b in batches[:-1]] == [7] * (len(batches) - 1) and 0 < len(batches[-1]) <= 7
    got = [pair for batch in batches for pair in batch]
    assert [oid for oid, _ in got] == edited
    assert all(hash_object(Kind.DATAPOINT, body) == oid for oid, body in got)
    empty, _ = build_dataset(sink, b"", Format("jsonl"))
    store(tmp_path, blobs, sink.objects)
    assert list(objects.datapoint_batches(REPO, empty)) == []
    blobs.close()
