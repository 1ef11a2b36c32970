"""`dsv serve`: the remote service (docs/protocol.md) as an ASGI app on litestar, run by uvicorn.

`RemoteService` (dsv.server.service) holds the protocol's rules and knows nothing of HTTP;
`create_app` maps it and each dialect to routes, every error to a status and a body in one
place (`_handle`), and adds a request id and an access log line to every request.
"""

from __future__ import annotations

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
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.response import Stream

from dsv.canonical import find_duplicate_key
from dsv.errors import (
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
    MissingReply,
    PackReply,
    RefsReply,
    RefsRequest,
)
from dsv.server.dialects import Dialect, FieldError, Mount
from dsv.server.dialects.humanloop import HUMANLOOP
from dsv.server.dialects.orq import ORQ
from dsv.server.dialects.overmind import OVERMIND
from dsv.server.dialects.tensorzero import TENSORZERO
from dsv.server.service import Caller, RemoteService, ServerConfig
from dsv.server.storage import RESERVED_OWNER, KeyRecord, check_repo_name, open_storage
from dsv.server.web import PREFIX as WEB_PREFIX
from dsv.server.web import WebMount, error_page
from dsv.server.web import routes as web_routes
from dsv.server.web.view import Store
from dsv.version import __version__

__all__ = [
    "DIALECTS",
    "create_app",
    "escape_log",
    "is_loopback",
    "serve",
    "serve_repository",
    "status_of",
    "wrong_media_type",
]

# The hosted-platform APIs served beside dsv's own protocol, each under its own prefixes.
DIALECTS: tuple[Dialect, ...] = (HUMANLOOP, ORQ, TENSORZERO, OVERMIND)

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

# Bodies over this are checked for duplicate keys off the event loop.
_BIG_BODY = 1 << 20
_SWITCH_INTERVAL = 0.0005

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


def _dialect_of(path: str) -> Dialect | None:
    if _is_protocol_path(path):
        return None  # /v2/OWNER/NAME/info is dsv's own, though orq.ai's API owns /v2/
    return next((d for d in DIALECTS if path.startswith(d.prefixes)), None)


def _is_protocol_path(path: str) -> bool:
    """Whether `path` is `/vN/OWNER/NAME/SEGMENT` of a protocol version this server speaks."""
    parts = path.split("/")
    return (
        len(parts) == 5
        and parts[1] in {f"v{n}" for n in SUPPORTED_VERSIONS}
        and parts[4] in _PROTOCOL_SEGMENTS
        and parts[2] != RESERVED_OWNER
    )


def _request_id() -> str:
    state = _current.get()
    return state.request_id if state else "-"


def _note_caller(key: KeyRecord | None) -> None:
    """Name the request's key (its id, never the key) in its access log line."""
    state = _current.get()
    if state is not None:
        state.caller = Caller(key).name


def _error_response(status: int, code: str, message: str, hint: str | None) -> Response[Any]:
    body = ErrorReply(ErrorDetail(code, message, _request_id(), hint))
    return Response(
        content=msgspec.json.encode(body), status_code=status, media_type="application/json"
    )


