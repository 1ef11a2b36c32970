"""The embedded blob store: one dsv object store per repository, under the server's root."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from dsv.fsutil import fsync_dir
from dsv.objects import Kind
from dsv.pack import PackWriter, PreparedPack
from dsv.server.storage import StorageError, check_repo_name
from dsv.store import ObjectStore

__all__ = ["LocalBlobStore"]


class LocalBlobStore:
    """Objects of `OWNER/NAME` in `ROOT/repos/OWNER/NAME/objects`, laid out as in format.md §4."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stores: dict[str, tuple[ObjectStore, threading.Lock]] = {}
        self._guard = threading.Lock()

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
            # Every push leaves a pack: merge the small ones as they pile up, or a busy
            # repository's reads would try hundreds of packs for each object.
            store.tidy()

    def health(self) -> None:
        try:
            self.root.stat()
        except OSError as exc:
            raise StorageError(f"object storage {self.root}: {exc.strerror}") from exc

    def close(self) -> None:
        with self._guard:
            for store, _ in self._stores.values():
                store.close()
            self._stores.clear()
