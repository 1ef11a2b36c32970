"""The Humanloop Datasets API (v5, and v4's Create Datapoint) over a server's repositories.

docs/humanloop.md is the mapping: a dataset is a `.jsonl` file of a repository, a version is
the commit that produced its content, an environment is an environment ref. This module knows
nothing of HTTP; dsv.remote.humanloop_routes maps it to routes.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple

import blake3
import msgspec

from dsv.canonical import CanonicalError, decode_canonical, encode_canonical
from dsv.errors import BadInput, CorruptObject
from dsv.manifest import build_dataset, join_slices
from dsv.objects import (
    OID_SIZE,
    Commit,
    Dataset,
    Format,
    Kind,
    Tree,
    TreeEntry,
    decode_commit,
    decode_dataset,
    decode_tree,
    encode_object,
    hash_object,
)
from dsv.pack import PackWriter
from dsv.refs import BRANCHES, ENVS, check_ref_name
from dsv.remote.keys import AccessDenied, authenticate, permit
from dsv.remote.protocol import ApiError
from dsv.remote.storage import (
    BlobStore,
    DatasetRecord,
    KeyRecord,
    MetaStore,
    RefChange,
    RefConflict,
    VersionNote,
    check_repo_name,
)

__all__ = [
    "DEFAULT_ENVIRONMENTS",
    "CreateDatapoint",
    "DatasetResponse",
    "EnvironmentResponse",
    "FileEnvironmentResponse",
    "HumanloopService",
    "MoveRequest",
    "Page",
    "Unprocessable",
    "UpsertRequest",
    "VersionUpdate",
    "check_environments",
    "datapoint_id",
    "decode_body",
    "parse_bool",
    "parse_page",
    "read_csv",
    "split_path",
    "version_id",
]

DEFAULT_ENVIRONMENTS = ("production", "staging")
DATASET_SUFFIX = ".jsonl"
_FORMAT = Format("jsonl")
_ATTEMPTS = 8
_MAX_PAGE_SIZE = 10_000
_CACHE_LIMIT = 65_536
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# -- errors ---------------------------------------------------------------------------------------


class Unprocessable(ApiError):
    """A 422 whose body is the validation error the SDK reads: `{"detail": [{loc, msg, type}]}`."""

    def __init__(self, loc: Sequence[str | int], msg: str, kind: str = "value_error") -> None:
        where = ".".join(str(part) for part in loc)
        super().__init__(422, "unprocessable", f"{where}: {msg}")
        self.detail = [{"loc": list(loc), "msg": msg, "type": kind}]


def _not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


# -- requests -------------------------------------------------------------------------------------


class CreateDatapoint(msgspec.Struct, forbid_unknown_fields=True):
    # Values are checked by record_of, which can name the offending key.
    inputs: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    target: dict[str, Any] | None = None


class UpsertRequest(msgspec.Struct, forbid_unknown_fields=True):
    datapoints: list[CreateDatapoint]
    path: str | None = None
    id: str | None = None
    action: Literal["set", "add", "remove"] | None = None
    attributes: dict[str, Any] | None = None
    version_name: str | None = None
    version_description: str | None = None


class MoveRequest(msgspec.Struct, forbid_unknown_fields=True):
    path: str | None = None
    name: str | None = None


class VersionUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    description: str | None = None


class _V4Datapoint(msgspec.Struct, forbid_unknown_fields=True):
    inputs: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    target: dict[str, Any] | None = None
    log_ids: list[str] | None = None


_ERROR_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
# msgspec names fields (`.name`) and indices (`[3]`), but not dict keys (`[...]`).
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_ERROR_TYPES = (
    ("Expected `str`", "string_type"),
    ("Expected `object`", "dict_type"),
    ("Expected `array`", "list_type"),
    ("missing required field", "missing"),
    ("unknown field", "extra_forbidden"),
    ("Invalid enum value", "literal_error"),
)


def decode_body(data: bytes, kind: type[Any]) -> Any:
    """`data` as a `kind`; a 422 naming the field (`loc`) otherwise."""
    if not data.strip():
        raise Unprocessable(["body"], "Field required: the request has no JSON body", "missing")
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        found = _ERROR_AT.match(str(exc))
        assert found is not None
        loc: list[str | int] = ["body"]
        for name, index in _PATH_PART.findall(found["path"] or ""):
            loc.append(int(index) if index else name)
        message = found["msg"]
        missing = re.search(r"missing required field `([^`]+)`", message)
        if missing:
            loc.append(missing[1])
        unknown = re.search(r"unknown field `([^`]+)`", message)
        if unknown:
            loc.append(unknown[1])
        code = next((c for text, c in _ERROR_TYPES if text in message), "value_error")
        raise Unprocessable(loc, message, code) from exc
    except msgspec.DecodeError as exc:
        raise Unprocessable(["body"], f"JSON decode error: {exc}", "json_invalid") from exc


# -- responses ------------------------------------------------------------------------------------


class EnvironmentResponse(msgspec.Struct, frozen=True):
    id: str
    created_at: str
    name: str
    tag: str


class DatasetResponse(msgspec.Struct, frozen=True):
    path: str
    id: str
    name: str
    version_id: str
    created_at: str
    updated_at: str
    last_used_at: str
    datapoints_count: int
    environments: list[EnvironmentResponse]
    version_name: str | None = None
    version_description: str | None = None
    created_by: dict[str, str] | None = None
    datapoints: list[dict[str, Any]] | None = None
    attributes: dict[str, Any] | None = None
    directory_id: str | None = None
    description: str | None = None
    schema: dict[str, Any] | None = None
    readme: str | None = None
    tags: list[str] | None = None
    type: str = "dataset"


class FileEnvironmentResponse(msgspec.Struct, frozen=True):
    id: str
    created_at: str
    name: str
    tag: str
    file: DatasetResponse | None


class Page(msgspec.Struct, frozen=True):
    records: list[Any]
    page: int
    size: int
    total: int


# -- the mapping ----------------------------------------------------------------------------------


def check_environments(names: Sequence[str]) -> tuple[str, ...]:
    """Environment names for `dsv serve --environment`: the first is the default."""
    if not names:
        raise BadInput("at least one environment is needed")
    for name in names:
        check_ref_name(ENVS + name, what="environment name")
        if "/" in name:
            raise BadInput(f"invalid environment name {name!r}: it may not contain '/'")
    if len(set(names)) != len(names):
        raise BadInput("an environment is named twice")
    return tuple(names)


def _env_id(name: str) -> str:
    return "env_" + blake3.blake3(b"environment\x00" + name.encode()).hexdigest()[:24]


def _dataset_ids(repo: str, path: str) -> Iterable[str]:
    """Candidate ids of a dataset: derived from where it was first seen, so they are stable."""
    seed = blake3.blake3(f"dataset\x00{repo}\x00{path}".encode()).hexdigest()
    yield "ds_" + seed[:24]
    for n in range(1, 1000):
        yield "ds_" + blake3.blake3(f"{seed}\x00{n}".encode()).hexdigest()[:24]


def version_id(commit: bytes) -> str:
    return "dsv_" + commit.hex()


def datapoint_id(oid: bytes) -> str:
    return "dp_" + oid.hex()


def _iso(seconds: int, tz_minutes: int = 0) -> str:
    zone = datetime.timezone(datetime.timedelta(minutes=tz_minutes))
    return datetime.datetime.fromtimestamp(seconds, zone).isoformat()


def _check_name(name: str, loc: Sequence[str | int]) -> str:
    """A Humanloop dataset name inside a repository: the file is NAME.jsonl."""
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", "..") or any(c in part for c in "\\\x00") or len(part) > 200:
            raise Unprocessable(
                loc,
                f"invalid dataset name {name!r}: use '/'-separated parts, none empty, '.' or '..'",
            )
        if any(ord(c) < 32 for c in part):
            raise Unprocessable(loc, f"invalid dataset name {name!r}: control character")
    if parts[0].startswith(".dsv"):
        raise Unprocessable(loc, f"invalid dataset name {name!r}: .dsv is dsv's own directory")
    return name


def split_path(path: str, loc: Sequence[str | int] = ("body", "path")) -> tuple[str, str]:
    """`OWNER/REPO/NAME` -> (`OWNER/REPO`, the file `NAME.jsonl`)."""
    parts = path.strip("/").split("/")
    if len(parts) < 3:
        raise Unprocessable(
            loc,
            f"dataset path {path!r} must be OWNER/REPO/NAME: the repository, then the dataset",
        )
    repo = "/".join(parts[:2])
    try:
        check_repo_name(repo)
    except BadInput as exc:
        raise Unprocessable(loc, exc.message) from exc
    return repo, _check_name("/".join(parts[2:]), loc) + DATASET_SUFFIX


def record_of(point: CreateDatapoint | _V4Datapoint, loc: list[str | int]) -> dict[str, Any]:
    """The datapoint as stored: `inputs`, `messages`, `target`, the absent ones omitted."""
    record: dict[str, Any] = {}
    if point.inputs is not None:
        for name, value in point.inputs.items():
            if not isinstance(value, str):
                raise Unprocessable(
                    [*loc, "inputs", name], "Input should be a valid string", "string_type"
                )
        record["inputs"] = point.inputs
    if point.messages is not None:
        for j, message in enumerate(point.messages):
            if not isinstance(message.get("role"), str):
                raise Unprocessable([*loc, "messages", j, "role"], "Field required", "missing")
        record["messages"] = point.messages
    if point.target is not None:
        record["target"] = point.target
    return record


def _encode_record(record: dict[str, Any], loc: list[str | int]) -> bytes:
    try:
        return encode_canonical(record)
    except CanonicalError as exc:
        raise Unprocessable(loc, exc.message) from exc


def read_csv(data: bytes) -> list[dict[str, Any]]:
    """Humanloop's CSV: a header; `messages` and `target` cells hold JSON, other columns inputs."""
    loc: list[str | int] = ["body", "file"]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable(loc, f"the CSV file is not UTF-8 (byte {exc.start})") from exc
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(rows, None)
        if not header or not any(h.strip() for h in header):
            raise Unprocessable(loc, "the CSV file has no header row")
        if len(set(header)) != len(header):
            raise Unprocessable(loc, "line 1: a column is named twice")
        records = []
        for row in rows:
            line = rows.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise Unprocessable(
                    loc, f"line {line}: {len(row)} cells where the header has {len(header)}"
                )
            record: dict[str, Any] = {}
            inputs = {}
            for name, cell in zip(header, row, strict=True):
                if name in ("messages", "target"):
                    if cell.strip():
                        record[name] = _json_cell(cell, name, line, loc)
                else:
                    inputs[name] = cell
            if inputs:
                record["inputs"] = inputs
            point = msgspec.convert(record, CreateDatapoint)
            records.append(record_of(point, [*loc, line]))
        return records
    except csv.Error as exc:
        raise Unprocessable(loc, f"line {rows.line_num}: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise Unprocessable(loc, f"line {rows.line_num}: {exc}") from exc


def _json_cell(cell: str, column: str, line: int, loc: list[str | int]) -> Any:
    try:
        value = msgspec.json.decode(cell)
    except msgspec.DecodeError as exc:
        raise Unprocessable(loc, f"line {line}: column {column} is not JSON ({exc})") from exc
    wanted = list if column == "messages" else dict
    if not isinstance(value, wanted):
        shown = "an array" if wanted is list else "an object"
        raise Unprocessable(loc, f"line {line}: column {column} must hold {shown}")
    return value


# -- the service ----------------------------------------------------------------------------------


class _Version(NamedTuple):
    """One version of a dataset: the commit that produced its content, and that content."""

    commit: bytes
    info: Commit
    dataset: bytes
    path: str


class _Versions(NamedTuple):
    latest: _Version
    visible: list[_Version]
    deployed: dict[str, _Version]
    notes: dict[bytes, VersionNote]

    def find(self, vid: str, dataset_id: str) -> _Version:
        for v in self.visible:
            if version_id(v.commit) == vid:
                return v
        raise _not_found(f"Version {vid} of dataset {dataset_id} not found")


class _Sink:
    """New objects of one API write, kept until they go to the blob store as one pack."""

    def __init__(self) -> None:
        self.objects: dict[bytes, tuple[Kind, bytes]] = {}

    def write(self, kind: Kind, body: bytes) -> bytes:
        oid = hash_object(kind, body)
        self.objects.setdefault(oid, (kind, body))
        return oid


Build = Callable[[dict[str, bytes], _Sink], tuple[dict[str, bytes], str] | None]


class HumanloopService:
    """The Humanloop Datasets API's rules over a blob store and a metadata store."""

    def __init__(
        self,
        blobs: BlobStore,
        meta: MetaStore,
        *,
        tmp_dir: Any,
        auth: bool = True,
        environments: Sequence[str] = DEFAULT_ENVIRONMENTS,
    ) -> None:
        self.blobs = blobs
        self.meta = meta
        self.tmp_dir = tmp_dir
        self.auth = auth
        self.environments = check_environments(environments)
        self._cache: dict[tuple[str, bytes, Kind], Any] = {}
        self._cache_lock = threading.Lock()

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
        record = self.meta.dataset_by_id(dataset_id)
        # Another repository's dataset is "not found" to a key that may not read it.
        if record is None or not self._readable(caller, record.repo):
            raise _not_found(f"Dataset {dataset_id} not found")
        self._permit(caller, record.repo, write=write)
        return record

    # -- reading objects (immutable, so cached) ----------------------------------------------

    def _object(self, repo: str, kind: Kind, oid: bytes) -> Any:
        key = (repo, oid, kind)
        found = self._cache.get(key)
        if found is None:
            (body,) = self.blobs.read(repo, kind, [oid])
            if kind == Kind.COMMIT:
                found = decode_commit(body, oid)
            elif kind == Kind.TREE:
                found = {e.path: e.dataset for e in decode_tree(body, oid).entries}
            else:
                found = decode_dataset(body, oid)
            with self._cache_lock:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[key] = found
        return found

    def _commit(self, repo: str, oid: bytes) -> Commit:
        found: Commit = self._object(repo, Kind.COMMIT, oid)
        return found

    def _tree_of(self, repo: str, commit: bytes) -> dict[str, bytes]:
        found: dict[str, bytes] = self._object(repo, Kind.TREE, self._commit(repo, commit).tree)
        return found

    def _dataset(self, repo: str, oid: bytes) -> Dataset:
        found: Dataset = self._object(repo, Kind.DATASET, oid)
        return found

    def _same(self, repo: str, a: bytes, b: bytes) -> bool:
        return a == b or self._dataset(repo, a).same_as(self._dataset(repo, b))

    def _oids(self, repo: str, dataset_oid: bytes) -> bytes:
        dataset = self._dataset(repo, dataset_oid)
        unique = list(dict.fromkeys(s.page for s in dataset.slices))
        pages = dict(zip(unique, self.blobs.read(repo, Kind.PAGE, unique), strict=True))
        return join_slices(dataset, pages, dataset_oid)

    def _branch(self, repo: str) -> tuple[str, bytes | None]:
        record = self.meta.get_repo(repo)
        name = record.head if record and record.head else BRANCHES + "main"
        return name, self.meta.list_refs(repo).get(name)

    # -- versions ----------------------------------------------------------------------------

    def _walk(self, record: DatasetRecord, tip: bytes, path: str, *, first: bool) -> list[_Version]:
        """Versions along first parents from `tip` (newest first); only the newest if `first`."""
        moves = self.meta.dataset_moves(record.id)
        repo = record.repo
        entry = self._tree_of(repo, tip).get(path)
        found: list[_Version] = []
        oid = tip
        while entry is not None:
            commit = self._commit(repo, oid)
            parent_path = moves.get(oid, path)
            parent = commit.parents[0] if commit.parents else None
            parent_entry = self._tree_of(repo, parent).get(parent_path) if parent else None
            if parent_entry is None or not self._same(repo, entry, parent_entry):
                found.append(_Version(oid, commit, entry, path))
                if first:
                    break
            if parent is None:
                break
            oid, entry, path = parent, parent_entry, parent_path
        return found

    def _path_at(self, record: DatasetRecord, commit: bytes) -> str | None:
        tree = self._tree_of(record.repo, commit)
        if record.path in tree:
            return record.path
        moves = self.meta.dataset_moves(record.id)
        return next((p for p in reversed(moves.values()) if p in tree), None)

    def _versions(self, record: DatasetRecord) -> _Versions:
        """The dataset's versions the API shows; 404 if the default branch no longer has it."""
        _, tip = self._branch(record.repo)
        history = self._walk(record, tip, record.path, first=False) if tip else []
        if not history:
            raise _not_found(f"Dataset {record.id} not found")
        by_commit = {v.commit: v for v in history}
        deployed: dict[str, _Version] = {}
        refs = self.meta.list_refs(record.repo)
        for name in self._environment_names(refs):
            target = refs.get(ENVS + name)
            if target is None:
                continue
            path = self._path_at(record, target)
            if path is None:
                continue
            (version,) = self._walk(record, target, path, first=True)
            deployed[name] = by_commit.get(version.commit, version)
        notes = self.meta.version_notes(record.id)
        needed = {history[0].commit} | {v.commit for v in deployed.values()}
        extra = [v for v in deployed.values() if v.commit not in by_commit]
        every = history + sorted(
            {v.commit: v for v in extra}.values(), key=lambda v: v.info.time, reverse=True
        )
        visible = [
            v
            for v in every
            if v.commit in needed or not (notes.get(v.commit) and notes[v.commit].hidden)
        ]
        return _Versions(history[0], visible, deployed, notes)

    def _environment_names(self, refs: dict[str, bytes]) -> list[str]:
        found = [n[len(ENVS) :] for n in refs if n.startswith(ENVS)]
        return list(self.environments) + sorted(n for n in found if n not in self.environments)

    def _environment(self, record: DatasetRecord, given: str) -> str:
        """An environment named by its id or its name."""
        names = self._environment_names(self.meta.list_refs(record.repo))
        for name in names:
            if given in (name, _env_id(name)):
                return name
        raise _not_found(f"Environment {given} not found")

    def _pick(
        self,
        record: DatasetRecord,
        versions: _Versions,
        *,
        version: str | None,
        environment: str | None,
    ) -> _Version | None:
        """The version a request names; None for "not named"."""
        if version:
            return versions.find(version, record.id)
        if environment:
            name = self._environment(record, environment)
            found = versions.deployed.get(name)
            if found is None:
                raise _not_found(
                    f"No version of dataset {record.id} is deployed to environment {name}"
                )
            return found
        return None

    def _default(self, versions: _Versions) -> _Version:
        """What a read without a version gets: the default environment's, else the latest."""
        return versions.deployed.get(self.environments[0], versions.latest)

    # -- responses ---------------------------------------------------------------------------

    def _env_response(self, repo: str, name: str) -> EnvironmentResponse:
        log = self.meta.ref_log(repo, ENVS + name)
        record = self.meta.get_repo(repo)
        created = log[0].time if log else (record.created if record else int(time.time()))
        tag = "default" if name == self.environments[0] else "other"
        return EnvironmentResponse(_env_id(name), _iso(created), name, tag)

    def _response(
        self,
        record: DatasetRecord,
        versions: _Versions,
        version: _Version,
        *,
        datapoints: bool = False,
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
        updated = _iso(version.info.time, version.info.tz)
        description = note.description if note and note.description is not None else None
        return DatasetResponse(
            path=f"{repo}/{name}",
            id=record.id,
            name=name.rsplit("/", 1)[-1],
            version_id=version_id(version.commit),
            created_at=_iso(record.created),
            updated_at=updated,
            last_used_at=updated,
            datapoints_count=self._dataset(repo, version.dataset).count,
            environments=[
                self._env_response(repo, env)
                for env, v in versions.deployed.items()
                if v.commit == version.commit
            ],
            version_name=note.name if note else None,
            version_description=description or version.info.message.strip(),
            created_by=user,
            datapoints=self._points(repo, version.dataset) if datapoints else None,
            attributes=msgspec.json.decode(note.attributes) if note and note.attributes else None,
        )

    def _points(self, repo: str, dataset_oid: bytes, start: int = 0, stop: int = -1) -> list[Any]:
        """Datapoints `start` to `stop` of a version, reading only the pages that hold them."""
        dataset = self._dataset(repo, dataset_oid)
        stop = dataset.count if stop < 0 else min(stop, dataset.count)
        parts: list[tuple[bytes, int, int]] = []
        at = 0
        for s in dataset.slices:
            if at >= stop:
                break
            low, high = max(start, at), min(stop, at + s.stop - s.start)
            if low < high:
                parts.append((s.page, s.start + low - at, s.start + high - at))
            at += s.stop - s.start
        unique = list(dict.fromkeys(page for page, _, _ in parts))
        pages = dict(zip(unique, self.blobs.read(repo, Kind.PAGE, unique), strict=True))
        wanted = []
        for page, low, high in parts:
            body = pages[page]
            if high * OID_SIZE > len(body):
                raise CorruptObject(f"corrupt object {dataset_oid.hex()}: slice outside its page")
            wanted.extend(_split(body[low * OID_SIZE : high * OID_SIZE]))
        out = []
        for at in range(0, len(wanted), 2048):
            batch = wanted[at : at + 2048]
            for oid, body in zip(batch, self.blobs.read(repo, Kind.DATAPOINT, batch), strict=True):
                out.append(_datapoint_response(oid, body))
        return out

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
        found: list[DatasetResponse] = []
        for repo in self.meta.list_repos():
            if not self._readable(caller, repo.name):
                continue
            _, tip = self._branch(repo.name)
            if tip is None:
                continue
            for path in self._tree_of(repo.name, tip):
                if not path.endswith(DATASET_SUFFIX):
                    continue
                record = self.meta.register_dataset(
                    repo.name, path, _dataset_ids(repo.name, path), created=int(time.time())
                )
                versions = self._versions(record)
                found.append(self._response(record, versions, self._default(versions)))
        if name:
            found = [d for d in found if name.lower() in d.path.lower()]
        if user_filter:
            wanted = user_filter.lower()
            found = [
                d
                for d in found
                if d.created_by and wanted in " ".join(d.created_by.values()).lower()
            ]
        field = sort_by or "updated_at"
        if field not in ("created_at", "updated_at", "name"):
            raise Unprocessable(
                ["query", "sort_by"], "Input should be 'created_at', 'updated_at' or 'name'", "enum"
            )
        if order not in (None, "asc", "desc"):
            raise Unprocessable(["query", "order"], "Input should be 'asc' or 'desc'", "enum")
        descending = order == "desc" or (order is None and field != "name")
        found.sort(key=lambda d: d.path)
        found.sort(key=lambda d: _sort_key(d, field), reverse=descending)
        return _page(found, page, size)

    def get(
        self,
        caller: KeyRecord | None,
        dataset_id: str,
        *,
        version: str | None = None,
        environment: str | None = None,
        include_datapoints: bool = False,
    ) -> DatasetResponse:
        record = self._record(caller, dataset_id, write=False)
        versions = self._versions(record)
        chosen = self._pick(record, versions, version=version, environment=environment)
        return self._response(
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
        record = self._record(caller, dataset_id, write=False)
        versions = self._versions(record)
        chosen = self._pick(record, versions, version=version, environment=environment)
        chosen = chosen or self._default(versions)
        total = self._dataset(record.repo, chosen.dataset).count
        start = (page - 1) * size
        records = self._points(record.repo, chosen.dataset, start, start + size) if size else []
        return Page(records, page, size, total)

    def list_versions(
        self, caller: KeyRecord | None, dataset_id: str, *, include_datapoints: str | None = None
    ) -> dict[str, list[DatasetResponse]]:
        if include_datapoints not in (None, "latest_saved", "latest_committed"):
            raise Unprocessable(
                ["query", "include_datapoints"],
                "Input should be 'latest_saved' or 'latest_committed'",
                "enum",
            )
        record = self._record(caller, dataset_id, write=False)
        versions = self._versions(record)
        return {
            "records": [
                self._response(
                    record,
                    versions,
                    v,
                    datapoints=bool(include_datapoints) and v.commit == versions.latest.commit,
                )
                for v in versions.visible
            ]
        }

    def list_environments(
        self, caller: KeyRecord | None, dataset_id: str
    ) -> list[FileEnvironmentResponse]:
        record = self._record(caller, dataset_id, write=False)
        versions = self._versions(record)
        out = []
        for name in self._environment_names(self.meta.list_refs(record.repo)):
            env = self._env_response(record.repo, name)
            version = versions.deployed.get(name)
            file = self._response(record, versions, version) if version else None
            out.append(FileEnvironmentResponse(env.id, env.created_at, env.name, env.tag, file))
        return out

    # -- writes ------------------------------------------------------------------------------

    def _who(self, caller: KeyRecord | None) -> str:
        return f"key {caller.id}" if caller else "anonymous"

    def _author(self, caller: KeyRecord | None) -> str:
        return f"Humanloop API <{'key-' + caller.id if caller else 'anonymous'}@dsv>"

    def _store(self, repo: str, sink: _Sink) -> None:
        absent = self.blobs.missing(repo, sink.objects)
        writer = PackWriter(self.tmp_dir)
        try:
            for oid, (kind, body) in sink.objects.items():
                if oid in absent:
                    writer.add(kind, oid, body)
            prepared = writer.prepare()
        except BaseException:
            writer.abort()
            raise
        self.meta.create_repo(repo)
        if prepared is not None:
            self.blobs.put_pack(repo, prepared)

    def _write(self, repo: str, caller: KeyRecord | None, build: Build, *, reason: str) -> bytes:
        """Commit `build`'s tree on the default branch by compare-and-swap, retrying if it moved.

        Returns the new commit, or the branch's tip if `build` had nothing to change.
        """
        for _ in range(_ATTEMPTS):
            branch, head = self._branch(repo)
            tree = dict(self._tree_of(repo, head)) if head else {}
            sink = _Sink()
            built = build(tree, sink)
            if built is None:
                if head is None:
                    raise ApiError(409, "conflict", f"{repo} has no versions yet")
                return head
            entries, message = built
            ordered = sorted(entries, key=lambda p: p.encode())
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
                self.meta.update_refs(
                    repo,
                    [RefChange(branch, head, commit_oid)],
                    user=f"Humanloop API [{self._who(caller)}]",
                    reason=reason,
                    head=branch,
                )
            except RefConflict:
                continue
            return commit_oid
        raise ApiError(
            409, "conflict", f"{repo} kept changing while this request was applied; try again"
        )

    def _new_dataset(
        self,
        sink: _Sink,
        oids: list[bytes],
        bodies: dict[bytes, bytes],
        base: Dataset | None,
        base_oids: bytes | None,
    ) -> bytes:
        for oid in oids:
            if oid in bodies:
                sink.objects.setdefault(oid, (Kind.DATAPOINT, bodies[oid]))
        fmt = base.format if base else _FORMAT
        key = base.key if base else ()
        dataset_oid, _ = build_dataset(
            sink, b"".join(oids), fmt, key, base=base, base_oids=base_oids
        )
        return dataset_oid

    def _check_version_name(
        self, versions: _Versions | None, name: str | None, *, besides: bytes | None = None
    ) -> None:
        if not name or versions is None:
            return
        for v in versions.visible:
            note = versions.notes.get(v.commit)
            if note and note.name == name and v.commit != besides:
                raise ApiError(
                    409,
                    "conflict",
                    f"Version name {name!r} is already used by version {version_id(v.commit)}",
                )

    def upsert(
        self,
        caller: KeyRecord | None,
        request: UpsertRequest,
        *,
        version: str | None = None,
        environment: str | None = None,
        include_datapoints: bool = False,
    ) -> DatasetResponse:
        if request.id:
            record = self._record(caller, request.id, write=True)
            if request.path and split_path(request.path) != (record.repo, record.path):
                raise Unprocessable(
                    ["body", "path"], f"path {request.path!r} is not the path of {request.id}"
                )
        elif request.path:
            repo, path = split_path(request.path)
            self._permit(caller, repo, write=True)
            record = self.meta.register_dataset(
                repo, path, _dataset_ids(repo, path), created=int(time.time())
            )
        else:
            raise Unprocessable(["body", "path"], "give the dataset's path or its id", "missing")
        bodies: dict[bytes, bytes] = {}
        given: list[bytes] = []
        for i, point in enumerate(request.datapoints):
            loc: list[str | int] = ["body", "datapoints", i]
            body = _encode_record(record_of(point, loc), loc)
            oid = hash_object(Kind.DATAPOINT, body)
            bodies[oid] = body
            given.append(oid)
        versions: _Versions | None
        if request.id:
            versions = self._versions(record)
        else:
            try:
                versions = self._versions(record)
            except ApiError:
                versions = None
        action = request.action or "set"
        named_base: _Version | None = None
        # As in Humanloop, version_id and environment choose the base of "add" and "remove".
        if action != "set" and (version or environment):
            if versions is None:
                raise _not_found(f"Dataset {record.id} has no versions to base this one on")
            named_base = self._pick(record, versions, version=version, environment=environment)
        self._check_version_name(versions, request.version_name)
        summary = f"{action} {len(given)} datapoint(s) of {record.path} (Humanloop API)"
        commit = self._write(
            record.repo,
            caller,
            lambda tree, sink: self._apply(
                record, tree, sink, action, given, bodies, named_base, request, summary
            ),
            reason=f"humanloop: upsert {record.path}",
        )
        after = self._versions(record)
        made = next((v for v in after.visible if v.commit == commit), after.latest)
        if request.version_name or request.version_description or request.attributes:
            self._check_version_name(after, request.version_name, besides=made.commit)
            old = after.notes.get(made.commit)
            self.meta.put_version_note(
                VersionNote(
                    record.id,
                    made.commit,
                    request.version_name or (old.name if old else None),
                    request.version_description or (old.description if old else None),
                    encode_canonical(request.attributes)
                    if request.attributes
                    else (old.attributes if old else b""),
                )
            )
            after = self._versions(record)
        return self._response(record, after, made, datapoints=include_datapoints)

    def _apply(
        self,
        record: DatasetRecord,
        tree: dict[str, bytes],
        sink: _Sink,
        action: str,
        given: list[bytes],
        bodies: dict[bytes, bytes],
        named_base: _Version | None,
        request: UpsertRequest,
        summary: str,
    ) -> tuple[dict[str, bytes], str] | None:
        repo = record.repo
        current = tree.get(record.path)
        base_oid = named_base.dataset if named_base else current
        base_oids = self._oids(repo, base_oid) if base_oid else b""
        if action == "set":
            result = list(dict.fromkeys(given))
        elif action == "add":
            have = {base_oids[i : i + OID_SIZE] for i in range(0, len(base_oids), OID_SIZE)}
            fresh = [oid for oid in dict.fromkeys(given) if oid not in have]
            result = [*_split(base_oids), *fresh]
        else:
            dropped = set(given)
            result = [oid for oid in _split(base_oids) if oid not in dropped]
        if current is not None and b"".join(result) == self._oids(repo, current):
            return None
        base = self._dataset(repo, current) if current else None
        tree[record.path] = self._new_dataset(
            sink, result, bodies, base, self._oids(repo, current) if current else None
        )
        message = request.version_name or summary
        if request.version_description:
            message += "\n\n" + request.version_description
        return tree, message

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
        record = self._record(caller, dataset_id, write=True)
        versions = self._versions(record)
        base = self._pick(record, versions, version=version, environment=environment)
        base = base or self._default(versions)
        points = [msgspec.convert(r, CreateDatapoint) for r in read_csv(data)]
        request = UpsertRequest(
            datapoints=points,
            id=dataset_id,
            action="add",
            version_name=version_name or None,
            version_description=version_description or None,
        )
        return self.upsert(caller, request, version=version_id(base.commit))

    def create_datapoints_v4(
        self, caller: KeyRecord | None, dataset_id: str, data: bytes
    ) -> list[dict[str, Any]]:
        """v4 Create Datapoint: add to the latest version, committed with a generated message."""
        many = data.lstrip()[:1] == b"["
        points: list[_V4Datapoint] = (
            decode_body(data, list[_V4Datapoint]) if many else [decode_body(data, _V4Datapoint)]
        )
        for i, point in enumerate(points):
            if point.log_ids is not None:
                raise Unprocessable(
                    ["body", *([i] if many else []), "log_ids"],
                    "dsv keeps no logs to copy datapoints from; send inputs, messages and target",
                )
        record = self._record(caller, dataset_id, write=True)
        request = UpsertRequest(
            datapoints=[CreateDatapoint(p.inputs, p.messages, p.target) for p in points],
            id=dataset_id,
            action="add",
        )
        self.upsert(caller, request)
        out = []
        for i, p in enumerate(request.datapoints):
            loc: list[str | int] = ["body", i]
            stored = record_of(p, loc)
            oid = hash_object(Kind.DATAPOINT, _encode_record(stored, loc))
            out.append({"id": datapoint_id(oid), "dataset_id": record.id, **stored})
        return out

    def delete(self, caller: KeyRecord | None, dataset_id: str) -> None:
        record = self._record(caller, dataset_id, write=True)
        self._versions(record)

        def build(tree: dict[str, bytes], sink: _Sink) -> tuple[dict[str, bytes], str] | None:
            if tree.pop(record.path, None) is None:
                return None
            return tree, f"delete dataset {record.path} (Humanloop API)"

        self._write(record.repo, caller, build, reason=f"humanloop: delete {record.path}")

    def move(
        self, caller: KeyRecord | None, dataset_id: str, request: MoveRequest
    ) -> DatasetResponse:
        record = self._record(caller, dataset_id, write=True)
        self._versions(record)
        if request.path:
            repo, path = split_path(request.path)
            if repo != record.repo:
                raise Unprocessable(
                    ["body", "path"],
                    f"cannot move {record.repo}'s dataset to repository {repo}: a dataset "
                    "moves within its repository",
                )
        else:
            path = record.path
        if request.name:
            if "/" in request.name:
                raise Unprocessable(["body", "name"], "a name may not contain '/'; set path")
            folder = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
            path = _check_name(folder + request.name, ["body", "name"]) + DATASET_SUFFIX
        if path == record.path:
            return self.get(caller, dataset_id)
        old_path = record.path

        def build(tree: dict[str, bytes], sink: _Sink) -> tuple[dict[str, bytes], str] | None:
            if path in tree:
                raise ApiError(409, "conflict", f"{record.repo} already has a dataset at {path}")
            entry = tree.pop(old_path, None)
            if entry is None:
                raise _not_found(f"Dataset {dataset_id} not found")
            tree[path] = entry
            return tree, f"move dataset {old_path} to {path} (Humanloop API)"

        commit = self._write(record.repo, caller, build, reason=f"humanloop: move {old_path}")
        self.meta.move_dataset(dataset_id, path, commit=commit, old_path=old_path)
        return self.get(caller, dataset_id)

    def update_version(
        self, caller: KeyRecord | None, dataset_id: str, vid: str, request: VersionUpdate
    ) -> DatasetResponse:
        record = self._record(caller, dataset_id, write=True)
        versions = self._versions(record)
        version = versions.find(vid, dataset_id)
        self._check_version_name(versions, request.name, besides=version.commit)
        old = versions.notes.get(version.commit) or VersionNote(dataset_id, version.commit)
        note = msgspec.structs.replace(
            old,
            name=request.name if request.name is not None else old.name,
            description=(
                request.description if request.description is not None else old.description
            ),
        )
        self.meta.put_version_note(note)
        return self._response(record, self._versions(record), version)

    def delete_version(self, caller: KeyRecord | None, dataset_id: str, vid: str) -> None:
        record = self._record(caller, dataset_id, write=True)
        versions = self._versions(record)
        version = versions.find(vid, dataset_id)
        if version.commit == versions.latest.commit:
            raise ApiError(
                409,
                "conflict",
                f"Version {vid} is the latest version of {dataset_id}; the default branch needs it",
                "upsert a new version first",
            )
        for env, deployed in versions.deployed.items():
            if deployed.commit == version.commit:
                raise ApiError(
                    409,
                    "conflict",
                    f"Version {vid} is deployed to environment {env}",
                    "remove the deployment first",
                )
        old = versions.notes.get(version.commit) or VersionNote(dataset_id, version.commit)
        self.meta.put_version_note(msgspec.structs.replace(old, hidden=True))

    def set_deployment(
        self, caller: KeyRecord | None, dataset_id: str, environment: str, vid: str
    ) -> DatasetResponse:
        record = self._record(caller, dataset_id, write=True)
        versions = self._versions(record)
        name = self._environment(record, environment)
        version = versions.find(vid, dataset_id)
        self._move_env(record, caller, name, version.commit, reason=f"humanloop: deploy {vid}")
        return self._response(record, self._versions(record), version)

    def remove_deployment(
        self, caller: KeyRecord | None, dataset_id: str, environment: str
    ) -> None:
        record = self._record(caller, dataset_id, write=True)
        versions = self._versions(record)
        name = self._environment(record, environment)
        if name not in versions.deployed:
            raise _not_found(f"Dataset {dataset_id} is not deployed to environment {name}")
        self._move_env(record, caller, name, None, reason="humanloop: remove deployment")

    def _move_env(
        self,
        record: DatasetRecord,
        caller: KeyRecord | None,
        name: str,
        target: bytes | None,
        *,
        reason: str,
    ) -> None:
        ref = ENVS + name
        for _ in range(_ATTEMPTS):
            current = self.meta.list_refs(record.repo).get(ref)
            if current == target:
                return
            if current is None and target is None:
                return
            try:
                self.meta.update_refs(
                    record.repo,
                    [RefChange(ref, current, target)],
                    user=f"Humanloop API [{self._who(caller)}]",
                    reason=reason,
                )
            except RefConflict:
                continue
            return
        raise ApiError(409, "conflict", f"{ref} kept moving while this request was applied")


def _split(oids: bytes) -> list[bytes]:
    return [oids[i : i + OID_SIZE] for i in range(0, len(oids), OID_SIZE)]


def _datapoint_response(oid: bytes, body: bytes) -> dict[str, Any]:
    record = decode_canonical(body)
    return {"id": datapoint_id(oid), **{k: v for k, v in record.items() if k != "id"}}


def _sort_key(d: DatasetResponse, field: str) -> str:
    if field == "name":
        return d.name.lower()
    return d.created_at if field == "created_at" else d.updated_at


def _page(items: list[Any], page: int, size: int) -> Page:
    start = (page - 1) * size
    return Page(items[start : start + size], page, size, len(items))


def parse_page(page: str | None, size: str | None, *, default_size: int) -> tuple[int, int]:
    """`page` (>= 1) and `size` (0 to 10,000) query parameters; a 422 naming the bad one."""
    return (
        _int_param("page", page, 1, 1, None),
        _int_param("size", size, default_size, 0, _MAX_PAGE_SIZE),
    )


def _int_param(name: str, text: str | None, default: int, low: int, high: int | None) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise Unprocessable(
            ["query", name], "Input should be a valid integer", "int_parsing"
        ) from None
    if value < low:
        raise Unprocessable(
            ["query", name], f"Input should be greater than or equal to {low}", "greater_than_equal"
        )
    if high is not None and value > high:
        raise Unprocessable(
            ["query", name], f"Input should be less than or equal to {high}", "less_than_equal"
        )
    return value


def parse_bool(name: str, text: str | None) -> bool:
    if text is None or text == "":
        return False
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise Unprocessable(["query", name], "Input should be a valid boolean", "bool_parsing")
