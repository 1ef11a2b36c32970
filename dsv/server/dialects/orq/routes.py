"""HTTP routes of the orq.ai v2 Datasets API (docs/orq.md) inside `dsv serve`.

Paths, query parameters, bodies and statuses are those the official `orq-ai-sdk` uses
(`Orq(server_url=...)` adds `/v2`): bodies 200 `application/json`, deletes 204.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post
from litestar.handlers.http_handlers import HTTPRouteHandler

from dsv.server.dialects import Mount
from dsv.server.dialects.handlers import json_response, key_guard, keyed_runner
from dsv.server.dialects.humanloop.backends import open_store
from dsv.server.dialects.humanloop.types import decode_body
from dsv.server.dialects.orq.service import OrqService
from dsv.server.dialects.orq.types import (
    BulkCreate,
    BulkDelete,
    CreateDataset,
    DatapointBody,
    UpdateDataset,
)
from dsv.server.dialects.paging import MAX_PAGE_SIZE, int_param

__all__ = ["routes"]

_BASE = "/v2/datasets"
_ITEM = _BASE + "/{dataset_id:str}"
_POINT = _ITEM + "/datapoints/{datapoint_id:str}"
# orq.ai's default page; its documented maximum is 50, dsv allows up to MAX_PAGE_SIZE.
_DEFAULT_LIMIT = 10


def _limit(text: str | None) -> int:
    return int_param("limit", text, _DEFAULT_LIMIT, 1, MAX_PAGE_SIZE)


def routes(mount: Mount) -> list[HTTPRouteHandler]:
    """The dialect's routes over the server's storage."""
    service = OrqService(mount, open_store(mount.meta))

    keyed = key_guard(mount, service.authenticate)
    run = keyed_runner(mount, service.authenticate)

    @get(_BASE, guards=[keyed])
    async def list_datasets(
        request: Request[Any, Any, Any],
        limit: str | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        search: str | None = None,
        updated_by: str | None = None,
        project_id: str | None = None,
    ) -> Response[bytes]:
        """List datasets of the key's repository, by path, a cursor's window at a time."""
        count = _limit(limit)
        found = await run(
            request,
            lambda caller: service.list_datasets(
                caller,
                limit=count,
                starting_after=starting_after,
                ending_before=ending_before,
                search=search or None,
                project_id=project_id or None,
                updated_by=updated_by or None,
            ),
        )
        return json_response(found)

    @post(_BASE, guards=[keyed], opt={"body": True}, status_code=200)
    async def create_dataset(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Create a dataset: a commit adding an empty `.jsonl` file."""
        data: CreateDataset = decode_body(await request.body(), CreateDataset)
        return json_response(
            await run(
                request, lambda caller: service.create_dataset(caller, data.display_name, data.path)
            )
        )

    @get(_ITEM, guards=[keyed])
    async def retrieve_dataset(request: Request[Any, Any, Any], dataset_id: str) -> Response[bytes]:
        """Retrieve a dataset: its latest version on the default branch."""
        found = await run(request, lambda caller: service.get_dataset(caller, dataset_id))
        return json_response(found)

    @patch(_ITEM, guards=[keyed], opt={"body": True})
    async def update_dataset(request: Request[Any, Any, Any], dataset_id: str) -> Response[bytes]:
        """Update a dataset: a new display name renames the file (a commit); the id stays."""
        data: UpdateDataset = decode_body(await request.body(), UpdateDataset)
        return json_response(
            await run(request, lambda caller: service.update_dataset(caller, dataset_id, data))
        )

    @delete(_ITEM, guards=[keyed], status_code=204)
    async def delete_dataset(request: Request[Any, Any, Any], dataset_id: str) -> None:
        """Delete a dataset: a commit removing its file."""
        await run(request, lambda caller: service.delete_dataset(caller, dataset_id))

    @delete(_ITEM + "/clear", guards=[keyed], status_code=204)
    async def clear_dataset(request: Request[Any, Any, Any], dataset_id: str) -> None:
        """Clear a dataset: a commit leaving it without datapoints."""
        await run(request, lambda caller: service.clear(caller, dataset_id))

    @get(_ITEM + "/datapoints", guards=[keyed])
    async def list_datapoints(
        request: Request[Any, Any, Any],
        dataset_id: str,
        limit: str | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> Response[bytes]:
        """List datapoints of the latest version, a cursor's window at a time."""
        count = _limit(limit)
        return json_response(
            await run(
                request,
                lambda caller: service.list_datapoints(
                    caller,
                    dataset_id,
                    limit=count,
                    starting_after=starting_after or None,
                    ending_before=ending_before or None,
                ),
            )
        )

    @post(_ITEM + "/datapoints", guards=[keyed], opt={"body": True}, status_code=200)
    async def create_datapoints(
        request: Request[Any, Any, Any], dataset_id: str
    ) -> Response[bytes]:
        """Create datapoints (a JSON array): a commit adding them."""
        data: list[DatapointBody] = decode_body(await request.body(), list[DatapointBody])
        return json_response(
            await run(
                request, lambda caller: service.create_datapoints(caller, dataset_id, data, "")
            )
        )

    @post(_ITEM + "/datapoints/bulk", guards=[keyed], opt={"body": True}, status_code=200)
    async def bulk_create(request: Request[Any, Any, Any], dataset_id: str) -> Response[bytes]:
        """Create datapoints in bulk (`{"items": [...]}`): one commit adding them."""
        data: BulkCreate = decode_body(await request.body(), BulkCreate)
        return json_response(
            await run(
                request,
                lambda caller: service.create_datapoints(caller, dataset_id, data.items, "items"),
            )
        )

    @post(_ITEM + "/datapoints-bulk-delete", guards=[keyed], opt={"body": True}, status_code=204)
    async def bulk_delete(request: Request[Any, Any, Any], dataset_id: str) -> None:
        """Delete datapoints by id (`{"item_ids": [...]}`): one commit removing them."""
        data: BulkDelete = decode_body(await request.body(), BulkDelete)
        await run(
            request, lambda caller: service.delete_datapoints(caller, dataset_id, data.item_ids)
        )

    @get(_POINT, guards=[keyed])
    async def retrieve_datapoint(
        request: Request[Any, Any, Any], dataset_id: str, datapoint_id: str
    ) -> Response[bytes]:
        """Retrieve a datapoint of the latest version."""
        return json_response(
            await run(
                request, lambda caller: service.get_datapoint(caller, dataset_id, datapoint_id)
            )
        )

    @patch(_POINT, guards=[keyed], opt={"body": True})
    async def update_datapoint(
        request: Request[Any, Any, Any], dataset_id: str, datapoint_id: str
    ) -> Response[bytes]:
        """Update a datapoint: the fields sent replace its own (a commit; a new id)."""
        data: DatapointBody = decode_body(await request.body(), DatapointBody)
        return json_response(
            await run(
                request,
                lambda caller: service.update_datapoint(caller, dataset_id, datapoint_id, data),
            )
        )

    @delete(_POINT, guards=[keyed], status_code=204)
    async def delete_datapoint(
        request: Request[Any, Any, Any], dataset_id: str, datapoint_id: str
    ) -> None:
        """Delete a datapoint: a commit removing it."""
        await run(
            request, lambda caller: service.delete_datapoints(caller, dataset_id, [datapoint_id])
        )

    return [
        list_datasets,
        create_dataset,
        retrieve_dataset,
        update_dataset,
        delete_dataset,
        clear_dataset,
        list_datapoints,
        create_datapoints,
        bulk_create,
        bulk_delete,
        retrieve_datapoint,
        update_datapoint,
        delete_datapoint,
    ]
