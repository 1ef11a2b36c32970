"""Server-side storage: a blob store for objects and a ref and metadata store.

The server speaks only to these two interfaces, so an S3 blob store or a PostgreSQL metadata
store can replace the embedded ones (`local`: a dsv object store per repository; `sqlite`);
tests/server/test_storage.py is the contract both pass. A dialect keeps its own metadata
behind an interface of its own (dsv.server.dialects.humanloop.store), not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import msgspec

from dsv.errors import BadInput, BadState
from dsv.objects import Kind
from dsv.pack import PackWriter, PreparedPack

__all__ = [
    "META_FILE",
    "RESERVED_OWNER",
    "BlobStore",
    "KeyRecord",
    "MetaStore",
    "RefChange",
    "RefConflict",
    "RefLogRecord",
    "RepoRecord",
    "Scope",
    "StorageError",
    "check_repo_name",
    "open_meta",
    "open_storage",
    "publish_pack",
]

Scope = Literal["read", "write"]
# No repository has this owner: `/v1/datasets/NAME/…` are the TensorZero dialect's routes.
RESERVED_OWNER = "datasets"
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_repo_name(repo: str) -> str:
    """`OWNER/NAME`, each part letters, digits, `.`, `_`, `-`, not starting with a symbol."""
    parts = repo.split("/")
    if len(parts) != 2 or not all(
        _REPO_PART.fullmatch(p) and not p.endswith((".lock", ".")) for p in parts
    ):
        # A hostile name can be kilobytes long; quote enough of it to recognise.
        shown = repr(repo) if len(repo) <= 80 else repr(repo[:80]) + "…"
        raise BadInput(
            f"invalid repository name {shown}",
            hint="use OWNER/NAME: letters, digits, '.', '_' and '-', starting with a letter "
            "or digit",
        )
    if parts[0] == RESERVED_OWNER:
        raise BadInput(
            f"invalid repository name {repo!r}: the owner {RESERVED_OWNER!r} is reserved, "
            f"since /v1/{RESERVED_OWNER}/… is the TensorZero API's (docs/dialects.md)",
            hint="choose another owner name",
        )
    return repo


class StorageError(BadState):
    """The storage under the server failed (disk, database)."""


class RefConflict(BadState):
    """A compare-and-swap found `name` at `current`, not at the expected value."""

    def __init__(self, name: str, current: bytes | None) -> None:
        shown = current.hex()[:12] if current else "nothing"
        super().__init__(f"ref {name} is at {shown}, not where this update expected")
        self.name = name
        self.current = current


class RefChange(msgspec.Struct, frozen=True):
    """Move `name` from `old` (None: must not exist) to `new` (None: delete it)."""

    name: str
    old: bytes | None
    new: bytes | None


class RefLogRecord(msgspec.Struct, frozen=True):
    """One ref move; a deletion is logged with `new` = ZERO_OID, as in a local ref log."""

    name: str
    old: bytes | None
    new: bytes
    time: int
    user: str
    reason: str


class RepoRecord(msgspec.Struct, frozen=True):
    name: str
    head: str | None
    created: int


class KeyRecord(msgspec.Struct, frozen=True):
    """An API key as stored: its public id, the SHA-256 of the key, never the key itself."""

    id: str
    digest: bytes
    scope: Scope
    repo: str | None
    created: int
    revoked: int | None = None
    note: str = ""


# -- the interfaces ------------------------------------------------------------------------------


class BlobStore(Protocol):
    """Write-once objects of every repository; packs arrive already verified."""

    def missing(self, repo: str, oids: Iterable[bytes]) -> set[bytes]:
        """Which of `oids` the repository lacks (all of them if it does not exist)."""
        ...

    def read(self, repo: str, kind: Kind, oids: Sequence[bytes]) -> list[bytes]:
        """Bodies of `oids`, in order, each re-hashed; CorruptObject if one is missing."""
        ...

    def copy_objects(
        self,
        repo: str,
        kind: Kind,
        oids: Sequence[bytes],
        writer: PackWriter,
        *,
        extra: bool = False,
    ) -> None:
        """Add `oids` (all held) to `writer` in order, copying whole stored blocks as they are;
        with `extra`, also blocks mostly asked, with their other objects (`plan_copy`)."""
        ...

    def put_pack(self, repo: str, pack: PreparedPack) -> None:
        """Make a complete pack and its index part of the repository, idx last; takes the files."""
        ...

    def health(self) -> None:
        """Raise StorageError unless the store can be read now (`/healthz`)."""
        ...

    def close(self) -> None: ...


class MetaStore(Protocol):
    """Repositories, their refs and ref logs, and API keys."""

    def get_repo(self, repo: str) -> RepoRecord | None: ...

    def create_repo(self, repo: str) -> None:
        """Create `repo` unless it exists."""
        ...

    def list_repos(self) -> list[RepoRecord]: ...

    def list_refs(self, repo: str) -> dict[str, bytes]: ...

    def update_refs(
        self,
        repo: str,
        changes: Sequence[RefChange],
        *,
        user: str,
        reason: str,
        head: str | None = None,
    ) -> None:
        """Apply every change or none: each ref must be at its `old`, else RefConflict.

        `head` becomes the repository's default branch if it has none yet.
        """
        ...

    def ref_log(self, repo: str, name: str) -> list[RefLogRecord]: ...

    def add_key(self, record: KeyRecord) -> None: ...

    def key_by_digest(self, digest: bytes) -> KeyRecord | None: ...

    def list_keys(self) -> list[KeyRecord]: ...

    def revoke_key(self, key_id: str) -> bool:
        """Revoke key `key_id`; False if there is no such key or it was revoked already."""
        ...

    def locked(self, repo: str) -> AbstractContextManager[None]:
        """Hold `repo`'s write lock until the block ends, against every server sharing this
        store (a thread may take it again inside): an API write's checks hold until it lands."""
        ...

    def health(self) -> None:
        """Raise StorageError unless the store answers now (`/healthz`)."""
        ...

    def close(self) -> None: ...


