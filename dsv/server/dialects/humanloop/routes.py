"""HTTP routes of the Humanloop Datasets API (docs/humanloop.md) inside `dsv serve`.

Paths, query parameters and bodies are the ones the official `humanloop` SDK sends; the
rules live in dsv.server.dialects.humanloop.service.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NamedTuple

import anyio.to_thread
import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.response import Stream

from dsv.server.dialects import FieldError, Mount
from dsv.server.dialects.handlers import authenticated
from dsv.server.dialects.humanloop.backends import open_store
from dsv.server.dialects.humanloop.service import HumanloopService, Streamed
from dsv.server.dialects.humanloop.types import (
    MoveRequest,
    UpsertRequest,
    VersionUpdate,
    decode_body,
    parse_bool,
)
from dsv.server.dialects.paging import parse_page
from dsv.server.storage import KeyRecord

__all__ = ["humanloop_handlers", "parse_form", "routes"]

KeyOf = Callable[[ASGIConnection[Any, Any, Any, Any]], str | None]
NoteCaller = Callable[[KeyRecord | None], None]
_MEDIA = {"json": "application/json", "multipart": "multipart/form-data"}


_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,./:=?-]{1,70}")


def parse_form(body: bytes, content_type: str) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by name.

    The official SDK sends `multipart/form-data` without its boundary parameter, so the
    boundary is read from the body's first line when the header lacks it.
    """
    given = re.search(r'boundary="?([^";]+)"?', content_type)
    if given:
        boundary = given[1].encode("latin-1")
    else:
        first = body.split(b"\r\n", 1)[0]
        boundary = first[2:] if first.startswith(b"--") else b""
    if not _BOUNDARY.fullmatch(boundary):
        raise FieldError(["body"], "not a multipart/form-data body: no valid boundary")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b'Content-Type: multipart/form-data; boundary="' + boundary + b'"\r\n\r\n' + body
    )
    if not message.is_multipart() or message.defects:
        raise FieldError(["body"], "the multipart/form-data body is malformed")
    parts: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            parts.setdefault(name, payload)
    return parts


def _json(value: Any, status: int = 200) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(value), status_code=status, media_type="application/json"
    )


def _streamed(body: Iterator[bytes], value: Streamed | list[Streamed]) -> Response[bytes] | Stream:
    """A response without datapoints whole; one with them streamed, each piece made in a worker
    thread (litestar runs a sync iterator's steps there), so the event loop stays free."""
    streams = any(v.source for v in value) if isinstance(value, list) else value.source
    if not streams:
        return Response(content=b"".join(body), media_type="application/json")
    return Stream(body, media_type="application/json")


def routes(mount: Mount) -> list[HTTPRouteHandler]:
    """The dialect's routes over the server's storage, with its own store beside the core one."""
    service = HumanloopService(
        mount.objects,
        mount.meta,
        open_store(mount.meta),
        tmp_dir=mount.tmp_dir,
        auth=mount.auth,
        environments=mount.environments,
    )
    return humanloop_handlers(service, mount.key_of, mount.note_caller)


def humanloop_handlers(
    service: HumanloopService, key_of: KeyOf, note_caller: NoteCaller
) -> list[HTTPRouteHandler]:
    """The v5 Datasets routes and v4's Create Datapoint, over `service`; `note_caller` is told
    each request's key, for the access log."""

    async def keyed(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        """A valid key before the body is read; then the body's media type."""
        note_caller(await authenticated(connection, service.authenticate, key_of))
        body = handler.opt.get("body")
        if body:
            given = connection.headers.get("content-type", "").split(";")[0].strip().lower()
            if given != _MEDIA[body]:
                raise HTTPException(
                    status_code=415,
                    detail=f"this route takes {_MEDIA[body]}, "
                    f"not {given or 'a body without a type'}",
                )

    async def run(request: Request[Any, Any, Any], work: Callable[[KeyRecord | None], Any]) -> Any:
        caller = await authenticated(request, service.authenticate, key_of)
        return await anyio.to_thread.run_sync(lambda: work(caller))

    api = _Api(service, keyed, run)
    return [
        *_dataset_routes(api),
        *_datapoint_routes(api),
        *_version_routes(api),
        *_environment_routes(api),
    ]


class _Api(NamedTuple):
    """What every route of a group needs: the service, the key guard, and `run`, which calls
    the service in a worker thread with the caller's key record."""

    service: HumanloopService
    keyed: Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]
    run: Callable[[Request[Any, Any, Any], Callable[[KeyRecord | None], Any]], Awaitable[Any]]


