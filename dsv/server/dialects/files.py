"""What the dialects without owners in their paths share (orq.ai, TensorZero): the request's
repository, its datasets as `.jsonl` files, reads of their ids, and writes as commits.

Writes go through the Humanloop dialect's machinery (`HumanloopService.write_tree`:
compare-and-swap on the default branch, retried when a push moved it, one write a repository
at a time for the whole process), under the dialect's own name.
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Callable, Iterator

from dsv.objects import OID_SIZE
from dsv.server.dialects import Mount
from dsv.server.dialects.humanloop.history import Versions
from dsv.server.dialects.humanloop.service import HumanloopService, Sink
from dsv.server.dialects.humanloop.store import DatasetRecord, HumanloopStore
from dsv.server.dialects.humanloop.types import not_found
from dsv.server.dialects.ownerless import repo_for
from dsv.server.keys import authenticate, permit
from dsv.server.storage import KeyRecord

__all__ = ["FileDatasets", "OidIndex"]

# Datasets whose sorted id list a cursor or id lookup keeps (40 bytes an id): a pager walks
# one dataset at a time.
_OIDS_CACHED = 8


class OidIndex:
    """A dataset's datapoint ids, sorted once, so the position of an id (or of the ids that
    start with a prefix) is a binary search: a deep cursor costs what the first page does."""

    def __init__(self, oids: bytes) -> None:
        import pyarrow as pa  # here: only a server with these dialects in use needs it
        import pyarrow.compute as pc

        self.oids = oids
        count = len(oids) // OID_SIZE
        column = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(OID_SIZE), count, [None, pa.py_buffer(oids)]
        )
        self._count = count
        self._order = memoryview(b"").cast("Q")
        if count:
            # A stable sort: equal ids (copies of one datapoint) stay in file order.
            order = pc.sort_indices(column)
            values = memoryview(order.buffers()[1]).cast("Q")
            self._order = values[order.offset : order.offset + count]

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, rank: int) -> bytes:
        at = self._order[rank] * OID_SIZE
        return self.oids[at : at + OID_SIZE]

    def positions(self, prefix: bytes) -> Iterator[tuple[int, bytes]]:
        """(position, id) of every id that starts with `prefix`, in id order (copies of one
        id in file order)."""
        rank = bisect.bisect_left(self, prefix)
        while rank < self._count:
            oid = self[rank]
            if not oid.startswith(prefix):
                break
            yield self._order[rank], oid
            rank += 1

    def position(self, oid: bytes) -> int:
        """Where the first copy of `oid` sits; -1 if the dataset lacks it."""
        return next((at for at, _ in self.positions(oid)), -1)


class FileDatasets:
    """A dialect's view of the request's repository: datasets are its `.jsonl` files."""

    # Sorted ids by (repository, dataset id), shared by the dialects: a dataset's content id
    # names its ids, so an index never goes stale.
    _guard = threading.Lock()
    _indexes: collections.OrderedDict[tuple[str, bytes], OidIndex] = collections.OrderedDict()

    def __init__(self, mount: Mount, store: HumanloopStore, *, api: str) -> None:
        self.mount = mount
        self.api = api
        self.core = HumanloopService(
            mount.objects,
            mount.meta,
            store,
            tmp_dir=mount.tmp_dir,
            auth=mount.auth,
            environments=mount.environments,
            api=api,
        )
        self.objects = mount.objects
        self.store = store

    def authenticate(self, key: str | None) -> KeyRecord | None:
        """The caller's key record (None on a server without auth); 401 without a valid key."""
        return authenticate(self.mount.meta, key) if self.mount.auth else None

    def repo(self, caller: KeyRecord | None, *, write: bool) -> str:
        """The caller's repository (docs/dialects.md); 403 for a read key writing."""
        repo = repo_for(self.mount, caller)
        if caller is not None:
            permit(caller, repo, write=write)
        return repo

    def index_of(self, repo: str, dataset: bytes) -> OidIndex:
        """A dataset's datapoint ids, sorted for lookups; the last few read are kept."""
        key = (repo, dataset)
        with self._guard:
            found = self._indexes.get(key)
            if found is not None:
                self._indexes.move_to_end(key)
                return found
        made = OidIndex(self.objects.oids(repo, dataset))
        with self._guard:
            self._indexes[key] = made
            while len(self._indexes) > _OIDS_CACHED:
                self._indexes.popitem(last=False)
        return made

    def change(
        self,
        caller: KeyRecord | None,
        record: DatasetRecord,
        change: Callable[[bytes], bytes | None],
        bodies: dict[bytes, bytes],
        what: str,
    ) -> Versions:
        """Commit the dataset with `change(its current ids)` as its ids (None or the same ids:
        nothing is written); `bodies` are the new datapoints. Returns its versions after."""
        repo = self.repo(caller, write=True)
        with self.core.locked(repo):

            def build(tree: dict[str, bytes], sink: Sink) -> tuple[dict[str, bytes], str] | None:
                current = tree.get(record.path)
                if current is None:
                    raise not_found(f"Dataset {record.path} not found")
                current_oids = self.objects.oids(record.repo, current)
                result = change(current_oids)
                if result is None or result == current_oids:
                    return None
                base = self.objects.dataset(record.repo, current)
                tree[record.path] = self.core.new_dataset(sink, result, bodies, base, current_oids)
                return tree, f"{what} in {record.path} ({self.api})"

            self.core.write_tree(
                record.repo, caller, build, reason=f"{self.api}: {what} in {record.path}"
            )
            return self.core.versions_of(record)
