"""`dsv serve`: the remote service (docs/protocol.md), an ASGI app on litestar, run by uvicorn.

`RemoteService` holds the protocol's rules and knows nothing of HTTP; `create_app` maps it to
routes, errors to the JSON error shape, and adds a request id and an access log line to
every request.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import ipaddress
import logging
import os
import re
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.response import Stream

from dsv import __version__
from dsv.canonical import find_duplicate_key
from dsv.errors import (
    AccessDenied,
    BadInput,
    BadState,
    Conflict,
    CorruptObject,
    DsvError,
    Forbidden,
    NotFound,
    TooLarge,
    Unauthorized,
    Unprocessable,
)
from dsv.manifest import join_slices
from dsv.objects import (
    Dataset,
    Kind,
    decode_commit,
    decode_dataset,
    hash_object,
)
from dsv.pack import BLOCK_SIZE, PackWriter
from dsv.paths import BadPath, check_tree_paths
from dsv.protocol import (
    PACK_MEDIA_TYPE,
    REQUEST_ID_HEADER,
    SUPPORTED_VERSIONS,
    CommitsRequest,
    ErrorDetail,
    ErrorReply,
    Health,
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
from dsv.remote.humanloop import HumanloopService
from dsv.remote.humanloop_routes import HUMANLOOP_PREFIXES, humanloop_handlers
from dsv.remote.humanloop_types import DEFAULT_ENVIRONMENTS, FieldError
from dsv.remote.keys import authorize
from dsv.remote.storage import (
    BlobStore,
    KeyRecord,
    MetaStore,
    RefChange,
    RefConflict,
    check_repo_name,
    open_storage,
    publish_pack,
)
from dsv.remote.stored import StoredObjects
from dsv.text import plural

__all__ = [
    "RemoteService",
    "ServerConfig",
    "create_app",
    "escape_log",
    "is_loopback",
    "serve",
]

log = logging.getLogger("dsv.serve")
access_log = logging.getLogger("dsv.serve.access")

# C0, DEL, C1, the Unicode line and paragraph separators, surrogates (which no log stream can
# encode), and the backslash that starts an escape (so an escape is never a client's text).
_UNLOGGABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\\]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(found: re.Match[str]) -> str:
    char = found[0]
    named = _NAMED_ESCAPES.get(char)
    if named:
        return named
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        code -= 0xDC00  # a byte that was not UTF-8, kept by "surrogateescape"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_log(text: str) -> str:
    """`text` with every control character, line separator and backslash as a visible escape."""
    return _UNLOGGABLE.sub(_escape_char, text)


class _EscapeRecords(logging.Filter):
    """Every record of the server's loggers on one line: a client can never forge a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback is many lines, and its exception's text may be a client's.
            message += "\n" + "".join(traceback.format_exception(record.exc_info[1])).rstrip()
            record.exc_info = None
            record.exc_text = None
        if record.stack_info:
            message += "\n" + record.stack_info
            record.stack_info = None
        record.msg = escape_log(message)
        record.args = None
        return True


for _logger in (log, access_log):
    _logger.addFilter(_EscapeRecords())

DEFAULT_MAX_REQUEST = 64 << 20
DEFAULT_MAX_IDS = 10_000
_READ_BATCH = 2048
_DATAPOINT_BATCH = 2048
# Bodies over this are checked for duplicate keys off the event loop.
_BIG_BODY = 1 << 20
_STALE_TMP_SECONDS = 3600
# `.recv-PID-…` (received packs) and `.tmp-PID-…` (packs being written, dsv.pack): PID owns it.
_TMP_NAME = re.compile(r"\.(?:recv|tmp)-(?:(\d+)-)?.*")
_SWITCH_INTERVAL = 0.0005


class ServerConfig(msgspec.Struct, frozen=True):
    root: str
    auth: bool = True
    max_request_bytes: int = DEFAULT_MAX_REQUEST
    max_ids: int = DEFAULT_MAX_IDS
    # The Humanloop API's environments (docs/humanloop.md); the first is the default one.
    environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS


class _Caller(msgspec.Struct, frozen=True):
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