def _handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every failure as `{"error": {...}}` with the request id; tracebacks only in the log.

    Under a dialect's prefixes (/v5 and /v4: Humanloop) the body is the dialect's own.
    """
    reserved = _reserved_owner(request.url.path) if isinstance(exc, HTTPException) else None
    if reserved is not None:
        # A dsv client's call on a repository `datasets/NAME`: TensorZero owns the prefix, so
        # no route matched; say why, in dsv's shape.
        exc = reserved
    status, code, message, hint = _describe(request, exc)
    if request.url.path == WEB_PREFIX or request.url.path.startswith(WEB_PREFIX + "/"):
        return error_page(status, message, hint, _request_id())
    dialect = _dialect_of(request.url.path) if reserved is None else None
    if dialect is not None:
        body = dialect.error_body(exc, message, hint, _request_id())
        return Response(
            content=msgspec.json.encode(body), status_code=status, media_type="application/json"
        )
    return _error_response(status, code, message, hint)


# The last segments of dsv protocol paths (docs/protocol.md), `/v1/OWNER/NAME/SEGMENT`.
_PROTOCOL_SEGMENTS = frozenset({"info", "missing", "objects", "commits", "packs", "refs"})


def _reserved_owner(path: str) -> DsvError | None:
    """The error of a protocol call on a repository whose owner is reserved, if it is one."""
    parts = path.split("/")
    versions = {f"v{n}" for n in SUPPORTED_VERSIONS}
    if len(parts) == 5 and parts[1] in versions and parts[4] in _PROTOCOL_SEGMENTS:
        try:
            check_repo_name(f"{parts[2]}/{parts[3]}")
        except BadInput as exc:
            return exc if parts[2] == RESERVED_OWNER else None
    return None


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
                if _dialect_of(self.url.path) is not None:
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


def create_app(service: RemoteService, *, web_only: bool = False, title: str = "dsv") -> _App:
    """The ASGI application: litestar routes wrapped in the request-id and access-log layer.

    `web_only`: the web view alone, without the protocol and the dialects (`dsv ui`).
    """
    mount = Mount(
        service.stored,
        service.meta,
        service.tmp_dir,
        service.config.auth,
        service.config.environments,
        _key_of,
        _note_caller,
        service.config.api_repo,
    )
    guard = _repo_guard(service)
    web = WebMount(
        Store(service.blobs, service.meta, service.stored, service.tmp_dir),
        service.config.auth,
        service.config.environments,
        _note_caller,
        title,
    )
    api = []
    if not web_only:
        api = [
            *(r for n in SUPPORTED_VERSIONS for r in _read_routes(service, guard, n)),
            *(r for n in SUPPORTED_VERSIONS for r in _write_routes(service, guard, n)),
            *(route for dialect in DIALECTS for route in dialect.routes(mount)),
        ]
    app = Litestar(
        route_handlers=[*_server_routes(service), *api, *web_routes(web)],
        request_class=_CheckedRequest,
        exception_handlers={Exception: _handle},
        request_max_body_size=service.config.max_request_bytes,
        openapi_config=OpenAPIConfig(title="dsv remote", version=__version__, path="/schema"),
        logging_config=None,
    )
    return _RequestLog(app)


_Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def _base(version: int) -> str:
    """Where version `version` of the protocol lives (docs/protocol.md §1): every version has
    the same calls, whose packs differ. One route per version and path: litestar 2 answers
    500 for a sync_to_thread route given several paths."""
    return f"/v{version}/{{owner:str}}/{{name:str}}"


# Where a protocol request's state keeps its guard's check: (repository, write, caller).
_CHECKED = "dsv.checked"


def _caller(
    service: RemoteService, request: Request[Any, Any, Any], owner: str, name: str, *, write: bool
) -> tuple[str, Caller]:
    """The repository a request names and who sent it; noted in the access log."""
    repo = f"{owner}/{name}"
    # The guard looked the key up for this repository already (one database round trip).
    checked = request.state.get(_CHECKED)
    found = checked[2] if checked and checked[:2] == (repo, write) else None
    if found is None:
        found = service.caller(_key_of(request), repo, write=write)
    _note_caller(found.key)
    return repo, found


def _server_routes(service: RemoteService) -> list[HTTPRouteHandler]:
    """The server's own routes: health and the OpenAPI document."""

    @get("/healthz", sync_to_thread=True)
    def healthz() -> Health:
        """Health: 200 while the server runs and both its stores answer, else 503 naming the
        store that does not (a load balancer takes such a server out of rotation)."""
        service.meta.health()
        service.blobs.health()
        return Health("ok", SUPPORTED_VERSIONS)

    @get("/openapi.json", sync_to_thread=False, include_in_schema=False)
    def openapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return request.app.openapi_schema.to_schema()

    return [healthz, openapi]


