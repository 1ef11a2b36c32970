"""Humanloop as a remote: its v5 Datasets API (docs/remotes.md, *Humanloop*).

A dsv record is a Humanloop datapoint when it holds only `inputs` (an object of strings),
`messages` (objects with a string `role`) and `target` (an object); Humanloop stores identical
datapoints once, so a dataset repeating a record cannot be held either.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from dsv.errors import BadInput, RemoteError
from dsv.remote.hosted import Change, PlatformDataset, PlatformVersion, json_kind
from dsv.remote.hosted.http import HttpPlatform

__all__ = ["FIELDS", "Humanloop", "parse_time"]

FIELDS = ("inputs", "messages", "target")
_PAGE = 500


def parse_time(text: Any) -> int:
    """Unix seconds of an ISO 8601 time (0 when there is none or it does not parse)."""
    if not isinstance(text, str):
        return 0
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


class Humanloop(HttpPlatform):
    """The Humanloop v5 Datasets API at `base` (e.g. https://api.humanloop.com/v5)."""

    kind = "humanloop"
    title = "Humanloop"
    carries = "inputs (strings), messages and target"
    ordered = True

    @staticmethod
    def auth_headers(key: str) -> dict[str, str]:
        return {"X-API-KEY": key}

    def __init__(self, base: str, **options: Any) -> None:
        super().__init__(base, **options)
        self._env_ids: dict[str, str] = {}

    def _dataset(self, body: Any) -> PlatformDataset:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise RemoteError(f"{self.http.name}: the platform's answer names no dataset id")
        return PlatformDataset(body["id"], str(body.get("path") or ""))

    # -- reads -------------------------------------------------------------------------------

    def find_dataset(self, name: str) -> PlatformDataset | None:
        if name.startswith("ds_") and "/" not in name:
            found = self.http.request("GET", f"/datasets/{name}", missing_ok=True)
            return None if found is None else self._dataset(found)
        leaf = name.rsplit("/", 1)[-1]
        page = 1
        while True:
            body = self.http.request(
                "GET", "/datasets", params={"name": leaf, "page": page, "size": 100}
            )
            records = body.get("records") if isinstance(body, dict) else None
            if not isinstance(records, list):
                raise RemoteError(f"{self.http.name}: List Datasets answered without records")
            for record in records:
                if isinstance(record, dict) and record.get("path") == name:
                    return self._dataset(record)
            total = body.get("total")
            if not records or not isinstance(total, int) or page * 100 >= total:
                return None
            page += 1

    def default_path(self, file: str, prefix: str | None) -> str:
        stem = file.rsplit(".", 1)[0] if "." in file.rsplit("/", 1)[-1] else file
        return f"{prefix.strip('/')}/{stem}" if prefix else stem

    def versions(self, dataset: PlatformDataset) -> list[PlatformVersion]:
        body = self.http.request("GET", f"/datasets/{dataset.id}/versions")
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise RemoteError(f"{self.http.name}: List Versions answered without records")
        out = []
        for record in records:
            if not isinstance(record, dict) or not isinstance(record.get("version_id"), str):
                raise RemoteError(f"{self.http.name}: List Versions answered a version without id")
            by = record.get("created_by")
            author = ""
            if isinstance(by, dict) and by.get("full_name"):
                email = by.get("email_address") or ""
                author = f"{by['full_name']} <{email}>" if email else str(by["full_name"])
            message = record.get("version_description") or record.get("version_name") or ""
            out.append(
                PlatformVersion(
                    record["version_id"], parse_time(record.get("created_at")), author, message
                )
            )
        # Humanloop lists newest first; equal times keep that order reversed.
        out.reverse()
        return sorted(out, key=lambda v: v.time) if all(v.time for v in out) else out

    def datapoints(self, dataset: PlatformDataset, version: str) -> Iterator[dict[str, Any]]:
        page = 1
        seen = 0
        while True:
            body = self.http.request(
                "GET",
                f"/datasets/{dataset.id}/datapoints",
                params={"version_id": version, "page": page, "size": _PAGE},
            )
            records = body.get("records") if isinstance(body, dict) else None
            if not isinstance(records, list):
                raise RemoteError(f"{self.http.name}: List Datapoints answered without records")
            for record in records:
                if not isinstance(record, dict):
                    raise RemoteError(f"{self.http.name}: a datapoint is not a JSON object")
                yield record
            seen += len(records)
            total = body.get("total")
            # The end is an empty page or `total` reached; a short page is not an end (the
            # documented example answers size=1 with two records and size 10).
            if not records or (isinstance(total, int) and seen >= total):
                return
            page += 1

    def environments(self, dataset: PlatformDataset) -> dict[str, str | None] | None:
        body = self.http.request("GET", f"/datasets/{dataset.id}/environments")
        if not isinstance(body, list):
            raise RemoteError(f"{self.http.name}: List Environments did not answer a list")
        out: dict[str, str | None] = {}
        for env in body:
            if not isinstance(env, dict) or not isinstance(env.get("name"), str):
                continue
            self._env_ids[env["name"]] = str(env.get("id") or env["name"])
            file = env.get("file")
            out[env["name"]] = file.get("version_id") if isinstance(file, dict) else None
        return out

    # -- writes ------------------------------------------------------------------------------

    def write(
        self, dataset: PlatformDataset | None, path: str, change: Change
    ) -> tuple[PlatformDataset, str]:
        body: dict[str, Any] = {"datapoints": change.records, "action": change.action}
        if dataset is None:
            body["path"] = path
        else:
            body["id"] = dataset.id
        if change.message:
            body["version_description"] = change.message
        answer = self.http.request("POST", "/datasets", body=body)
        made = self._dataset(answer)
        version = answer.get("version_id")
        if not isinstance(version, str):
            raise RemoteError(f"{self.http.name}: Upsert Dataset answered without a version id")
        return made, version

    def deploy(self, dataset: PlatformDataset, environment: str, version: str) -> None:
        env = self._env_ids.get(environment, environment)
        self.http.request(
            "POST",
            f"/datasets/{dataset.id}/environments/{env}",
            params={"version_id": version},
        )

    # -- records -----------------------------------------------------------------------------

    def to_platform(
        self, record: dict[str, Any], where: str, drop: frozenset[str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, value in record.items():
            if field in drop:
                continue
            if field not in FIELDS:
                raise BadInput(
                    f"{where}: field {field!r} has no place in a Humanloop datapoint "
                    "(it holds inputs, messages and target)",
                    hint=f"leave it out with --drop {field}, or move it into inputs or target",
                )
            if field == "inputs":
                if not isinstance(value, dict):
                    raise BadInput(f"{where}: field 'inputs' is {json_kind(value)}, not an object")
                for name, item in value.items():
                    if not isinstance(item, str):
                        raise BadInput(
                            f"{where}: field 'inputs.{name}' is {json_kind(item)}: Humanloop "
                            "inputs are strings",
                            hint="store it as a string, or under target",
                        )
            elif field == "messages":
                if not isinstance(value, list):
                    raise BadInput(f"{where}: field 'messages' is {json_kind(value)}, not an array")
                for j, message in enumerate(value):
                    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                        raise BadInput(f"{where}: field 'messages[{j}]' has no string 'role'")
                    for name, item in message.items():
                        if item is None:
                            raise BadInput(
                                f"{where}: field 'messages[{j}].{name}' is null: Humanloop "
                                "does not tell a null message field from an absent one",
                                hint="leave the field out of the message",
                            )
            elif not isinstance(value, dict):
                raise BadInput(f"{where}: field 'target' is {json_kind(value)}, not an object")
            out[field] = value
        return out

    def from_platform(self, datapoint: dict[str, Any]) -> dict[str, Any]:
        out = {f: datapoint[f] for f in FIELDS if datapoint.get(f) is not None}
        if isinstance(out.get("messages"), list):
            # Humanloop answers every optional field of a message (`name`, `tool_calls`, …),
            # null when unset: those nulls are the platform's, not the record's.
            out["messages"] = [
                {k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m
                for m in out["messages"]
            ]
        return out
