"""TensorZero as a remote: the gateway's dataset API (docs/remotes.md, *TensorZero*).

A dataset is named; datapoints are created (which creates the dataset), listed with
`limit`/`offset` and deleted through the `/v1/datasets/NAME/…` routes the `tensorzero`
client uses. A dsv record is a datapoint in the shared vocabulary (docs/dialects.md):
`function_name` (a string), `system` and `messages` (TensorZero's `input`), `output` (chat:
content blocks; json: `{"raw", "parsed"}`), `output_schema`, `tags` (an object of strings),
and `name`, `episode_id` and the tool settings under their own names. Its datasets change in
place with no version history in the API, so dsv's versions of them are their contents
(`dsv.remote.hosted.mutable`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from dsv.errors import BadInput, RemoteError
from dsv.remote.hosted import PlatformDataset, json_kind
from dsv.remote.hosted.http import HttpPlatform
from dsv.remote.hosted.mutable import MutableDatasets

__all__ = ["FIELDS", "TensorZero"]

# Kept under their own names, as the datapoint holds them.
_OWN = (
    "output_schema",
    "name",
    "episode_id",
    "allowed_tools",
    "additional_tools",
    "tool_choice",
    "parallel_tool_calls",
    "provider_tools",
)
FIELDS = ("function_name", "system", "messages", "output", "tags", *_OWN)
_PAGE = 100
_BATCH = 100


def _parsed(raw: Any) -> Any:
    """What TensorZero parses a json output's `raw` text into (None when it is not JSON)."""
    try:
        return json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


