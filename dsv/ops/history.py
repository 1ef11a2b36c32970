"""Reading history: log, show, cat-object and a dataset version's records. Returns data."""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from dsv.canonical import decode_canonical
from dsv.errors import BadInput
from dsv.manifest import iter_oids
from dsv.objects import (
    Commit,
    Dataset,
    Kind,
)
from dsv.repo import Repository
from dsv.text import plural
from dsv.worktree import repo_path

if TYPE_CHECKING:
    import pyarrow


__all__ = [
    "DatasetSummary",
    "LogEntry",
    "VersionSummary",
    "cat_object",
    "dataset_at",
    "iter_records",
    "log",
    "read_table",
    "show",
]


# -- log and show ---


class LogEntry(msgspec.Struct, frozen=True):
    oid: bytes
    commit: Commit


def log(
    repo: Repository,
    rev: str | None = None,
    *,
    max_count: int | None = None,
    paths: list[str] | None = None,
    topo: bool = False,
) -> Iterator[LogEntry]:
    """Commits reachable from `rev` (default HEAD), newest first; with `topo`, every commit
    before its parents and a first parent's line before the others (as `--graph` draws)."""
    start = repo.resolve(rev) if rev else repo.head()
    if start is None:
        return
    names = path_names(repo, paths) if paths else None
    if topo:
        yield from _topo_log(repo, start, max_count, names)
        return
    seen = {start}
    queue = [(-repo.read_commit(start).time, 0, start)]
    order = 1
    shown = 0
    while queue and (max_count is None or shown < max_count):
        _, _, oid = heapq.heappop(queue)
        entry = repo.read_commit(oid)
        for parent in entry.parents:
            if parent not in seen:
                seen.add(parent)
                heapq.heappush(queue, (-repo.read_commit(parent).time, order, parent))
                order += 1
        if names is not None and not _touches(repo, entry, names):
            continue
        shown += 1
        yield LogEntry(oid, entry)


def _topo_log(
    repo: Repository, start: bytes, max_count: int | None, names: list[str] | None
) -> Iterator[LogEntry]:
    commits: dict[bytes, Commit] = {}
    children: dict[bytes, int] = {start: 0}
    todo = [start]
    while todo:
        oid = todo.pop()
        commits[oid] = entry = repo.read_commit(oid)
        for parent in entry.parents:
            if parent not in children:
                children[parent] = 0
                todo.append(parent)
            children[parent] += 1
    stack = [start]
    shown = 0
    while stack and (max_count is None or shown < max_count):
        oid = stack.pop()
        entry = commits[oid]
        for parent in reversed(entry.parents):
            children[parent] -= 1
            if children[parent] == 0:
                stack.append(parent)
        if names is not None and not _touches(repo, entry, names):
            continue
        shown += 1
        yield LogEntry(oid, entry)


def path_names(repo: Repository, paths: list[str]) -> list[str] | None:
    """Dataset names (or directories) for `paths`; None when one of them is the root."""
    names = []
    for path in paths:
        if Path(os.path.normpath(repo.root / path)) == repo.root:
            return None
        names.append(repo_path(repo, path))
    return names


def _touches(repo: Repository, entry: Commit, names: list[str]) -> bool:
    """Does the commit change a dataset named in `names` or inside a directory there?"""
    mine = {e.path: e.dataset for e in repo.read_tree(entry.tree).entries}
    parent = repo.tree_of(entry.parents[0]) if entry.parents else {}
    inside = [
        path
        for path in mine.keys() | parent.keys()
        if any(path == n or path.startswith(n + "/") for n in names)
    ]
    for name in inside:
        a, b = mine.get(name), parent.get(name)
        if a == b:
            continue
        if a is None or b is None or not repo.read_dataset(a).same_as(repo.read_dataset(b)):
            return True
    return False


class DatasetSummary(msgspec.Struct, frozen=True):
    """A dataset in a version, against the version's first parent."""

    path: str
    status: Literal["added", "modified", "deleted", "unchanged"]
    count: int
    added: int = 0
    removed: int = 0
    modified: int = 0


class VersionSummary(msgspec.Struct, frozen=True):
    oid: bytes
    commit: Commit
    datasets: list[DatasetSummary]


def show(repo: Repository, rev: str, *, parent_number: int = 1) -> VersionSummary:
    """A version and each of its datasets compared with its first parent (or another)."""
    oid = repo.resolve(rev)
    entry = repo.read_commit(oid)
    mine = {e.path: e.dataset for e in repo.read_tree(entry.tree).entries}
    if entry.parents and not 1 <= parent_number <= len(entry.parents):
        raise BadInput(f"{rev} has no parent {parent_number}")
    parent = repo.tree_of(entry.parents[parent_number - 1]) if entry.parents else {}
    rows = []
    for name in sorted(set(mine) | set(parent), key=lambda p: p.encode()):
        if name not in mine:
            rows.append(
                DatasetSummary(name, "deleted", 0, 0, repo.read_dataset(parent[name]).count)
            )
            continue
        new = repo.read_dataset(mine[name])
        if name not in parent:
            rows.append(DatasetSummary(name, "added", new.count, new.count, 0))
            continue
        from dsv.diff import count_change

        change = count_change(repo, name, repo.read_dataset(parent[name]), new)
        if change is None:
            rows.append(DatasetSummary(name, "unchanged", new.count))
            continue
        rows.append(
            DatasetSummary(
                name, "modified", new.count, change.added, change.removed, change.modified
            )
        )
    return VersionSummary(oid, entry, rows)


