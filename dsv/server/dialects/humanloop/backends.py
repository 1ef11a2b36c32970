"""The Humanloop dialect's store for each core metadata backend: SQLite's file, or the
shared PostgreSQL database (imported only then: psycopg is an optional dependency)."""

from __future__ import annotations

from dsv.server.dialects.humanloop.store import HumanloopStore, SqliteHumanloopStore
from dsv.server.storage import MetaStore, StorageError
from dsv.server.storage.sqlite import SqliteMetaStore

__all__ = ["open_store"]


def open_store(meta: MetaStore) -> HumanloopStore:
    """The Humanloop store beside `meta`; one per core backend."""
    if isinstance(meta, SqliteMetaStore):
        return SqliteHumanloopStore(meta)
    if type(meta).__module__ == "dsv.server.storage.postgres":
        # Imported only here: psycopg is an optional dependency (dsv[scale]).
        from dsv.server.dialects.humanloop.postgres import PostgresHumanloopStore

        return PostgresHumanloopStore(meta)  # type: ignore[arg-type]
    raise StorageError(f"the Humanloop API has no store beside a {type(meta).__name__}")