META_FILE = "meta.sqlite3"


def open_storage(
    root: Path, *, objects: str | None = None, meta: str | None = None
) -> tuple[BlobStore, MetaStore]:
    """A server's storage: embedded under `root` (objects in `repos/`, the rest in SQLite)
    unless `objects` names an S3 location (`s3://BUCKET/PREFIX`; `root` then holds the read
    cache) or `meta` a PostgreSQL database (a `postgresql://` DSN)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {root}: {exc.strerror}") from exc
    blobs: BlobStore
    if objects is None:
        from dsv.server.storage.local import LocalBlobStore

        blobs = LocalBlobStore(root)
    else:
        _need_scale("s3://")
        from dsv.server.storage.s3 import S3BlobStore

        blobs = S3BlobStore(objects, root / "cache")
    try:
        return blobs, open_meta(root, meta)
    except BaseException:
        blobs.close()
        raise


def open_meta(root: Path | None, dsn: str | None = None) -> MetaStore:
    """The metadata store (repositories, refs, keys): PostgreSQL at `dsn`, else the embedded
    SQLite file under `root`, the one place that names that file."""
    if dsn is not None:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise BadInput(
                "invalid metadata store: give a postgresql:// DSN",
                hint="e.g. postgresql://dsv@db.internal/dsv; a password is best left to "
                "PGPASSWORD or ~/.pgpass",
            )
        _need_scale("postgresql://")
        from dsv.server.storage.postgres import PostgresMetaStore

        return PostgresMetaStore(dsn)
    if root is None:
        raise BadInput("no metadata store", hint="give --root DIR or --meta postgresql://…")
    from dsv.server.storage.sqlite import SqliteMetaStore

    return SqliteMetaStore(root / META_FILE)


def _need_scale(what: str) -> None:
    """A clear error when the optional dependencies of the shared stores are missing."""
    import importlib.util

    module = "obstore" if what == "s3://" else "psycopg_pool"
    if importlib.util.find_spec(module) is None:
        raise BadState(
            f"{what} storage needs the {module} package, which is not installed",
            hint="pip install 'dsv[scale]'",
        )


T = TypeVar("T")


def publish_pack(
    blobs: BlobStore, meta: MetaStore, tmp_dir: Any, repo: str, fill: Callable[[PackWriter], T]
) -> T:
    """Let `fill` write a pack, then store it in `repo`, creating the repository: all or
    nothing, so a `fill` that raises leaves neither a pack nor a repository behind."""
    writer = PackWriter(tmp_dir)
    try:
        result = fill(writer)
        prepared = writer.prepare()
    except BaseException:
        writer.abort()
        raise
    meta.create_repo(repo)
    if prepared is not None:
        blobs.put_pack(repo, prepared)
    return result
