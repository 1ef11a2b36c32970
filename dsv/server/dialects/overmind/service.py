"""The Overmind Lab Datasets API over a server's repositories (docs/overmind.md).

An agent's datasets are the versions of one `.jsonl` file of the request's repository
(dialects.ownerless.repo_for); an Overmind dataset is one version, numbered from 1 along the
default branch. Writes go through the Humanloop dialect's machinery, so every create is a
commit on the default branch by compare-and-swap under the repository's lock, and the
agent's active dataset is the version deployed to the default environment. HTTP-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import msgspec

from dsv.canonical import decode_canonical, encode_canonical
from dsv.errors import Conflict, NotFound
from dsv.objects import Kind, hash_object
from dsv.server.dialects.files import FileDatasets
from dsv.server.dialects.humanloop.history import Version, Versions
from dsv.server.dialects.humanloop.service import Sink
from dsv.server.dialects.humanloop.store import DatasetRecord
from dsv.server.dialects.humanloop.types import dataset_ids, encode_record, iso_time, version_id
from dsv.server.dialects.overmind.store import OvermindStore, VersionRow
from dsv.server.dialects.overmind.types import (
    DATASET_SUFFIX,
    PAGE_SIZE,
    SOURCES,
    CreateDataset,
    DatasetResponse,
    Invalid,
    agent_of_path,
    agent_of_record_id,
    check_uuid,
    datapoint_response,
    not_found,
    parse_page,
    record_id_of_agent,
    record_of,
    version_uuid,
)
from dsv.server.storage import KeyRecord
from dsv.text import plural

__all__ = ["API", "Detail", "Filters", "Listed", "OvermindService"]

# Who writes, in commit authors, messages and ref logs.
API = "Overmind Lab API"

# Datapoints read and encoded at a time in a streamed response.
_CHUNK = 512
_ORDERINGS = ("id", "agent", "created_at", "version", "num_datapoints", "name", "source")


class Filters(NamedTuple):
    """The filters of the dataset list, which also choose what a version route finds."""

    agent: str | None = None
    source: str | None = None
    version: int | None = None
    version_min: int | None = None
    version_max: int | None = None
    generator_model: str | None = None
    search: str | None = None

    def check(self) -> Filters:
        """These filters with `agent` canonical; a 400 naming a bad one."""
        if self.source is not None and self.source not in SOURCES:
            raise Invalid(
                "source",
                f"Select a valid choice. {self.source} is not one of the available choices.",
            )
        return self._replace(agent=check_uuid(self.agent, "agent") if self.agent else None)


class Listed(NamedTuple):
    """One Overmind dataset: a version of an agent's file, with its number and row."""

    record: DatasetRecord
    agent: str
    number: int
    version: Version
    row: VersionRow
    active: bool
    latest: bool


class Detail(NamedTuple):
    """A dataset response whose datapoints (those of `source`: repository, dataset) are
    streamed after it."""

    response: DatasetResponse
    source: tuple[str, bytes]


