"""The client side of dsv remotes: push, fetch, pull and clone over HTTP (docs/protocol.md).

Library code: it returns results and reports progress through a callback; it never prints.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NoReturn

import httpx
import msgspec

from dsv import __version__
from dsv.config import Remote
from dsv.errors import BadInput, BadState, CorruptObject, RemoteError
from dsv.objects import (
    OID_SIZE,
    Commit,
    Kind,
    decode_commit,
    decode_dataset,
    hash_object,
    split_oids,
)
from dsv.pack import BLOCK_SIZE
from dsv.progress import Progress, ProgressFn
from dsv.protocol import (
    PACK_MEDIA_TYPE,
    SUPPORTED_VERSIONS,
    CommitsRequest,
    ErrorReply,
    IdsRequest,
    Info,
    MissingReply,
    PackEncoder,
    PackReply,
    RefsReply,
    RefsRequest,
    RefUpdate,
    block_bound,
    iter_pack,
    kind_name,
    references,
)
from dsv.refs import BRANCHES, ENVS, MISSING, REMOTES, TAGS
from dsv.remote import get_remote, missing_from, parse_url
from dsv.repo import Repository
from dsv.text import plural

__all__ = [
    "PACK_TARGET",
    "CloneResult",
    "Connection",
    "FetchResult",
    "Progress",
    "ProgressFn",
    "PullResult",
    "PushResult",
    "RefResult",
    "RefStatus",
    "RemoteRefused",
    "clone",
    "connect",
    "fetch",
    "pull",
    "push",
]

# Packs a client sends are at most this big (or the server's limit, if lower): a push cut
# short loses at most one pack's worth of transfer.
PACK_TARGET = 8 << 20
_MIN_PACK = 64 << 10
_READ_BATCH = 1024
_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=300.0, pool=10.0)


def _quiet(_: Progress) -> None:
    pass


class RemoteRefused(RemoteError):
    """The server answered with an error: its HTTP status and stable code are kept."""

    def __init__(self, message: str, hint: str | None, *, status: int, code: str) -> None:
        super().__init__(message, hint)
        self.status = status
        self.code = code


# -- HTTP ----------------------------------------------------------------------------------------


class _Counted(httpx.SyncByteStream):
    """A byte stream that adds the size of every chunk to a counter as it passes."""

    def __init__(self, inner: httpx.SyncByteStream, add: Callable[[int], None]) -> None:
        self._inner = inner
        self._add = add

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._add(len(chunk))
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _CountingTransport(httpx.BaseTransport):
    """Counts the bytes of every request and response (start line, headers and body)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport(retries=2)
        self.sent = 0
        self.received = 0

    def _add_sent(self, n: int) -> None:
        self.sent += n

    def _add_received(self, n: int) -> None:
        self.received += n

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += len(request.method) + len(request.url.raw_path) + 12
        self.sent += sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
        assert isinstance(request.stream, httpx.SyncByteStream)
        request.stream = _Counted(request.stream, self._add_sent)
        response = self._inner.handle_request(request)
        self.received += 17 + sum(len(k) + len(v) + 4 for k, v in response.headers.raw)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _Counted(response.stream, self._add_received)
        return response

    def close(self) -> None:
        self._inner.close()