class RemoteService:
    """The protocol's rules over a blob store and a metadata store."""

    def __init__(self, config: ServerConfig, blobs: BlobStore, meta: MetaStore) -> None:
        self.config = config
        self.blobs = blobs
        self.meta = meta
        self.stored = StoredObjects(blobs)
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

    def caller(self, key: str | None, repo: str, *, write: bool) -> _Caller:
        check_repo_name(repo)
        if not self.config.auth:
            return _Caller(None)
        return _Caller(authorize(self.meta, key, repo, write=write))

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

    def objects(self, repo: str, request: IdsRequest) -> Iterator[bytes]:
        """A pack of the requested objects, in request order; checked before streaming."""
        self._check_ids(len(request.ids))
        kind = kind_named(request.kind)
        wanted = list(dict.fromkeys(_oids(request.ids)))
        absent = self.blobs.missing(repo, wanted)
        if absent:
            raise NotFound(
                f"{repo} has no {request.kind} {min(absent).hex()}"
                + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""),
                code="object_not_found",
            )
        return self._stream(repo, kind, wanted)

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

    def commits(self, repo: str, request: CommitsRequest) -> Iterator[bytes]:
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
        return self._encode_all(found)

    @staticmethod
    def _encode_all(found: list[tuple[Kind, bytes]]) -> Iterator[bytes]:
        encoder = PackEncoder()
        yield encoder.start()
        if found:
            yield encoder.block(found)
        yield encoder.finish()

    # -- receiving a pack --------------------------------------------------------------------

    def receive_pack(self, repo: str, path: Path, size: int) -> PackReply:
        """Verify a received pack completely, then store it; nothing is stored on any error.

        Every object is re-hashed (its id is computed here, never taken from the sender),
        decoded, and each of its references must be in the pack or already stored. As every
        stored pack passed this check, an object the store holds is complete: everything it
        reaches is stored too.
        """

        def verify(writer: PackWriter) -> PackReply:
            have: set[bytes] = set()
            needed: set[bytes] = set()
            pages: dict[bytes, bytes] = {}
            datasets: list[tuple[bytes, Dataset]] = []
            points: tuple[list[bytes], list[bytes]] = ([], [])
            with open(path, "rb") as handle:
                chunks = iter(lambda: handle.read(1 << 20), b"")
                for kind, body in iter_pack(chunks):
                    oid = hash_object(kind, body)
                    if oid in have:
                        continue
                    have.add(oid)
                    if kind == Kind.DATAPOINT:
                        points[0].append(oid)
                        points[1].append(body)
                        if len(points[0]) >= _DATAPOINT_BATCH:
                            check_datapoints(*points)
                            points = ([], [])
                    else:
                        needed.update(references(kind, oid, body))
                        if kind == Kind.PAGE:
                            pages[oid] = body
                        elif kind == Kind.DATASET:
                            datasets.append((oid, decode_dataset(body, oid)))
                    writer.add(kind, oid, body)
            if points[0]:
                check_datapoints(*points)
            absent = self.blobs.missing(repo, needed - have)
            if absent:
                raise Unprocessable(
                    f"the pack refers to {plural(len(absent), 'object')} that neither it nor "
                    f"{repo} "
                    f"holds, e.g. {min(absent).hex()}",
                    "send objects after everything they refer to (docs/protocol.md §4)",
                    code="unconnected",
                )
            for oid, dataset in datasets:
                self._check_content(repo, oid, dataset, pages)
            return PackReply(objects=len(have), new=len(self.blobs.missing(repo, have)), bytes=size)

        # The first pack a write key sends creates the repository; a refused one does not.
        return publish_pack(self.blobs, self.meta, self.tmp_dir, repo, verify)

    def _check_content(
        self, repo: str, oid: bytes, dataset: Dataset, pages: dict[bytes, bytes]
    ) -> None:
        """A dataset's slices must give exactly its count and content id (format.md §3)."""
        stored = [s.page for s in dataset.slices if s.page not in pages]
        bodies = dict(pages)
        if stored:
            unique = list(dict.fromkeys(stored))
            bodies.update(zip(unique, self.blobs.read(repo, Kind.PAGE, unique), strict=True))
        join_slices(dataset, bodies, oid)

    # -- refs --------------------------------------------------------------------------------

    def update_refs(self, repo: str, request: RefsRequest, caller: _Caller) -> RefsReply:
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

    def _non_fast_forward(self, u: RefUpdate, current: bytes) -> Conflict:
        return Conflict(
            f"rejected {_short(u.name)}: the remote's {_short(u.name)} ({current.hex()[:12]}) "
            f"has versions that {u.new[:12]} does not contain (non-fast-forward)",
            "run 'dsv pull' to bring them in, then push again; or 'dsv push --force' to "
            "overwrite the remote's versions",
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


# -- HTTP ----------------------------------------------------------------------------------------

_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Message, _Receive, _Send], Awaitable[None]]