_BASE = "/v5/datasets"
_ITEM = _BASE + "/{dataset_id:str}"


def _dataset_routes(api: _Api) -> list[HTTPRouteHandler]:
    """Datasets: list, upsert, get, delete, move."""
    service, keyed, run = api

    @get(_BASE, guards=[keyed])
    async def list_datasets(
        request: Request[Any, Any, Any],
        page: str | None = None,
        size: str | None = None,
        name: str | None = None,
        user_filter: str | None = None,
        sort_by: str | None = None,
        order: str | None = None,
    ) -> Response[bytes]:
        """List Datasets: those of every repository the key may read."""
        number, count = parse_page(page, size, default_size=50)
        return _json(
            await run(
                request,
                lambda caller: service.list_datasets(
                    caller,
                    page=number,
                    size=count,
                    name=name or None,
                    user_filter=user_filter or None,
                    sort_by=sort_by or None,
                    order=order or None,
                ),
            )
        )

    @post(_BASE, guards=[keyed], opt={"body": "json"}, status_code=200)
    async def upsert(
        request: Request[Any, Any, Any],
        version_id: str | None = None,
        environment: str | None = None,
        include_datapoints: str | None = None,
    ) -> Response[bytes] | Stream:
        """Upsert Dataset: a new version from `set`, `add` or `remove` of datapoints."""
        data: UpsertRequest = decode_body(await request.body(), UpsertRequest)
        include = parse_bool("include_datapoints", include_datapoints)
        made: Streamed = await run(
            request,
            lambda caller: service.upsert(
                caller,
                data,
                version=version_id or None,
                environment=environment or None,
                include_datapoints=include,
            ),
        )
        return _streamed(service.encode_dataset(made), made)

    @get(_ITEM, guards=[keyed])
    async def get_dataset(
        request: Request[Any, Any, Any],
        dataset_id: str,
        version_id: str | None = None,
        environment: str | None = None,
        include_datapoints: str | None = None,
    ) -> Response[bytes] | Stream:
        """Get Dataset: the default environment's version unless one is named."""
        include = parse_bool("include_datapoints", include_datapoints)
        found: Streamed = await run(
            request,
            lambda caller: service.get(
                caller,
                dataset_id,
                version=version_id or None,
                environment=environment or None,
                include_datapoints=include,
            ),
        )
        return _streamed(service.encode_dataset(found), found)

    @delete(_ITEM, guards=[keyed], status_code=200)
    async def delete_dataset(request: Request[Any, Any, Any], dataset_id: str) -> Response[bytes]:
        """Delete Dataset: a new version of the repository without it."""
        await run(request, lambda caller: service.delete(caller, dataset_id))
        return _json(None)

    @patch(_ITEM, guards=[keyed], opt={"body": "json"})
    async def move(request: Request[Any, Any, Any], dataset_id: str) -> Response[bytes]:
        """Move Dataset: rename it within its repository; its id and versions stay."""
        data: MoveRequest = decode_body(await request.body(), MoveRequest)
        return _json(await run(request, lambda caller: service.move(caller, dataset_id, data)))

    return [list_datasets, upsert, get_dataset, delete_dataset, move]


