"""HTTP routes of TensorZero's dataset endpoints (docs/tensorzero.md) inside `dsv serve`:
those the `tensorzero` client calls in HTTP mode, the gateway's `GET /internal/datasets`,
and the older endpoints of TensorZero's documentation (with and without `/v1`)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post
from litestar.handlers.http_handlers import HTTPRouteHandler

from dsv.server.dialects import FieldError, Mount
from dsv.server.dialects.handlers import json_response, key_guard, keyed_runner
from dsv.server.dialects.humanloop.backends import open_store
from dsv.server.dialects.humanloop.types import decode_body
from dsv.server.dialects.paging import int_param, parse_limit_offset
from dsv.server.dialects.tensorzero.service import TensorZeroService
from dsv.server.dialects.tensorzero.types import (
    CreateBody,
    IdsBody,
    LegacyBulkBody,
    ListBody,
    MetadataBody,
    UpdateBody,
)
from dsv.server.storage import KeyRecord

__all__ = ["routes"]

_BASE = "/v1/datasets/{dataset_name:str}"
_OLD = ["/datasets/{dataset_name:str}", _BASE]
# The older endpoints' default page (TensorZero's documentation).
_OLD_LIMIT = 100


def routes(mount: Mount) -> list[HTTPRouteHandler]:
    """The dialect's routes over the server's storage."""
    service = TensorZeroService(mount, open_store(mount.meta))

    keyed = key_guard(mount, service.authenticate)
    run = keyed_runner(mount, service.authenticate)

    body = {"body": True}

    @post(_BASE + "/datapoints", guards=[keyed], opt=body, status_code=200)
    async def create_datapoints(
        request: Request[Any, Any, Any], dataset_name: str
    ) -> Response[bytes]:
        """Create datapoints (the dataset too): a commit appending them; their ids."""
        data: CreateBody = decode_body(await request.body(), CreateBody)
        ids = await run(
            request, lambda c: service.create_datapoints(c, dataset_name, data.datapoints)
        )
        return json_response({"ids": ids})

    @patch(_BASE + "/datapoints", guards=[keyed], opt=body)
    async def update_datapoints(
        request: Request[Any, Any, Any], dataset_name: str
    ) -> Response[bytes]:
        """Update datapoints: a commit replacing each with a new one (new ids)."""
        data: UpdateBody = decode_body(await request.body(), UpdateBody)
        ids = await run(
            request, lambda c: service.update_datapoints(c, dataset_name, data.datapoints)
        )
        return json_response({"ids": ids})

    @patch(_BASE + "/datapoints/metadata", guards=[keyed], opt=body)
    async def update_metadata(
        request: Request[Any, Any, Any], dataset_name: str
    ) -> Response[bytes]:
        """Update datapoints' names: a commit (the renamed datapoints get new ids)."""
        data: MetadataBody = decode_body(await request.body(), MetadataBody)
        ids = await run(
            request, lambda c: service.update_metadata(c, dataset_name, data.datapoints)
        )
        return json_response({"ids": ids})

    @delete(_BASE + "/datapoints", guards=[keyed], opt=body, status_code=200)
    async def delete_datapoints(
        request: Request[Any, Any, Any], dataset_name: str
    ) -> Response[bytes]:
        """Delete datapoints (body `{"ids"}`): a commit without them; how many went."""
        data: IdsBody = decode_body(await request.body(), IdsBody)
        count = await run(request, lambda c: service.delete_datapoints(c, dataset_name, data.ids))
        return json_response({"num_deleted_datapoints": count})

    @post(_BASE + "/list_datapoints", guards=[keyed], opt=body, status_code=200)
    async def list_datapoints(
        request: Request[Any, Any, Any], dataset_name: str
    ) -> Response[bytes]:
        """List datapoints of the latest version: limit and offset, filters."""
        data: ListBody = decode_body(await request.body(), ListBody)
        found = await run(request, lambda c: service.list_datapoints(c, dataset_name, data))
        return json_response({"datapoints": found})

    @post(_BASE + "/get_datapoints", guards=[keyed], opt=body, status_code=200)
    async def get_datapoints(request: Request[Any, Any, Any], dataset_name: str) -> Response[bytes]:
        """Get datapoints by id, deleted ones included (`is_deleted`)."""
        data: IdsBody = decode_body(await request.body(), IdsBody)
        found = await run(request, lambda c: service.get_datapoints(c, dataset_name, data.ids))
        return json_response({"datapoints": found})

    @post("/v1/datasets/get_datapoints", guards=[keyed], opt=body, status_code=200)
    async def get_datapoints_anywhere(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Get datapoints by id from every dataset (the client's call without a name)."""
        data: IdsBody = decode_body(await request.body(), IdsBody)
        found = await run(request, lambda c: service.get_datapoints(c, None, data.ids))
        return json_response({"datapoints": found})

    @post(_BASE + "/from_inferences", guards=[keyed], status_code=200)
    async def from_inferences(request: Request[Any, Any, Any], dataset_name: str) -> None:
        """Create datapoints from inferences: refused, dsv keeps no inferences (a 422)."""
        # A write like the others: a read key is told so first.
        await run(request, lambda caller: service.repo(caller, write=True))
        raise FieldError(
            ["body"],
            "dsv keeps no inferences to copy datapoints from; send them with create_datapoints",
        )

    @delete(_BASE, guards=[keyed], status_code=200)
    async def delete_dataset(request: Request[Any, Any, Any], dataset_name: str) -> Response[bytes]:
        """Delete a dataset: a commit removing its file; how many datapoints went."""
        return json_response(await run(request, lambda c: service.delete_dataset(c, dataset_name)))

    @get("/internal/datasets", guards=[keyed])
    async def list_datasets(
        request: Request[Any, Any, Any],
        function_name: str | None = None,
        limit: str | None = None,
        offset: str | None = None,
    ) -> Response[bytes]:
        """The gateway's list of datasets: name, datapoint count, last update."""
        count = None if limit in (None, "") else int_param("limit", limit, 0, 0, None)
        start = int_param("offset", offset, 0, 0, None)
        return json_response(
            await run(
                request,
                lambda c: service.list_datasets(
                    c, function_name=function_name or None, limit=count, offset=start
                ),
            )
        )

    # -- the older endpoints ------------------------------------------------------------------

    @get([p + "/datapoints" for p in _OLD], guards=[keyed])
    async def old_list(
        request: Request[Any, Any, Any],
        dataset_name: str,
        function: str | None = None,
        limit: str | None = None,
        offset: str | None = None,
    ) -> Response[bytes]:
        """List datapoints (older endpoint): a JSON array."""
        count, start = parse_limit_offset(limit, offset, default_limit=_OLD_LIMIT)
        request_body = ListBody(function_name=function or None, limit=count, offset=start)
        return json_response(
            await run(request, lambda c: service.list_datapoints(c, dataset_name, request_body))
        )

    @get([p + "/datapoints/{datapoint_id:str}" for p in _OLD], guards=[keyed])
    async def old_get(
        request: Request[Any, Any, Any], dataset_name: str, datapoint_id: str
    ) -> Response[bytes]:
        """Get a datapoint (older endpoint)."""
        return json_response(
            await run(request, lambda c: service.get_datapoint(c, dataset_name, datapoint_id))
        )

    @post([p + "/datapoints/bulk" for p in _OLD], guards=[keyed], opt=body, status_code=200)
    async def old_bulk(request: Request[Any, Any, Any], dataset_name: str) -> Response[bytes]:
        """Bulk insert datapoints (older endpoint): their ids, a JSON array."""
        data: LegacyBulkBody = decode_body(await request.body(), LegacyBulkBody)
        return json_response(
            await run(
                request, lambda c: service.create_datapoints(c, dataset_name, data.datapoints)
            )
        )

    @delete([p + "/datapoints/{datapoint_id:str}" for p in _OLD], guards=[keyed], status_code=204)
    async def old_delete(
        request: Request[Any, Any, Any], dataset_name: str, datapoint_id: str
    ) -> None:
        """Delete a datapoint (older endpoint): a commit without it; 404 if it is not there."""

        def work(caller: KeyRecord | None) -> None:
            service.get_datapoint(caller, dataset_name, datapoint_id)
            if not service.delete_datapoints(caller, dataset_name, [datapoint_id]):
                raise service.gone(dataset_name, datapoint_id)

        await run(request, work)

    return [
        create_datapoints,
        update_datapoints,
        update_metadata,
        delete_datapoints,
        list_datapoints,
        get_datapoints,
        get_datapoints_anywhere,
        from_inferences,
        delete_dataset,
        list_datasets,
        old_list,
        old_get,
        old_bulk,
        old_delete,
    ]
