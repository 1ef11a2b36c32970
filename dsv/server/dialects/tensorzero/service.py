"""TensorZero's dataset endpoints over a server's repositories (docs/tensorzero.md).

A dataset `NAME` is the file `NAME.jsonl` of the request's repository (docs/dialects.md);
every write is a commit on its default branch. A datapoint's id is a UUID derived from its
object id, so an unchanged datapoint keeps it; a datapoint in an earlier version of the
dataset but not in the latest is a deleted one (`is_deleted`), as TensorZero's soft delete
and its id-minting updates leave them. HTTP-free: the routes are in
dsv.server.dialects.tensorzero.routes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from dsv.canonical import decode_canonical, encode_canonical
from dsv.errors import NotFound
from dsv.objects import OID_SIZE, Kind, hash_object, split_oids
from dsv.server.dialects import FieldError, Mount
from dsv.server.dialects.files import FileDatasets, OidIndex
from dsv.server.dialects.humanloop.history import Version, Versions
from dsv.server.dialects.humanloop.service import Sink
from dsv.server.dialects.humanloop.store import DatasetRecord, HumanloopStore
from dsv.server.dialects.humanloop.types import (
    DATASET_SUFFIX,
    check_name,
    dataset_ids,
    encode_record,
    iso_time,
)
from dsv.server.dialects.paging import MAX_PAGE_SIZE
from dsv.server.dialects.records import output_blocks_of, text_of
from dsv.server.dialects.tensorzero.types import (
    CreateDatapoint,
    ListBody,
    MetadataUpdate,
    UpdateDatapoint,
)
from dsv.server.storage import KeyRecord
from dsv.text import plural

__all__ = ["TensorZeroService", "datapoint_uuid", "find_uuid", "is_json"]

API = "TensorZero API"
DEFAULT_LIMIT = 20
# A test of a record, for list_datapoints' filters.
Test = Callable[[dict[str, Any]], bool]
# TensorZero's own fields of a datapoint, kept under their names in the record.
_TOOL_FIELDS = ("allowed_tools", "additional_tools", "tool_choice", "parallel_tool_calls")


def datapoint_uuid(oid: bytes) -> str:
    """A datapoint's TensorZero id: the first 16 bytes of its object id as a UUID, with the
    version (8, RFC 9562's custom UUID) and variant bits set."""
    raw = bytearray(oid[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def find_uuid(index: OidIndex, text: str) -> tuple[int, bytes] | None:
    """Where the first copy of the datapoint with TensorZero id `text` sits, and its object
    id: the id's first 6 bytes are the object id's, so the index finds the candidates."""
    found = [
        (at, oid)
        for at, oid in index.positions(uuid.UUID(text).bytes[:6])
        if datapoint_uuid(oid) == text
    ]
    return min(found) if found else None


def _parse_uuid(text: str, loc: list[str | int]) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise FieldError(loc, f"invalid datapoint id {text[:80]!r}: not a UUID") from None


def is_json(record: dict[str, Any]) -> bool:
    """A json datapoint has an `output_schema` or an object output; any other is chat."""
    return "output_schema" in record or isinstance(record.get("output"), dict)


def _json_output(raw: Any) -> dict[str, Any]:
    """A json datapoint's output from its `raw` text: parsed when it is JSON, as TensorZero
    keeps invalid outputs too."""
    if raw is None:
        return {"raw": None, "parsed": None}
    text = raw if isinstance(raw, str) else text_of(raw)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return {"raw": text, "parsed": parsed}


def _messages(messages: list[dict[str, Any]], loc: list[str | int]) -> list[dict[str, Any]]:
    for j, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            raise FieldError(
                [*loc, "messages", j, "role"], "Input should be 'user' or 'assistant'", "enum"
            )
    return messages


def _tags(tags: dict[str, Any], loc: list[str | int]) -> dict[str, str]:
    for name, value in tags.items():
        if not isinstance(value, str):
            raise FieldError([*loc, "tags", name], "Input should be a valid string", "string_type")
    return tags


def record_of(point: CreateDatapoint, loc: list[str | int]) -> dict[str, Any]:
    """The dsv record of a datapoint sent (docs/dialects.md "Records")."""
    record: dict[str, Any] = {"function_name": point.function_name}
    if point.input.system is not None:
        record["system"] = point.input.system
    record["messages"] = _messages(point.input.messages or [], [*loc, "input"])
    json_kind = point.type == "json" or (
        point.type is None and (point.output_schema is not None or isinstance(point.output, dict))
    )
    if json_kind:
        record["output_schema"] = point.output_schema
        if point.output is not None:
            given = point.output
            # The client sends `{"raw": …}`; the older endpoint the output object itself.
            raw = (
                given.get("raw")
                if isinstance(given, dict) and set(given) <= {"raw", "parsed"}
                else given
            )
            record["output"] = _json_output(raw)
    elif point.output is not None:
        if not isinstance(point.output, list):
            raise FieldError(
                [*loc, "output"], "a chat datapoint's output is a list of content blocks"
            )
        record["output"] = point.output
    if point.tags is not None:
        record["tags"] = _tags(point.tags, loc)
    for name in ("name", "episode_id", *_TOOL_FIELDS):
        value = getattr(point, name)
        if value is not None:
            record[name] = value
    if point.provider_tools:
        record["provider_tools"] = point.provider_tools
    return record


def _updated(
    record: dict[str, Any], change: UpdateDatapoint, loc: list[str | int]
) -> dict[str, Any]:
    """`record` with the fields an update sets (null: unchanged)."""
    out = dict(record)
    if change.input is not None:
        out.pop("system", None)
        if change.input.system is not None:
            out["system"] = change.input.system
        out["messages"] = _messages(change.input.messages or [], [*loc, "input"])
    if change.output_schema is not None:
        out["output_schema"] = change.output_schema
    if change.output is not None:
        if is_json(out):
            given = change.output
            raw = given.get("raw") if isinstance(given, dict) else given
            out["output"] = _json_output(raw)
        elif isinstance(change.output, list):
            out["output"] = change.output
        else:
            raise FieldError(
                [*loc, "output"], "a chat datapoint's output is a list of content blocks"
            )
    if change.tags is not None:
        out["tags"] = _tags(change.tags, loc)
    for name in ("name", *_TOOL_FIELDS, "provider_tools"):
        value = getattr(change, name)
        if value is not None:
            out[name] = value
    return out


def _tz_messages(record: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """The record's system and messages in TensorZero's shape: text content as content
    blocks, a leading system message as the system when the record has none."""
    system = record.get("system")
    messages = record.get("messages")
    out: list[dict[str, Any]] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        elif not isinstance(content, list):
            content = []
        if message.get("role") == "system":
            if system is None and not out:
                system = text_of(content)
            continue
        out.append({**message, "content": content})
    return system, out


class TensorZeroService(FileDatasets):
    """TensorZero's dataset endpoints' rules; raises dsv's errors (dsv.errors)."""

    def __init__(self, mount: Mount, store: HumanloopStore) -> None:
        super().__init__(mount, store, api=API)

    # -- datasets ----------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        if "/" in name:
            raise FieldError(["path", "dataset_name"], "a dataset name may not contain '/'")
        return check_name(name, ["path", "dataset_name"]) + DATASET_SUFFIX

    def _record(self, repo: str, name: str) -> DatasetRecord:
        path = self._path(name)
        return self.store.register_dataset(
            repo, path, dataset_ids(repo, path), created=int(time.time())
        )

    def _read(self, caller: KeyRecord | None, name: str) -> tuple[DatasetRecord, Versions]:
        repo = self.repo(caller, write=False)
        path = self._path(name)
        _, tip = self.core.branch_of(repo)
        # Only a file the branch holds gets a record: a read of any name would add one.
        if tip is None or path not in self.objects.tree(repo, tip):
            raise NotFound(f"dataset {name!r} not found")
        record = self._record(repo, name)
        try:
            return record, self.core.versions_of(record)
        except NotFound:
            raise NotFound(f"dataset {name!r} not found") from None

    def list_datasets(
        self, caller: KeyRecord | None, *, function_name: str | None, limit: int | None, offset: int
    ) -> dict[str, Any]:
        repo = self.repo(caller, write=False)
        out = []
        with self.core.locked(repo):
            _, tip = self.core.branch_of(repo)
            for path in sorted(self.objects.tree(repo, tip) if tip else {}, key=str.encode):
                if not path.endswith(DATASET_SUFFIX) or "/" in path:
                    continue
                record = self._record(repo, path[: -len(DATASET_SUFFIX)])
                try:
                    versions = self.core.versions_of(record)
                except NotFound:
                    continue
                latest = versions.latest
                if function_name is not None:
                    points = self._all(record, latest)
                    count = sum(1 for _, r in points if r.get("function_name") == function_name)
                    if not count:
                        continue
                else:
                    count = self.objects.dataset(repo, latest.dataset).count
                out.append(
                    {
                        "dataset_name": path[: -len(DATASET_SUFFIX)],
                        "datapoint_count": count,
                        "last_updated": iso_time(latest.info.time, latest.info.tz),
                    }
                )
        stop = None if limit is None else offset + limit
        return {"datasets": out[offset:stop]}

    def delete_dataset(self, caller: KeyRecord | None, name: str) -> dict[str, Any]:
        repo = self.repo(caller, write=True)
        with self.core.locked(repo):
            record, versions = self._read(caller, name)
            count = self.objects.dataset(repo, versions.latest.dataset).count

            def build(tree: dict[str, bytes], sink: Sink) -> tuple[dict[str, bytes], str] | None:
                if tree.pop(record.path, None) is None:
                    return None
                return tree, f"delete dataset {record.path} ({API})"

            self.core.write_tree(repo, caller, build, reason=f"{API}: delete {record.path}")
        return {"num_deleted_datapoints": count}

    # -- responses ---------------------------------------------------------------------------

    def _datapoint(
        self,
        name: str,
        oid: bytes,
        record: dict[str, Any],
        latest: Version,
        *,
        staled: Version | None = None,
    ) -> dict[str, Any]:
        system, messages = _tz_messages(record)
        tz_input: dict[str, Any] = {"messages": messages}
        if system is not None:
            tz_input["system"] = system
        updated = iso_time(latest.info.time, latest.info.tz)
        out: dict[str, Any] = {
            "type": "json" if is_json(record) else "chat",
            "id": datapoint_uuid(oid),
            "dataset_name": name,
            # A record no TensorZero function wrote (say, through orq.ai) names none.
            "function_name": record.get("function_name", ""),
            "input": tz_input,
            "is_deleted": staled is not None,
            "is_custom": True,
            "updated_at": updated,
            "staled_at": iso_time(staled.info.time, staled.info.tz) if staled else None,
        }
        if is_json(record):
            out["output_schema"] = record.get("output_schema")
            given = record.get("output")
            out["output"] = given if isinstance(given, dict) else None
        else:
            out["output"] = output_blocks_of(record)
        tags = record.get("tags")
        if isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values()):
            out["tags"] = tags
        for key, value in record.items():
            # Fields with no TensorZero place keep their names (the client ignores them).
            if key not in out and key not in ("system", "messages", "id"):
                out[key] = value
        return out

    def _all(
        self, record: DatasetRecord, version: Version
    ) -> Iterator[tuple[bytes, dict[str, Any]]]:
        for batch in self.objects.datapoint_batches(record.repo, version.dataset):
            for oid, body in batch:
                yield oid, decode_canonical(body)

    # -- reads -------------------------------------------------------------------------------

    def list_datapoints(
        self, caller: KeyRecord | None, name: str, request: ListBody
    ) -> list[dict[str, Any]]:
        record, versions = self._read(caller, name)
        latest = versions.latest
        limit = request.limit if request.limit is not None else request.page_size
        limit = DEFAULT_LIMIT if limit is None else limit
        offset = request.offset or 0
        if limit < 0 or offset < 0:
            field = "limit" if limit < 0 else "offset"
            raise FieldError(["body", field], "Input should be greater than or equal to 0")
        if limit > MAX_PAGE_SIZE:
            # A page is one response held whole: the cap every dialect's paging has.
            raise FieldError(
                ["body", "limit"], f"Input should be less than or equal to {MAX_PAGE_SIZE}"
            )
        descending = False
        for i, order in enumerate(request.order_by or []):
            if order.get("by") not in ("timestamp", "search_relevance") or order.get(
                "direction"
            ) not in ("ascending", "descending"):
                raise FieldError(
                    ["body", "order_by", i],
                    "order by 'timestamp' or 'search_relevance', 'ascending' or 'descending'",
                )
            descending = order["direction"] == "descending"
        check = self._matcher(request)
        if check is None and not descending:
            # The common case reads only the window's datapoints, however deep.
            points = self.objects.datapoints(record.repo, latest.dataset, offset, offset + limit)
            return [self._datapoint(name, o, decode_canonical(b), latest) for o, b in points]
        found = [(o, r) for o, r in self._all(record, latest) if check is None or check(r)]
        if descending:
            found.reverse()
        return [self._datapoint(name, o, r, latest) for o, r in found[offset : offset + limit]]

    def _matcher(self, request: ListBody) -> Test | None:
        """A test of a record for the request's function name, filter and search; None when
        it has none of them."""
        tests: list[Test] = []
        if request.function_name is not None:
            tests.append(lambda r: r.get("function_name") == request.function_name)
        if request.filter is not None:
            tests.append(_filter(request.filter, ["body", "filter"]))
        if request.search_query_experimental:
            query = request.search_query_experimental

            def search(r: dict[str, Any]) -> bool:
                return query in encode_canonical(r).decode()

            tests.append(search)
        if not tests:
            return None
        return lambda r: all(test(r) for test in tests)

    def _lookup(
        self, record: DatasetRecord, versions: Versions, ids: list[str], loc: list[str | int]
    ) -> list[tuple[str, bytes, Version | None]]:
        """(id, object id, the first version without it or None) of each id found: in the
        latest version, else in earlier ones (a deleted datapoint)."""
        wanted = {_parse_uuid(text, [*loc, i]): None for i, text in enumerate(ids)}
        found: dict[str, tuple[bytes, Version | None]] = {}
        newer: Version | None = None
        for version in versions.every:
            index = self.index_of(record.repo, version.dataset)
            for text in wanted:
                if text in found:
                    continue
                hit = find_uuid(index, text)
                if hit is not None:
                    found[text] = (hit[1], newer)
            if len(found) == len(wanted):
                break
            newer = version
        return [(t, *found[t]) for t in wanted if t in found]

    def get_datapoints(
        self, caller: KeyRecord | None, name: str | None, ids: list[str]
    ) -> list[dict[str, Any]]:
        """The datapoints with these ids (deleted ones marked so); unknown ids are left out."""
        if name is None:
            names = [
                d["dataset_name"]
                for d in self.list_datasets(caller, function_name=None, limit=None, offset=0)[
                    "datasets"
                ]
            ]
        else:
            names = [name]
        out = []
        for each in names:
            record, versions = self._read(caller, each)
            for _, oid, staled in self._lookup(record, versions, ids, ["body", "ids"]):
                (body,) = self.objects.blobs.read(record.repo, Kind.DATAPOINT, [oid])
                out.append(
                    self._datapoint(
                        each, oid, decode_canonical(body), versions.latest, staled=staled
                    )
                )
        return out

    def gone(self, name: str, point_id: str) -> NotFound:
        return NotFound(f"datapoint {point_id} not found in dataset {name!r}")

    def get_datapoint(self, caller: KeyRecord | None, name: str, point_id: str) -> dict[str, Any]:
        found = self.get_datapoints(caller, name, [point_id])
        if not found:
            raise self.gone(name, point_id)
        return found[0]

    # -- writes ------------------------------------------------------------------------------

    def create_datapoints(
        self, caller: KeyRecord | None, name: str, points: list[CreateDatapoint]
    ) -> list[str]:
        """Append the datapoints (creating the dataset); one equal to a datapoint already
        there is not added twice. Returns their ids in order."""
        repo = self.repo(caller, write=True)
        bodies: dict[bytes, bytes] = {}
        for i, point in enumerate(points):
            loc: list[str | int] = ["body", "datapoints", i]
            body = encode_record(record_of(point, loc), loc)
            bodies.setdefault(hash_object(Kind.DATAPOINT, body), body)
        ids = [datapoint_uuid(o) for o in bodies]
        with self.core.locked(repo):
            record = self._record(repo, name)

            def build(tree: dict[str, bytes], sink: Sink) -> tuple[dict[str, bytes], str] | None:
                current = tree.get(record.path)
                current_oids = self.objects.oids(repo, current) if current else b""
                have = set(split_oids(current_oids))
                new = current_oids + b"".join(o for o in bodies if o not in have)
                if current is not None and new == current_oids:
                    return None
                if current is None:
                    self.core.check_room(record, tree, record.path)
                base = self.objects.dataset(repo, current) if current else None
                tree[record.path] = self.core.new_dataset(
                    sink, new, bodies, base, current_oids if current else None
                )
                return tree, f"add {plural(len(points), 'datapoint')} in {record.path} ({API})"

            self.core.write_tree(repo, caller, build, reason=f"{API}: add to {record.path}")
        return ids

    def _rewrite(
        self,
        caller: KeyRecord | None,
        name: str,
        ids: list[str],
        edit: Any,
        what: str,
    ) -> list[str]:
        """Replace each datapoint named by `ids` with `edit(i, its record)`, in place; every
        id must be in the latest version (404 otherwise). Returns the new ids."""
        repo = self.repo(caller, write=True)
        with self.core.locked(repo):
            record, versions = self._read(caller, name)
            latest = versions.latest
            index = self.index_of(repo, latest.dataset)
            replaced: dict[bytes, bytes] = {}
            bodies: dict[bytes, bytes] = {}
            new_ids = []
            for i, text in enumerate(ids):
                loc: list[str | int] = ["body", "datapoints", i]
                target = _parse_uuid(text, [*loc, "id"])
                hit = find_uuid(index, target)
                if hit is None:
                    raise self.gone(name, text)
                old = hit[1]
                (body,) = self.objects.blobs.read(repo, Kind.DATAPOINT, [old])
                new_body = encode_record(edit(i, decode_canonical(body), loc), loc)
                new = hash_object(Kind.DATAPOINT, new_body)
                replaced[old] = new
                bodies[new] = new_body
                new_ids.append(datapoint_uuid(new))

            def change(current: bytes) -> bytes:
                return b"".join(replaced.get(o, o) for o in split_oids(current))

            self.change(caller, record, change, bodies, what)
        return new_ids

    def update_datapoints(
        self, caller: KeyRecord | None, name: str, changes: list[UpdateDatapoint]
    ) -> list[str]:
        """Each datapoint with the fields sent replaced: a new datapoint with a new id (as in
        TensorZero); the old one is then a deleted one."""
        return self._rewrite(
            caller,
            name,
            [c.id for c in changes],
            lambda i, r, loc: _updated(r, changes[i], loc),
            f"update {plural(len(changes), 'datapoint')}",
        )

    def update_metadata(
        self, caller: KeyRecord | None, name: str, changes: list[MetadataUpdate]
    ) -> list[str]:
        def rename(i: int, record: dict[str, Any], loc: list[str | int]) -> dict[str, Any]:
            out = dict(record)
            if changes[i].name is None:
                out.pop("name", None)
            else:
                out["name"] = changes[i].name
            return out

        return self._rewrite(
            caller,
            name,
            [c.id for c in changes],
            rename,
            f"rename {plural(len(changes), 'datapoint')}",
        )

    def delete_datapoints(self, caller: KeyRecord | None, name: str, ids: list[str]) -> int:
        """Remove the datapoints from the latest version (a soft delete: earlier versions,
        and get_datapoints, still have them); ids not in it are skipped. Returns how many."""
        repo = self.repo(caller, write=True)
        wanted = {_parse_uuid(t, ["body", "ids", i]) for i, t in enumerate(ids)}
        with self.core.locked(repo):
            record, _ = self._read(caller, name)
            count = 0

            def remove(current: bytes) -> bytes:
                nonlocal count
                kept = [o for o in split_oids(current) if datapoint_uuid(o) not in wanted]
                count = len(current) // OID_SIZE - len(kept)
                return b"".join(kept)

            self.change(caller, record, remove, {}, "delete datapoints")
        return count


def _filter(spec: Any, loc: list[str | int]) -> Test:
    """A TensorZero datapoint filter (tag, and, or, not) as a test of a record."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "tag":
        key, value, op = spec.get("key"), spec.get("value"), spec.get("comparison_operator")
        if not isinstance(key, str) or not isinstance(value, str) or op not in ("=", "!="):
            raise FieldError(loc, "a tag filter has a string key and value and '=' or '!='")

        def tag(r: dict[str, Any]) -> bool:
            tags = r.get("tags")
            have = tags.get(key) if isinstance(tags, dict) else None
            return (have == value) if op == "=" else (have is not None and have != value)

        return tag
    if kind in ("and", "or") and isinstance(spec.get("children"), list):
        children = [_filter(c, [*loc, "children", i]) for i, c in enumerate(spec["children"])]
        join = all if kind == "and" else any
        return lambda r: join(c(r) for c in children)
    if kind == "not" and "child" in spec:
        child = _filter(spec["child"], [*loc, "child"])
        return lambda r: not child(r)
    if kind == "time":
        raise FieldError(
            loc, "dsv keeps no time per datapoint: a time filter cannot be answered", "value_error"
        )
    raise FieldError(loc, "a filter is of type 'tag', 'and', 'or' or 'not'")
