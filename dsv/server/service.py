"""The dsv protocol's rules (docs/protocol.md) over a blob store and a metadata store.

`RemoteService` knows nothing of HTTP: it raises dsv's errors (dsv.errors), and the app maps
them to statuses and bodies in one place (dsv.server.app).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import msgspec

from dsv.deployment import deployment_paths
from dsv.errors import (
    AccessDenied,
    BadInput,
    Conflict,
    CorruptObject,
    NotFound,
    TooLarge,
    Unprocessable,
)
from dsv.manifest import check_slices
from dsv.memory import return_free_memory
from dsv.objects import Dataset, Kind, decode_commit, decode_dataset, hash_object
from dsv.pack import BLOCK_SIZE, PackWriter
from dsv.packindex import empty_pack, index_pack, read_chunks
from dsv.paths import BadPath, check_tree_paths
from dsv.protocol import (
    SUPPORTED_VERSIONS,
    CommitsRequest,
    IdsRequest,
    Info,
    Limits,
    MissingReply,
    PackEncoder,
    PackReply,
    RefsReply,
    RefsRequest,
    RefUpdate,
    check_datapoints,
    iter_pack,
    kind_named,
    references,
)
from dsv.refs import BRANCHES, ENVS, TAGS, check_ref_name
from dsv.server.checking import DatapointChecker
from dsv.server.keys import authorize
from dsv.server.storage import (
    BlobStore,
    KeyRecord,
    MetaStore,
    RefChange,
    RefConflict,
    check_repo_name,
    publish_pack,
)
from dsv.server.storage.stored import StoredObjects
from dsv.text import plural
from dsv.version import __version__

__all__ = [
    "DEFAULT_API_REPO",
    "DEFAULT_ENVIRONMENTS",
    "DEFAULT_MAX_IDS",
    "DEFAULT_MAX_REQUEST",
    "Caller",
    "RemoteService",
    "ServerConfig",
    "check_environments",
]

DEFAULT_MAX_REQUEST = 64 << 20
DEFAULT_MAX_IDS = 100_000
_READ_BATCH = 2048
_DATAPOINT_BATCH = 2048
_STALE_TMP_SECONDS = 3600
# `.recv-PID-…` (received packs) and `.tmp-PID-…` (packs being written, dsv.pack): PID owns it.
_TMP_NAME = re.compile(r"\.(?:recv|tmp)-(?:(\d+)-)?.*")


# The environments a server offers unless `dsv serve --environment` names others; the first is
# the default one every dialect reads when a request names none.
DEFAULT_ENVIRONMENTS = ("production", "staging")
# The repository of `dsv serve --api-repo` when none is given (docs/dialects.md).
DEFAULT_API_REPO = "api/datasets"


def check_environments(names: Sequence[str]) -> tuple[str, ...]:
    """Environment names for `dsv serve --environment`: the first is the default."""
    if not names:
        raise BadInput("at least one environment is needed")
    for name in names:
        check_ref_name(ENVS + name, what="environment name")
        if "/" in name:
            raise BadInput(f"invalid environment name {name!r}: it may not contain '/'")
    if len(set(names)) != len(names):
        raise BadInput("an environment is named twice")
    return tuple(names)


class ServerConfig(msgspec.Struct, frozen=True):
    root: str
    # Shared storage (docs/deploy.md): an s3:// location for objects, a postgresql:// DSN for
    # the rest; None keeps each embedded under `root`.
    objects: str | None = None
    meta: str | None = None
    auth: bool = True
    max_request_bytes: int = DEFAULT_MAX_REQUEST
    max_ids: int = DEFAULT_MAX_IDS
    # The Humanloop API's environments (docs/humanloop.md); the first is the default one.
    environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS
    # The repository of the dialects without owners in their paths (docs/dialects.md).
    api_repo: str = DEFAULT_API_REPO
    # Processes checking received datapoints (dsv.server.checking); None: cores - 1.
    check_workers: int | None = None


class Caller(msgspec.Struct, frozen=True):
    """Who sent a request: the key's record, or None on a server without auth."""

    key: KeyRecord | None

    @property
    def name(self) -> str:
        return f"key {self.key.id}" if self.key else "anonymous"


