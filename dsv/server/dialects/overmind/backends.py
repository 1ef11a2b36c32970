"""The Overmind Lab dialect's store for each core metadata backend: SQLite's file, or the
shared PostgreSQL database (imported only then: psycopg is an optional dependency)."""

from __future__ import annotations

from dsv.server.dialects.overmind.store import OvermindStore, SqliteOvermindStore
from dsv.server.storage import MetaStore, StorageError
from dsv.server.storage.sqlite import SqliteMetaStore

__all__ = ["open_store"]


def open_store(meta: MetaStore) -> OvermindStore:
    """The Overmind store beside `meta`; one per core backend."""
    if isinstance(meta, SqliteMetaStore):
        return SqliteOvermindStore(meta)
    if type(meta).__module__ == "dsv.server.storage.postgres":
        # Imported only here: psycopg is an optional dependency (dsv[scale]).
        from dsv.server.dialects.overmind.postgres import PostgresOvermindStore

        return PostgresOvermindStore(meta)  # type: ignore[arg-type]
    raise StorageError(f"the Overmind Lab API has no store beside a {type(meta).__name__}")
