"""Overmind Lab as a remote: its Datasets API (docs/remotes.md, *Overmind Lab*).

An agent's dataset has numbered versions; datapoints are only ever written by posting a whole
new version (`POST /api/datasets/`). A dataset is named by its agent (a UUID). A dsv record is
an Overmind datapoint when it holds only `inputs` (an object: Overmind's `input`),
`expected_output` (any JSON), `persona` (a string of at most 128 characters) and `tags` (a
non-empty object); `order` is the record's position.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dsv.errors import BadInput, RemoteError
from dsv.remote.hosted import Change, PlatformDataset, PlatformVersion, json_kind
from dsv.remote.hosted.http import HttpPlatform, Interrupted
from dsv.remote.hosted.humanloop import parse_time

__all__ = ["FIELDS", "Overmind"]

FIELDS = ("inputs", "expected_output", "persona", "tags")
_ROUNDS = 4


def _agent(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


class Overmind(HttpPlatform):
    """The Overmind Lab API at `base` (e.g. https://api.overmind.example)."""

    kind = "overmind"
    title = "Overmind Lab"
    carries = "inputs (as input), expected_output, persona and tags"
    ordered = True

    def _pages(self, path: str, params: dict[str, str | int]) -> Iterator[dict[str, Any]]:
        """Every result of a Django REST framework list, page after page until `next` is
        null (its page number is taken from `next`, whatever host that URL names)."""
        page: str | None = None
        while True:
            asked = {**params, **({"page": page} if page else {})}
            body = self.http.request("GET", path, params=asked)
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list):
                raise RemoteError(f"{self.http.name}: {path} answered without results")
            for item in results:
                if not isinstance(item, dict):
                    raise RemoteError(
                        f"{self.http.name}: {path} answered a result that is not an object"
                    )
                yield item
            following = body.get("next")
            if not results or not isinstance(following, str):
                return
            pages = parse_qs(urlsplit(following).query).get("page")
            if not pages or pages[0] == page:
                return
            page = pages[0]

    def _rows(self, agent: str) -> list[dict[str, Any]]:
        rows = list(self._pages("/api/datasets/", {"agent": agent, "ordering": "version"}))
        for row in rows:
            if not isinstance(row.get("id"), str) or not isinstance(row.get("version"), int):
                raise RemoteError(f"{self.http.name}: a dataset version without id or number")
        return sorted(rows, key=lambda r: int(r["version"]))

    def find_dataset(self, name: str) -> PlatformDataset | None:
        agent = _agent(name)
        if agent is None:
            raise BadInput(
                f"{name!r} is not an Overmind Lab agent: a dataset is named by its agent's UUID",
                hint="map the file to it: --path FILE=AGENT_UUID",
            )
        return PlatformDataset(agent, agent) if self._rows(agent) else None

    def default_path(self, file: str, prefix: str | None) -> str:
        stem = file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        agent = _agent(stem)
        if agent is None:
            raise BadInput(
                f"{file}: name the Overmind Lab agent its dataset belongs to",
                hint=f"--path {file}=AGENT_UUID",
            )
        return agent

    def versions(self, dataset: PlatformDataset) -> list[PlatformVersion]:
        return [
            PlatformVersion(
                row["id"],
                parse_time(row.get("created_at")),
                "",
                str(row.get("name") or f"Overmind Lab version {row['version']}"),
            )
            for row in self._rows(dataset.id)
        ]

    def datapoints(self, dataset: PlatformDataset, version: str) -> Iterator[dict[str, Any]]:
        points = list(self._pages(f"/api/datasets/{version}/datapoints/", {"ordering": "order"}))
        # `order` is each datapoint's place; Python's sort is stable for those without one.
        return iter(
            sorted(points, key=lambda p: p["order"] if isinstance(p.get("order"), int) else 0)
        )

    def environments(self, dataset: PlatformDataset) -> dict[str, str | None] | None:
        # An agent has one active dataset version: the default environment's.
        active = [r["id"] for r in self._rows(dataset.id) if r.get("is_active") is True]
        return {"production": active[-1] if active else None}

    def deploy(self, dataset: PlatformDataset, environment: str, version: str) -> None:
        self.http.request("POST", f"/api/datasets/{version}/activate/")

    def write(
        self, dataset: PlatformDataset | None, path: str, change: Change
    ) -> tuple[PlatformDataset, str]:
        agent = dataset.id if dataset is not None else path
        points = [{**p, "order": i} for i, p in enumerate(change.full)]
        body: dict[str, Any] = {"agent": agent, "datapoints": points}
        if change.message:
            body["name"] = change.message[:255]
        for _ in range(_ROUNDS):
            try:
                made = self.http.request("POST", "/api/datasets/", body=body, idempotent=False)
            except Interrupted:
                # Maybe made: the latest version holding exactly these is this write's.
                rows = self._rows(agent)
                if rows:
                    latest = PlatformDataset(agent, agent)
                    got = [self.from_platform(p) for p in self.datapoints(latest, rows[-1]["id"])]
                    if got == [self.from_platform(p) for p in change.full]:
                        return latest, str(rows[-1]["id"])
                continue
            if not isinstance(made, dict) or not isinstance(made.get("id"), str):
                raise RemoteError(f"{self.http.name}: creating a dataset version answered no id")
            return PlatformDataset(agent, agent), made["id"]
        raise RemoteError(
            f"{self.http.name}: writing {agent} failed {_ROUNDS} times",
            hint="run the command again: it resumes where it stopped",
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
                    f"{where}: field {field!r} has no place in an Overmind Lab datapoint (it "
                    "holds inputs, expected_output, persona and tags)",
                    hint=f"leave it out with --drop {field}, or move it into inputs",
                )
            if field == "inputs":
                if not isinstance(value, dict):
                    raise BadInput(f"{where}: field 'inputs' is {json_kind(value)}, not an object")
                out["input"] = value
                continue
            if field == "persona" and (not isinstance(value, str) or len(value) > 128):
                raise BadInput(
                    f"{where}: field 'persona' must be a string of at most 128 characters"
                )
            if field == "tags" and (not isinstance(value, dict) or not value):
                raise BadInput(
                    f"{where}: field 'tags' must be a non-empty object (Overmind Lab does not "
                    "tell empty tags from none)"
                )
            if field == "expected_output" and value is None:
                raise BadInput(f"{where}: field 'expected_output' is null: leave it out")
            out[field] = value
        return out

    def from_platform(self, datapoint: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(datapoint.get("input"), dict):
            out["inputs"] = datapoint["input"]
        for field in ("expected_output", "persona"):
            if datapoint.get(field) is not None:
                out[field] = datapoint[field]
        if isinstance(datapoint.get("tags"), dict) and datapoint["tags"]:
            out["tags"] = datapoint["tags"]
        return out
