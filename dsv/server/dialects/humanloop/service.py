"""The Humanloop Datasets API (v5, and v4's Create Datapoint) over a server's repositories.

docs/humanloop.md is the mapping: a dataset is a `.jsonl` file of a repository, a version is
the commit that produced its content, an environment is an environment ref. This module holds
the rules and knows nothing of HTTP: dsv.server.dialects.humanloop.routes maps it to routes, and
dsv.server.dialects.humanloop.types holds the shapes.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import msgspec

from dsv.canonical import decode_canonical, encode_canonical
from dsv.deployment import deployment_message, deployment_tree
from dsv.errors import Conflict, NotFound, Unprocessable
from dsv.manifest import build_dataset
from dsv.objects import (
    Commit,
    Dataset,
    Format,
    Kind,
    Tree,
    TreeEntry,
    encode_object,
    hash_object,
    split_oids,
)
from dsv.pack import PackWriter
from dsv.paths import BadPath, check_tree_paths
from dsv.refs import BRANCHES, ENVS
from dsv.server.dialects import FieldError
from dsv.server.dialects.humanloop.history import History, Version, Versions
from dsv.server.dialects.humanloop.store import (
    DatasetMove,
    DatasetRecord,
    HumanloopStore,
    VersionNote,
)
from dsv.server.dialects.humanloop.types import (
    DATASET_SUFFIX,
    CreateDatapoint,
    DatasetResponse,
    EnvironmentResponse,
    FileEnvironmentResponse,
    MoveRequest,
    Page,
    UpsertRequest,
    V4Datapoint,
    VersionUpdate,
    check_name,
    datapoint_id,
    dataset_ids,
    decode_body,
    encode_record,
    env_id,
    iso_time,
    not_found,
    read_csv,
    record_of,
    split_path,
    version_id,
)
from dsv.server.dialects.paging import page_window
from dsv.server.keys import AccessDenied, authenticate, permit
from dsv.server.service import DEFAULT_ENVIRONMENTS, check_environments
from dsv.server.storage import (
    KeyRecord,
    MetaStore,
    RefChange,
    RefConflict,
    publish_pack,
)
from dsv.server.storage.stored import StoredObjects
from dsv.text import plural

__all__ = ["DATAPOINT_CHUNK", "HumanloopService", "Sink", "Streamed"]

_FORMAT = Format("jsonl")
_ATTEMPTS = 8
# Datapoints of a streamed response read and encoded at a time: the memory a response costs,
# and how long a worker thread holds the repository's object store for one piece.
DATAPOINT_CHUNK = 512


class Streamed(NamedTuple):
    """A response, and the (repository, dataset) whose datapoints go in its `datapoints`,
    encoded a chunk at a time after the rest (None: no datapoints)."""

    response: DatasetResponse
    source: tuple[str, bytes] | None = None


# -- the service ----------------------------------------------------------------------------------


class Sink:
    """New objects of one API write, kept until they go to the blob store as one pack."""

    def __init__(self) -> None:
        self.objects: dict[bytes, tuple[Kind, bytes]] = {}

    def write(self, kind: Kind, body: bytes) -> bytes:
        oid = hash_object(kind, body)
        self.objects.setdefault(oid, (kind, body))
        return oid


# A write's plan: given the default branch's tree, the new tree and commit message, or None
# when there is nothing to change.
Build = Callable[[dict[str, bytes], Sink], tuple[dict[str, bytes], str] | None]


class HumanloopService:
    """The Humanloop Datasets API's rules over the objects, the core metadata store and the
    dialect's own store; HTTP-free, it raises dsv's errors (dsv.errors).

    API writes to one repository are serialised by the metadata store's lock of the repository
    (an advisory lock with PostgreSQL, held across processes), so checks such as
    "this version name is free" hold until the write lands; pushes, which do not take it,
    meet the API's writes in compare-and-swap, and the API retries on top of them.
    """

    def __init__(
        self,
        objects: StoredObjects,
        meta: MetaStore,
        store: HumanloopStore,
        *,
        tmp_dir: Any,
        auth: bool = True,
        environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS,
        chunk: int = DATAPOINT_CHUNK,
        api: str = "Humanloop API",
    ) -> None:
        self.objects = objects
        self.chunk = chunk
        self.blobs = objects.blobs
        self.meta = meta
        self.store = store
        self.tmp_dir = tmp_dir
        self.auth = auth
        self.environments = check_environments(environments)
        # Who writes, in commits' authors and ref logs: the other dialects write through
        # this machinery under their own names.
        self.api = api
        self._streaming = threading.Lock()
        self.history = History(objects, store)

    # -- access ------------------------------------------------------------------------------

    def authenticate(self, key: str | None) -> KeyRecord | None:
        """The caller's key record (None on a server without auth); 401 without a valid key."""
        return authenticate(self.meta, key) if self.auth else None

    def _permit(self, caller: KeyRecord | None, repo: str, *, write: bool) -> None:
        if caller is not None:
            permit(caller, repo, write=write)

    def _readable(self, caller: KeyRecord | None, repo: str) -> bool:
        try:
            self._permit(caller, repo, write=False)
        except AccessDenied:
            return False
        return True

    def _record(self, caller: KeyRecord | None, dataset_id: str, *, write: bool) -> DatasetRecord:
        record = self.store.dataset_by_id(dataset_id)
        # Another repository's dataset is "not found" to a key that may not read it.
        if record is None or not self._readable(caller, record.repo):
            raise not_found(f"Dataset {dataset_id} not found")
        self._permit(caller, record.repo, write=write)
        return record

    @contextlib.contextmanager
    def locked(self, repo: str) -> Iterator[None]:
        # The metadata store's lock, which every dialect's writes queue on (they share the
        # store); with PostgreSQL it holds across every server process.
        with self.meta.locked(repo):
            yield

    @contextlib.contextmanager
    def _writing(self, caller: KeyRecord | None, dataset_id: str) -> Iterator[DatasetRecord]:
        """The dataset's record, read again under its repository's write lock."""
        repo = self._record(caller, dataset_id, write=True).repo
        with self.locked(repo):
            yield self._record(caller, dataset_id, write=True)

    def _branch_name(self, repo: str) -> str:
        """The default branch: the repository's head, `main` for one the API creates."""
        record = self.meta.get_repo(repo)
        return record.head if record and record.head else BRANCHES + "main"

    def branch_of(self, repo: str) -> tuple[str, bytes | None]:
        name = self._branch_name(repo)
        return name, self.meta.list_refs(repo).get(name)

    def _reading(self, caller: KeyRecord | None, dataset_id: str) -> tuple[DatasetRecord, Versions]:
        """The record and its versions, read without the lock: if an API move lands between
        reading the record and reading the branch, the record is read again."""
        for _ in range(_ATTEMPTS):
            record = self._record(caller, dataset_id, write=False)
            try:
                return record, self.versions_of(record)
            except NotFound:
                if self.store.dataset_by_id(dataset_id) == record:
                    raise
        raise not_found(f"Dataset {dataset_id} not found")

    # -- versions ----------------------------------------------------------------------------

    def versions_of(self, record: DatasetRecord) -> Versions:
        """The dataset's versions; 404 if the default branch no longer has it."""
        branch = self._branch_name(record.repo)
        # One read of the refs, so the branch and the environments are of one moment.
        refs = self.meta.list_refs(record.repo)
        envs = {name: refs.get(ENVS + name) for name in self._environment_names(refs)}
        found = self.history.versions(record, refs.get(branch), envs)
        if found is None:
            raise not_found(f"Dataset {record.id} not found")
        return found

    def _environment_names(self, refs: dict[str, bytes]) -> list[str]:
        found = [n[len(ENVS) :] for n in refs if n.startswith(ENVS)]
        return list(self.environments) + sorted(n for n in found if n not in self.environments)

    def _environment(self, record: DatasetRecord, given: str) -> str:
        """An environment named by its id or its name."""
        for name in self._environment_names(self.meta.list_refs(record.repo)):
            if given in (name, env_id(name)):
                return name
        raise not_found(f"Environment {given} not found")

    def _pick(
        self,
        record: DatasetRecord,
        versions: Versions,
        *,
        version: str | None,
        environment: str | None,
    ) -> Version | None:
        """The version a request names; None for "not named"."""
        if version:
            return versions.find(version, record.id)
        if environment:
            name = self._environment(record, environment)
            found = versions.deployed.get(name)
            if found is None:
                raise not_found(
                    f"No version of dataset {record.id} is deployed to environment {name}"
                )
            return found
        return None

    def _default(self, versions: Versions) -> Version:
        """What a read without a version gets: the default environment's, else the latest."""
        return versions.deployed.get(self.environments[0], versions.latest)

    # -- responses ---------------------------------------------------------------------------

    def _env_response(self, repo: str, name: str) -> EnvironmentResponse:
        log = self.meta.ref_log(repo, ENVS + name)
        record = self.meta.get_repo(repo)
        created = log[0].time if log else (record.created if record else int(time.time()))
        tag = "default" if name == self.environments[0] else "other"
        return EnvironmentResponse(env_id(name), iso_time(created), name, tag)

    def _response(
        self,
        record: DatasetRecord,
        versions: Versions,
        version: Version,
    ) -> DatasetResponse:
        repo = record.repo
        note = versions.notes.get(version.commit)
        name = record.path[: -len(DATASET_SUFFIX)]
        author = version.info.author
        match = re.match(r"^(.*?)\s*<([^>]*)>\s*$", author)
        user = (
            {"id": author, "full_name": match[1], "email_address": match[2]}
            if match
            else {"id": author, "full_name": author, "email_address": ""}
        )
        updated = iso_time(version.info.time, version.info.tz)
        return DatasetResponse(
            path=f"{repo}/{name}",
            id=record.id,
            name=name.rsplit("/", 1)[-1],
            version_id=version_id(version.commit),
            # Created when its oldest version was: a dataset pushed with dsv is older than
            # the API's record of it.
            created_at=iso_time(versions.first.info.time, versions.first.info.tz),
            updated_at=updated,
            last_used_at=updated,
            datapoints_count=self.objects.dataset(repo, version.dataset).count,
            environments=[
                self._env_response(repo, env)
                for env, v in versions.deployed.items()
                if v.commit == version.commit
            ],
            version_name=note.name if note else None,
            # Until a description is given, a version shows its commit message.
            version_description=(
                note.description
                if note and note.description is not None
                else version.info.message.strip()
            ),
            created_by=user,
            attributes=msgspec.json.decode(note.attributes) if note and note.attributes else None,
        )

    def _streamed(
        self, record: DatasetRecord, versions: Versions, version: Version, *, datapoints: bool
    ) -> Streamed:
        source = (record.repo, version.dataset) if datapoints else None
        return Streamed(self._response(record, versions, version), source)

    def encode_dataset(self, value: Streamed) -> Iterator[bytes]:
        """A response as JSON, its datapoints encoded `self.chunk` at a time: the memory it
        costs is one chunk's, not the dataset's."""
        if value.source is None:
            yield msgspec.json.encode(value.response)
            return
        repo, dataset = value.source
        head = msgspec.json.encode(
            msgspec.structs.replace(value.response, datapoints=msgspec.UNSET)
        )
        yield head[:-1] + b',"datapoints":['
        batches = self.objects.datapoint_batches(repo, dataset, size=self.chunk)
        first = True
        while True:
            # One chunk of one stream at a time: the streams share a core's worth of work
            # between them, and short requests keep the other.
            with self._streaming:
                batch = next(batches, None)
                if batch is None:
                    break
                piece = msgspec.json.encode([_datapoint_response(o, b) for o, b in batch])
            yield (b"" if first else b",") + piece[1:-1]
            first = False
        yield b"]}"

    def encode_versions(self, values: list[Streamed]) -> Iterator[bytes]:
        """List Versions' `{"records": [...]}`, as encode_dataset encodes each."""
        yield b'{"records":['
        for i, value in enumerate(values):
            if i:
                yield b","
            yield from self.encode_dataset(value)
        yield b"]}"

    def _points(self, repo: str, dataset_oid: bytes, start: int = 0, stop: int = -1) -> list[Any]:
        return [
            _datapoint_response(oid, body)
            for oid, body in self.objects.datapoints(repo, dataset_oid, start, stop)
        ]

    # -- reads -------------------------------------------------------------------------------

    def list_datasets(
        self,
        caller: KeyRecord | None,
        *,
        page: int,
        size: int,
        name: str | None = None,
        user_filter: str | None = None,
        sort_by: str | None = None,
        order: str | None = None,
    ) -> Page:
        field = sort_by or "updated_at"
        if field not in ("created_at", "updated_at", "name"):
            raise FieldError(
                ["query", "sort_by"], "Input should be 'created_at', 'updated_at' or 'name'", "enum"
            )
        if order not in (None, "asc", "desc"):
            raise FieldError(["query", "order"], "Input should be 'asc' or 'desc'", "enum")
        found: list[tuple[Any, DatasetRecord, Versions, Version]] = []
        for repo in self.meta.list_repos():
            if self._readable(caller, repo.name):
                with self.locked(repo.name):
                    found.extend(self._listed(repo.name, field, name, user_filter))
        descending = order == "desc" or (order is None and field != "name")
        found.sort(key=lambda item: item[0], reverse=descending)
        # Only the page's datasets become responses: a pager walking N datasets stays O(N).
        shown = [self._response(*item[1:]) for item in found[page_window(page, size)]]
        return Page(shown, page, size, len(found))

    def _listed(
        self, repo: str, field: str, name: str | None, user_filter: str | None
    ) -> list[tuple[Any, DatasetRecord, Versions, Version]]:
        """The datasets of `repo` a listing shows, with their sort keys; called under the
        repository's lock, so that no API move makes a path registered here stale."""
        found: list[tuple[Any, DatasetRecord, Versions, Version]] = []
        _, tip = self.branch_of(repo)
        for path in self.objects.tree(repo, tip) if tip else {}:
            shown = f"{repo}/{path[: -len(DATASET_SUFFIX)]}"
            if not path.endswith(DATASET_SUFFIX) or (name and name.lower() not in shown.lower()):
                continue
            record = self.store.register_dataset(
                repo, path, dataset_ids(repo, path), created=int(time.time())
            )
            try:
                versions = self.versions_of(record)
            except NotFound:
                continue  # a push removed it since the branch was read
            version = self._default(versions)
            if user_filter and user_filter.lower() not in version.info.author.lower():
                continue
            key = {
                "name": (record.path.rsplit("/", 1)[-1].lower(), shown),
                "created_at": (versions.first.info.time, shown),
                "updated_at": (version.info.time, shown),
            }[field]
            found.append((key, record, versions, version))
        return found

    def get(
        self,
        caller: KeyRecord | None,
        dataset_id: str,
        *,
        version: str | None = None,
        environment: str | None = None,
        include_datapoints: bool = False,
    ) -> Streamed:
        record, versions = self._reading(caller, dataset_id)
        chosen = self._pick(record, versions, version=version, environment=environment)
        return self._streamed(
            record, versions, chosen or self._default(versions), datapoints=include_datapoints
        )

    def list_datapoints(
        self,
        caller: KeyRecord | None,
        dataset_id: str,
        *,
        page: int,
        size: int,
        version: str | None = None,
        environment: str | None = None,
    ) -> Page:
        record, versions = self._reading(caller, dataset_id)
        chosen = self._pick(record, versions, version=version, environment=environment)
        chosen = chosen or self._default(versions)
        total = self.objects.dataset(record.repo, chosen.dataset).count
        window = page_window(page, size)
        records = []
        if size:
            records = self._points(record.repo, chosen.dataset, window.start, window.stop)
        return Page(records, page, size, total)

    def list_versions(
        self, caller: KeyRecord | None, dataset_id: str, *, include_datapoints: str | None = None
    ) -> list[Streamed]:
        if include_datapoints not in (None, "latest_saved", "latest_committed"):
            raise FieldError(
                ["query", "include_datapoints"],
                "Input should be 'latest_saved' or 'latest_committed'",
                "enum",
            )
        record, versions = self._reading(caller, dataset_id)
        return [
            self._streamed(
                record,
                versions,
                v,
                datapoints=bool(include_datapoints) and v.commit == versions.latest.commit,
            )
            for v in versions.visible
        ]

    def list_environments(
        self, caller: KeyRecord | None, dataset_id: str
    ) -> list[FileEnvironmentResponse]:
        record, versions = self._reading(caller, dataset_id)
        out = []
        for name in self._environment_names(self.meta.list_refs(record.repo)):
            env = self._env_response(record.repo, name)
            version = versions.deployed.get(name)
            file = self._response(record, versions, version) if version else None
            out.append(FileEnvironmentResponse(env.id, env.created_at, env.name, env.tag, file))
        return out

    # -- writing -----------------------------------------------------------------------------

    def _who(self, caller: KeyRecord | None) -> str:
        return f"{self.api} [{f'key {caller.id}' if caller else 'anonymous'}]"

    def _author(self, caller: KeyRecord | None) -> str:
        return f"{self.api} <{'key-' + caller.id if caller else 'anonymous'}@dsv>"

    def _store(self, repo: str, sink: Sink) -> None:
        absent = self.blobs.missing(repo, sink.objects)

        def fill(writer: PackWriter) -> None:
            for oid, (kind, body) in sink.objects.items():
                if oid in absent:
                    writer.add(kind, oid, body)

        publish_pack(self.blobs, self.meta, self.tmp_dir, repo, fill)

    def write_tree(
        self,
        repo: str,
        caller: KeyRecord | None,
        build: Build,
        *,
        reason: str,
        move: Callable[[bytes], DatasetMove] | None = None,
    ) -> tuple[bytes, bool]:
        """Commit `build`'s tree on the default branch by compare-and-swap, retrying when a
        push moved it. Returns the new commit and True, or the tip and False if `build` had
        nothing to change. Objects are stored before the ref moves, so a crash leaves at most
        unreferenced objects.
        """
        for _ in range(_ATTEMPTS):
            branch, head = self.branch_of(repo)
            tree = dict(self.objects.tree(repo, head)) if head else {}
            sink = Sink()
            built = build(tree, sink)
            if built is None:
                if head is None:
                    raise Conflict(f"{repo} has no versions yet")
                return head, False
            entries, message = built
            ordered = sorted(entries, key=lambda p: p.encode())
            try:
                check_tree_paths(ordered)
            except BadPath as exc:
                # Names were checked where they came in; this guards every route at once.
                raise Unprocessable(f"{repo}: {exc.message}", code="corrupt") from exc
            tree_oid = sink.write(
                Kind.TREE, encode_object(Tree(tuple(TreeEntry(p, entries[p]) for p in ordered)))
            )
            commit = Commit(
                tree_oid,
                (head,) if head else (),
                self._author(caller),
                int(time.time()),
                0,
                message,
            )
            commit_oid = sink.write(Kind.COMMIT, encode_object(commit))
            self._store(repo, sink)
            try:
                self.store.update_refs(
                    repo,
                    [RefChange(branch, head, commit_oid)],
                    user=self._who(caller),
                    reason=reason,
                    head=branch,
                    move=move(commit_oid) if move else None,
                )
            except RefConflict:
                continue
            return commit_oid, True
        raise Conflict(f"{repo} kept changing while this request was applied; try again")

    def check_room(self, record: DatasetRecord, tree: dict[str, bytes], path: str) -> None:
        """A new path must not be a folder of another dataset, nor inside one's file."""
        for other in tree:
            if other.startswith(path + "/") or path.startswith(other + "/"):
                raise Conflict(
                    f"{record.repo} has a dataset at {other}, which {path} cannot sit beside",
                    "a dataset's path may not be a folder of another's",
                )

    def _check_version_name(
        self, versions: Versions | None, name: str | None, *, besides: bytes | None = None
    ) -> None:
        """Names are unique among all versions of a dataset, hidden ones included."""
        if not name or versions is None:
            return
        for v in versions.every:
            note = versions.notes.get(v.commit)
            if note and note.name == name and v.commit != besides:
                raise Conflict(
                    f"Version name {name!r} is already used by version {version_id(v.commit)}",
                )

    def _note(self, versions: Versions, dataset_id: str, commit: bytes) -> VersionNote:
        return versions.notes.get(commit) or VersionNote(dataset_id, commit)

    # -- writes ------------------------------------------------------------------------------

    def upsert(
        self,
        caller: KeyRecord | None,
        request: UpsertRequest,
        *,
        version: str | None = None,
        environment: str | None = None,
        include_datapoints: bool = False,
    ) -> Streamed:
        """A new version from the request's datapoints; when they change nothing, the latest
        version, untouched, with `version_created` false."""
        if request.id:
            repo = self._record(caller, request.id, write=True).repo
            if request.path and split_path(request.path)[0] != repo:
                raise FieldError(
                    ["body", "path"], f"path {request.path!r} is not the path of {request.id}"
                )
        elif request.path:
            repo, path = split_path(request.path)
            self._permit(caller, repo, write=True)
        else:
            raise FieldError(["body", "path"], "give the dataset's path or its id", "missing")
        bodies: dict[bytes, bytes] = {}
        given: list[bytes] = []
        for i, point in enumerate(request.datapoints):
            loc: list[str | int] = ["body", "datapoints", i]
            body = encode_record(record_of(point, loc), loc)
            oid = hash_object(Kind.DATAPOINT, body)
            bodies[oid] = body
            given.append(oid)
        with self.locked(repo):
            versions: Versions | None
            if request.id:
                record = self._record(caller, request.id, write=True)
                if request.path and split_path(request.path)[1] != record.path:
                    raise FieldError(
                        ["body", "path"], f"path {request.path!r} is not the path of {request.id}"
                    )
                versions = self.versions_of(record)
            else:
                record = self.store.register_dataset(
                    repo, path, dataset_ids(repo, path), created=int(time.time())
                )
                try:
                    versions = self.versions_of(record)
                except NotFound:
                    versions = None
            action = request.action or "set"
            base: Version | None = None
            # As in Humanloop, version_id and environment choose the base of add and remove.
            if action != "set" and (version or environment):
                if versions is None:
                    raise not_found(f"Dataset {record.id} has no versions to base this one on")
                base = self._pick(record, versions, version=version, environment=environment)

            def build(tree: dict[str, bytes], sink: Sink) -> tuple[dict[str, bytes], str] | None:
                current = tree.get(record.path)
                # Read once: the comparison, the base of add/remove and page reuse all need it.
                current_oids = self.objects.oids(record.repo, current) if current else None
                result = self._combine(record.repo, action, given, base, current_oids)
                if result is None:
                    # Nothing changes: no version is made, and the latest keeps its name,
                    # description and attributes; the response says so (docs/humanloop.md).
                    return None
                self._check_version_name(versions, request.version_name)
                if current is None:
                    self.check_room(record, tree, record.path)
                tree[record.path] = self.new_dataset(
                    sink,
                    result,
                    {} if action == "remove" else bodies,
                    self.objects.dataset(record.repo, current) if current else None,
                    current_oids,
                )
                # The name stays out of the message: it can be renamed, the commit cannot.
                given_text = plural(len(given), "datapoint")
                summary = f"{action} {given_text} of {record.path} ({self.api})"
                return tree, request.version_description or summary

            commit, created = self.write_tree(
                record.repo, caller, build, reason=f"humanloop: upsert {record.path}"
            )
            after = self.versions_of(record)
            made = next((v for v in after.every if v.commit == commit), after.latest)
            if created:
                attributes = encode_canonical(request.attributes) if request.attributes else b""
                self.store.put_version_note(
                    VersionNote(
                        record.id,
                        made.commit,
                        request.version_name,
                        request.version_description,
                        attributes,
                    )
                )
                after = self.versions_of(record)
            streamed = self._streamed(record, after, made, datapoints=include_datapoints)
            response = msgspec.structs.replace(streamed.response, version_created=created)
            return streamed._replace(response=response)

    def _combine(
        self,
        repo: str,
        action: str,
        given: list[bytes],
        base: Version | None,
        current_oids: bytes | None,
    ) -> bytes | None:
        """The new version's datapoint ids; None when they equal the current ones."""
        if base is not None:
            base_oids = self.objects.oids(repo, base.dataset)
        else:
            base_oids = current_oids or b""
        if action == "set":
            result = list(dict.fromkeys(given))
        elif action == "add":
            have = set(split_oids(base_oids))
            result = [*split_oids(base_oids), *(o for o in dict.fromkeys(given) if o not in have)]
        else:
            dropped = set(given)
            result = [oid for oid in split_oids(base_oids) if oid not in dropped]
        joined = b"".join(result)
        return None if joined == current_oids else joined

    def new_dataset(
        self,
        sink: Sink,
        oids: bytes,
        bodies: dict[bytes, bytes],
        base: Dataset | None,
        base_oids: bytes | None,
    ) -> bytes:
        # Only the request's own datapoints can be new (the store skips those it holds).
        for oid, body in bodies.items():
            sink.objects.setdefault(oid, (Kind.DATAPOINT, body))
        fmt = base.format if base else _FORMAT
        key = base.key if base else ()
        dataset_oid, _ = build_dataset(sink, oids, fmt, key, base=base, base_oids=base_oids)
        return dataset_oid

    def upload_csv(
        self,
        caller: KeyRecord | None,
        dataset_id: str,
        data: bytes,
        *,
        version: str | None = None,
        environment: str | None = None,
        version_name: str | None = None,
        version_description: str | None = None,
    ) -> DatasetResponse:
        points = [msgspec.convert(r, CreateDatapoint) for r in read_csv(data)]
        with self._writing(caller, dataset_id) as record:
            versions = self.versions_of(record)
            base = self._pick(record, versions, version=version, environment=environment)
            base = base or self._default(versions)
            request = UpsertRequest(
                datapoints=points,
                id=dataset_id,
                action="add",
                version_name=version_name or None,
                version_description=version_description or None,
            )
            return self.upsert(caller, request, version=version_id(base.commit)).response

    def create_datapoints_v4(
        self, caller: KeyRecord | None, dataset_id: str, data: bytes
    ) -> list[dict[str, Any]]:
        """v4 Create Datapoint: add to the latest version, committed with a generated message."""
        many = data.lstrip()[:1] == b"["
        points: list[V4Datapoint] = (
            decode_body(data, list[V4Datapoint]) if many else [decode_body(data, V4Datapoint)]
        )
        out = []
        for i, point in enumerate(points):
            loc: list[str | int] = ["body", *([i] if many else [])]
            if point.log_ids is not None:
                raise FieldError(
                    [*loc, "log_ids"],
                    "dsv keeps no logs to copy datapoints from; send inputs, messages and target",
                )
            stored = record_of(point, loc)
            oid = hash_object(Kind.DATAPOINT, encode_record(stored, loc))
            out.append({"id": datapoint_id(oid), "dataset_id": dataset_id, **stored})
        request = UpsertRequest(
            datapoints=[CreateDatapoint(p.inputs, p.messages, p.target) for p in points],
            id=dataset_id,
            action="add",
        )
        self.upsert(caller, request)
        return out

    def delete(self, caller: KeyRecord | None, dataset_id: str) -> None:
        with self._writing(caller, dataset_id) as record:
            self.versions_of(record)

            def build(tree: dict[str, bytes], sink: Sink) -> tuple[dict[str, bytes], str] | None:
                if tree.pop(record.path, None) is None:
                    return None
                return tree, f"delete dataset {record.path} ({self.api})"

            self.write_tree(record.repo, caller, build, reason=f"humanloop: delete {record.path}")

    def move(
        self, caller: KeyRecord | None, dataset_id: str, request: MoveRequest
    ) -> DatasetResponse:
        with self._writing(caller, dataset_id) as record:
            self.versions_of(record)
            path = record.path
            if request.path:
                repo, path = split_path(request.path)
                if repo != record.repo:
                    raise FieldError(
                        ["body", "path"],
                        f"cannot move {record.repo}'s dataset to repository {repo}: a dataset "
                        "moves within its repository",
                    )
            if request.name:
                if "/" in request.name:
                    raise FieldError(["body", "name"], "a name may not contain '/'; set path")
                folder = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
                path = check_name(folder + request.name, ["body", "name"]) + DATASET_SUFFIX
            if path != record.path:
                old_path = record.path

                def build(
                    tree: dict[str, bytes], sink: Sink
                ) -> tuple[dict[str, bytes], str] | None:
                    if path in tree:
                        raise Conflict(f"{record.repo} already has a dataset at {path}")
                    entry = tree.pop(old_path, None)
                    if entry is None:
                        raise not_found(f"Dataset {dataset_id} not found")
                    self.check_room(record, tree, path)
                    tree[path] = entry
                    return tree, f"move dataset {old_path} to {path} ({self.api})"

                self.write_tree(
                    record.repo,
                    caller,
                    build,
                    reason=f"humanloop: move {old_path}",
                    move=lambda commit: DatasetMove(dataset_id, path, commit, old_path),
                )
        return self.get(caller, dataset_id).response

    def update_version(
        self, caller: KeyRecord | None, dataset_id: str, vid: str, request: VersionUpdate
    ) -> DatasetResponse:
        with self._writing(caller, dataset_id) as record:
            versions = self.versions_of(record)
            version = versions.find(vid, dataset_id)
            self._check_version_name(versions, request.name, besides=version.commit)
            old = self._note(versions, dataset_id, version.commit)
            self.store.put_version_note(
                msgspec.structs.replace(
                    old,
                    name=request.name if request.name is not None else old.name,
                    description=(
                        request.description if request.description is not None else old.description
                    ),
                )
            )
            return self._response(record, self.versions_of(record), version)

    def delete_version(self, caller: KeyRecord | None, dataset_id: str, vid: str) -> None:
        with self._writing(caller, dataset_id) as record:
            versions = self.versions_of(record)
            version = versions.find(vid, dataset_id)
            if version.commit == versions.latest.commit:
                raise Conflict(
                    f"Version {vid} is the latest version of {dataset_id}; the default branch "
                    "needs it",
                    "upsert a new version first",
                )
            for env, deployed in versions.deployed.items():
                if deployed.commit == version.commit:
                    raise Conflict(
                        f"Version {vid} is deployed to environment {env}",
                        "remove the deployment first",
                    )
            old = self._note(versions, dataset_id, version.commit)
            self.store.put_version_note(msgspec.structs.replace(old, hidden=True))

    def set_deployment(
        self, caller: KeyRecord | None, dataset_id: str, environment: str, vid: str
    ) -> DatasetResponse:
        """Deploy one version of one dataset: the environment's other datasets stay as they
        were (a deployment commit, docs/format.md §5), whoever moved it meanwhile."""
        with self._writing(caller, dataset_id) as record:
            versions = self.versions_of(record)
            name = self._environment(record, environment)
            version = versions.find(vid, dataset_id)
            ref = ENVS + name
            for _ in range(_ATTEMPTS):
                current = self.meta.list_refs(record.repo).get(ref)
                held = self.versions_of(record).deployed.get(name) if current else None
                if held is not None and held.commit == version.commit:
                    break
                chosen = self.objects.tree(record.repo, version.commit)
                previous = self.objects.tree(record.repo, current) if current else {}
                tree = deployment_tree(previous, chosen, deployed=[version.path])
                new = version.commit
                if current is not None or tree != chosen:
                    title = f"deploy {version.path} to {name} from {vid} ({self.api})"
                    message = deployment_message(title, deployed=[version.path])
                    parents = (current, version.commit) if current else (version.commit,)
                    new = self._deployment_commit(record, caller, tree, parents, message)
                try:
                    self._move_env(record, caller, ref, current, new, f"deploy {vid}")
                except RefConflict:
                    continue
                break
            else:
                raise Conflict(f"{ref} kept moving while this request ran")
            return self._response(record, self.versions_of(record), version)

    def remove_deployment(
        self, caller: KeyRecord | None, dataset_id: str, environment: str
    ) -> None:
        """Remove one dataset's deployment; the environment keeps the others' (its ref goes
        when none is left)."""
        with self._writing(caller, dataset_id) as record:
            name = self._environment(record, environment)
            ref = ENVS + name
            # Read before deciding: if a push moves the ref after this, the swap below fails.
            current = self.meta.list_refs(record.repo).get(ref)
            versions = self.versions_of(record)
            if current is None or versions.deployed.get(name) is None:
                raise not_found(f"Dataset {dataset_id} is not deployed to environment {name}")
            path = versions.deployed_paths[name]
            tree = deployment_tree(self.objects.tree(record.repo, current), {}, removed=[path])
            new = None
            if tree:
                message = deployment_message(
                    f"remove {path} from {name} ({self.api})", removed=[path]
                )
                new = self._deployment_commit(record, caller, tree, (current,), message)
            try:
                # Only from the commit just looked at: a newer deployment is not removed blind.
                self._move_env(record, caller, ref, current, new, "remove deployment")
            except RefConflict as exc:
                raise Conflict(
                    f"environment {name} moved while this request ran",
                    "list the environments and try again",
                ) from exc

    def _deployment_commit(
        self,
        record: DatasetRecord,
        caller: KeyRecord | None,
        tree: dict[str, bytes],
        parents: tuple[bytes, ...],
        message: str,
    ) -> bytes:
        """Store a deployment commit of `tree` (docs/format.md §5); return its oid."""
        ordered = sorted(tree, key=str.encode)
        try:
            check_tree_paths(ordered)
        except BadPath as exc:
            raise Conflict(
                f"cannot deploy to this environment: {exc.message}",
                "remove the deployment of the clashing dataset first",
            ) from exc
        sink = Sink()
        tree_oid = sink.write(
            Kind.TREE, encode_object(Tree(tuple(TreeEntry(p, tree[p]) for p in ordered)))
        )
        commit = Commit(tree_oid, parents, self._author(caller), int(time.time()), 0, message)
        oid = sink.write(Kind.COMMIT, encode_object(commit))
        self._store(record.repo, sink)
        return oid

    def _move_env(
        self,
        record: DatasetRecord,
        caller: KeyRecord | None,
        ref: str,
        old: bytes | None,
        new: bytes | None,
        why: str,
    ) -> None:
        self.meta.update_refs(
            record.repo,
            [RefChange(ref, old, new)],
            user=self._who(caller),
            reason=f"humanloop: {why}",
        )


def _datapoint_response(oid: bytes, body: bytes) -> dict[str, Any]:
    record = decode_canonical(body)
    return {"id": datapoint_id(oid), **{k: v for k, v in record.items() if k != "id"}}
