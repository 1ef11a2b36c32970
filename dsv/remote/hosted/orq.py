"""orq.ai as a remote: its v2 Datasets API (docs/remotes.md, *orq.ai*).

A dsv record is an orq datapoint when it holds only `inputs` (an object), `messages`
(objects with a string `role`), `expected_output` (a string) and `metadata` (an object;
docs/dialects.md). orq changes a dataset in
place and its API lists no versions, so dsv's versions of it are its contents
(`dsv.remote.hosted.mutable`). A dataset is named `FOLDER/NAME`: NAME is its display name,
FOLDER the project path it is created in (the API answers no path, so an existing dataset is
found by its display name, or by its id).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dsv.errors import BadInput, RemoteError
from dsv.remote.hosted import PlatformDataset, json_kind
from dsv.remote.hosted.http import HttpPlatform
from dsv.remote.hosted.mutable import MutableDatasets

__all__ = ["FIELDS", "Orq"]

FIELDS = ("inputs", "messages", "expected_output", "metadata")
_PAGE = 50  # the documented limit ("between 1 and 50")
_BATCH = 100


class Orq(HttpPlatform, MutableDatasets):
    """The orq.ai v2 API at `base` (e.g. https://api.orq.ai)."""

    kind = "orq"
    title = "orq.ai"
    carries = "inputs, messages, expected_output (a string) and metadata"
    ordered = False

    def _pages(self, path: str) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paged list: `starting_after` the last `_id` until
        `has_more` is false (an empty page ends it too)."""
        after: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": _PAGE}
            if after is not None:
                params["starting_after"] = after
            body = self.http.request("GET", path, params=params)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise RemoteError(f"{self.http.name}: {path} answered without data")
            for item in data:
                if not isinstance(item, dict) or not isinstance(item.get("_id"), str):
                    raise RemoteError(f"{self.http.name}: {path} answered an item without _id")
                yield item
            if not data or body.get("has_more") is not True:
                return
            after = data[-1]["_id"]

    def find_dataset(self, name: str) -> PlatformDataset | None:
        # An id: orq.ai's are ULIDs, dsv serve's `ds_` + hex.
        ulid = name.isalnum() and name.isupper() and len(name) == 26
        if "/" not in name and (ulid or name.startswith("ds_")):
            found = self.http.request("GET", f"/v2/datasets/{name}", missing_ok=True)
            return None if found is None else PlatformDataset(found["_id"], name)
        leaf = name.rsplit("/", 1)[-1]
        matches = [d for d in self._pages("/v2/datasets") if d.get("display_name") == leaf]
        if len(matches) > 1:
            ids = ", ".join(d["_id"] for d in matches)
            raise BadInput(
                f"{self.http.name}: several datasets are named {leaf!r} ({ids})",
                hint="map the file to one by its id: --path FILE=ID",
            )
        return PlatformDataset(matches[0]["_id"], name) if matches else None

    def default_path(self, file: str, prefix: str | None) -> str:
        stem = file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return f"{prefix.strip('/')}/{stem}" if prefix else stem

    def create_dataset(self, path: str, first: list[dict[str, Any]]) -> PlatformDataset:
        folder, _, leaf = path.strip("/").rpartition("/")
        body: dict[str, Any] = {"display_name": leaf}
        if folder:
            body["path"] = folder
        made = self.http.request("POST", "/v2/datasets", body=body, idempotent=False)
        if not isinstance(made, dict) or not isinstance(made.get("_id"), str):
            raise RemoteError(f"{self.http.name}: Create Dataset answered without an _id")
        return PlatformDataset(made["_id"], path)

    def list_points(self, dataset: PlatformDataset) -> Iterator[dict[str, Any]]:
        return self._pages(f"/v2/datasets/{dataset.id}/datapoints")

    def point_id(self, point: dict[str, Any]) -> str:
        return str(point["_id"])

    def create_points(self, dataset: PlatformDataset, points: list[dict[str, Any]]) -> None:
        for start in range(0, len(points), _BATCH):
            self.http.request(
                "POST",
                f"/v2/datasets/{dataset.id}/datapoints/bulk",
                body={"items": points[start : start + _BATCH]},
                idempotent=False,
            )

    def delete_points(self, dataset: PlatformDataset, ids: list[str]) -> None:
        for start in range(0, len(ids), _BATCH):
            self.http.request(
                "POST",
                f"/v2/datasets/{dataset.id}/datapoints-bulk-delete",
                body={"item_ids": ids[start : start + _BATCH]},
            )

    def to_platform(
        self, record: dict[str, Any], where: str, drop: frozenset[str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, value in record.items():
            if field in drop:
                continue
            if field not in FIELDS:
                raise BadInput(
                    f"{where}: field {field!r} has no place in an orq.ai datapoint (it holds "
                    "inputs, messages, expected_output and metadata)",
                    hint=f"leave it out with --drop {field}, or move it into inputs",
                )
            if field in ("inputs", "metadata") and not isinstance(value, dict):
                raise BadInput(f"{where}: field {field!r} is {json_kind(value)}, not an object")
            if field == "expected_output" and not isinstance(value, str):
                raise BadInput(
                    f"{where}: field 'expected_output' is {json_kind(value)}: orq.ai's "
                    "expected_output is a string",
                    hint="store it as a string (JSON text, say)",
                )
            if field == "messages":
                if not isinstance(value, list):
                    raise BadInput(f"{where}: field 'messages' is {json_kind(value)}, not an array")
                for j, message in enumerate(value):
                    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                        raise BadInput(f"{where}: field 'messages[{j}]' has no string 'role'")
            out[field] = value
        return out

    def from_platform(self, datapoint: dict[str, Any]) -> dict[str, Any]:
        return {f: datapoint[f] for f in FIELDS if datapoint.get(f) is not None}