class TensorZero(HttpPlatform, MutableDatasets):
    """A TensorZero gateway at `base` (e.g. http://gateway:3000)."""

    kind = "tensorzero"
    title = "TensorZero"
    carries = "function_name, system, messages, output, output_schema, tags and tool settings"
    ordered = False

    @staticmethod
    def _base(name: str) -> str:
        return f"/v1/datasets/{quote(name, safe='')}"

    def _list(self, name: str, limit: int) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            body = self.http.request(
                "POST",
                self._base(name) + "/list_datapoints",
                body={"limit": limit, "offset": offset},
                missing_ok=True,
            )
            if body is None:
                return  # no such dataset (yet): its first datapoints create it
            items = body.get("datapoints") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise RemoteError(f"{self.http.name}: listing {name} answered no datapoints")
            for item in items:
                if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                    raise RemoteError(f"{self.http.name}: {name} has a datapoint without id")
                if item.get("is_deleted") or item.get("staled_at"):
                    continue  # soft-deleted: the platform disregards it, and so does dsv
                yield item
            # The end is an empty page: a gateway may answer fewer than asked mid-list.
            if not items:
                return
            offset += len(items)

    def find_dataset(self, name: str) -> PlatformDataset | None:
        found = self.http.request(
            "POST",
            self._base(name) + "/list_datapoints",
            body={"limit": 1, "offset": 0},
            missing_ok=True,
        )
        return None if found is None else PlatformDataset(name, name)

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
                self._base(dataset.id) + "/datapoints",
                body={"datapoints": points[start : start + _BATCH]},
                idempotent=False,
            )

    def delete_points(self, dataset: PlatformDataset, ids: list[str]) -> None:
        for start in range(0, len(ids), _BATCH):
            self.http.request(
                "DELETE",
                self._base(dataset.id) + "/datapoints",
                body={"ids": ids[start : start + _BATCH]},
            )

    def to_platform(
        self, record: dict[str, Any], where: str, drop: frozenset[str]
    ) -> dict[str, Any]:
        kept = {k: v for k, v in record.items() if k not in drop}
        for field in kept:
            if field not in FIELDS:
                raise BadInput(
                    f"{where}: field {field!r} has no place in a TensorZero datapoint (it holds "
                    "function_name, system, messages, output, output_schema, tags, name, "
                    "episode_id and tool settings)",
                    hint=f"leave it out with --drop {field}",
                )
        if not isinstance(kept.get("function_name"), str) or not kept["function_name"]:
            raise BadInput(
                f"{where}: no field 'function_name' (a non-empty string): a TensorZero datapoint "
                "belongs to a function",
                hint="every record names its function",
            )
        messages = kept.get("messages")
        if "messages" in kept:
            if not isinstance(messages, list) or not messages:
                raise BadInput(
                    f"{where}: field 'messages' must be a non-empty array (TensorZero does not "
                    "tell an empty one from none)"
                )
            for j, message in enumerate(messages):
                if not isinstance(message, dict) or message.get("role") not in (
                    "user",
                    "assistant",
                ):
                    raise BadInput(
                        f"{where}: field 'messages[{j}].role' must be user or assistant "
                        "(TensorZero's roles)",
                        hint="a system prompt goes in the record's field 'system'",
                    )
        tags = kept.get("tags")
        if "tags" in kept:
            if not isinstance(tags, dict) or not tags:
                raise BadInput(
                    f"{where}: field 'tags' must be a non-empty object of strings "
                    "(TensorZero does not tell empty tags from none)"
                )
            for name, item in tags.items():
                if not isinstance(item, str):
                    raise BadInput(
                        f"{where}: field 'tags.{name}' is {json_kind(item)}: TensorZero tags "
                        "are strings"
                    )
        if "parallel_tool_calls" in kept and kept["parallel_tool_calls"] is not True:
            raise BadInput(
                f"{where}: field 'parallel_tool_calls' is {json_kind(kept['parallel_tool_calls'])}"
                ": only true is kept (false is TensorZero's default)",
                hint="leave it out for false",
            )
        for field in _OWN:
            if field in kept and kept[field] is None:
                raise BadInput(f"{where}: field {field!r} is null: leave it out")
        output = kept.get("output")
        json_kind_ = "output_schema" in kept or isinstance(output, dict)
        point: dict[str, Any] = {
            "type": "json" if json_kind_ else "chat",
            "function_name": kept["function_name"],
            "input": {
                **({"system": kept["system"]} if "system" in kept else {}),
                "messages": messages or [],
            },
        }
        if "output" in kept:
            if json_kind_:
                if (
                    not isinstance(output, dict)
                    or not isinstance(output.get("raw"), str)
                    or set(output) != {"raw", "parsed"}
                    or output["parsed"] != _parsed(output["raw"])
                ):
                    raise BadInput(
                        f"{where}: field 'output' of a json datapoint must be "
                        '{"raw": TEXT, "parsed": TEXT parsed as JSON}, as TensorZero keeps it'
                    )
                point["output"] = {"raw": output["raw"]}
            elif not isinstance(output, list):
                raise BadInput(
                    f"{where}: field 'output' is {json_kind(output)}: a chat datapoint's output "
                    "is an array of content blocks"
                )
            else:
                point["output"] = output
        for field in ("tags", *_OWN):
            if field in kept:
                point[field] = kept[field]
        return point

    def from_platform(self, datapoint: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if datapoint.get("function_name"):
            out["function_name"] = datapoint["function_name"]
        given = datapoint.get("input")
        if isinstance(given, dict):
            if given.get("system") is not None:
                out["system"] = given["system"]
            if given.get("messages"):
                out["messages"] = given["messages"]
        output = datapoint.get("output")
        if isinstance(output, dict):
            raw = output.get("raw")
            if raw is not None:
                out["output"] = {"raw": raw, "parsed": _parsed(raw)}
        elif output is not None:
            out["output"] = output
        # The platform's defaults, answered whether given or not, are not the record's.
        tags = datapoint.get("tags")
        if isinstance(tags, dict) and tags:
            out["tags"] = tags
        for field in _OWN:
            value = datapoint.get(field)
            if value is None or value == [] or (field == "parallel_tool_calls" and value is False):
                continue
            out[field] = value
        return out