def _running(pid: int) -> bool:
    """Whether process `pid` exists (ours, another user's, or a zombie not yet reaped)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    return True


def _short(name: str) -> str:
    for prefix in (BRANCHES, TAGS, ENVS):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _oids(texts: tuple[str, ...]) -> list[bytes]:
    return [bytes.fromhex(t) for t in texts]


class _Received:
    """What a received pack holds, and what its objects other than datapoints refer to."""

    def __init__(self) -> None:
        self.have: set[bytes] = set()
        self.needed: set[bytes] = set()
        self.pages: dict[bytes, bytes] = {}
        self.datasets: list[tuple[bytes, Dataset]] = []

    def note(self, kind: Kind, oid: bytes, body: bytes) -> None:
        self.needed.update(references(kind, oid, body))
        if kind == Kind.PAGE:
            self.pages[oid] = body
        elif kind == Kind.DATASET:
            self.datasets.append((oid, decode_dataset(body, oid)))


class RemoteService:
    """The protocol's rules over a blob store and a metadata store."""

    def __init__(self, config: ServerConfig, blobs: BlobStore, meta: MetaStore) -> None:
        self.config = config
        self.blobs = blobs
        self.meta = meta
        self.stored = StoredObjects(blobs)
        self.checker = DatapointChecker(config.check_workers)
        self.tmp_dir = Path(config.root) / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._clean_tmp()

    def _clean_tmp(self) -> None:
        """Drop the temporary packs killed servers left, here and in the repositories' stores.

        Another server may share the root, so a file goes only if no live process can own it:
        the pid in its name is not running (servers on one root share a host and its pids).
        A file without a pid (received packs of earlier versions) goes once it is an hour old.
        """
        cutoff = time.time() - _STALE_TMP_SECONDS
        packs = Path(self.config.root).glob("repos/*/*/objects/pack/.tmp-*")
        for path in [*self.tmp_dir.iterdir(), *packs]:
            found = _TMP_NAME.fullmatch(path.name)
            with contextlib.suppress(OSError):
                if found and found[1]:
                    if not _running(int(found[1])):
                        path.unlink()
                elif path.parent == self.tmp_dir and path.stat().st_mtime < cutoff:
                    path.unlink()

    @property
    def limits(self) -> Limits:
        return Limits(self.config.max_request_bytes, self.config.max_ids)

    # -- access ----------------------------------------------------------------------------

    def caller(self, key: str | None, repo: str, *, write: bool) -> Caller:
        check_repo_name(repo)
        if not self.config.auth:
            return Caller(None)
        return Caller(authorize(self.meta, key, repo, write=write))

    def _check_ids(self, count: int) -> None:
        if count > self.config.max_ids:
            raise TooLarge(
                f"{count} ids in one request; this server takes at most {self.config.max_ids}",
                "split the list; 'limits.max_ids' of /info gives the limit",
            )

    # -- reading ---------------------------------------------------------------------------

    def info(self, repo: str, key: str | None) -> Info:
        self.caller(key, repo, write=False)
        try:
            self.caller(key, repo, write=True)
            can_write = True
        except AccessDenied:
            can_write = False
        record = self.meta.get_repo(repo)
        refs = self.meta.list_refs(repo) if record else {}
        return Info(
            versions=SUPPORTED_VERSIONS,
            server=f"dsv {__version__}",
            repository=repo,
            exists=record is not None,
            head=record.head if record else None,
            refs={name: oid.hex() for name, oid in refs.items()},
            limits=self.limits,
            can_write=can_write,
        )

    def missing(self, repo: str, request: IdsRequest) -> MissingReply:
        self._check_ids(len(request.ids))
        wanted = _oids(request.ids)
        absent = self.blobs.missing(repo, wanted)
        # Positions, not ids: an answer about thousands of ids stays a few bytes per id.
        return MissingReply(tuple(i for i, oid in enumerate(wanted) if oid in absent))

    def objects(self, repo: str, request: IdsRequest, *, version: int = 1) -> Iterator[bytes]:
        """A pack of the requested objects, in request order; checked before streaming."""
        self._check_ids(len(request.ids))
        kind = kind_named(request.kind)
        wanted = list(dict.fromkeys(_oids(request.ids)))
        if version >= 2:
            # Whole stored blocks travel as they are: nothing is read or recompressed. The
            # copy looks every id up anyway, so absence is asked about only when it fails.
            try:
                return self._send_file(
                    lambda writer: self.blobs.copy_objects(repo, kind, wanted, writer, extra=True)
                )
            except CorruptObject:
                self._check_held(repo, request.kind, wanted)
                raise
        self._check_held(repo, request.kind, wanted)
        return self._stream(repo, kind, wanted)

    def _check_held(self, repo: str, kind: str, wanted: list[bytes]) -> None:
        absent = self.blobs.missing(repo, wanted)
        if absent:
            raise NotFound(
                f"{repo} has no {kind} {min(absent).hex()}"
                + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""),
                code="object_not_found",
            ) from None

    def _send_file(self, fill: Callable[[PackWriter], None]) -> Iterator[bytes]:
        """A pack (version 2) that `fill` writes, made whole before the answer starts, so a
        failure is an error answer rather than a cut stream; then streamed from its file."""
        writer = PackWriter(self.tmp_dir)
        try:
            fill(writer)
            prepared = writer.prepare()
        except BaseException:
            writer.abort()
            raise
        finally:
            return_free_memory()
        if prepared is None:
            return iter([empty_pack()])
        prepared.idx_tmp.unlink(missing_ok=True)
        return read_chunks(prepared.pack_tmp, remove=True)

    def _stream(self, repo: str, kind: Kind, oids: list[bytes]) -> Iterator[bytes]:
        encoder = PackEncoder()
        yield encoder.start()
        block: list[tuple[Kind, bytes]] = []
        size = 0
        for start in range(0, len(oids), _READ_BATCH):
            for body in self.blobs.read(repo, kind, oids[start : start + _READ_BATCH]):
                block.append((kind, body))
                size += len(body)
                if size >= BLOCK_SIZE:
                    yield encoder.block(block)
                    block, size = [], 0
        if block:
            yield encoder.block(block)
        yield encoder.finish()

    def commits(self, repo: str, request: CommitsRequest, *, version: int = 1) -> Iterator[bytes]:
        """A pack of the commits reachable from `wants`, newest first, stopping at `haves`."""
        self._check_ids(len(request.wants) + len(request.haves))
        wants = _oids(request.wants)
        absent = self.blobs.missing(repo, wants)
        if absent:
            raise NotFound(f"{repo} has no commit {min(absent).hex()}", code="object_not_found")
        stop = set(_oids(request.haves))
        limit = max(1, min(request.limit, self.config.max_ids))
        seen = set(wants)
        queue = collections.deque(oid for oid in wants if oid not in stop)
        found: list[tuple[Kind, bytes]] = []
        while queue and len(found) < limit:
            oid = queue.popleft()
            (body,) = self.blobs.read(repo, Kind.COMMIT, [oid])
            found.append((Kind.COMMIT, body))
            for parent in decode_commit(body, oid).parents:
                if parent not in seen and parent not in stop:
                    seen.add(parent)
                    queue.append(parent)
        if version >= 2:
            return self._send_file(
                lambda writer: writer.add_many(
                    Kind.COMMIT, [hash_object(k, b) for k, b in found], [b for _, b in found]
                )
            )
        return self._encode_all(found)

    @staticmethod
    def _encode_all(found: list[tuple[Kind, bytes]]) -> Iterator[bytes]:
        encoder = PackEncoder()
        yield encoder.start()
        if found:
            yield encoder.block(found)
        yield encoder.finish()

    # -- receiving a pack --------------------------------------------------------------------

    def receive_pack(self, repo: str, path: Path, size: int, *, version: int = 1) -> PackReply:
        """Verify a received pack completely, then store it; nothing is stored on any error.

        Every object is re-hashed (its id is computed here, never taken from the sender),
        decoded, and each of its references must be in the pack or already stored. As every
        stored pack passed this check, an object the store holds is complete: everything it
        reaches is stored too.
        """

        def verify(writer: PackWriter) -> PackReply:
            received = _Received()
            points: tuple[list[bytes], list[bytes]] = ([], [])
            with open(path, "rb") as handle:
                chunks = iter(lambda: handle.read(1 << 20), b"")
                for kind, body in iter_pack(chunks):
                    oid = hash_object(kind, body)
                    if oid in received.have:
                        continue
                    received.have.add(oid)
                    if kind == Kind.DATAPOINT:
                        points[0].append(oid)
                        points[1].append(body)
                        if len(points[0]) >= _DATAPOINT_BATCH:
                            check_datapoints(*points)
                            points = ([], [])
                    else:
                        received.note(kind, oid, body)
                    writer.add(kind, oid, body)
            if points[0]:
                check_datapoints(*points)
            self._check_connected(repo, received)
            have = received.have
            return PackReply(objects=len(have), new=len(self.blobs.missing(repo, have)), bytes=size)

        try:
            if version >= 2:
                return self._receive_whole(repo, path, size)
            # The first pack a write key sends creates the repository; a refused one does not.
            return publish_pack(self.blobs, self.meta, self.tmp_dir, repo, verify)
        finally:
            # A push sends pack after pack: what one pack's checks used is free for the next,
            # but held by malloc among live blocks it would add up (a 1M push: 340 MiB).
            return_free_memory()

    def _receive_whole(self, repo: str, path: Path, size: int) -> PackReply:
        """`receive_pack` of a version-2 pack: indexed and checked where it lies, then stored
        as it came (its blocks are not recompressed)."""
        received = _Received()
        checks = self.checker.start()

        def check(kinds: bytes, oids: list[bytes], bodies: list[bytes]) -> None:
            received.have.update(oids)
            if kinds.count(Kind.DATAPOINT) == len(kinds):
                checks.add(oids, bodies)
                return
            for code, oid, body in zip(kinds, oids, bodies, strict=True):
                kind = Kind(code)
                if kind == Kind.DATAPOINT:
                    check_datapoints([oid], [body])
                else:
                    received.note(kind, oid, body)

        try:
            prepared = index_pack(path, check=check)
        except BaseException:
            checks.cancel()
            raise
        try:
            checks.finish()
            self._check_connected(repo, received)
            # `new` is informative (protocol.md §6): counting it would look every id up again.
            count = len(received.have)
            reply = PackReply(objects=count, new=count, bytes=size)
            # The first pack a write key sends creates the repository; a refused one does not.
            self.meta.create_repo(repo)
            if prepared is not None:
                self.blobs.put_pack(repo, prepared)
        except BaseException:
            if prepared is not None:
                prepared.discard()
            raise
        return reply

    def _check_connected(self, repo: str, received: _Received) -> None:
        """Everything the pack refers to is in it or stored (§4), and each dataset's slices
        give its count and content id."""
        absent = self.blobs.missing(repo, received.needed - received.have)
        if absent:
            raise Unprocessable(
                f"the pack refers to {plural(len(absent), 'object')} that neither it nor "
                f"{repo} holds, e.g. {min(absent).hex()}",
                "send objects after everything they refer to (docs/protocol.md §4)",
                code="unconnected",
            )
        for oid, dataset in received.datasets:
            self._check_content(repo, oid, dataset, received.pages)

    def _check_content(
        self, repo: str, oid: bytes, dataset: Dataset, pages: dict[bytes, bytes]
    ) -> None:
        """A dataset's slices must give exactly its count and content id (format.md §3)."""
        stored = [s.page for s in dataset.slices if s.page not in pages]
        bodies = dict(pages)
        if stored:
            unique = list(dict.fromkeys(stored))
            bodies.update(zip(unique, self.blobs.read(repo, Kind.PAGE, unique), strict=True))
        check_slices(dataset, bodies, oid)

    # -- refs --------------------------------------------------------------------------------

    def update_refs(self, repo: str, request: RefsRequest, caller: Caller) -> RefsReply:
        """Move every ref in the request, or none (docs/protocol.md §5)."""
        updates = request.updates
        if not updates:
            raise BadInput("no ref updates in the request")
        self._check_ids(len(updates))
        names = [u.name for u in updates]
        if len(set(names)) != len(names):
            raise BadInput("a ref is named twice in one update")
        for u in updates:
            _check_pushable(u.name)
        targets = list(dict.fromkeys(bytes.fromhex(u.new) for u in updates))
        absent = self.blobs.missing(repo, targets)
        if absent:
            first = next(u for u in updates if bytes.fromhex(u.new) in absent)
            raise Unprocessable(
                f"{first.name} would point at {first.new[:12]}, which {repo} does not hold",
                "send the objects first (POST …/packs), then update the refs",
                code="missing_objects",
            )
        # Reading each target as a commit re-hashes it and checks its kind.
        self.blobs.read(repo, Kind.COMMIT, targets)
        for target in targets:
            self._check_paths(repo, target)
        current = self.meta.list_refs(repo)
        for u in updates:
            old = bytes.fromhex(u.old) if u.old else None
            if current.get(u.name) != old:
                raise self._refused(repo, u, current.get(u.name))
            self._check_move(repo, u, old)
        changes = [
            RefChange(u.name, bytes.fromhex(u.old) if u.old else None, bytes.fromhex(u.new))
            for u in updates
        ]
        branches = [n for n in names if n.startswith(BRANCHES)]
        head = BRANCHES + "main" if BRANCHES + "main" in branches else next(iter(branches), None)
        who = " ".join(f"{request.user} [{caller.name}]".split())
        self.meta.create_repo(repo)
        try:
            self.meta.update_refs(repo, changes, user=who, reason="push", head=head)
        except RefConflict as exc:
            moved = next(u for u in updates if u.name == exc.name)
            raise self._refused(repo, moved, exc.current) from exc
        return RefsReply(updated=updates)

    def _check_paths(self, repo: str, commit: bytes) -> None:
        """A ref moves only to a version whose paths obey format.md §3. A pack breaking it is
        refused whole, but a store may hold a tree from before the rule was enforced."""
        try:
            check_tree_paths(list(self.stored.tree(repo, commit)))
        except BadPath as exc:
            raise Unprocessable(
                f"version {commit.hex()[:12]} cannot be pushed: {exc.message}",
                "dsv refuses to check such a version out",
                code="corrupt",
            ) from exc

    def _check_move(self, repo: str, u: RefUpdate, old: bytes | None) -> None:
        if old is None or u.force or old.hex() == u.new:
            return
        if u.name.startswith(TAGS):
            raise Conflict(
                f"rejected tag {_short(u.name)}: it exists on the remote at {old.hex()[:12]}",
                "tags do not move; push with --force to move it anyway",
                code="tag_exists",
            )
        if u.name.startswith(BRANCHES) and not self.is_ancestor(repo, old, bytes.fromhex(u.new)):
            raise self._non_fast_forward(u, old)
        if self._undoes_deployments(repo, u, old):
            raise self._env_non_fast_forward(u, old)

    def _undoes_deployments(self, repo: str, u: RefUpdate, current: bytes) -> bool:
        """Would this move of an environment to a deployment commit drop deployments made
        meanwhile? (docs/protocol.md §7: such a move must contain the environment's tip.)"""
        if u.force or not u.name.startswith(ENVS):
            return False
        new = bytes.fromhex(u.new)
        if deployment_paths(self.stored.commit(repo, new)) is None:
            return False
        return not self.is_ancestor(repo, current, new)

    def _env_non_fast_forward(self, u: RefUpdate, current: bytes) -> Conflict:
        env = _short(u.name)
        return Conflict(
            f"rejected {env}: the remote's {env} ({current.hex()[:12]}) holds deployments that "
            f"{u.new[:12]} does not contain (non-fast-forward); pushing it would undo them",
            f"fetch, take the remote's deployments ('dsv env deploy {env} REMOTE/envs/{env}'), "
            "deploy your datasets again and push; or 'dsv push --force' to overwrite them",
            code="non_fast_forward",
        )

    def _non_fast_forward(self, u: RefUpdate, current: bytes) -> Conflict:
        return Conflict(
            f"rejected {_short(u.name)}: the remote's {_short(u.name)} ({current.hex()[:12]}) "
            f"has versions that {u.new[:12]} does not contain (non-fast-forward)",
            "the remote has versions you do not: 'dsv pull' takes them (merging them with "
            "yours), then push again; or 'dsv push --force' overwrites the remote's versions",
            code="non_fast_forward",
        )

    def _refused(self, repo: str, u: RefUpdate, current: bytes | None) -> Conflict:
        """A compare-and-swap that failed: someone else moved the ref since the client looked."""
        new = bytes.fromhex(u.new)
        if (
            current is not None
            and not u.force
            and u.name.startswith(BRANCHES)
            and not self.is_ancestor(repo, current, new)
        ):
            return self._non_fast_forward(u, current)
        if current is not None and self._undoes_deployments(repo, u, current):
            return self._env_non_fast_forward(u, current)
        shown = current.hex()[:12] if current else "nothing"
        return Conflict(
            f"rejected {_short(u.name)}: it moved on the remote (now at {shown}) since it was read",
            "fetch, look at the new state, and push again",
            code="ref_moved",
        )

    def is_ancestor(self, repo: str, ancestor: bytes, descendant: bytes) -> bool:
        """Is `ancestor` reachable from `descendant` through parents?"""
        seen = {descendant}
        queue = [descendant]
        while queue:
            oid = queue.pop()
            if oid == ancestor:
                return True
            for parent in self.stored.commit(repo, oid).parents:
                if parent not in seen:
                    seen.add(parent)
                    queue.append(parent)
        return False


def _check_pushable(name: str) -> None:
    for prefix in (BRANCHES, TAGS, ENVS):
        if name.startswith(prefix) and len(name) > len(prefix):
            try:
                check_ref_name(name, what="ref name")
            except BadInput as exc:
                raise BadInput(exc.message, exc.hint, code="bad_ref_name") from exc
            if prefix == ENVS and "/" in name[len(prefix) :]:
                raise BadInput(f"invalid environment ref {name!r}", code="bad_ref_name")
            return
    raise BadInput(
        f"cannot push {name!r}: only refs/heads/*, refs/tags/* and refs/envs/* are pushed",
        code="bad_ref_name",
    )
