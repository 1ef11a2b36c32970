"""Reads of the objects a server holds, decoded and cached (objects never change)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Any

from dsv.errors import CorruptObject
from dsv.manifest import join_slices
from dsv.objects import (
    OID_SIZE,
    Commit,
    Dataset,
    Kind,
    decode_commit,
    decode_dataset,
    decode_tree,
)
from dsv.server.storage import BlobStore

__all__ = ["StoredObjects"]

_CACHE_LIMIT = 262_144
_BATCH = 2048


class StoredObjects:
    """Commits, trees and dataset manifests of a blob store's repositories, decoded once."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._cache: collections.OrderedDict[tuple[str, bytes, Kind], Any] = (
            collections.OrderedDict()
        )
        self._guard = threading.Lock()

    def _decoded(self, repo: str, kind: Kind, oid: bytes) -> Any:
        key = (repo, oid, kind)
        with self._guard:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        (body,) = self.blobs.read(repo, kind, [oid])
        if kind == Kind.COMMIT:
            found = decode_commit(body, oid)
        elif kind == Kind.TREE:
            found = {e.path: e.dataset for e in decode_tree(body, oid).entries}
        else:
            found = decode_dataset(body, oid)
        with self._guard:
            # Least recently used out first: a walk of a long history must not evict itself.
            self._cache[key] = found
            while len(self._cache) > _CACHE_LIMIT:
                self._cache.popitem(last=False)
        return found

    def commit(self, repo: str, oid: bytes) -> Commit:
        found: Commit = self._decoded(repo, Kind.COMMIT, oid)
        return found

    def tree(self, repo: str, commit: bytes) -> dict[str, bytes]:
        """Path -> dataset id of a commit's tree."""
        found: dict[str, bytes] = self._decoded(repo, Kind.TREE, self.commit(repo, commit).tree)
        return found

    def dataset(self, repo: str, oid: bytes) -> Dataset:
        found: Dataset = self._decoded(repo, Kind.DATASET, oid)
        return found

    def same(self, repo: str, a: bytes, b: bytes) -> bool:
        """Do two manifests hold the same records in the same order and format?"""
        return a == b or self.dataset(repo, a).same_as(self.dataset(repo, b))

    def oids(self, repo: str, dataset_oid: bytes) -> bytes:
        """A dataset's datapoint ids, concatenated and checked against its content id."""
        dataset = self.dataset(repo, dataset_oid)
        unique = list(dict.fromkeys(s.page for s in dataset.slices))
        pages = dict(zip(unique, self.blobs.read(repo, Kind.PAGE, unique), strict=True))
        return join_slices(dataset, pages, dataset_oid)

    def datapoints(
        self, repo: str, dataset_oid: bytes, start: int = 0, stop: int = -1
    ) -> Iterator[tuple[bytes, bytes]]:
        """(id, body) of datapoints `start` to `stop`, reading only the pages that hold them."""
        dataset = self.dataset(repo, dataset_oid)
        stop = dataset.count if stop < 0 else min(stop, dataset.count)
        parts: list[tuple[bytes, int, int]] = []
        at = 0
        for s in dataset.slices:
            if at >= stop:
                break
            low, high = max(start, at), min(stop, at + s.stop - s.start)
            if low < high:
                parts.append((s.page, s.start + low - at, s.start + high - at))
            at += s.stop - s.start
        unique = list(dict.fromkeys(page for page, _, _ in parts))
        pages = dict(zip(unique, self.blobs.read(repo, Kind.PAGE, unique), strict=True))
        wanted: list[bytes] = []
        for page, low, high in parts:
            body = pages[page]
            if high * OID_SIZE > len(body):
                raise CorruptObject(f"corrupt object {dataset_oid.hex()}: slice outside its page")
            wanted.extend(
                body[i : i + OID_SIZE] for i in range(low * OID_SIZE, high * OID_SIZE, OID_SIZE)
            )
        for at in range(0, len(wanted), _BATCH):
            batch = wanted[at : at + _BATCH]
            yield from zip(batch, self.blobs.read(repo, Kind.DATAPOINT, batch), strict=True)

    def datapoint_batches(
        self, repo: str, dataset_oid: bytes, *, size: int = _BATCH
    ) -> Iterator[list[tuple[bytes, bytes]]]:
        """Every (id, body) of a dataset in order, `size` at a time.

        It holds one page of ids and one batch of bodies at once, so a reader of a dataset of
        any length costs what a batch does.
        """
        dataset = self.dataset(repo, dataset_oid)

        def read(batch: list[bytes]) -> list[tuple[bytes, bytes]]:
            return list(zip(batch, self.blobs.read(repo, Kind.DATAPOINT, batch), strict=True))

        batch: list[bytes] = []
        for s in dataset.slices:
            (body,) = self.blobs.read(repo, Kind.PAGE, [s.page])
            if s.stop * OID_SIZE > len(body):
                raise CorruptObject(f"corrupt object {dataset_oid.hex()}: slice outside its page")
            for i in range(s.start * OID_SIZE, s.stop * OID_SIZE, OID_SIZE):
                batch.append(body[i : i + OID_SIZE])
                if len(batch) >= size:
                    yield list(
                        zip(batch, self.blobs.read(repo, Kind.DATAPOINT, batch), strict=True)
                    )
                    batch = []
        if batch:
            yield read(batch)