def cat_object(repo: Repository, rev: str) -> tuple[Kind, object]:
    """An object by id or name: datapoints as canonical bytes, others as plain JSON values."""
    oid = repo.resolve_object(rev)
    kind, body = repo.store.read(oid)
    if kind == Kind.DATAPOINT:
        return kind, body
    if kind == Kind.PAGE:
        return kind, [o.hex() for o in iter_oids(body)]
    from dsv.objects import decode_commit, decode_dataset, decode_tree

    value: dict[str, Any]
    if kind == Kind.COMMIT:
        c = decode_commit(body, oid)
        value = {
            "tree": c.tree.hex(),
            "parents": [p.hex() for p in c.parents],
            "author": c.author,
            "time": c.time,
            "tz": c.tz,
            "message": c.message,
        }
    elif kind == Kind.TREE:
        value = {
            "entries": [
                {"path": e.path, "dataset": e.dataset.hex()} for e in decode_tree(body, oid).entries
            ]
        }
    else:
        d = decode_dataset(body, oid)
        value = {
            "format": {
                "kind": d.format.kind,
                "columns": list(d.format.columns),
                "options": dict(d.format.options),
                "schema_bytes": len(d.format.schema),
            },
            "key": list(d.key),
            "count": d.count,
            "content": d.content.hex(),
            "slices": [[s.page.hex(), s.start, s.stop] for s in d.slices],
        }
    return kind, value


# -- reading versions ------------------------------------------------------------------------


def dataset_at(repo: Repository, rev: str, path: str) -> Dataset:
    """The dataset `path` in version `rev`."""
    if not path:
        raise BadInput(f"no dataset path given for {rev}", hint=f"name one: {rev}:PATH")
    commit_oid = repo.resolve(rev)
    tree = repo.tree_of(commit_oid)
    name = path if path in tree else repo_path(repo, path)
    if name not in tree:
        raise no_dataset(name, rev, tree)
    return repo.read_dataset(tree[name])


def no_dataset(name: str, rev: str, tree: dict[str, bytes]) -> BadInput:
    import difflib

    close = difflib.get_close_matches(name, list(tree), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None
    if hint is None and rev == "the index":
        hint = f"it is not staged: 'dsv add {name}' stages it"
    elif hint is None and tree:
        hint = f"{rev} has {plural(len(tree), 'dataset')}; 'dsv show {rev}' lists them"
    return BadInput(f"{name}: no such dataset in {rev}", hint=hint)


def iter_records(repo: Repository, rev: str, path: str) -> Iterator[dict[str, Any]]:
    for body in repo.read_datapoints(dataset_at(repo, rev, path)):
        yield decode_canonical(body)


def read_table(repo: Repository, rev: str, path: str) -> pyarrow.Table:
    """A dataset version as an Arrow table, every record and field in order.

    Parquet comes back with its stored Arrow schema (types, nullability, metadata), CSV
    with its columns in file order, as strings; JSONL and JSON with one column per
    top-level field, in order of first appearance, typed as Arrow infers them.
    """
    dataset = dataset_at(repo, rev, path)
    return dataset_table(dataset, repo.read_datapoints(dataset), path)


def dataset_table(dataset: Dataset, datapoints: Iterable[bytes], path: str) -> pyarrow.Table:
    """The Arrow table of `dataset` given its datapoints in order (see `read_table`)."""
    import pyarrow as pa

    fmt = dataset.format
    if fmt.kind == "parquet" and fmt.schema:
        return _parquet_table(dataset, datapoints)
    records = [decode_canonical(body) for body in datapoints]
    columns: dict[str, None] = dict.fromkeys(fmt.columns)
    for record in records:
        for name in record:
            if name not in columns:
                columns[name] = None
    arrays = []
    for name in columns:
        values = [record.get(name) for record in records]
        try:
            if fmt.kind == "csv" and all(v is None or isinstance(v, str) for v in values):
                arrays.append(pa.array(values, type=pa.string()))
            else:
                arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise BadInput(
                f"{path}: field {name!r} cannot be one Arrow column ({exc})",
                hint="read its records with repo.records(rev, path) instead",
            ) from None
    return pa.Table.from_arrays(arrays, names=list(columns))


def _parquet_table(dataset: Dataset, datapoints: Iterable[bytes]) -> pyarrow.Table:
    """A Parquet dataset rebuilt with its stored schema, by writing it as dsv would."""
    import tempfile

    import pyarrow.parquet as pq

    from dsv.formats import write_dataset

    with tempfile.TemporaryDirectory(prefix="dsv-read-") as scratch:
        target = Path(scratch) / "dataset.parquet"
        write_dataset(target, dataset.format, datapoints)
        return pq.read_table(target, memory_map=False)