class OvermindService:
    """The Overmind Lab API's rules over the Humanloop dialect's write machinery and the
    Overmind store; it raises dsv's errors (dsv.errors)."""

    def __init__(self, files: FileDatasets, store: OvermindStore) -> None:
        self.files = files
        # The Humanloop dialect's machinery, writing under this dialect's name.
        self.hl = files.core
        self.store = store
        self.objects = files.objects

    # -- access ------------------------------------------------------------------------------

    def authenticate(self, key: str | None) -> KeyRecord | None:
        return self.files.authenticate(key)

    def _repo(self, caller: KeyRecord | None, *, write: bool) -> str:
        """The caller's repository (docs/dialects.md); 403 for a read key writing."""
        return self.files.repo(caller, write=write)

    # -- datasets and their versions ---------------------------------------------------------

    def _tree(self, repo: str) -> dict[str, bytes]:
        tip = self.hl.branch_of(repo)[1]
        return dict(self.objects.tree(repo, tip)) if tip else {}

    def _records(self, repo: str) -> list[DatasetRecord]:
        """The records of the `.jsonl` datasets at the default branch's tip."""
        paths = [p for p in self._tree(repo) if p.endswith(DATASET_SUFFIX)]
        with self.hl.locked(repo):
            return [self._register(repo, p) for p in paths]

    def _register(self, repo: str, path: str) -> DatasetRecord:
        return self.hl.store.register_dataset(
            repo, path, dataset_ids(repo, path), created=int(time.time())
        )

    def agent_of(self, record: DatasetRecord) -> str:
        return agent_of_path(record.path) or agent_of_record_id(record.id)

    def _agent_record(self, repo: str, agent: str, *, create: bool) -> DatasetRecord | None:
        """The dataset of `agent` in `repo`: the file `AGENT.jsonl`, else the dataset whose
        id the agent stands for; a new `AGENT.jsonl` if `create`."""
        tree = self._tree(repo)
        path = agent + DATASET_SUFFIX
        if path in tree:
            return self._register(repo, path)
        derived = record_id_of_agent(agent)
        found = self.hl.store.dataset_by_id(derived) if derived else None
        if found is not None and found.repo == repo and found.path in tree:
            return found
        return self._register(repo, path) if create else None

    def _listed(self, record: DatasetRecord) -> list[Listed]:
        """The dataset's visible versions, newest first, numbered from 1 along the default
        branch; none if the branch no longer holds it."""
        try:
            versions: Versions = self.hl.versions_of(record)
        except NotFound:
            return []
        line = versions.every[: versions.on_branch]
        visible = {v.commit for v in versions.visible}
        active = versions.deployed.get(self.hl.environments[0])
        rows = self.store.versions_of(record.id)
        new = [
            VersionRow(version_uuid(record.id, v.commit), record.id, v.commit)
            for v in line
            if v.commit not in rows
        ]
        self.store.add_versions(new)
        rows.update((r.commit, r) for r in new)
        agent = self.agent_of(record)
        return [
            Listed(
                record,
                agent,
                len(line) - i,
                v,
                rows[v.commit],
                active is not None and active.commit == v.commit,
                i == 0,
            )
            for i, v in enumerate(line)
            if v.commit in visible
        ]

    def _all(self, repo: str) -> list[Listed]:
        return [e for record in self._records(repo) for e in self._listed(record)]

    def _find(self, caller: KeyRecord | None, given: str, *, write: bool) -> Listed:
        """The dataset version a route names, in the request's repository; 404 otherwise."""
        repo = self._repo(caller, write=write)
        try:
            vid = check_uuid(given, "id")
        except Invalid:
            raise not_found() from None
        row = self.store.version(vid)
        if row is None:
            # A version pushed with dsv gets its row when first listed: list them now.
            self._all(repo)
            row = self.store.version(vid)
        record = self.hl.store.dataset_by_id(row.dataset) if row else None
        if row is None or record is None or record.repo != repo:
            raise not_found()
        found = next((e for e in self._listed(record) if e.version.commit == row.commit), None)
        if found is None:
            raise not_found()
        return found

    # -- responses ---------------------------------------------------------------------------

    def size(self, e: Listed) -> int:
        """How many datapoints the version holds (read only for the versions shown)."""
        return self.objects.dataset(e.record.repo, e.version.dataset).count

    def response(self, e: Listed, **extra: Any) -> DatasetResponse:
        info = e.version.info
        return DatasetResponse(
            id=e.row.id,
            agent=e.agent,
            created_at=iso_time(info.time, info.tz),
            version=e.number,
            num_datapoints=self.size(e),
            name=e.row.name,
            source=e.row.source,
            generator_model=e.row.generator_model,
            # dsv knows no agent policies.
            policy_hash=None,
            metadata=msgspec.json.decode(e.row.metadata) if e.row.metadata else None,
            dsv_version=version_id(e.version.commit),
            is_active=e.active,
            **extra,
        )

    def _detail(self, e: Listed, **extra: Any) -> Detail:
        return Detail(self.response(e, **extra), (e.record.repo, e.version.dataset))

    def encode_detail(self, value: Detail) -> Iterator[bytes]:
        """A dataset with its `datapoints`, encoded a chunk at a time: the memory it costs is
        a chunk's, whatever the dataset's size."""
        repo, dataset = value.source
        head = msgspec.json.encode(value.response)
        yield head[:-1] + b',"datapoints":['
        at = 0
        for batch in self.objects.datapoint_batches(repo, dataset, size=_CHUNK):
            piece = msgspec.json.encode(
                [
                    datapoint_response(oid, decode_canonical(body), at + i)
                    for i, (oid, body) in enumerate(batch)
                ]
            )
            yield (b"," if at else b"") + piece[1:-1]
            at += len(batch)
        yield b"]}"

    # -- reads -------------------------------------------------------------------------------

    def list_datasets(
        self,
        caller: KeyRecord | None,
        filters: Filters,
        *,
        ordering: str | None,
        page: str | None,
    ) -> tuple[int, int, list[DatasetResponse]]:
        """(count, page number, the page) of the dataset versions that pass `filters`."""
        repo = self._repo(caller, write=False)
        found = [e for e in self._all(repo) if _passes(e, filters)]
        for field in reversed(_ordering(ordering)):
            found.sort(key=_sort_key(field.lstrip("-"), self.size), reverse=field.startswith("-"))
        number = parse_page(page, len(found))
        shown = found[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        return len(found), number, [self.response(e) for e in shown]

    def get(self, caller: KeyRecord | None, given: str, filters: Filters) -> Detail:
        found = self._find(caller, given, write=False)
        if not _passes(found, filters):
            raise not_found()
        return self._detail(found)

    def list_datapoints(
        self,
        caller: KeyRecord | None,
        given: str,
        filters: Filters,
        *,
        ordering: str | None,
        page: str | None,
        search: str | None = None,
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """(count, page number, results) of a version's datapoints; the filters apply to the
        version, as Django REST framework's do to the object a route looks up."""
        found = self._find(caller, given, write=False)
        if not _passes(found, filters):
            raise not_found()
        repo, dataset = found.record.repo, found.version.dataset
        descending = any(f.strip() == "-order" for f in (ordering or "").split(","))
        if search:
            return self._searched(repo, dataset, search, descending=descending, page=page)
        total = self.size(found)
        number = parse_page(page, total)
        low, high = (number - 1) * PAGE_SIZE, min(total, number * PAGE_SIZE)
        if descending:
            low, high = total - high, total - low
        points = [
            datapoint_response(oid, decode_canonical(body), low + i)
            for i, (oid, body) in enumerate(self.objects.datapoints(repo, dataset, low, high))
        ]
        return total, number, points[::-1] if descending else points

    def _searched(
        self, repo: str, dataset: bytes, term: str, *, descending: bool, page: str | None
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """Datapoints whose JSON holds `term` (case-insensitive); reads the whole version."""
        wanted = term.lower()
        hits: list[tuple[int, bytes, bytes]] = []
        at = 0
        for batch in self.objects.datapoint_batches(repo, dataset, size=_CHUNK):
            for oid, body in batch:
                if wanted in body.decode("utf-8", "replace").lower():
                    hits.append((at, oid, body))
                at += 1
        if descending:
            hits.reverse()
        number = parse_page(page, len(hits))
        shown = hits[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        return (
            len(hits),
            number,
            [datapoint_response(oid, decode_canonical(body), pos) for pos, oid, body in shown],
        )

    # -- writes ------------------------------------------------------------------------------

    def create(self, caller: KeyRecord | None, body: CreateDataset) -> Detail:
        """A new version of the agent's dataset holding exactly `body.datapoints`, ordered by
        their `order`; when that changes nothing, the latest version with `version_created`
        false."""
        repo = self._repo(caller, write=True)
        ordered: list[tuple[int, int, bytes, bytes]] = []
        for i, point in enumerate(body.datapoints):
            order, kept = record_of(point, i)
            encoded = encode_record(kept, ["body", "datapoints", i])
            oid = hash_object(Kind.DATAPOINT, encoded)
            ordered.append((i if order is None else order, i, oid, encoded))
        ordered.sort(key=lambda item: (item[0], item[1]))
        bodies = {oid: encoded for _, _, oid, encoded in ordered}
        # Identical datapoints are one datapoint (one id), as in the Humanloop dialect.
        joined = b"".join(dict.fromkeys(oid for _, _, oid, _ in ordered))
        with self.hl.locked(repo):
            record = self._agent_record(repo, body.agent, create=True)
            assert record is not None

            def build(tree: dict[str, bytes], sink: Sink) -> tuple[dict[str, bytes], str] | None:
                current = tree.get(record.path)
                current_oids = self.objects.oids(repo, current) if current else None
                if joined == current_oids:
                    return None
                if current is None:
                    self.hl.check_room(record, tree, record.path)
                base = self.objects.dataset(repo, current) if current else None
                tree[record.path] = self.hl.new_dataset(sink, joined, bodies, base, current_oids)
                summary = f"set {plural(len(bodies), 'datapoint')} of {record.path}"
                return tree, f"{body.name or summary} ({API})"

            commit, created = self.hl.write_tree(
                repo, caller, build, reason=f"overmind: create {record.path}"
            )
            listed = self._listed(record)
            made = next((e for e in listed if e.version.commit == commit), listed[0])
            if created:
                metadata = encode_canonical(body.metadata) if body.metadata else b""
                self.store.put_version(
                    msgspec.structs.replace(
                        made.row,
                        name=body.name,
                        source=body.source,
                        generator_model=body.generator_model,
                        metadata=metadata,
                    )
                )
        if body.make_active and not made.active:
            self._activate(caller, made)
        return self._again(record, made.version.commit, version_created=created)

    def _again(self, record: DatasetRecord, commit: bytes, **extra: Any) -> Detail:
        found = next((e for e in self._listed(record) if e.version.commit == commit), None)
        if found is None:
            raise not_found()
        return self._detail(found, **extra)

    def _activate(self, caller: KeyRecord | None, e: Listed) -> None:
        self.hl.set_deployment(
            caller, e.record.id, self.hl.environments[0], version_id(e.version.commit)
        )

    def activate(self, caller: KeyRecord | None, given: str) -> Detail:
        """Make a version the agent's active dataset: deploy it to the default environment."""
        found = self._find(caller, given, write=True)
        if not found.active:
            self._activate(caller, found)
        return self._again(found.record, found.version.commit)

    def delete(self, caller: KeyRecord | None, given: str) -> None:
        """Delete a version: hide it; the only one left: remove the agent's file."""
        found = self._find(caller, given, write=True)
        if found.active:
            raise Conflict(
                f"dataset version {found.number} is the agent's active dataset",
                "activate another version first",
            )
        listed = self._listed(found.record)
        if len(listed) == 1:
            self.hl.delete(caller, found.record.id)
            return
        if found.latest:
            raise Conflict(
                f"dataset version {found.number} is the agent's latest: it is the file "
                f"{found.record.path} at the default branch",
                "POST a new dataset version first, or delete the others",
            )
        self.hl.delete_version(caller, found.record.id, version_id(found.version.commit))


def _passes(e: Listed, f: Filters) -> bool:
    return (
        (f.agent is None or e.agent == f.agent)
        and (f.source is None or e.row.source == f.source)
        and (f.version is None or e.number == f.version)
        and (f.version_min is None or e.number >= f.version_min)
        and (f.version_max is None or e.number <= f.version_max)
        and (f.generator_model is None or e.row.generator_model == f.generator_model)
        and (f.search is None or f.search.lower() in (e.row.name or "").lower())
    )


def _ordering(text: str | None) -> list[str]:
    """The `ordering` fields that name a field (Django REST framework drops the others), then
    the default: newest first."""
    given = [f.strip() for f in (text or "").split(",") if f.strip().lstrip("-") in _ORDERINGS]
    return [*given, "-created_at", "agent", "-version"]


def _sort_key(name: str, size: Callable[[Listed], int]) -> Callable[[Listed], Any]:
    """The sort key of an `ordering` field: absent values (None) first."""

    def key(e: Listed) -> Any:
        value: Any
        if name == "num_datapoints":
            value = size(e)  # read only when asked for: a manifest a version
        elif name == "created_at":
            value = e.version.info.time
        elif name == "version":
            value = e.number
        elif name == "agent":
            value = e.agent
        else:
            value = getattr(e.row, name)
        return (value is not None, value if value is not None else "")

    return key
