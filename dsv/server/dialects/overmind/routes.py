"""HTTP routes of the Overmind Lab Datasets API (docs/overmind.md) inside `dsv serve`.

Paths, query parameters and bodies are Overmind Lab's (a Django REST framework API); the
rules live in dsv.server.dialects.overmind.service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio.to_thread
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.response import Stream

from dsv.server.dialects import Mount
from dsv.server.dialects.files import FileDatasets
from dsv.server.dialects.handlers import authenticated
from dsv.server.dialects.humanloop.backends import open_store as open_humanloop_store
from dsv.server.dialects.overmind.backends import open_store
from dsv.server.dialects.overmind.service import API, Detail, Filters, OvermindService
from dsv.server.dialects.overmind.types import decode_body, page_links, parse_int
from dsv.server.storage import KeyRecord

__all__ = ["overmind_handlers", "routes"]

_BASE = "/api/datasets"
_ITEM = _BASE + "/{id:str}"


def routes(mount: Mount) -> list[HTTPRouteHandler]:
    """The dialect's routes over the server's storage, its own store beside the core one."""
    files = FileDatasets(mount, open_humanloop_store(mount.meta), api=API)
    return overmind_handlers(OvermindService(files, open_store(mount.meta)), mount)


def _json(value: Any, status: int = 200) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(value), status_code=status, media_type="application/json"
    )


def _url(request: Request[Any, Any, Any]) -> str:
    """The URL the client asked for: litestar's drops the path's trailing slash, which every
    Overmind Lab path has."""
    parts = urlsplit(str(request.url))
    raw = request.scope.get("raw_path")
    return urlunsplit(parts._replace(path=raw.decode("latin-1"))) if raw else str(request.url)


def _filters(
    agent: str | None,
    source: str | None,
    version: str | None,
    version_min: str | None,
    version_max: str | None,
    generator_model: str | None,
    search: str | None = None,
) -> Filters:
    return Filters(
        agent or None,
        source or None,
        parse_int("version", version),
        parse_int("version_min", version_min),
        parse_int("version_max", version_max),
        generator_model or None,
        search or None,
    ).check()


def overmind_handlers(service: OvermindService, mount: Mount) -> list[HTTPRouteHandler]:
    """The routes of `GET/POST /api/datasets/` and its items, over `service`."""

    async def keyed(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        """A valid key before the body is read; then the body's media type."""
        mount.note_caller(await authenticated(connection, service.authenticate, mount.key_of))
        if handler.opt.get("json"):
            given = connection.headers.get("content-type", "").split(";")[0].strip().lower()
            if given != "application/json":
                raise HTTPException(
                    status_code=415,
                    detail=f'Unsupported media type "{given}" in request.',
                )

    async def run(request: Request[Any, Any, Any], work: Callable[[KeyRecord | None], Any]) -> Any:
        caller = await authenticated(request, service.authenticate, mount.key_of)
        return await anyio.to_thread.run_sync(lambda: work(caller))

    def detail(value: Detail, status: int = 200) -> Stream:
        return Stream(
            service.encode_detail(value), media_type="application/json", status_code=status
        )

    @get(_BASE + "/", guards=[keyed])
    async def list_datasets(
        request: Request[Any, Any, Any],
        agent: str | None = None,
        source: str | None = None,
        version: str | None = None,
        version_min: str | None = None,
        version_max: str | None = None,
        generator_model: str | None = None,
        ordering: str | None = None,
        page: str | None = None,
        search: str | None = None,
    ) -> Response[bytes]:
        """List dataset versions: those of the request's repository, filtered, a page at a
        time (100)."""
        filters = _filters(
            agent, source, version, version_min, version_max, generator_model, search
        )
        count, number, shown = await run(
            request,
            lambda caller: service.list_datasets(caller, filters, ordering=ordering, page=page),
        )
        following, previous = page_links(_url(request), number, count)
        return _json({"count": count, "next": following, "previous": previous, "results": shown})

    @post(_BASE + "/", guards=[keyed], opt={"json": True}, status_code=201)
    async def create_dataset(request: Request[Any, Any, Any]) -> Stream:
        """Create a dataset version: a commit setting the agent's file to the datapoints."""
        body = decode_body(await request.body())
        made: Detail = await run(request, lambda caller: service.create(caller, body))
        return detail(made, 201)

    @get(_ITEM + "/", guards=[keyed])
    async def retrieve_dataset(
        request: Request[Any, Any, Any],
        id: str,
        agent: str | None = None,
        source: str | None = None,
        version: str | None = None,
        version_min: str | None = None,
        version_max: str | None = None,
        generator_model: str | None = None,
    ) -> Stream:
        """Retrieve a dataset version with every datapoint (streamed)."""
        filters = _filters(agent, source, version, version_min, version_max, generator_model)
        found: Detail = await run(request, lambda caller: service.get(caller, id, filters))
        return detail(found)

    @delete(_ITEM + "/", guards=[keyed], status_code=204)
    async def delete_dataset(request: Request[Any, Any, Any], id: str) -> None:
        """Delete a dataset version (not the active one)."""
        await run(request, lambda caller: service.delete(caller, id))

    @post(_ITEM + "/activate/", guards=[keyed], status_code=200)
    async def activate_dataset(request: Request[Any, Any, Any], id: str) -> Stream:
        """Activate a dataset version: deploy it to the default environment."""
        found: Detail = await run(request, lambda caller: service.activate(caller, id))
        return detail(found)

    @get(_ITEM + "/datapoints/", guards=[keyed])
    async def list_datapoints(
        request: Request[Any, Any, Any],
        id: str,
        agent: str | None = None,
        source: str | None = None,
        version: str | None = None,
        version_min: str | None = None,
        version_max: str | None = None,
        generator_model: str | None = None,
        ordering: str | None = None,
        page: str | None = None,
        search: str | None = None,
    ) -> Response[bytes]:
        """List a dataset version's datapoints, a page (100) at a time."""
        filters = _filters(agent, source, version, version_min, version_max, generator_model)
        count, number, results = await run(
            request,
            lambda caller: service.list_datapoints(
                caller, id, filters, ordering=ordering, page=page, search=search or None
            ),
        )
        following, previous = page_links(_url(request), number, count)
        return _json({"count": count, "next": following, "previous": previous, "results": results})

    return [
        list_datasets,
        create_dataset,
        retrieve_dataset,
        delete_dataset,
        activate_dataset,
        list_datapoints,
    ]