class _RequestState:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.caller = "-"


_current: contextvars.ContextVar[_RequestState | None] = contextvars.ContextVar(
    "dsv_request", default=None
)
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def _request_id() -> str:
    state = _current.get()
    return state.request_id if state else "-"


def _note_caller(key: KeyRecord | None) -> None:
    """Name the request's key (its id, never the key) in its access log line."""
    state = _current.get()
    if state is not None:
        state.caller = _Caller(key).name


def _error_response(status: int, code: str, message: str, hint: str | None) -> Response[Any]:
    body = ErrorReply(ErrorDetail(code, message, _request_id(), hint))
    return Response(
        content=msgspec.json.encode(body), status_code=status, media_type="application/json"
    )


def _handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every failure as `{"error": {...}}` with the request id; tracebacks only in the log.

    Under /v5 and /v4 the shape is the Humanloop API's `{"detail": ...}` that its SDK reads.
    """
    status, code, message, hint = _describe(request, exc)
    if request.url.path.startswith(HUMANLOOP_PREFIXES):
        detail: Any = exc.detail if isinstance(exc, FieldError) else message
        body = {"detail": detail, "hint": hint, "request_id": _request_id()}
        return Response(
            content=msgspec.json.encode(body), status_code=status, media_type="application/json"
        )
    return _error_response(status, code, message, hint)


# The one place a dsv error becomes an HTTP status: the first class of its MRO found here.
_STATUS: dict[type[DsvError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    Unprocessable: 422,
    CorruptObject: 422,
    BadInput: 400,
    # Storage failing under the server (StorageError), or a state it cannot serve from.
    BadState: 503,
}


def status_of(exc: DsvError) -> int | None:
    """The HTTP status of a dsv error; None for one no request should cause (a 500)."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return None


def _describe(request: Request[Any, Any, Any], exc: Exception) -> tuple[int, str, str, str | None]:
    status = status_of(exc) if isinstance(exc, DsvError) else None
    if isinstance(exc, DsvError) and status is not None:
        if isinstance(exc, CorruptObject):
            return status, exc.code, exc.message, "the data sent was refused whole"
        if status == 503:
            log.error("request %s: %s", _request_id(), exc.message)
            return status, "storage_error", exc.message, "try again later"
        return status, exc.code, exc.message, exc.hint
    if isinstance(exc, RecursionError):
        # The JSON decoder's depth limit: malformed input like any other.
        return 400, "bad_request", "the request's JSON is nested too deeply", None
    if isinstance(exc, HTTPException):
        status = exc.status_code
        message = str(exc.detail)
        if status == 413:
            message = "the request body is larger than this server accepts"
        elif status in (404, 405):
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif isinstance(exc, ValidationException):
            problems = exc.extra if isinstance(exc.extra, list) else []
            message = (
                "; ".join(
                    f"{p.get('key', 'body')}: {p.get('message', '')}"
                    for p in problems
                    if isinstance(p, dict)
                )
                or "the request body is not valid"
            )
        return status, _STATUS_CODES.get(status, f"http_{status}"), message, None
    log.exception("request %s failed", _request_id(), exc_info=exc)
    return 500, "internal", "internal server error", "see the server's log"


