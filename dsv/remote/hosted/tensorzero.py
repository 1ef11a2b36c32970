"""TensorZero as a remote: the gateway's datasets API (docs/remotes.md, *TensorZero*).

A dataset is named; its datapoints are inserted in bulk (which creates the dataset), listed
with `limit`/`offset`, and soft-deleted one at a time. A dsv record is a datapoint as
TensorZero takes it: `function_name` (a string), `input` (an object: `system`, `messages`),
optionally `output` (chat: content blocks; json: an object), `tags` (an object of strings)
and chat functions' `allowed_tools`, `tool_choice`, `parallel_tool_calls`. Its datasets change
in place with no version history in the API, so dsv's versions of them are their contents
(`dsv.remote.hosted.mutable`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from dsv.errors import BadInput, RemoteError
from dsv.remote.hosted import PlatformDataset, json_kind
from dsv.remote.hosted.http import HostedHttp
from dsv.remote.hosted.mutable import MutableDatasets

__all__ = ["FIELDS", "TensorZero"]

FIELDS = (
    "function_name",
    "input",
    "output",
    "tags",
    "allowed_tools",
    "tool_choice",
    "parallel_tool_calls",
)
_PAGE = 100  # the documented default limit
_BATCH = 100


class TensorZero(MutableDatasets):
    """A TensorZero gateway at `base` (e.g. http://gateway:3000)."""

    kind = "tensorzero"
    title = "TensorZero"
    carries = "function_name, input, output, tags (strings) and chat tool settings"
    ordered = False

    def __init__(
        self,
        base: str,
        *,
        name: str,
        key: str | None,
        key_source: str,
        transport: httpx.BaseTransport | None = None,
        sleep: Any = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        extra = {"sleep": sleep} if sleep is not None else {}
        self.http = HostedHttp(
            base, name=name, headers=headers, key_source=key_source, transport=transport, **extra
        )

    @property
    def bytes_sent(self) -> int:
        return self.http.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self.http.bytes_received

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def _base(dataset: PlatformDataset | str) -> str:
        name = dataset.id if isinstance(dataset, PlatformDataset) else dataset
        return f"/datasets/{quote(name, safe='')}/datapoints"

    def _list(self, name: str, limit: int) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            body = self.http.request(
                "GET", self._base(name), params={"limit": limit, "offset": offset}
            )
            items = body.get("datapoints") if isinstance(body, dict) else body
            if not isinstance(items, list):
                raise RemoteError(f"{self.http.name}: listing {name} answered no list")
            for item in items:
                if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                    raise RemoteError(f"{self.http.name}: {name} has a datapoint without id")
                if item.get("is_deleted") or item.get("staled_at"):
                    continue  # soft-deleted: the platform disregards it, and so does dsv
                yield item
            # The end is an empty page: a gateway may answer fewer than asked mid-list.
            if not items or limit == 1:
                return
            offset += len(items)

    def find_dataset(self, name: str) -> PlatformDataset | None:
        for _ in self._list(name, 1):
            return PlatformDataset(name, name)
        return None

    def default_path(self, file: str, prefix: str | None) -> str:
        stem = file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return f"{prefix.strip('/')}_{stem}" if prefix else stem

    def create_dataset(self, path: str, first: list[dict[str, Any]]) -> PlatformDataset:
        # A dataset is made by its first insert, which write() does next.
        return PlatformDataset(path, path)

    def list_points(self, dataset: PlatformDataset) -> Iterator[dict[str, Any]]:
        return self._list(dataset.id, _PAGE)

    def point_id(self, point: dict[str, Any]) -> str:
        return str(point["id"])

    def create_points(self, dataset: PlatformDataset, points: list[dict[str, Any]]) -> None:
        for start in range(0, len(points), _BATCH):
            self.http.request(
                "POST",
                self._base(dataset) + "/bulk",
                body={"datapoints": points[start : start + _BATCH]},
                idempotent=False,
            )

    def delete_points(self, dataset: PlatformDataset, ids: list[str]) -> None:
        for point in ids:
            self.http.request("DELETE", f"{self._base(dataset)}/{quote(point, safe='')}")

    def to_platform(
        self, record: dict[str, Any], where: str, drop: frozenset[str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, value in record.items():
            if field in drop:
                continue
            if field not in FIELDS:
                why = (
                    " (TensorZero answers the function's own schema, so an override would not "
                    "come back as given)"
                    if field == "output_schema"
                    else " (it holds function_name, input, output, tags and tool settings)"
                )
                raise BadInput(
                    f"{where}: field {field!r} has no place in a TensorZero datapoint{why}",
                    hint=f"leave it out with --drop {field}",
                )
            if field == "function_name" and not isinstance(value, str):
                raise BadInput(f"{where}: field 'function_name' is {json_kind(value)}")
            if field == "input" and not isinstance(value, dict):
                raise BadInput(f"{where}: field 'input' is {json_kind(value)}, not an object")
            if field == "tags":
                if not isinstance(value, dict) or not value:
                    raise BadInput(
                        f"{where}: field 'tags' must be a non-empty object of strings "
                        "(TensorZero does not tell empty tags from none)"
                    )
                for name, item in value.items():
                    if not isinstance(item, str):
                        raise BadInput(
                            f"{where}: field 'tags.{name}' is {json_kind(item)}: TensorZero "
                            "tags are strings"
                        )
            if field == "parallel_tool_calls" and value is not True:
                raise BadInput(
                    f"{where}: field 'parallel_tool_calls' is {json_kind(value)}: only true "
                    "is kept (false is TensorZero's default, answered whether given or not)",
                    hint="leave it out for false",
                )
            out[field] = value
        for needed in ("function_name", "input"):
            if needed not in out:
                raise BadInput(
                    f"{where}: no field {needed!r}: a TensorZero datapoint needs one",
                    hint="every record names its function and holds its input",
                )
        return out

    def from_platform(self, datapoint: dict[str, Any]) -> dict[str, Any]:
        out = {f: datapoint[f] for f in FIELDS if datapoint.get(f) is not None}
        # The platform's defaults, answered whether given or not, are not the record's.
        if out.get("tags") == {}:
            del out["tags"]
        if out.get("parallel_tool_calls") is False:
            del out["parallel_tool_calls"]
        return out