def _datapoint_routes(api: _Api) -> list[HTTPRouteHandler]:
    """Datapoints: list them, add a CSV file, v4's Create Datapoint."""
    service, keyed, run = api

    @get(_ITEM + "/datapoints", guards=[keyed])
    async def list_datapoints(
        request: Request[Any, Any, Any],
        dataset_id: str,
        version_id: str | None = None,
        environment: str | None = None,
        page: str | None = None,
        size: str | None = None,
    ) -> Response[bytes]:
        """List Datapoints of a version, a page at a time."""
        number, count = parse_page(page, size, default_size=50)
        return _json(
            await run(
                request,
                lambda caller: service.list_datapoints(
                    caller,
                    dataset_id,
                    page=number,
                    size=count,
                    version=version_id or None,
                    environment=environment or None,
                ),
            )
        )

    @post(_ITEM + "/datapoints/csv", guards=[keyed], opt={"body": "multipart"}, status_code=200)
    async def upload_csv(
        request: Request[Any, Any, Any],
        dataset_id: str,
        version_id: str | None = None,
        environment: str | None = None,
    ) -> Response[bytes]:
        """Upload CSV: its rows added to a version (default: the default environment's)."""
        form = parse_form(await request.body(), request.headers.get("content-type", ""))
        if "file" not in form:
            raise FieldError(["body", "file"], "Field required: a CSV file part", "missing")
        content = form["file"]
        fields = {}
        for name in ("version_name", "version_description"):
            value = form.get(name)
            fields[name] = value.decode("utf-8", "replace") if value else None
        return _json(
            await run(
                request,
                lambda caller: service.upload_csv(
                    caller,
                    dataset_id,
                    content,
                    version=version_id or None,
                    environment=environment or None,
                    version_name=fields["version_name"],
                    version_description=fields["version_description"],
                ),
            )
        )

    @post(
        "/v4/datasets/{dataset_id:str}/datapoints",
        guards=[keyed],
        opt={"body": "json"},
        status_code=200,
    )
    async def create_datapoints(
        request: Request[Any, Any, Any], dataset_id: str
    ) -> Response[bytes]:
        """v4 Create Datapoint: add to the latest version as a new, generated version."""
        body = await request.body()
        return _json(
            await run(
                request, lambda caller: service.create_datapoints_v4(caller, dataset_id, body)
            )
        )

    return [list_datapoints, upload_csv, create_datapoints]


def _version_routes(api: _Api) -> list[HTTPRouteHandler]:
    """Versions: list, delete (hide), update the name and description."""
    service, keyed, run = api

    @get(_ITEM + "/versions", guards=[keyed])
    async def list_versions(
        request: Request[Any, Any, Any], dataset_id: str, include_datapoints: str | None = None
    ) -> Response[bytes] | Stream:
        """List Versions of a Dataset, newest first."""
        include = include_datapoints or None
        found: list[Streamed] = await run(
            request,
            lambda caller: service.list_versions(caller, dataset_id, include_datapoints=include),
        )
        return _streamed(service.encode_versions(found), found)

    @delete(_ITEM + "/versions/{version_id:str}", guards=[keyed], status_code=200)
    async def delete_version(
        request: Request[Any, Any, Any], dataset_id: str, version_id: str
    ) -> Response[bytes]:
        """Delete Dataset Version: hide it from the lists; its commit stays in the history."""
        await run(request, lambda caller: service.delete_version(caller, dataset_id, version_id))
        return _json(None)

    @patch(_ITEM + "/versions/{version_id:str}", guards=[keyed], opt={"body": "json"})
    async def update_version(
        request: Request[Any, Any, Any], dataset_id: str, version_id: str
    ) -> Response[bytes]:
        """Update Dataset Version: its name and description; the commit is not rewritten."""
        data: VersionUpdate = decode_body(await request.body(), VersionUpdate)
        return _json(
            await run(
                request,
                lambda caller: service.update_version(caller, dataset_id, version_id, data),
            )
        )

    return [list_versions, delete_version, update_version]


def _environment_routes(api: _Api) -> list[HTTPRouteHandler]:
    """Environments: deploy a version, remove a deployment, list them."""
    service, keyed, run = api

    @post(_ITEM + "/environments/{environment_id:str}", guards=[keyed], status_code=200)
    async def set_deployment(
        request: Request[Any, Any, Any],
        dataset_id: str,
        environment_id: str,
        version_id: str | None = None,
    ) -> Response[bytes]:
        """Deploy Dataset: move the environment's ref to the version's commit."""
        version = version_id
        if not version:
            raise FieldError(["query", "version_id"], "Field required", "missing")
        return _json(
            await run(
                request,
                lambda caller: service.set_deployment(caller, dataset_id, environment_id, version),
            )
        )

    @delete(_ITEM + "/environments/{environment_id:str}", guards=[keyed], status_code=200)
    async def remove_deployment(
        request: Request[Any, Any, Any], dataset_id: str, environment_id: str
    ) -> Response[bytes]:
        """Remove Deployment: delete the environment's ref."""
        await run(
            request,
            lambda caller: service.remove_deployment(caller, dataset_id, environment_id),
        )
        return _json(None)

    @get(_ITEM + "/environments", guards=[keyed])
    async def list_environments(
        request: Request[Any, Any, Any], dataset_id: str
    ) -> Response[bytes]:
        """List a Dataset's Environments, with the version deployed to each."""
        return _json(
            await run(request, lambda caller: service.list_environments(caller, dataset_id))
        )

    return [set_deployment, remove_deployment, list_environments]
