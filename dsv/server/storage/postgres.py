"""The shared metadata store: repositories, refs, ref logs and keys in PostgreSQL.

Any number of `dsv serve` processes may share one database: a ref update takes the
repository's transaction-scoped advisory lock before it compares, so compare-and-swap is exact
across processes; `locked` holds a repository's write lock for a dialect's checks across
processes; keys are read on every request, so a revocation holds everywhere at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool

from dsv.objects import ZERO_OID
from dsv.server.storage import (
    KeyRecord,
    RefChange,
    RefConflict,
    RefLogRecord,
    RepoRecord,
    StorageError,
    check_repo_name,
)

__all__ = ["CORE_MIGRATIONS", "PostgresMetaStore", "check_on_loan", "lock_key"]

# Each step runs once, in order, in one transaction with its version's record; a released
# step is never edited, a change is a new step.
CORE_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE repos (name TEXT PRIMARY KEY, head TEXT, created BIGINT NOT NULL);
    CREATE TABLE refs (
        repo TEXT NOT NULL, name TEXT NOT NULL, oid BYTEA NOT NULL, PRIMARY KEY (repo, name));
    CREATE TABLE ref_log (
        id BIGSERIAL PRIMARY KEY, repo TEXT NOT NULL, name TEXT NOT NULL, old BYTEA,
        new BYTEA NOT NULL, time BIGINT NOT NULL, "user" TEXT NOT NULL, reason TEXT NOT NULL);
    CREATE INDEX ref_log_by_ref ON ref_log (repo, name, id);
    CREATE TABLE keys (
        id TEXT PRIMARY KEY, digest BYTEA NOT NULL UNIQUE, scope TEXT NOT NULL, repo TEXT,
        created BIGINT NOT NULL, revoked BIGINT, note TEXT NOT NULL DEFAULT '',
        seq BIGSERIAL);
    """,
)
_MIGRATION_LOCK = "dsv:migrations"


