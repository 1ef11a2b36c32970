"""What the owner-less dialects' routes share: the key check before a body is read, running
the work off the event loop with the caller's key, and a JSON answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler

from dsv.server.dialects import Mount
from dsv.server.storage import KeyRecord

__all__ = ["authenticated", "json_response", "key_guard", "keyed_runner"]

Authenticate = Callable[[str | None], KeyRecord | None]
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


# Where a request's state keeps its caller's key record, once the guard has looked it up.
_CALLER = "dsv.caller"


async def authenticated(
    connection: ASGIConnection[Any, Any, Any, Any],
    authenticate: Authenticate,
    key_of: Callable[[ASGIConnection[Any, Any, Any, Any]], str | None],
) -> KeyRecord | None:
    """The caller's key record, looked up once a request: the guard's lookup is kept in the
    request's state for its handler (a second lookup was a database round trip more)."""
    state = connection.state
    if _CALLER in state:
        found: KeyRecord | None = state[_CALLER]
        return found
    key = key_of(connection)
    found = await anyio.to_thread.run_sync(lambda: authenticate(key))
    state[_CALLER] = found
    return found


def json_response(value: Any) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(value), status_code=200, media_type="application/json"
    )


def key_guard(mount: Mount, authenticate: Authenticate) -> Guard:
    """A guard: a valid key before the body is read; then, on a route whose `opt` has
    `body`, the body's media type."""

    async def keyed(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        mount.note_caller(await authenticated(connection, authenticate, mount.key_of))
        if handler.opt.get("body"):
            given = connection.headers.get("content-type", "").split(";")[0].strip().lower()
            if given != "application/json":
                raise HTTPException(
                    status_code=415,
                    detail=f"this route takes application/json, "
                    f"not {given or 'a body without a type'}",
                )

    return keyed


def keyed_runner(
    mount: Mount, authenticate: Authenticate
) -> Callable[[Request[Any, Any, Any], Callable[[KeyRecord | None], Any]], Awaitable[Any]]:
    """`run(request, work)`: `work(the caller's key record)` in a worker thread."""

    async def run(request: Request[Any, Any, Any], work: Callable[[KeyRecord | None], Any]) -> Any:
        caller = await authenticated(request, authenticate, mount.key_of)
        return await anyio.to_thread.run_sync(lambda: work(caller))

    return run