def _repo_guard(service: RemoteService) -> _Guard:
    """The guard of the /v1 routes: the key, then the body's media type, before the body."""

    async def authorized(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        """Check the key before the body is read: without one it is 401 whatever the body."""
        repo = f"{connection.path_params['owner']}/{connection.path_params['name']}"
        write = bool(handler.opt.get("write"))
        key = _key_of(connection)
        found = await anyio.to_thread.run_sync(lambda: service.caller(key, repo, write=write))
        connection.state[_CHECKED] = (repo, write, found)
        if connection.scope.get("method") == "POST":
            expected = PACK_MEDIA_TYPE if handler.opt.get("pack") else "application/json"
            given = connection.headers.get("content-type", "").split(";")[0].strip().lower()
            if given != expected:
                raise wrong_media_type(expected, given)

    return authorized


def _read_routes(service: RemoteService, guard: _Guard, version: int) -> list[HTTPRouteHandler]:
    """The protocol's reads: info, missing, objects, commits (docs/protocol.md §3)."""

    def who(request: Request[Any, Any, Any], owner: str, name: str) -> str:
        return _caller(service, request, owner, name, write=False)[0]

    @get(f"{_base(version)}/info", sync_to_thread=True, guards=[guard])
    def info(request: Request[Any, Any, Any], owner: str, name: str) -> Info:
        """Protocol versions, the repository's refs and default branch, and request limits."""
        return service.info(who(request, owner, name), _key_of(request))

    @post(f"{_base(version)}/missing", sync_to_thread=True, status_code=200, guards=[guard])
    def missing(
        request: Request[Any, Any, Any], owner: str, name: str, data: IdsRequest
    ) -> MissingReply:
        """Which of the given ids the repository lacks."""
        return service.missing(who(request, owner, name), data)

    @post(f"{_base(version)}/objects", sync_to_thread=True, status_code=200, guards=[guard])
    def objects(request: Request[Any, Any, Any], owner: str, name: str, data: IdsRequest) -> Stream:
        """A pack (application/x-dsv-pack) of the given objects, in the order asked."""
        chunks = service.objects(who(request, owner, name), data, version=version)
        return Stream(chunks, media_type=PACK_MEDIA_TYPE)

    @post(f"{_base(version)}/commits", sync_to_thread=True, status_code=200, guards=[guard])
    def commits(
        request: Request[Any, Any, Any], owner: str, name: str, data: CommitsRequest
    ) -> Stream:
        """A pack of the commits reachable from `wants`, not walking past `haves`."""
        chunks = service.commits(who(request, owner, name), data, version=version)
        return Stream(chunks, media_type=PACK_MEDIA_TYPE)

    return [info, missing, objects, commits]


def _write_routes(service: RemoteService, guard: _Guard, version: int) -> list[HTTPRouteHandler]:
    """The protocol's writes: a pack, then the refs (docs/protocol.md §4, §5)."""

    @post(
        f"{_base(version)}/packs",
        status_code=200,
        guards=[guard],
        opt={"write": True, "pack": True},
    )
    async def packs(request: Request[Any, Any, Any], owner: str, name: str) -> PackReply:
        """Store a pack (body: application/x-dsv-pack) after verifying all of it."""
        repo, _ = await anyio.to_thread.run_sync(
            lambda: _caller(service, request, owner, name, write=True)
        )
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
            return await anyio.to_thread.run_sync(
                lambda: service.receive_pack(repo, tmp, size, version=version)
            )
        finally:
            tmp.unlink(missing_ok=True)

    @post(
        f"{_base(version)}/refs",
        sync_to_thread=True,
        status_code=200,
        guards=[guard],
        opt={"write": True},
    )
    def refs(
        request: Request[Any, Any, Any], owner: str, name: str, data: RefsRequest
    ) -> RefsReply:
        """Compare-and-swap several refs at once: all move or none."""
        repo, found = _caller(service, request, owner, name, write=True)
        return service.update_refs(repo, data, found)

    return [packs, refs]


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


def _meta_shown(meta: object) -> str:
    return str(getattr(meta, "where", "sqlite"))


def serve(
    config: ServerConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    announce: Callable[[str], None] = lambda _: None,
) -> None:
    """Run the server until interrupted; `announce` gets the line saying where it listens."""
    if not config.auth and not is_loopback(host):
        raise BadInput(
            f"refusing to serve without keys on {host}: anyone who can reach it could "
            "read and overwrite every repository",
            hint="bind to 127.0.0.1 (the default) for --no-auth, or drop --no-auth and create "
            "keys with 'dsv keys create'",
        )
    blobs, meta = open_storage(Path(config.root), objects=config.objects, meta=config.meta)
    service = RemoteService(config, blobs, meta)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    auth = "keys required" if config.auth else "no auth"
    where = f"root {config.root}"
    if config.objects or config.meta:
        # Never the DSN itself: it may hold a password.
        where += f", objects {config.objects or 'local'}, meta {_meta_shown(meta)}"
    announce(f"dsv serve: listening on http://{shown}:{bound} ({where}, {auth})")
    _run(create_app(service), service, sock)


def serve_repository(
    path: Path, *, port: int = 8765, announce: Callable[[str], None] = lambda _: None
) -> None:
    """`dsv ui`: the web view of the local repository at `path`, on 127.0.0.1 only, without
    keys, until interrupted; `announce` gets the URL of its page."""
    from dsv.repo import Repository
    from dsv.server.storage.repo import RepoBlobStore, RepoMetaStore

    repo = Repository.open(path)
    blobs, meta = RepoBlobStore(repo), RepoMetaStore(repo)
    # The web view's deploy writes its pack here first: on the repository's file system.
    config = ServerConfig(root=str(repo.dsv_dir / "ui"), auth=False)
    service = RemoteService(config, blobs, meta)
    sock = _bind("127.0.0.1", port)
    bound = sock.getsockname()[1]
    announce(f"dsv ui: http://127.0.0.1:{bound}{WEB_PREFIX}/r/{blobs.name}")
    try:
        _run(create_app(service, web_only=True, title=repo.root.name), service, sock)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(config.root)


def _run(app: _App, service: RemoteService, sock: socket.socket) -> None:
    """Serve `app` on the listening `sock` until interrupted, then close the storage."""
    import uvicorn

    # Streamed reads keep worker threads busy in Python for as long as a client reads; a short
    # request waiting for the GIL gets it after this long rather than the default 5 ms each
    # time, so page requests stay fast beside them (docs/performance.md, Streamed reads).
    sys.setswitchinterval(_SWITCH_INTERVAL)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
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
        service.checker.close()
        service.blobs.close()
        service.meta.close()
        with contextlib.suppress(OSError):
            os.rmdir(service.tmp_dir)