_SAFE_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class _RequestLog:
    """Gives each request an id (the client's X-Request-ID if sane), echoes it, logs the line."""

    def __init__(self, app: Any) -> None:
        self.app: _App = app

    async def __call__(self, scope: _Message, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = agent = ""
        for name, value in scope.get("headers", []):
            if name == REQUEST_ID_HEADER.lower().encode():
                given = value.decode("latin-1")
            elif name == b"user-agent":
                agent = value.decode("utf-8", "surrogateescape")
        request_id = given if 0 < len(given) <= 64 and set(given) <= _SAFE_ID else uuid.uuid4().hex
        state = _RequestState(request_id)
        token = _current.set(state)
        started = time.perf_counter()
        status = 0
        sent = 0

        async def send_with_id(message: _Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
            client = scope.get("client") or ("-", 0)
            query = scope.get("query_string", b"").decode("latin-1")
            # Escaped by _EscapeRecords: the path is decoded, so it may hold any character.
            access_log.info(
                '%s "%s %s%s" %d %dB %.1fms rid=%s %s ua="%s"',
                client[0],
                scope.get("method", "-"),
                scope.get("path", "-"),
                "?" + query if query else "",
                status,
                sent,
                (time.perf_counter() - started) * 1000,
                request_id,
                state.caller,
                agent or "-",
            )


class _CheckedRequest(Request[Any, Any, Any]):
    """A request whose JSON body is refused (422) if an object in it repeats a key.

    Every JSON body is read through `body`: litestar's `data` parameters and the Humanloop
    routes' own decoding. A decoder would keep the last value silently.
    """

    _checked = False

    async def body(self) -> bytes:
        body = await super().body()
        if not self._checked and body and self.content_type[0] == "application/json":
            if len(body) > _BIG_BODY:
                found = await anyio.to_thread.run_sync(find_duplicate_key, body)
            else:
                found = find_duplicate_key(body)
            if found is not None:
                path, key = found
                where = "body" + "".join(_step(p) for p in path)
                message = f"duplicate key {key!r} in {where}"
                if self.url.path.startswith(HUMANLOOP_PREFIXES):
                    raise FieldError(["body", *path, key], message)
                raise Unprocessable(message, "send each key once per object", code="duplicate_key")
            self._checked = True
        return body


def wrong_media_type(expected: str, given: str) -> HTTPException:
    """A 415: a body of another type than the route takes."""
    return HTTPException(
        status_code=415,
        detail=f"this route takes {expected}, not {given or 'a body without a type'}",
    )


def _step(part: str | int) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    return f".{part}" if part.isidentifier() else f"[{part!r}]"


def _key_of(request: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def create_app(service: RemoteService) -> _App:
    """The ASGI application: litestar routes wrapped in the request-id and access-log layer."""

    def who(request: Request[Any, Any, Any], owner: str, name: str, *, write: bool) -> str:
        return caller(request, owner, name, write=write)[0]

    def caller(
        request: Request[Any, Any, Any], owner: str, name: str, *, write: bool
    ) -> tuple[str, _Caller]:
        repo = f"{owner}/{name}"
        found = service.caller(_key_of(request), repo, write=write)
        _note_caller(found.key)
        return repo, found

    @get("/healthz", sync_to_thread=False)
    def healthz() -> Health:
        """Liveness: 200 while the server runs."""
        return Health("ok", SUPPORTED_VERSIONS)

    @get("/openapi.json", sync_to_thread=False, include_in_schema=False)
    def openapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return request.app.openapi_schema.to_schema()

    async def authorized(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        """Check the key before the body is read: without one it is 401 whatever the body."""
        repo = f"{connection.path_params['owner']}/{connection.path_params['name']}"
        write = bool(handler.opt.get("write"))
        key = _key_of(connection)
        await anyio.to_thread.run_sync(lambda: service.caller(key, repo, write=write))
        if connection.scope.get("method") == "POST":
            expected = PACK_MEDIA_TYPE if handler.opt.get("pack") else "application/json"
            given = connection.headers.get("content-type", "").split(";")[0].strip().lower()
            if given != expected:
                raise wrong_media_type(expected, given)

    base = "/v1/{owner:str}/{name:str}"

    @get(f"{base}/info", sync_to_thread=True, guards=[authorized])
    def info(request: Request[Any, Any, Any], owner: str, name: str) -> Info:
        """Protocol versions, the repository's refs and default branch, and request limits."""
        repo = who(request, owner, name, write=False)
        return service.info(repo, _key_of(request))

    @post(f"{base}/missing", sync_to_thread=True, status_code=200, guards=[authorized])
    def missing(
        request: Request[Any, Any, Any], owner: str, name: str, data: IdsRequest
    ) -> MissingReply:
        """Which of the given ids the repository lacks."""
        return service.missing(who(request, owner, name, write=False), data)

    @post(f"{base}/objects", sync_to_thread=True, status_code=200, guards=[authorized])
    def objects(request: Request[Any, Any, Any], owner: str, name: str, data: IdsRequest) -> Stream:
        """A pack (application/x-dsv-pack) of the given objects, in the order asked."""
        chunks = service.objects(who(request, owner, name, write=False), data)
        return Stream(chunks, media_type=PACK_MEDIA_TYPE)

    @post(f"{base}/commits", sync_to_thread=True, status_code=200, guards=[authorized])
    def commits(
        request: Request[Any, Any, Any], owner: str, name: str, data: CommitsRequest
    ) -> Stream:
        """A pack of the commits reachable from `wants`, not walking past `haves`."""
        chunks = service.commits(who(request, owner, name, write=False), data)
        return Stream(chunks, media_type=PACK_MEDIA_TYPE)

    @post(f"{base}/packs", status_code=200, guards=[authorized], opt={"write": True, "pack": True})
    async def packs(request: Request[Any, Any, Any], owner: str, name: str) -> PackReply:
        """Store a pack (body: application/x-dsv-pack) after verifying all of it."""
        repo = await anyio.to_thread.run_sync(lambda: who(request, owner, name, write=True))
        # The pid tells a later start-up whether the file's owner may still be writing it.
        tmp = service.tmp_dir / f".recv-{os.getpid()}-{uuid.uuid4().hex}.pack"
        size = 0
        try:
            # To a file, not memory: a pack may be as large as the request limit.
            with open(tmp, "wb") as handle:
                async for chunk in request.stream():
                    size += len(chunk)
                    # litestar checks this too; counted here as well, whatever its version.
                    if size > service.config.max_request_bytes:
                        raise TooLarge("the request body is larger than this server accepts")
                    handle.write(chunk)
            return await anyio.to_thread.run_sync(service.receive_pack, repo, tmp, size)
        finally:
            tmp.unlink(missing_ok=True)

    @post(
        f"{base}/refs",
        sync_to_thread=True,
        status_code=200,
        guards=[authorized],
        opt={"write": True},
    )
    def refs(
        request: Request[Any, Any, Any], owner: str, name: str, data: RefsRequest
    ) -> RefsReply:
        """Compare-and-swap several refs at once: all move or none."""
        repo, found = caller(request, owner, name, write=True)
        return service.update_refs(repo, data, found)

    humanloop = HumanloopService(
        service.stored,
        service.meta,
        tmp_dir=service.tmp_dir,
        auth=service.config.auth,
        environments=service.config.environments,
    )
    app = Litestar(
        route_handlers=[
            healthz,
            openapi,
            info,
            missing,
            objects,
            commits,
            packs,
            refs,
            *humanloop_handlers(humanloop, _key_of, _note_caller),
        ],
        request_class=_CheckedRequest,
        exception_handlers={Exception: _handle},
        request_max_body_size=service.config.max_request_bytes,
        openapi_config=OpenAPIConfig(title="dsv remote", version=__version__, path="/schema"),
        logging_config=None,
    )
    return _RequestLog(app)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise BadState(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def serve(
    config: ServerConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    announce: Callable[[str], None] = lambda _: None,
) -> None:
    """Run the server until interrupted; `announce` gets the line saying where it listens."""
    import uvicorn

    if not config.auth and not is_loopback(host):
        raise BadInput(
            f"refusing to serve without keys on {host}: anyone who can reach it could "
            "read and overwrite every repository",
            hint="bind to 127.0.0.1 (the default) for --no-auth, or drop --no-auth and create "
            "keys with 'dsv keys create'",
        )
    blobs, meta = open_storage(Path(config.root))
    service = RemoteService(config, blobs, meta)
    # Streamed reads keep worker threads busy in Python for as long as a client reads; a short
    # request waiting for the GIL gets it after this long rather than the default 5 ms each
    # time, so page requests stay fast beside them (docs/performance.md, Streamed reads).
    sys.setswitchinterval(_SWITCH_INTERVAL)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    auth = "keys required" if config.auth else "no auth"
    announce(f"dsv serve: listening on http://{shown}:{bound} (root {config.root}, {auth})")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        blobs.close()
        meta.close()
        with contextlib.suppress(OSError):
            os.rmdir(service.tmp_dir)
