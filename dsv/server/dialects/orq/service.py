"""The orq.ai v2 Datasets API over a server's repositories (docs/orq.md).

A dataset is a `.jsonl` file of the request's repository (docs/dialects.md "Which
repository"); every write is a commit on its default branch, made by the Humanloop dialect's
machinery (compare-and-swap, retried, the per-repository lock). HTTP-free: the routes are in
dsv.server.dialects.orq.routes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dsv.canonical import decode_canonical
from dsv.errors import Conflict, NotFound
from dsv.objects import OID_SIZE, Kind, hash_object, split_oids
from dsv.server.dialects import FieldError, Mount
from dsv.server.dialects.files import FileDatasets
from dsv.server.dialects.humanloop.history import Version, Versions
from dsv.server.dialects.humanloop.service import Sink
from dsv.server.dialects.humanloop.store import DatasetRecord, HumanloopStore
from dsv.server.dialects.humanloop.types import (
    DATASET_SUFFIX,
    MoveRequest,
    check_name,
    dataset_ids,
    encode_record,
    iso_time,
    not_found,
    version_id,
)
from dsv.server.dialects.orq.types import DatapointBody, UpdateDataset
from dsv.server.dialects.paging import cursor_window
from dsv.server.dialects.records import expected_output_of, text_of
from dsv.server.storage import KeyRecord
from dsv.text import plural

__all__ = ["OrqService", "datapoint_id", "parse_datapoint_id"]

API = "orq.ai API"
# Fields a datapoint response shows in orq.ai's own places; the others keep their names.
_OWN = ("inputs", "messages", "expected_output")


def datapoint_id(oid: bytes) -> str:
    """A datapoint's orq.ai id: `dp_` and its object id in hex (Humanloop's spelling), so an
    unchanged datapoint keeps its id in every version and every dialect."""
    return "dp_" + oid.hex()


def parse_datapoint_id(text: str) -> bytes | None:
    """The object id an orq.ai datapoint id names; None for text that is no such id."""
    if not text.startswith("dp_") or len(text) != 3 + 2 * OID_SIZE:
        return None
    try:
        oid = bytes.fromhex(text[3:])
    except ValueError:
        return None
    # fromhex skips spaces: a shorter id would match as a prefix of another.
    return oid if len(oid) == OID_SIZE else None


def _author_id(author: str) -> str:
    """The author of a commit as an orq.ai user id: the text inside `<…>`, else all of it."""
    if author.endswith(">") and "<" in author:
        return author[author.rindex("<") + 1 : -1]
    return author


def _record_of(body: DatapointBody, loc: list[str | int]) -> dict[str, Any]:
    """The dsv record of a datapoint sent (docs/dialects.md "Records")."""
    record: dict[str, Any] = {}
    if body.inputs is not None:
        record["inputs"] = body.inputs
    if body.messages is not None:
        for j, message in enumerate(body.messages):
            if not isinstance(message.get("role"), str):
                raise FieldError([*loc, "messages", j, "role"], "Field required", "missing")
        record["messages"] = body.messages
    if body.expected_output is not None:
        record["expected_output"] = body.expected_output
    if body.metadata is not None:
        record["metadata"] = body.metadata
    return record


class OrqService(FileDatasets):
    """The orq.ai v2 Datasets API's rules; raises dsv's errors (dsv.errors)."""

    def __init__(self, mount: Mount, store: HumanloopStore) -> None:
        super().__init__(mount, store, api=API)

    # -- access ------------------------------------------------------------------------------

    def _dataset(self, caller: KeyRecord | None, dataset_id: str, *, write: bool) -> DatasetRecord:
        repo = self.repo(caller, write=write)
        record = self.store.dataset_by_id(dataset_id)
        # Another repository's dataset does not exist for this key.
        if record is None or record.repo != repo:
            raise not_found(f"Dataset {dataset_id} not found")
        return record

    def _read(self, caller: KeyRecord | None, dataset_id: str) -> tuple[DatasetRecord, Versions]:
        record = self._dataset(caller, dataset_id, write=False)
        return record, self.core.versions_of(record)

    # -- responses ---------------------------------------------------------------------------

    def _dataset_response(self, record: DatasetRecord, versions: Versions) -> dict[str, Any]:
        latest, first = versions.latest, versions.first
        return {
            "_id": record.id,
            "display_name": record.path[: -len(DATASET_SUFFIX)].rsplit("/", 1)[-1],
            "path": record.path.rsplit("/", 1)[0] if "/" in record.path else "",
            "project_id": record.repo,
            "workspace_id": record.repo.split("/")[0],
            "metadata": {
                "total_versions": len(versions.every),
                "datapoints_count": self.objects.dataset(record.repo, latest.dataset).count,
            },
            "created_by_id": _author_id(first.info.author),
            "updated_by_id": _author_id(latest.info.author),
            "created": iso_time(first.info.time, first.info.tz),
            "updated": iso_time(latest.info.time, latest.info.tz),
        }

    def _point(
        self, record: DatasetRecord, versions: Versions, oid: bytes, body: bytes
    ) -> dict[str, Any]:
        return self._point_of(record, versions.first, versions.latest, oid, decode_canonical(body))

    def _point_of(
        self,
        record: DatasetRecord,
        first: Version,
        latest: Version,
        oid: bytes,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "_id": datapoint_id(oid),
            "dataset_id": record.id,
            "workspace_id": record.repo.split("/")[0],
            "created_by_id": _author_id(first.info.author),
            "updated_by_id": _author_id(latest.info.author),
            "created": iso_time(first.info.time, first.info.tz),
            "updated": iso_time(latest.info.time, latest.info.tz),
            "snapshot_version": version_id(latest.commit),
        }
        for name in ("inputs", "messages"):
            if name in fields:
                out[name] = fields[name]
        expected = expected_output_of(fields)
        if expected is not None:
            out["expected_output"] = text_of(expected)
        for name, value in fields.items():
            if name not in _OWN and name != "id" and name not in out:
                out[name] = value
        return out

    # -- datasets ----------------------------------------------------------------------------

    def _datasets(self, repo: str, search: str | None) -> list[tuple[DatasetRecord, Versions]]:
        found = []
        with self.core.locked(repo):
            _, tip = self.core.branch_of(repo)
            for path in self.objects.tree(repo, tip) if tip else {}:
                if not path.endswith(DATASET_SUFFIX):
                    continue
                record = self.store.register_dataset(
                    repo, path, dataset_ids(repo, path), created=int(time.time())
                )
                if search and search.lower() not in path[: -len(DATASET_SUFFIX)].lower():
                    continue
                try:
                    found.append((record, self.core.versions_of(record)))
                except NotFound:
                    continue  # a push removed it since the branch was read
        found.sort(key=lambda item: item[0].path.encode())
        return found

    def list_datasets(
        self,
        caller: KeyRecord | None,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        search: str | None,
        project_id: str | None,
        updated_by: str | None = None,
    ) -> dict[str, Any]:
        repo = self.repo(caller, write=False)
        found = [] if project_id and project_id != repo else self._datasets(repo, search)
        if updated_by:
            found = [(r, v) for r, v in found if _author_id(v.latest.info.author) == updated_by]
        window, more = cursor_window(
            [r.id for r, _ in found],
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
        )
        data = [self._dataset_response(r, v) for r, v in found[window]]
        return {"object": "list", "data": data, "has_more": more}

    def create_dataset(
        self, caller: KeyRecord | None, display_name: str, folder: str | None
    ) -> dict[str, Any]:
        repo = self.repo(caller, write=True)
        if "/" in display_name:
            raise FieldError(["body", "display_name"], "a display name may not contain '/'")
        name = display_name
        if folder and folder.strip("/"):
            name = folder.strip("/") + "/" + display_name
        path = check_name(name, ["body", "display_name"]) + DATASET_SUFFIX
        with self.core.locked(repo):

            def build(tree: dict[str, bytes], sink: Sink) -> tuple[dict[str, bytes], str] | None:
                if path in tree:
                    raise Conflict(f"{repo} already has a dataset at {path}")
                record = DatasetRecord("", repo, path, 0)
                self.core.check_room(record, tree, path)
                tree[path] = self.core.new_dataset(sink, b"", {}, None, None)
                return tree, f"create dataset {path} ({API})"

            self.core.write_tree(repo, caller, build, reason=f"orq: create {path}")
            record = self.store.register_dataset(
                repo, path, dataset_ids(repo, path), created=int(time.time())
            )
            return self._dataset_response(record, self.core.versions_of(record))

    def get_dataset(self, caller: KeyRecord | None, dataset_id: str) -> dict[str, Any]:
        return self._dataset_response(*self._read(caller, dataset_id))

    def update_dataset(
        self, caller: KeyRecord | None, dataset_id: str, body: UpdateDataset
    ) -> dict[str, Any]:
        record = self._dataset(caller, dataset_id, write=True)
        if body.project_id is not None and body.project_id != record.repo:
            raise FieldError(
                ["body", "project_id"],
                f"a dataset stays in its repository ({record.repo}); copy it with dsv instead",
            )
        if body.display_name is not None:
            if "/" in body.display_name:
                raise FieldError(["body", "display_name"], "a display name may not contain '/'")
            self.core.move(caller, dataset_id, MoveRequest(name=body.display_name))
        return self.get_dataset(caller, dataset_id)

    def delete_dataset(self, caller: KeyRecord | None, dataset_id: str) -> None:
        self._dataset(caller, dataset_id, write=True)
        self.core.delete(caller, dataset_id)

    # -- datapoints --------------------------------------------------------------------------

    def _change(
        self,
        caller: KeyRecord | None,
        dataset_id: str,
        change: Callable[[bytes], bytes | None],
        bodies: dict[bytes, bytes],
        what: str,
    ) -> tuple[DatasetRecord, Versions]:
        """Commit the dataset with `change(current ids)` as its ids (None: nothing changes)."""
        record = self._dataset(caller, dataset_id, write=True)
        with self.core.locked(record.repo):
            record = self._dataset(caller, dataset_id, write=True)
            self.core.versions_of(record)
            return record, self.change(caller, record, change, bodies, what)

    def create_datapoints(
        self, caller: KeyRecord | None, dataset_id: str, points: list[DatapointBody], at: str
    ) -> list[dict[str, Any]]:
        """Add datapoints at the end; one already in the dataset is not added twice."""
        made: list[tuple[bytes, dict[str, Any]]] = []
        bodies: dict[bytes, bytes] = {}
        for i, point in enumerate(points):
            loc: list[str | int] = ["body", *([at] if at else []), i]
            fields = _record_of(point, loc)
            body = encode_record(fields, loc)
            oid = hash_object(Kind.DATAPOINT, body)
            bodies[oid] = body
            made.append((oid, fields))

        def add(current: bytes) -> bytes:
            have = set(split_oids(current))
            return current + b"".join(o for o in dict.fromkeys(bodies) if o not in have)

        record, versions = self._change(
            caller, dataset_id, add, bodies, f"add {plural(len(points), 'datapoint')}"
        )
        return [
            self._point_of(record, versions.first, versions.latest, oid, fields)
            for oid, fields in made
        ]

    def list_datapoints(
        self,
        caller: KeyRecord | None,
        dataset_id: str,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
    ) -> dict[str, Any]:
        record, versions = self._read(caller, dataset_id)
        dataset = versions.latest.dataset
        count = self.objects.dataset(record.repo, dataset).count
        if starting_after is not None and ending_before is not None:
            raise FieldError(
                ["query", "ending_before"], "give starting_after or ending_before, not both"
            )
        if ending_before is not None:
            stop = self._position(record, dataset, "ending_before", ending_before)
            start = max(0, stop - limit)
            more = start > 0
        else:
            start = 0
            if starting_after is not None:
                start = self._position(record, dataset, "starting_after", starting_after) + 1
            stop = min(count, start + limit)
            more = stop < count
        points = self.objects.datapoints(record.repo, dataset, start, stop) if stop > start else []
        data = [self._point(record, versions, oid, body) for oid, body in points]
        return {"object": "list", "data": data, "has_more": more}

    def _index(self, repo: str, dataset: bytes, point_id: str) -> tuple[bytes, int] | None:
        """The object id a datapoint id names and where its first copy sits, if it is there."""
        oid = parse_datapoint_id(point_id)
        if oid is None:
            return None
        at = self.index_of(repo, dataset).position(oid)
        return (oid, at) if at >= 0 else None

    def _position(self, record: DatasetRecord, dataset: bytes, name: str, cursor: str) -> int:
        """Where the datapoint a cursor names sits; 422 if it is not in the dataset."""
        found = self._index(record.repo, dataset, cursor)
        if found is None:
            raise FieldError(
                ["query", name], f"no datapoint of this dataset has the id {cursor[:80]!r}"
            )
        return found[1]

    def _find(
        self, record: DatasetRecord, versions: Versions, point_id: str
    ) -> tuple[bytes, bytes]:
        found = self._index(record.repo, versions.latest.dataset, point_id)
        if found is None:
            raise not_found(f"Datapoint {point_id} not found in dataset {record.id}")
        (body,) = self.objects.blobs.read(record.repo, Kind.DATAPOINT, [found[0]])
        return found[0], body

    def get_datapoint(
        self, caller: KeyRecord | None, dataset_id: str, point_id: str
    ) -> dict[str, Any]:
        record, versions = self._read(caller, dataset_id)
        oid, body = self._find(record, versions, point_id)
        return self._point(record, versions, oid, body)

    def update_datapoint(
        self, caller: KeyRecord | None, dataset_id: str, point_id: str, given: DatapointBody
    ) -> dict[str, Any]:
        """The fields sent replace the datapoint's, in place; its id becomes the new content's."""
        record, versions = self._read(caller, dataset_id)
        old, body = self._find(record, versions, point_id)
        fields = decode_canonical(body)
        fields.update(_record_of(given, ["body"]))
        new_body = encode_record(fields, ["body"])
        new = hash_object(Kind.DATAPOINT, new_body)

        def replace(current: bytes) -> bytes:
            if old not in set(split_oids(current)):
                raise not_found(f"Datapoint {point_id} not found in dataset {record.id}")
            return b"".join(new if o == old else o for o in split_oids(current))

        record, versions = self._change(
            caller, dataset_id, replace, {new: new_body}, f"update datapoint {point_id}"
        )
        return self._point_of(record, versions.first, versions.latest, new, fields)

    def delete_datapoints(
        self, caller: KeyRecord | None, dataset_id: str, point_ids: list[str]
    ) -> None:
        """Remove every copy of each datapoint named; 404 naming the first not in the dataset."""
        wanted = {}
        for point_id in point_ids:
            oid = parse_datapoint_id(point_id)
            if oid is None:
                raise not_found(f"Datapoint {point_id} not found in dataset {dataset_id}")
            wanted[oid] = point_id

        def remove(current: bytes) -> bytes:
            have = set(split_oids(current))
            for oid, point_id in wanted.items():
                if oid not in have:
                    raise not_found(f"Datapoint {point_id} not found in dataset {dataset_id}")
            return b"".join(o for o in split_oids(current) if o not in wanted)

        self._change(caller, dataset_id, remove, {}, f"delete {plural(len(wanted), 'datapoint')}")

    def clear(self, caller: KeyRecord | None, dataset_id: str) -> None:
        self._change(caller, dataset_id, lambda _: b"", {}, "delete every datapoint")
