"""One local repository as server storage, for `dsv ui`: its object store and its refs.

The web view reads through `BlobStore` and `MetaStore` only, so the pages of a server root
are also the pages of a working repository. It has no keys (`dsv ui` listens on loopback
only, without auth), and ref moves are compare-and-swap under the repository's lock, as the
CLI's are.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from dsv.errors import BadInput
from dsv.refs import BRANCHES, ENVS, MISSING, TAGS
from dsv.repo import Repository
from dsv.server.storage import (
    KeyRecord,
    RefChange,
    RefConflict,
    RefLogRecord,
    RepoRecord,
    StorageError,
    check_repo_name,
)
from dsv.server.storage.local import LocalBlobStore

__all__ = ["RepoBlobStore", "RepoMetaStore", "local_name"]


def local_name(repo: Repository) -> str:
    """`local/DIR`: the name a local repository has in the web view's URLs."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", repo.root.name).strip("-.") or "repository"
    if not name[0].isalnum():
        name = "r" + name
    return check_repo_name(f"local/{name[:100].rstrip('.')}")


class RepoBlobStore(LocalBlobStore):
    """The objects of one local repository, under its one name."""

    def __init__(self, repo: Repository) -> None:
        super().__init__(repo.dsv_dir)
        self.name = local_name(repo)
        self.objects_dir = repo.dsv_dir / "objects"

    def _objects_dir(self, repo: str) -> Path:
        if repo != self.name:
            raise BadInput(f"no repository {repo} here; this is {self.name}")
        return self.objects_dir


class RepoMetaStore:
    """The refs of one local repository; no keys."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.name = local_name(repo)
        self._lock = threading.RLock()

    def get_repo(self, repo: str) -> RepoRecord | None:
        if repo != self.name:
            return None
        return RepoRecord(self.name, self.repo.refs.symbolic_target("HEAD"), 0)

    def create_repo(self, repo: str) -> None:
        if repo != self.name:
            raise BadInput(f"no repository {repo} here; this is {self.name}")

    def list_repos(self) -> list[RepoRecord]:
        record = self.get_repo(self.name)
        return [record] if record else []

    def list_refs(self, repo: str) -> dict[str, bytes]:
        if repo != self.name:
            return {}
        refs = self.repo.refs
        return {n: oid for p in (BRANCHES, TAGS, ENVS) for n, oid in refs.list_refs(p)}

    def update_refs(
        self,
        repo: str,
        changes: Sequence[RefChange],
        *,
        user: str,
        reason: str,
        head: str | None = None,
    ) -> None:
        self.create_repo(repo)
        refs = self.repo.refs
        with self.repo.lock():
            for change in changes:
                current = refs.read(change.name)
                if current != change.old:
                    raise RefConflict(change.name, current)
            for change in changes:
                if change.new is None:
                    refs.delete(change.name, expected=change.old, user=user, reason=reason)
                else:
                    refs.update(
                        change.name, change.new, expected=change.old or MISSING,
                        user=user, reason=reason, deref=False,
                    )  # fmt: skip

    def ref_log(self, repo: str, name: str) -> list[RefLogRecord]:
        if repo != self.name:
            return []
        return [
            RefLogRecord(name, e.old if any(e.old) else None, e.new, e.time, e.user, e.reason)
            for e in self.repo.refs.read_log(name)
        ]

    def add_key(self, record: KeyRecord) -> None:
        raise BadInput("dsv ui has no keys: it serves one local repository on loopback")

    def key_by_digest(self, digest: bytes) -> KeyRecord | None:
        return None

    def list_keys(self) -> list[KeyRecord]:
        return []

    def revoke_key(self, key_id: str) -> bool:
        return False

    @contextlib.contextmanager
    def locked(self, repo: str) -> Iterator[None]:
        """The one repository's write lock, of this process: `dsv ui` is one process."""
        with self._lock:
            yield

    def health(self) -> None:
        if not self.repo.dsv_dir.is_dir():
            raise StorageError(f"the repository {self.repo.dsv_dir} is gone")

    def close(self) -> None:
        self.repo.close()