def check_on_loan(conn: psycopg.Connection[Any]) -> None:
    """Raise if a pooled connection is dead; a round trip only when its socket says so.

    An idle connection's socket has nothing to read unless the server sent something
    unasked: the end of the stream when it restarted or dropped the session, or a notice.
    Only then is the real check (an empty query) paid; a check on every loan had been a
    second round trip for each of a page read's queries.
    """
    if conn.broken or conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        psycopg_pool.ConnectionPool.check_connection(conn)


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock id for `name` (PostgreSQL's lock ids are bigints)."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


class PostgresMetaStore:
    """Repositories, refs, ref logs and keys in a PostgreSQL database, through a pool."""

    def __init__(self, dsn: str, *, pool_size: int = 16, timeout: float = 10.0) -> None:
        # The DSN may hold a password: it is never shown, only the host and database are.
        try:
            info = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise StorageError(f"invalid PostgreSQL DSN: {exc}") from exc
        self.where = f"postgresql://{info.get('host') or 'localhost'}/{info.get('dbname') or ''}"
        self._local = threading.local()
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        self._settled: dict[str, RepoRecord] = {}
        try:
            self.pool = psycopg_pool.ConnectionPool(
                dsn,
                min_size=1,
                max_size=pool_size,
                timeout=timeout,
                kwargs={"autocommit": True, "connect_timeout": 10},
                # A server restart leaves dead connections in the pool: check each on loan.
                check=check_on_loan,
                # Give up a failing reconnection soon: the next request then tries afresh,
                # instead of waiting out a backoff grown during an outage.
                reconnect_timeout=5.0,
                open=False,
            )
            self.pool.open(wait=True, timeout=timeout)
            # Write locks hold a connection for a whole API write, whose own queries need
            # others: a pool of their own, so lock holders never starve the queries.
            self._lock_pool = psycopg_pool.ConnectionPool(
                dsn,
                min_size=0,
                max_size=pool_size,
                timeout=timeout,
                kwargs={"autocommit": True, "connect_timeout": 10},
                check=check_on_loan,
                # Give up a failing reconnection soon: the next request then tries afresh,
                # instead of waiting out a backoff grown during an outage.
                reconnect_timeout=5.0,
                open=False,
            )
            self._lock_pool.open(wait=False)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(f"cannot connect to {self.where}: {exc}") from exc
        self.migrate("core", CORE_MIGRATIONS)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(
                f"metadata database {self.where}: cannot {what}: {str(exc).strip()}",
                hint="check that PostgreSQL is up and reachable; the write did not happen",
            ) from exc

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode, errors raised as StorageError on `what`."""
        with self._errors(what), self.pool.connection() as db:
            yield db

    @contextlib.contextmanager
    def transaction(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """One transaction: committed if the block returns, rolled back if it raises."""
        with self._errors(what), self.pool.connection() as db, db.transaction():
            yield db

    def migrate(self, component: str, steps: Sequence[str]) -> None:
        """Bring `component`'s tables to version len(steps); refuse a newer database."""
        with self.transaction(f"migrate the {component} schema") as db:
            # Servers starting at once: one migrates, the others wait and find it done.
            db.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(_MIGRATION_LOCK),))
            db.execute(
                "CREATE TABLE IF NOT EXISTS dsv_schema "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = db.execute(
                "SELECT version FROM dsv_schema WHERE component = %s", (component,)
            ).fetchone()
            version = row[0] if row else 0
            if version > len(steps):
                raise StorageError(
                    f"{self.where} has {component} schema version {version}; "
                    f"this dsv knows {len(steps)}",
                    hint="use a newer dsv to serve this database",
                )
            for step in steps[version:]:
                db.execute(step.encode())
            if version < len(steps):
                db.execute(
                    "INSERT INTO dsv_schema (component, version) VALUES (%s, %s) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, len(steps)),
                )

    def health(self) -> None:
        """Raise StorageError unless the database answers."""
        with self.reading("answer a health check") as db:
            db.execute("SELECT 1").fetchone()

    @contextlib.contextmanager
    def locked(self, repo: str) -> Iterator[None]:
        """Hold `repo`'s write lock, in every process sharing the database, until the block
        ends; a thread may take it again inside."""
        held: dict[str, int] = self._local.__dict__.setdefault("held", {})
        if held.get(repo):
            held[repo] += 1
            try:
                yield
            finally:
                held[repo] -= 1
            return
        with self._guard:
            local = self._locks.setdefault(repo, threading.RLock())
        # The process's own lock first: its threads queue here, not each on a connection.
        with local, self._errors(f"lock {repo}"), self._lock_pool.connection() as db:
            db.execute("SELECT pg_advisory_lock(%s)", (lock_key(f"dsv:write:{repo}"),))
            held[repo] = 1
            try:
                yield
            finally:
                held[repo] = 0
                # A connection lost meanwhile took its lock along; the pool drops it.
                with contextlib.suppress(psycopg.Error):
                    db.execute("SELECT pg_advisory_unlock(%s)", (lock_key(f"dsv:write:{repo}"),))

    # -- repositories ----------------------------------------------------------------------

    def get_repo(self, repo: str) -> RepoRecord | None:
        # No repository is ever removed and its head is set once (apply_ref_changes sets it
        # only while NULL), so a record with its head is final: kept, it saves each page
        # read a round trip.
        settled = self._settled.get(repo)
        if settled is not None:
            return settled
        with self.reading("read a repository") as db:
            row = db.execute(
                "SELECT name, head, created FROM repos WHERE name = %s", (repo,)
            ).fetchone()
        record = RepoRecord(*row) if row else None
        if record is not None and record.head is not None:
            self._settled[repo] = record
        return record

    def create_repo(self, repo: str) -> None:
        check_repo_name(repo)
        with self.reading("create a repository") as db:
            db.execute(
                "INSERT INTO repos (name, head, created) VALUES (%s, NULL, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (repo, int(time.time())),
            )

    def list_repos(self) -> list[RepoRecord]:
        with self.reading("list repositories") as db:
            rows = db.execute("SELECT name, head, created FROM repos ORDER BY name").fetchall()
        return [RepoRecord(*row) for row in rows]

    # -- refs ------------------------------------------------------------------------------

    def list_refs(self, repo: str) -> dict[str, bytes]:
        with self.reading("read refs") as db:
            rows = db.execute(
                "SELECT name, oid FROM refs WHERE repo = %s ORDER BY name", (repo,)
            ).fetchall()
        return {name: bytes(oid) for name, oid in rows}

    def update_refs(
        self,
        repo: str,
        changes: Sequence[RefChange],
        *,
        user: str,
        reason: str,
        head: str | None = None,
    ) -> None:
        with self.transaction("update refs") as db:
            self.apply_ref_changes(db, repo, changes, user=user, reason=reason, head=head)

    @staticmethod
    def apply_ref_changes(
        db: psycopg.Connection[Any],
        repo: str,
        changes: Sequence[RefChange],
        *,
        user: str,
        reason: str,
        head: str | None = None,
    ) -> None:
        """`update_refs` inside a transaction of `transaction()`, so a dialect's store can
        record its own rows in the same one."""
        # Every ref update of the repository, in any process, queues here until commit.
        db.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(f"dsv:refs:{repo}"),))
        now = int(time.time())
        for change in changes:
            row = db.execute(
                "SELECT oid FROM refs WHERE repo = %s AND name = %s", (repo, change.name)
            ).fetchone()
            current = bytes(row[0]) if row else None
            if current != change.old:
                raise RefConflict(change.name, current)
        for change in changes:
            if change.new is None:
                db.execute("DELETE FROM refs WHERE repo = %s AND name = %s", (repo, change.name))
            else:
                db.execute(
                    "INSERT INTO refs (repo, name, oid) VALUES (%s, %s, %s) "
                    "ON CONFLICT (repo, name) DO UPDATE SET oid = excluded.oid",
                    (repo, change.name, change.new),
                )
            db.execute(
                'INSERT INTO ref_log (repo, name, old, new, time, "user", reason) '
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (repo, change.name, change.old, change.new or ZERO_OID, now, user, reason),
            )
        if head is not None:
            db.execute("UPDATE repos SET head = %s WHERE name = %s AND head IS NULL", (head, repo))

    def ref_log(self, repo: str, name: str) -> list[RefLogRecord]:
        with self.reading("read a ref log") as db:
            rows = db.execute(
                'SELECT name, old, new, time, "user", reason FROM ref_log '
                "WHERE repo = %s AND name = %s ORDER BY id",
                (repo, name),
            ).fetchall()
        return [
            RefLogRecord(n, bytes(o) if o is not None else None, bytes(w), t, u, r)
            for n, o, w, t, u, r in rows
        ]

    # -- keys ------------------------------------------------------------------------------

    _KEY_COLUMNS = "id, digest, scope, repo, created, revoked, note"

    def add_key(self, record: KeyRecord) -> None:
        with self.reading("add a key") as db:
            db.execute(
                "INSERT INTO keys (id, digest, scope, repo, created, revoked, note) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    record.id,
                    record.digest,
                    record.scope,
                    record.repo,
                    record.created,
                    record.revoked,
                    record.note,
                ),
            )

    @staticmethod
    def _key(row: tuple[Any, ...]) -> KeyRecord:
        key_id, digest, scope, repo, created, revoked, note = row
        return KeyRecord(
            str(key_id),
            bytes(digest),
            "write" if scope == "write" else "read",
            None if repo is None else str(repo),
            int(created),
            None if revoked is None else int(revoked),
            str(note),
        )

    def key_by_digest(self, digest: bytes) -> KeyRecord | None:
        with self.reading("look up a key") as db:
            row = db.execute(
                f"SELECT {self._KEY_COLUMNS} FROM keys WHERE digest = %s", (digest,)
            ).fetchone()
        return self._key(row) if row else None

    def list_keys(self) -> list[KeyRecord]:
        with self.reading("list keys") as db:
            rows = db.execute(f"SELECT {self._KEY_COLUMNS} FROM keys ORDER BY created, seq")
            return [self._key(row) for row in rows.fetchall()]

    def revoke_key(self, key_id: str) -> bool:
        with self.reading("revoke a key") as db:
            cursor = db.execute(
                "UPDATE keys SET revoked = %s WHERE id = %s AND revoked IS NULL",
                (int(time.time()), key_id),
            )
            return cursor.rowcount == 1

    def close(self) -> None:
        self._lock_pool.close()
        self.pool.close()