class Connection:
    """One remote repository over HTTP; the protocol version is negotiated on open."""

    def __init__(self, url: str, *, key: str | None, key_source: str, name: str) -> None:
        self.remote = parse_url(url)
        self.name = name
        self.key_source = key_source
        self.has_key = bool(key)
        headers = {"User-Agent": f"dsv/{__version__}"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._transport = _CountingTransport()
        self._http = httpx.Client(
            base_url=self.remote.base, headers=headers, timeout=_TIMEOUT, transport=self._transport
        )
        self._prefix = f"/v1/{self.remote.repo}"
        try:
            self.info = self._negotiate()
        except BaseException:
            self._http.close()
            raise

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def bytes_sent(self) -> int:
        return self._transport.sent

    @property
    def bytes_received(self) -> int:
        return self._transport.received

    # -- plumbing --------------------------------------------------------------------------

    def _where(self) -> str:
        return f"remote {self.name!r} ({self.remote.url})"

    def _translate(self, exc: httpx.HTTPError) -> RemoteError:
        if isinstance(exc, httpx.ConnectError):
            return RemoteError(
                f"cannot reach {self._where()}: {exc}",
                hint="is 'dsv serve' running there? 'dsv remote list' shows the URL",
            )
        if isinstance(exc, httpx.TimeoutException):
            return RemoteError(f"{self._where()} did not answer in time ({type(exc).__name__})")
        return RemoteError(
            f"the connection to {self._where()} failed: {exc or type(exc).__name__}",
            hint="run the command again: it resumes where the transfer stopped",
        )

    def _fail(self, response: httpx.Response) -> NoReturn:
        try:
            detail = msgspec.json.decode(response.read(), type=ErrorReply).error
        except (msgspec.DecodeError, httpx.HTTPError):
            raise RemoteRefused(
                f"{self._where()} answered HTTP {response.status_code} {response.reason_phrase}",
                None,
                status=response.status_code,
                code=f"http_{response.status_code}",
            ) from None
        hint = detail.hint
        if detail.code == "unauthenticated" or (detail.code == "bad_key" and not self.has_key):
            hint = f"set {self.key_source} to an API key made with 'dsv keys create' on the server"
        elif detail.code == "bad_key":
            hint = f"the key in {self.key_source} was refused; ask for a new one"
        raise RemoteRefused(
            f"{self.name}: {detail.message} [request {detail.request_id}]",
            hint,
            status=response.status_code,
            code=detail.code,
        )

    def _call(self, method: str, path: str, *, body: Any = None, reply: type[Any]) -> Any:
        content = msgspec.json.encode(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        try:
            response = self._http.request(method, path, content=content, headers=headers)
            if response.status_code != 200:
                self._fail(response)
            return msgspec.json.decode(response.content, type=reply)
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        except msgspec.DecodeError as exc:
            raise RemoteError(f"{self._where()} sent a malformed answer: {exc}") from exc

    def _negotiate(self) -> Info:
        info: Info = self._call("GET", f"/v1/{self.remote.repo}/info", reply=Info)
        common = set(info.versions) & set(SUPPORTED_VERSIONS)
        if not common:
            raise RemoteError(
                f"{self._where()} speaks protocol version(s) "
                f"{', '.join(map(str, info.versions))}; this dsv speaks "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
                hint="use a dsv release that speaks one of the server's versions",
            )
        self._prefix = f"/v{max(common)}/{self.remote.repo}"
        return info

    def _pack_stream(self, path: str, body: Any) -> Iterator[tuple[Kind, bytes]]:
        try:
            with self._http.stream(
                "POST",
                self._prefix + path,
                content=msgspec.json.encode(body),
                headers={"Content-Type": "application/json", "Accept": PACK_MEDIA_TYPE},
            ) as response:
                if response.status_code != 200:
                    self._fail(response)
                yield from iter_pack(response.iter_raw())
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        except CorruptObject as exc:
            raise RemoteError(f"{self._where()} sent a damaged pack: {exc.message}") from exc

    # -- the protocol's requests -----------------------------------------------------------

    def _batches(self, oids: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
        step = max(1, self.info.limits.max_ids)
        for start in range(0, len(oids), step):
            yield oids[start : start + step]

    def missing(self, kind: Kind, oids: Sequence[bytes]) -> set[bytes]:
        """Which of `oids` the remote lacks, asked in batches of the server's limit."""
        absent: set[bytes] = set()
        if not self.info.exists:
            return set(oids)
        for batch in self._batches(oids):
            request = IdsRequest(kind_name(kind), tuple(o.hex() for o in batch))
            reply: MissingReply = self._call(
                "POST", self._prefix + "/missing", body=request, reply=MissingReply
            )
            try:
                absent.update(batch[i] for i in reply.missing)
            except IndexError:
                raise RemoteError(f"{self._where()} answered about ids it was not asked") from None
        return absent

    def objects(self, kind: Kind, oids: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """(oid, body) of each of `oids`, each re-hashed; anything unasked or absent fails."""
        for batch in self._batches(oids):
            asked = set(batch)
            request = IdsRequest(kind_name(kind), tuple(o.hex() for o in batch))
            for got, body in self._pack_stream("/objects", request):
                oid = hash_object(got, body)
                if got != kind or oid not in asked:
                    raise RemoteError(f"{self._where()} sent an object that was not asked for")
                asked.discard(oid)
                yield oid, body
            if asked:
                left = plural(len(asked), "object")
                raise RemoteError(f"{self._where()} left out {left} asked for")

    def commits(
        self, wants: Sequence[bytes], haves: Sequence[bytes]
    ) -> Iterator[tuple[bytes, bytes]]:
        limit = self.info.limits.max_ids
        room = max(0, limit - len(wants))
        request = CommitsRequest(
            tuple(o.hex() for o in wants[:limit]), tuple(o.hex() for o in haves[:room]), limit
        )
        for kind, body in self._pack_stream("/commits", request):
            if kind != Kind.COMMIT:
                raise RemoteError(f"{self._where()} sent a {kind.name.lower()} as a commit")
            yield hash_object(kind, body), body

    def send_pack(self, chunks: Iterable[bytes]) -> PackReply:
        try:
            response = self._http.post(
                self._prefix + "/packs",
                content=chunks,
                headers={"Content-Type": PACK_MEDIA_TYPE},
            )
            if response.status_code != 200:
                self._fail(response)
            return msgspec.json.decode(response.content, type=PackReply)
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        except msgspec.DecodeError as exc:
            raise RemoteError(f"{self._where()} sent a malformed answer: {exc}") from exc

    def update_refs(self, updates: Sequence[RefUpdate], user: str) -> RefsReply:
        reply: RefsReply = self._call(
            "POST", self._prefix + "/refs", body=RefsRequest(tuple(updates), user), reply=RefsReply
        )
        return reply

    def require_write(self) -> None:
        """Fail early, with the server's own message, when the key may not write."""
        if not self.info.can_write:
            self._call("POST", self._prefix + "/refs", body=RefsRequest(()), reply=RefsReply)
            raise RemoteError(f"{self._where()} does not let this key push")


def connect(repo: Repository, name: str) -> Connection:
    """A connection to remote `name` of `repo`, with the key from its environment variable."""
    remote = get_remote(repo, name)
    return _open(remote, name)


def _open(remote: Remote, name: str) -> Connection:
    source = remote.key_env or "DSV_API_KEY"
    return Connection(remote.url, key=os.environ.get(source) or None, key_source=source, name=name)


# -- results ------------------------------------------------------------------------------------


RefStatus = Literal["new", "updated", "forced", "deleted", "up-to-date", "rejected"]


class RefResult(msgspec.Struct, frozen=True):
    """One ref of a push or fetch: `status` is new, updated, forced, up-to-date, rejected, or
    deleted (a remote-tracking ref whose ref the remote no longer has; `new` is None)."""

    name: str
    target: str
    old: bytes | None
    new: bytes | None
    status: RefStatus
    reason: str = ""


class PushResult(msgspec.Struct, frozen=True):
    refs: list[RefResult]
    objects: int
    packs: int
    bytes_sent: int
    bytes_received: int


class FetchResult(msgspec.Struct, frozen=True):
    refs: list[RefResult]
    objects: int
    bytes_sent: int
    bytes_received: int


class PullResult(msgspec.Struct, frozen=True):
    fetch: FetchResult
    branch: str
    old: bytes | None
    new: bytes | None
    status: Literal["fast-forward", "up-to-date", "ahead"]


class CloneResult(msgspec.Struct, frozen=True):
    path: Path
    branch: str | None
    fetch: FetchResult


# -- history helpers ----------------------------------------------------------------------------


def _reach(repo: Repository, start: bytes) -> set[bytes]:
    """Commits reachable from `start`, itself included."""
    seen = {start}
    queue = [start]
    while queue:
        oid = queue.pop()
        for parent in repo.read_commit(oid).parents:
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return seen


def _is_ancestor(repo: Repository, ancestor: bytes, descendant: bytes) -> bool:
    if ancestor == descendant:
        return True
    if missing_from(repo.store, [ancestor]):
        return False
    seen = {descendant}
    queue = [descendant]
    while queue:
        for parent in repo.read_commit(queue.pop()).parents:
            if parent == ancestor:
                return True
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return False


def _topo_order(commits: dict[bytes, Commit]) -> list[bytes]:
    """Commits of `commits`, every parent before its children."""
    order: list[bytes] = []
    done: set[bytes] = set()
    for root in commits:
        stack = [(root, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in done:
                continue
            if expanded:
                done.add(oid)
                order.append(oid)
                continue
            stack.append((oid, True))
            stack.extend((p, False) for p in commits[oid].parents if p in commits and p not in done)
    return order


# -- push ---------------------------------------------------------------------------------------


def _resolve_push_ref(repo: Repository, name: str) -> str:
    if name.startswith("refs/"):
        if repo.refs.read(name) is None:
            raise BadInput(f"no ref named {name!r}")
        return name
    for prefix in (BRANCHES, TAGS, ENVS):
        if repo.refs.read(prefix + name) is not None:
            return prefix + name
    raise BadInput(
        f"no branch, tag or environment named {name!r}",
        hint="'dsv branch', 'dsv tag' and 'dsv env list' show what there is",
    )


def _push_refs(repo: Repository, names: Sequence[str], tags: bool, envs: bool) -> list[str]:
    refs: list[str] = [_resolve_push_ref(repo, n) for n in names]
    if not names:
        branch = repo.current_branch()
        if branch is None:
            raise BadState("HEAD is detached: name what to push", hint="dsv push origin BRANCH")
        if repo.head() is None:
            raise BadState(f"branch {branch} has no versions yet", hint="commit something first")
        refs.append(BRANCHES + branch)
    if tags:
        refs += [full for full, _ in repo.refs.list_refs(TAGS)]
    if envs:
        refs += [full for full, _ in repo.refs.list_refs(ENVS)]
    return list(dict.fromkeys(refs))


def _tracking_ref(remote: str, name: str) -> str | None:
    """Where a remote's ref is recorded locally (tags: nowhere, they are shared as they are)."""
    if name.startswith(BRANCHES):
        return f"{REMOTES}{remote}/{name[len(BRANCHES) :]}"
    if name.startswith(ENVS):
        return f"{REMOTES}{remote}/envs/{name[len(ENVS) :]}"
    return None


def _short(name: str) -> str:
    for prefix in (BRANCHES, TAGS, ENVS):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _plan_push(
    repo: Repository, conn: Connection, tips: list[bytes], known: set[bytes]
) -> list[tuple[Kind, bytes]]:
    """Every object the remote lacks, bottom-up, found level by level from the commits down.

    The remote holds everything an object it holds reaches (docs/protocol.md §4), so each
    level asks only about what the objects missing at the level above refer to.
    """
    commits: dict[bytes, Commit] = {}
    queue = [t for t in tips if t not in known]
    while queue:
        oid = queue.pop()
        if oid in commits or oid in known:
            continue
        commits[oid] = repo.read_commit(oid)
        queue.extend(commits[oid].parents)
    absent = conn.missing(Kind.COMMIT, list(commits))
    commits = {oid: c for oid, c in commits.items() if oid in absent}
    trees = conn.missing(Kind.TREE, list(dict.fromkeys(c.tree for c in commits.values())))
    datasets: list[bytes] = []
    for tree in trees:
        datasets += [e.dataset for e in repo.read_tree(tree).entries]
    # Pages, and so datapoints, go in the order the datasets list them: the remote stores
    # them so, and a clone reads them back in that order.
    datasets = list(dict.fromkeys(datasets))
    absent = conn.missing(Kind.DATASET, datasets)
    datasets = [oid for oid in datasets if oid in absent]
    pages: list[bytes] = []
    for oid in datasets:
        pages += [s.page for s in repo.read_dataset(oid).slices]
    pages = list(dict.fromkeys(pages))
    absent = conn.missing(Kind.PAGE, pages)
    pages = [oid for oid in pages if oid in absent]
    points: list[bytes] = []
    asked: set[bytes] = set()
    batch: list[bytes] = []
    # Pages are up to 512 KiB each: a few at a time keeps memory flat.
    for start in range(0, len(pages), 16):
        chunk = pages[start : start + 16]
        for body in repo.store.read_bulk(chunk, Kind.PAGE):
            for oid in split_oids(body):
                if oid not in asked:
                    asked.add(oid)
                    batch.append(oid)
        if len(batch) >= conn.info.limits.max_ids or start + 16 >= len(pages):
            absent_points = conn.missing(Kind.DATAPOINT, batch)
            points += [oid for oid in batch if oid in absent_points]
            batch = []
    return (
        [(Kind.DATAPOINT, o) for o in points]
        + [(Kind.PAGE, o) for o in pages]
        + [(Kind.DATASET, o) for o in sorted(datasets)]
        + [(Kind.TREE, o) for o in sorted(trees)]
        + [(Kind.COMMIT, o) for o in _topo_order(commits)]
    )


class _PackCut:
    """Packs the objects from `start` on until `budget` bytes, one block at a time."""

    def __init__(
        self,
        repo: Repository,
        items: list[tuple[Kind, bytes]],
        start: int,
        budget: int,
        report: Callable[[int, int], None],
    ) -> None:
        self.repo = repo
        self.items = items
        self.end = start
        self.budget = budget
        self.report = report

    def _bodies(self) -> Iterator[tuple[Kind, bytes, bytes]]:
        at = self.end
        while at < len(self.items):
            kind = self.items[at][0]
            stop = at
            while (
                stop < len(self.items) and stop - at < _READ_BATCH and self.items[stop][0] == kind
            ):
                stop += 1
            oids = [oid for _, oid in self.items[at:stop]]
            for oid, body in zip(oids, self.repo.store.read_bulk(oids, kind), strict=True):
                yield kind, oid, body
            at = stop

    def chunks(self) -> Iterator[bytes]:
        encoder = PackEncoder()
        yield encoder.start()
        block: list[tuple[Kind, bytes]] = []
        raw = 0
        for kind, oid, body in self._bodies():
            entry = len(body) + 5
            if encoder.bytes_out + block_bound(raw + entry + 4) + 32 > self.budget:
                if block:
                    yield encoder.block(block)
                    self.report(len(block), encoder.bytes_out)
                    block, raw = [], 0
                if encoder.bytes_out + block_bound(entry + 4) + 32 > self.budget:
                    if encoder.objects == 0:
                        raise RemoteError(
                            f"{kind.name.lower()} {oid.hex()} is {len(body)} bytes, more than "
                            f"the remote accepts in one request ({self.budget} bytes)",
                            hint="raise the server's --max-request-size",
                        )
                    break
            block.append((kind, body))
            raw += entry
            self.end += 1
            if raw >= BLOCK_SIZE:
                yield encoder.block(block)
                self.report(len(block), encoder.bytes_out)
                block, raw = [], 0
        if block:
            yield encoder.block(block)
            self.report(len(block), encoder.bytes_out)
        yield encoder.finish()


def _send(
    repo: Repository, conn: Connection, items: list[tuple[Kind, bytes]], progress: ProgressFn
) -> int:
    """Send `items` in packs that fit the server's limit; return how many packs."""
    budget = max(_MIN_PACK, min(conn.info.limits.max_request_bytes, PACK_TARGET))
    sent_objects = 0
    sent_bytes = 0
    packs = 0
    at = 0
    while at < len(items):
        base_objects, base_bytes = sent_objects, sent_bytes

        def report(n: int, total: int, base_bytes: int = base_bytes) -> None:
            nonlocal sent_objects, sent_bytes
            sent_objects += n
            sent_bytes = base_bytes + total
            progress(Progress("sending", sent_objects, len(items), sent_bytes))

        cut = _PackCut(repo, items, at, budget, report)
        try:
            conn.send_pack(cut.chunks())
        except RemoteRefused as exc:
            # Some proxy in between takes less than the server said: halve and resend.
            if exc.status != 413 or budget <= _MIN_PACK:
                raise
            budget //= 2
            sent_objects, sent_bytes = base_objects, base_bytes
            continue
        packs += 1
        at = cut.end
    return packs


def push(
    repo: Repository,
    remote: str = "origin",
    refs: Sequence[str] = (),
    *,
    force: bool = False,
    tags: bool = False,
    envs: bool = False,
    progress: ProgressFn | None = None,
) -> PushResult:
    """Send refs (default: the current branch) and every object they need that the remote lacks.

    Refs move all together or not at all, and only after the remote holds all their data.
    """
    names = _push_refs(repo, refs, tags, envs)
    local = {name: repo.refs.read(name) for name in names}
    with connect(repo, remote) as conn:
        conn.require_write()
        theirs = {n: bytes.fromhex(o) for n, o in conn.info.refs.items()}
        results: list[RefResult] = []
        updates: list[RefUpdate] = []
        rejected: list[str] = []
        for name in names:
            new = local[name]
            assert new is not None
            old = theirs.get(name)
            status: RefStatus = "new" if old is None else "updated"
            if old == new:
                results.append(RefResult(name, name, old, new, "up-to-date"))
                continue
            if old is not None and not force:
                if name.startswith(TAGS):
                    rejected.append(f"{_short(name)} (the remote has this tag at another version)")
                    continue
                if name.startswith(BRANCHES) and not _is_ancestor(repo, old, new):
                    rejected.append(
                        f"{_short(name)} (non-fast-forward: the remote has versions "
                        "you do not have)"
                    )
                    continue
            if old is not None and force:
                status = "forced"
            results.append(RefResult(name, name, old, new, status))
            updates.append(RefUpdate(name, old.hex() if old else None, new.hex(), force))
        if rejected:
            raise RemoteError(
                f"rejected: {'; '.join(rejected)}; nothing was pushed",
                hint="run 'dsv pull' to bring in the remote's versions, then push again; "
                "or 'dsv push --force' to overwrite them",
            )
        packs = 0
        items: list[tuple[Kind, bytes]] = []
        if updates:
            (progress or _quiet)(Progress("negotiating", 0, 0, 0))
            known = {o for o in theirs.values() if not missing_from(repo.store, [o])}
            tips = [bytes.fromhex(u.new) for u in updates]
            items = _plan_push(repo, conn, tips, known)
            packs = _send(repo, conn, items, progress or _quiet)
            conn.update_refs(updates, repo.user)
        with repo.lock():
            for r in results:
                tracking = _tracking_ref(remote, r.name)
                if tracking is not None and r.new is not None:
                    current = repo.refs.read(tracking)
                    if current != r.new:
                        repo.refs.update(
                            tracking,
                            r.new,
                            expected=current or MISSING,
                            user=repo.user,
                            reason=f"push: {remote}",
                        )
        return PushResult(results, len(items), packs, conn.bytes_sent, conn.bytes_received)


# -- fetch ---------------------------------------------------------------------------------------


def _receive_objects(
    repo: Repository, conn: Connection, wants: list[bytes], progress: ProgressFn
) -> int:
    """Bring in everything reachable from `wants` that the repository lacks; return the count.

    Datapoints are stored as they arrive (they refer to nothing); pages, datasets, trees and
    commits only at the end, so an interrupted fetch never leaves an object whose references
    are missing, and a rerun asks only for what is still absent.
    """
    store = repo.store
    wants = sorted(missing_from(store, wants))
    if not wants:
        return 0
    haves = list(dict.fromkeys(oid for _, oid in repo.refs.list_refs("refs/")))
    received = 0
    structure = store.writer()
    try:
        commits: dict[bytes, Commit] = {}
        pending = wants
        half = max(1, conn.info.limits.max_ids // 2)
        while pending:
            ask, pending = pending[:half], pending[half:]
            batch: dict[bytes, bytes] = dict(conn.commits(ask, haves))
            if not set(ask) <= set(batch):
                raise RemoteError(f"{conn.name}: the remote left out commits asked for")
            fresh = missing_from(store, [oid for oid in batch if oid not in commits])
            for oid in fresh:
                commits[oid] = decode_commit(batch[oid], oid)
                structure.add(Kind.COMMIT, oid, batch[oid], check_store=False)
            # A commit held here is complete: only the parents of new ones are walked on.
            parents = {p for oid in fresh for p in commits[oid].parents}
            parents = missing_from(
                store, [p for p in parents if p not in commits and p not in batch]
            )
            pending = sorted(set(pending) | parents)
            received += len(fresh)
            progress(Progress("receiving commits", received, 0, conn.bytes_received))

        def level(kind: Kind, oids: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
            nonlocal received
            # In the order given, which the remote answers in: datapoints asked in the order
            # their datasets list them are stored that way, so a checkout reads them in order
            # (asked sorted, a clone's checkout decompressed a block for nearly every record).
            absent = missing_from(store, oids)
            wanted = [oid for oid in oids if oid in absent]
            phase = f"receiving {kind.name.lower()}s"
            step = max(1, conn.info.limits.max_ids)
            for start in range(0, len(wanted), step):
                for n, (oid, body) in enumerate(
                    conn.objects(kind, wanted[start : start + step]), start + 1
                ):
                    received += 1
                    if n % 256 == 0 or n == len(wanted):
                        progress(Progress(phase, n, len(wanted), conn.bytes_received))
                    yield oid, body
                # A boundary between batches: what was received so far may be published.
                yield b"", b""

        datasets: dict[bytes, None] = {}  # insertion-ordered sets
        trees = list(dict.fromkeys(c.tree for c in commits.values()))
        for oid, body in level(Kind.TREE, trees):
            if oid:
                datasets.update(dict.fromkeys(_checked_tree(conn, oid, body)))
                structure.add(Kind.TREE, oid, body, check_store=False)
        pages: dict[bytes, None] = {}
        for oid, body in level(Kind.DATASET, list(datasets)):
            if oid:
                pages.update(dict.fromkeys(s.page for s in decode_dataset(body, oid).slices))
                structure.add(Kind.DATASET, oid, body, check_store=False)
        points: list[bytes] = []
        seen: set[bytes] = set()
        for oid, body in level(Kind.PAGE, list(pages)):
            if not oid:
                continue
            if not body or len(body) % OID_SIZE:
                raise RemoteError(f"{conn.name}: page {oid.hex()} is malformed")
            for point in split_oids(body):
                if point not in seen:
                    seen.add(point)
                    points.append(point)
            structure.add(Kind.PAGE, oid, body, check_store=False)
        # Datapoints refer to nothing: each batch is published as it ends, so a rerun after
        # an interruption asks only for the batches that did not arrive.
        writer = store.writer()
        published: list[str] = []
        try:
            for oid, body in level(Kind.DATAPOINT, points):
                if oid:
                    writer.add(Kind.DATAPOINT, oid, body, check_store=False)
                else:
                    writer.close()
                    published += writer.published
                    writer = store.writer()
            writer.close()
            published += writer.published
        except BaseException:
            writer.abort()
            raise
        structure.close()
    except BaseException:
        structure.abort()
        raise
    if len(published) > 1:
        # One pack per fetch, as one per batch slowed every later lookup (a keyed diff in a
        # 1M clone of 100 packs took 2.8x as long). Blocks are copied, not redone. Only an
        # optimisation: everything fetched is stored already, so a full disk leaves the
        # batch packs as they are.
        with contextlib.suppress(OSError):
            store.merge_packs(published)
    store.tidy()  # and fetch after fetch, the small packs are merged as they pile up
    return received


def _checked_tree(conn: Connection, oid: bytes, body: bytes) -> list[bytes]:
    """The datasets of a received tree, refused unless well formed (format.md §3).

    A server is not trusted: a path like `../x` or `.dsv/HEAD` would be written outside the
    working tree, so it is refused here, before any object is stored or any ref moves.
    """
    try:
        return references(Kind.TREE, oid, body)
    except CorruptObject as exc:
        raise RemoteError(
            f"{conn.name} sent a tree that dsv refuses: {exc.message}",
            hint="the remote holds a version no correct dsv writes; nothing was written here",
        ) from exc


def _update_tracking(repo: Repository, remote: str, theirs: dict[str, bytes]) -> list[RefResult]:
    results = []
    for name, oid in sorted(theirs.items()):
        target = _tracking_ref(remote, name)
        if target is None:
            if not name.startswith(TAGS):
                continue
            target = name
        current = repo.refs.read(target)
        if current == oid:
            results.append(RefResult(name, target, current, oid, "up-to-date"))
            continue
        if name.startswith(TAGS) and current is not None:
            results.append(
                RefResult(name, target, current, oid, "rejected", "would clobber existing tag")
            )
            continue
        repo.refs.update(
            target, oid, expected=current or MISSING, user=repo.user, reason=f"fetch: {remote}"
        )
        results.append(
            RefResult(name, target, current, oid, "new" if current is None else "updated")
        )
    # The remote deleted these (an environment's deployment removed, a branch deleted): the
    # tracking refs follow, so they never show a state the remote no longer has.
    kept = {_tracking_ref(remote, name) for name in theirs}
    for target, oid in repo.refs.list_refs(f"{REMOTES}{remote}/"):
        if target in kept:
            continue
        repo.refs.delete(target, expected=oid, user=repo.user, reason=f"fetch: {remote} deleted it")
        short = target[len(f"{REMOTES}{remote}/") :]
        name = ENVS + short[len("envs/") :] if short.startswith("envs/") else BRANCHES + short
        results.append(RefResult(name, target, oid, None, "deleted"))
    return results


def _fetch_with(
    repo: Repository, conn: Connection, remote: str, progress: ProgressFn
) -> FetchResult:
    info = conn.info
    if not info.exists:
        raise RemoteError(
            f"{remote}: repository {conn.remote.repo} does not exist on {conn.remote.base}",
            hint="check the URL; a push with a write key creates it",
        )
    theirs = {n: bytes.fromhex(o) for n, o in info.refs.items()}
    with repo.lock():
        count = _receive_objects(repo, conn, list(dict.fromkeys(theirs.values())), progress)
        refs = _update_tracking(repo, remote, theirs)
    return FetchResult(refs, count, conn.bytes_sent, conn.bytes_received)


def fetch(
    repo: Repository, remote: str = "origin", *, progress: ProgressFn | None = None
) -> FetchResult:
    """Bring in the remote's refs as `refs/remotes/REMOTE/*` (environments under `envs/`)."""
    with connect(repo, remote) as conn:
        return _fetch_with(repo, conn, remote, progress or _quiet)


# -- pull and clone ------------------------------------------------------------------------------


def _fast_forward(
    repo: Repository,
    branch: str,
    old: bytes | None,
    new: bytes,
    why: str,
    progress: ProgressFn | None = None,
) -> None:
    """Write the files of `new` and move `branch` there, keeping HEAD on the branch."""
    from dsv import ops

    with repo.lock():
        # checkout refuses before touching anything if local changes would be overwritten.
        ops.checkout(repo, new.hex(), progress=progress)
        repo.refs.update(
            BRANCHES + branch, new, expected=old or MISSING, user=repo.user, reason=why
        )
        repo.refs.set_symbolic("HEAD", BRANCHES + branch)


def pull(
    repo: Repository, remote: str = "origin", *, progress: ProgressFn | None = None
) -> PullResult:
    """Fetch, then fast-forward the current branch to its remote-tracking ref."""
    branch = repo.current_branch()
    if branch is None:
        raise BadState(
            "HEAD is detached: pull updates the current branch", hint="dsv switch BRANCH"
        )
    fetched = fetch(repo, remote, progress=progress)
    theirs = repo.refs.read(f"{REMOTES}{remote}/{branch}")
    if theirs is None:
        raise BadState(
            f"{remote} has no branch {branch!r}",
            hint=f"push it with 'dsv push {remote} {branch}'",
        )
    ours = repo.head()
    if ours == theirs:
        return PullResult(fetched, branch, ours, theirs, "up-to-date")
    if ours is not None and _is_ancestor(repo, theirs, ours):
        return PullResult(fetched, branch, ours, ours, "ahead")
    if ours is not None and not _is_ancestor(repo, ours, theirs):
        mine = _reach(repo, ours)
        other = _reach(repo, theirs)
        here = plural(len(mine - other), "version")
        raise BadState(
            f"{branch} and {remote}/{branch} have diverged: {here} here not on {remote}, "
            f"and {len(other - mine)} there not here",
            hint=f"keep yours on another branch and take theirs: 'dsv switch -c my-{branch} && "
            f"dsv branch -d {branch} && dsv branch {branch} {remote}/{branch} && "
            f"dsv switch {branch}'; or overwrite theirs with 'dsv push --force'",
        )
    _fast_forward(repo, branch, ours, theirs, f"pull: fast-forward to {remote}/{branch}", progress)
    return PullResult(fetched, branch, ours, theirs, "fast-forward")


def clone(
    url: str,
    directory: str | os.PathLike[str] | None = None,
    *,
    key_env: str | None = None,
    progress: ProgressFn | None = None,
) -> CloneResult:
    """A new repository in `directory` with remote `origin`, its default branch checked out."""
    parsed = parse_url(url)
    target = Path(directory if directory is not None else parsed.repo.split("/")[1])
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BadInput(f"destination {str(target)!r} exists and is not an empty directory")
    remote = Remote(url=url.strip().rstrip("/"), key_env=key_env)
    created = not target.exists()
    with _open(remote, "origin") as conn:
        head = conn.info.head
        branch = head[len(BRANCHES) :] if head and head.startswith(BRANCHES) else "main"
        try:
            with Repository.init(target, branch=branch) as repo:
                repo.save_config(msgspec.structs.replace(repo.config, remotes={"origin": remote}))
                fetched = _fetch_with(repo, conn, "origin", progress or _quiet)
                tip = repo.refs.read(f"{REMOTES}origin/{branch}")
                if tip is None:
                    return CloneResult(target.resolve(), None, fetched)
                _fast_forward(repo, branch, None, tip, f"clone: from {parsed.url}", progress)
                return CloneResult(repo.root, branch, fetched)
        except BaseException:
            if created:
                shutil.rmtree(target, ignore_errors=True)
            else:
                for child in target.iterdir():
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            raise
