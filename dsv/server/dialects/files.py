"""What the dialects without owners in their paths share (orq.ai, TensorZero): the request's
repository, its datasets as `.jsonl` files, reads of their ids, and writes as commits.

Writes go through the Humanloop dialect's machinery (`HumanloopService.write_tree`:
compare-and-swap on the default branch, retried when a push moved it, one write a repository
at a time for the whole process), under the dialect's own name.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from dsv.objects import OID_SIZE
from dsv.server.dialects import Mount
from dsv.server.dialects.humanloop.history import Versions
from dsv.server.dialects.humanloop.service import HumanloopService, Sink
from dsv.server.dialects.humanloop.store import DatasetRecord, HumanloopStore
from dsv.server.dialects.humanloop.types import not_found
from dsv.server.dialects.ownerless import repo_for
from dsv.server.keys import authenticate, permit
from dsv.server.storage import KeyRecord

__all__ = ["FileDatasets", "find_oid"]

# Datasets whose id list a cursor or id lookup keeps: a pager walks one dataset at a time.
_OIDS_CACHED = 8


def find_oid(oids: bytes, prefix: bytes, start: int = 0) -> int:
    """The position of the first id in `oids` (concatenated ids) from `start` that begins
    with `prefix`, or -1; found by a byte search, so a deep position costs a scan in C."""
    at = oids.find(prefix, start * OID_SIZE)
    # A match must start on an id's boundary, not inside two neighbouring ids.
    while at >= 0 and at % OID_SIZE:
        at = oids.find(prefix, at + 1)
    return at // OID_SIZE if at >= 0 else -1


class FileDatasets:
    """A dialect's view of the request's repository: datasets are its `.jsonl` files."""

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
        self._guard = threading.Lock()
        self._oids: collections.OrderedDict[tuple[str, bytes], bytes] = collections.OrderedDict()

    def authenticate(self, key: str | None) -> KeyRecord | None:
        """The caller's key record (None on a server without auth); 401 without a valid key."""
        return authenticate(self.mount.meta, key) if self.mount.auth else None

    def repo(self, caller: KeyRecord | None, *, write: bool) -> str:
        """The caller's repository (docs/dialects.md); 403 for a read key writing."""
        repo = repo_for(self.mount, caller)
        if caller is not None:
            permit(caller, repo, write=write)
        return repo

    def oids_of(self, repo: str, dataset: bytes) -> bytes:
        """A dataset's datapoint ids, concatenated; the last few read are kept."""
        key = (repo, dataset)
        with self._guard:
            found = self._oids.get(key)
            if found is not None:
                self._oids.move_to_end(key)
                return found
        found = self.objects.oids(repo, dataset)
        with self._guard:
            self._oids[key] = found
            while len(self._oids) > _OIDS_CACHED:
                self._oids.popitem(last=False)
        return found

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
