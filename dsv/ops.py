"""Repository operations: the library behind every command. Returns data, never prints."""

from __future__ import annotations

import contextlib
import heapq
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from dsv.canonical import decode_canonical
from dsv.errors import BadInput, BadState, CorruptObject
from dsv.index import Entry, read_index, stat_file
from dsv.labels import create_branch
from dsv.manifest import iter_oids
from dsv.objects import (
    OID_SIZE,
    ZERO_OID,
    Commit,
    Dataset,
    Kind,
    Tree,
    TreeEntry,
    encode_object,
)
from dsv.paths import BadPath, check_dataset_path, check_tree_paths
from dsv.progress import ProgressFn, Step
from dsv.refs import BRANCHES, MISSING
from dsv.repo import DSV_DIR, Repository
from dsv.text import plural
from dsv.worktree import check_entry, repo_path, stage_file, write_file

if TYPE_CHECKING:
    import pyarrow

    from dsv.diff import DatasetDiff
    from dsv.store import ObjectWriter

__all__ = [
    "DatasetStatus",
    "DatasetSummary",
    "LogEntry",
    "VersionSummary",
    "add",
    "cat_object",
    "checkout",
    "commit",
    "dataset_at",
    "iter_records",
    "log",
    "move",
    "read_table",
    "remove",
    "restore",
    "show",
    "status",
    "switch",
    "untracked",
]


# -- paths -----------------------------------------------------------------------------


def _expand_paths(repo: Repository, paths: Iterable[str]) -> list[str]:
    """Dataset names for files and, recursively, the dataset files inside directories."""
    from dsv.formats import format_kind
    from dsv.listing import SKIPPED_DIRS

    out: list[str] = []
    for path in paths:
        full = Path(os.path.normpath(repo.root / path))
        if full != repo.root:
            full = repo.root / repo_path(repo, path)
        if full.is_dir():
            for dirpath, dirnames, filenames in os.walk(full):
                # The directories `status` does not look in for untracked files (dsv.quick),
                # and other repositories.
                dirnames[:] = sorted(
                    d
                    for d in dirnames
                    if not d.startswith(".")
                    and d not in SKIPPED_DIRS
                    and not os.path.isdir(os.path.join(dirpath, d, DSV_DIR))
                )
                for file in sorted(filenames):
                    try:
                        format_kind(file)
                    except BadInput:
                        continue  # not a dataset file: left alone
                    name = Path(dirpath, file).relative_to(repo.root).as_posix()
                    out.append(check_dataset_path(name))
        else:
            out.append(repo_path(repo, path))
    return list(dict.fromkeys(out))


# -- staging ----------------------------------------------------------------------------------


def _lookup_base(repo: Repository, name: str, index: dict[str, Entry]) -> bytes | None:
    if name in index:
        return index[name].dataset
    return repo.tree_of(repo.head()).get(name)


def _stage_files(
    repo: Repository,
    writer: ObjectWriter,
    todo: list[tuple[str, bytes | None]],
    *,
    key: tuple[str, ...] | None,
    progress: ProgressFn | None,
    phase: str,
) -> dict[str, Entry]:
    """Stage each (name, base dataset) of `todo`; `progress` follows the bytes read."""
    if progress is None:
        return {
            name: stage_file(repo, writer, name, key=key, base_oid=base)[0] for name, base in todo
        }
    sizes = {name: _file_size(repo.root / name) for name, _ in todo}
    step = Step(progress, phase, sum(sizes.values()), "bytes")
    staged = {}
    for name, base in todo:
        at = step.done
        staged[name] = stage_file(
            repo, writer, name, key=key, base_oid=base, progress=step.within(at)
        )[0]
        step.to(at + sizes[name])
    step.finish()
    return staged


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # staging it says why


def add(
    repo: Repository,
    paths: list[str],
    *,
    key: tuple[str, ...] | None = None,
    progress: ProgressFn | None = None,
) -> list[str]:
    """Stage dataset files (or every dataset file under directories); return their names.

    `progress` follows the bytes read (phase 'adding').
    """
    from dsv.formats import format_kind

    if key is not None:
        for field in key:
            if not field:
                raise BadInput("--key: empty field name")
    names = _expand_paths(repo, paths)
    if not names:
        raise BadInput("nothing to add: no dataset files (.jsonl .json .csv .tsv .parquet) found")
    for name in names:
        if not (repo.root / name).exists():
            raise BadInput(f"{name}: no such file or directory")
        format_kind(name)
    with repo.lock():
        index = read_index(repo.index_path)
        with repo.store.writer() as writer:
            todo = [(name, _lookup_base(repo, name, index)) for name in names]
            staged = _stage_files(repo, writer, todo, key=key, progress=progress, phase="adding")
        index.update(staged)
        repo.write_index(index)
        repo.store.tidy()
    return names


def remove(
    repo: Repository, paths: list[str], *, cached: bool = False, force: bool = False
) -> list[str]:
    """Unstage datasets; without `cached` also delete their files (only if clean)."""
    with repo.lock():
        index = read_index(repo.index_path)
        names = [repo_path(repo, p, tracked=index) for p in paths]
        for name in names:
            if name not in index:
                raise BadInput(f"{name}: not tracked by dsv")
        if not cached and not force:
            head = repo.tree_of(repo.head())
            for name in names:
                staged = _staged_change(repo, index[name], head.get(name))
                if staged or check_entry(repo, index[name])[0] == "modified":
                    what = "staged changes" if staged else "changes"
                    raise BadState(
                        f"{name} has {what} that are not committed",
                        hint="use --cached to keep the file, or --force to delete it anyway",
                    )
        for name in names:
            del index[name]
        repo.write_index(index)
        if not cached:
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    (repo.root / name).unlink()
    return names


def _staged_change(repo: Repository, entry: Entry, head_oid: bytes | None) -> bool:
    """Does the index hold a version of this dataset that HEAD does not?"""
    if head_oid is None:
        return True
    return head_oid != entry.dataset and not repo.read_dataset(head_oid).same_as(
        repo.read_dataset(entry.dataset)
    )


def move(repo: Repository, source: str, destination: str) -> str:
    """Rename a tracked dataset file and its index entry; return the new name."""
    from dsv.formats import format_kind

    with repo.lock():
        index = read_index(repo.index_path)
        src = repo_path(repo, source, tracked=index)
        dst = repo_path(repo, destination)
        if (repo.root / dst).is_dir():
            dst = repo_path(repo, repo.root / dst / Path(src).name)
        if src not in index:
            raise BadInput(f"{src}: not tracked by dsv")
        if not (repo.root / src).is_file():
            raise BadInput(
                f"{src}: no such file", hint=f"use 'dsv rm --cached {src}' to stop tracking it"
            )
        if dst in index or (repo.root / dst).exists():
            raise BadInput(f"{dst}: already exists")
        # .csv and .tsv are both CSV, but with another delimiter: the bytes would not match.
        if format_kind(src) != format_kind(dst) or (
            format_kind(src) == "csv" and Path(src).suffix.lower() != Path(dst).suffix.lower()
        ):
            raise BadInput(f"{dst}: a move cannot change the file type")
        (repo.root / dst).parent.mkdir(parents=True, exist_ok=True)
        before = stat_file(repo.root / src)
        os.replace(repo.root / src, repo.root / dst)
        after = stat_file(repo.root / dst)
        entry = index.pop(src)
        # The moved file keeps its proof only if it still matched the entry's stat and no
        # write came between (a rename changes the ctime alone); an edited file stays edited.
        kept = (
            entry.stat is not None
            and before == entry.stat
            and after is not None
            and msgspec.structs.replace(after, ctime_ns=before.ctime_ns) == before
        )
        index[dst] = Entry(dst, entry.dataset, after if kept else None, entry.file_hash)
        repo.write_index(index)
    return dst


# -- status ------------------------------------------------------------------------------


class DatasetStatus(msgspec.Struct, frozen=True):
    """One dataset's change: `staged` is index vs HEAD, `unstaged` is working file vs index.

    Each is 'added', 'modified', 'deleted' or None; counts are datapoints, matched as `diff`
    matches them (by the dataset's key, else by a distinct `id`, else by content). `count`,
    `added`, `removed` and `modified` compare the working file with HEAD (what `commit -a`
    would record); the `staged_*` counts compare the index with HEAD, the `unstaged_*` ones
    the working file with the index.
    """

    path: str
    staged: str | None
    unstaged: str | None
    count: int
    added: int = 0
    removed: int = 0
    modified: int = 0
    staged_count: int = 0
    staged_added: int = 0
    staged_removed: int = 0
    staged_modified: int = 0
    unstaged_added: int = 0
    unstaged_removed: int = 0
    unstaged_modified: int = 0

    @property
    def letter(self) -> str:
        state = self.staged or self.unstaged
        return {"added": "A", "modified": "M", "deleted": "D"}[state or "modified"]


def _counts(change: DatasetDiff | None) -> tuple[int, int, int]:
    return (change.added, change.removed, change.modified) if change is not None else (0, 0, 0)


def status(repo: Repository) -> list[DatasetStatus]:
    """Every dataset that differs between HEAD, the index and the working files."""
    from dsv.diff import count_change

    index = read_index(repo.index_path)
    head = repo.tree_of(repo.head())
    result: list[DatasetStatus] = []
    refresh: dict[str, Entry] = {}
    for name in sorted(set(index) | set(head), key=lambda p: p.encode()):
        entry = index.get(name)
        head_oid = head.get(name)
        if entry is None:
            assert head_oid is not None
            gone = repo.read_dataset(head_oid).count
            result.append(DatasetStatus(name, "deleted", None, 0, 0, gone, staged_removed=gone))
            continue
        # Only a file found changed is read, and its scan keeps the bodies the index lacks,
        # which the counts need to match datapoints by key.
        state, proven, scan = check_entry(repo, entry, collect=True)
        if proven is not None:
            refresh[name] = proven
        if state == "clean" and entry.dataset == head_oid:
            continue  # the common case reads no dataset, page or pack
        staged = repo.read_dataset(entry.dataset)
        if head_oid is None:
            old = None
        else:
            old = staged if head_oid == entry.dataset else repo.read_dataset(head_oid)
        staged_state = None
        staged_counts = (0, 0, 0)
        if old is None:
            staged_state = "added"
            staged_counts = (staged.count, 0, 0)
        elif not old.same_as(staged):
            staged_state = "modified"
            staged_counts = _counts(count_change(repo, name, old, staged))
        unstaged_state = None
        count, counts = staged.count, staged_counts
        unstaged_counts = (0, 0, 0)
        if state == "deleted":
            unstaged_state = "deleted"
            count, counts = 0, (0, old.count if old is not None else 0, 0)
            unstaged_counts = (0, staged.count, 0)
        elif state == "modified":
            assert scan is not None
            unstaged_state = "modified"
            count = len(scan.oids) // OID_SIZE
            unstaged_counts = _counts(count_change(repo, name, staged, staged, scan=scan))
            if staged_state is None:
                counts = unstaged_counts
            else:
                counts = _counts(count_change(repo, name, old, staged, scan=scan))
        if staged_state or unstaged_state:
            result.append(
                DatasetStatus(
                    name,
                    staged_state,
                    unstaged_state,
                    count,
                    *counts,
                    staged.count,
                    *staged_counts,
                    *unstaged_counts,
                )
            )
    if refresh:
        _refresh_index(repo, refresh)
    return result


def untracked(repo: Repository) -> list[str]:
    """Dataset files in the working tree that the index does not list (dsv.quick's walk)."""
    from dsv.listing import untracked_files

    return untracked_files(str(repo.root), read_index(repo.index_path))


def _refresh_index(repo: Repository, updates: dict[str, Entry]) -> None:
    """Record newly proven stats, if no writer holds the lock (it is only a cache)."""
    lock = repo.lock()
    previous = lock.timeout
    lock.timeout = 0
    try:
        with lock:
            index = read_index(repo.index_path)
            for name, entry in updates.items():
                if name in index and index[name].dataset == entry.dataset:
                    index[name] = entry
            repo.write_index(index)
    except BadState:
        pass
    finally:
        lock.timeout = previous


# -- commit and log ------------------------------------------------------------------------


def _now_and_tz() -> tuple[int, int]:
    forced = os.environ.get("DSV_DATE")
    if forced:
        try:
            when, _, zone = forced.partition(" ")
            return int(when), _parse_tz(zone or "+0000")
        except ValueError:
            raise BadInput(f"DSV_DATE={forced!r}: expected 'UNIXTIME +HHMM'") from None
    now = time.time()
    return int(now), round(time.localtime(now).tm_gmtoff / 60)


def _parse_tz(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if len(digits) != 4 or not digits.isdigit():
        raise ValueError(text)
    return sign * (int(digits[:2]) * 60 + int(digits[2:]))


def commit(
    repo: Repository,
    message: str,
    *,
    all: bool = False,
    author: str | None = None,
    progress: ProgressFn | None = None,
) -> bytes:
    """Record the index (with `all`, first every changed tracked file) as a new version.

    `progress` follows the bytes `all` reads (phase 'staging').
    """
    if not message.strip():
        raise BadInput("empty commit message", hint="pass one with -m")
    with repo.lock():
        index = read_index(repo.index_path)
        head = repo.head()
        head_tree = repo.tree_of(head)
        if all:
            with repo.store.writer() as writer:
                todo: list[tuple[str, bytes | None]] = []
                for name, entry in list(index.items()):
                    stat = stat_file(repo.root / name)
                    if stat is None:
                        del index[name]
                    elif entry.stat is None or entry.stat != stat:
                        # Staged straight away: one read tells both whether and what changed.
                        todo.append((name, entry.dataset))
                index.update(
                    _stage_files(repo, writer, todo, key=None, progress=progress, phase="staging")
                )
        with repo.store.writer() as writer:
            entries = tuple(
                TreeEntry(name, index[name].dataset)
                for name in sorted(index, key=lambda p: p.encode())
            )
            try:
                check_tree_paths([e.path for e in entries])
            except BadPath as exc:
                # Only a name an earlier dsv let into the index can get here.
                raise BadInput(
                    exc.message, hint="rename it with 'dsv mv', or untrack it with 'dsv rm'"
                ) from exc
            if not _tree_changed(repo, head_tree, entries):
                raise BadState(
                    "nothing to commit: the index matches HEAD",
                    hint="stage changes with 'dsv add', or use -a for every tracked file",
                )
            tree_oid = writer.write(Kind.TREE, encode_object(Tree(entries)))
            when, tz = _now_and_tz()
            new = Commit(
                tree=tree_oid,
                parents=(head,) if head else (),
                author=author or repo.user,
                time=when,
                tz=tz,
                message=message.strip() + "\n",
            )
            oid = writer.write(Kind.COMMIT, encode_object(new))
        first = new.message.splitlines()[0]
        reason = f"commit{' (initial)' if head is None else ''}: {first}"
        repo.refs.update("HEAD", oid, expected=head or MISSING, user=repo.user, reason=reason)
        # Written even when no entry changed: the index now names this commit as its tree's.
        repo.write_index(index)
        repo.store.tidy()
    return oid


def _tree_changed(
    repo: Repository, head_tree: dict[str, bytes], entries: tuple[TreeEntry, ...]
) -> bool:
    if {e.path for e in entries} != set(head_tree):
        return True
    for entry in entries:
        old = head_tree[entry.path]
        if old != entry.dataset and not repo.read_dataset(old).same_as(
            repo.read_dataset(entry.dataset)
        ):
            return True
    return False


class LogEntry(msgspec.Struct, frozen=True):
    oid: bytes
    commit: Commit


def log(
    repo: Repository,
    rev: str | None = None,
    *,
    max_count: int | None = None,
    paths: list[str] | None = None,
) -> Iterator[LogEntry]:
    """Commits reachable from `rev` (default HEAD), newest first."""
    start = repo.resolve(rev) if rev else repo.head()
    if start is None:
        return
    names = _path_names(repo, paths) if paths else None
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


def _path_names(repo: Repository, paths: list[str]) -> list[str] | None:
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
    status: str  # added | modified | deleted | unchanged
    count: int
    added: int = 0
    removed: int = 0
    modified: int = 0


class VersionSummary(msgspec.Struct, frozen=True):
    oid: bytes
    commit: Commit
    datasets: list[DatasetSummary]


def show(repo: Repository, rev: str) -> VersionSummary:
    """A version and each of its datasets compared with its first parent."""
    oid = repo.resolve(rev)
    entry = repo.read_commit(oid)
    mine = {e.path: e.dataset for e in repo.read_tree(entry.tree).entries}
    parent = repo.tree_of(entry.parents[0]) if entry.parents else {}
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
        raise _no_dataset(name, rev, tree)
    return repo.read_dataset(tree[name])


def _no_dataset(name: str, rev: str, tree: dict[str, bytes]) -> BadInput:
    import difflib

    close = difflib.get_close_matches(name, list(tree), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None
    if hint is None and tree:
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
    import pyarrow as pa

    dataset = dataset_at(repo, rev, path)
    fmt = dataset.format
    if fmt.kind == "parquet" and fmt.schema:
        return _parquet_table(repo, dataset)
    records = [decode_canonical(body) for body in repo.read_datapoints(dataset)]
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


def _parquet_table(repo: Repository, dataset: Dataset) -> pyarrow.Table:
    """A Parquet dataset rebuilt with its stored schema, by writing it as dsv would."""
    import tempfile

    import pyarrow.parquet as pq

    from dsv.formats import write_dataset

    with tempfile.TemporaryDirectory(prefix="dsv-read-") as scratch:
        target = Path(scratch) / "dataset.parquet"
        write_dataset(target, dataset.format, repo.read_datapoints(dataset))
        return pq.read_table(target, memory_map=False)


# -- checkout --------------------------------------------------------------------------------


def _dirty_paths(repo: Repository, index: dict[str, Entry], head: dict[str, bytes]) -> set[str]:
    """Tracked paths whose index or working file differs from HEAD."""
    dirty = set()
    for name in set(index) | set(head):
        entry = index.get(name)
        if entry is None or head.get(name) is None:
            dirty.add(name)
            continue
        if (
            entry.dataset != head[name]
            and not repo.read_dataset(entry.dataset).same_as(repo.read_dataset(head[name]))
        ) or check_entry(repo, entry)[0] != "clean":
            dirty.add(name)
    return dirty


def _writing(
    repo: Repository, names: Iterable[str], tree: dict[str, bytes], progress: ProgressFn | None
) -> tuple[Step | None, dict[str, int]]:
    """A 'writing files' step over the datapoints of `names` in `tree`, and each one's count."""
    names = list(names)
    if progress is None or not names:
        return None, {}
    counts = {name: repo.read_dataset(tree[name]).count for name in names}
    return Step(progress, "writing files", sum(counts.values()), "datapoints"), counts


def _write_counted(
    repo: Repository, name: str, oid: bytes, step: Step | None, counts: dict[str, int]
) -> Entry:
    """write_file, reporting its datapoints to `step`."""
    if step is None:
        return write_file(repo, name, oid)
    at = step.done
    entry = write_file(repo, name, oid, progress=step.within(at))
    step.to(at + counts[name])
    return entry


def checkout(
    repo: Repository,
    rev: str,
    *,
    paths: list[str] | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> bytes:
    """Write tracked files as of `rev`; without paths also move HEAD there. Returns the commit.

    `progress` follows the datapoints written (phase 'writing files').
    """
    with repo.lock():
        target_oid = repo.resolve(rev)
        target = repo.tree_of(target_oid)
        _check_paths(target, rev)
        index = read_index(repo.index_path)
        head_oid = repo.head()
        head = repo.tree_of(head_oid)
        if paths:
            names = _names_in(repo, paths, target, rev)
            if not force:
                # Only content that is nowhere else is protected: a deleted file, or one that
                # holds HEAD's or REV's version, is simply written.
                lost = _would_lose(repo, names, index, head, target, worktree=True, staged=True)
                _refuse_overwrite([n for n in lost if n in index or n in head])
                _refuse_untracked(repo, {n: target[n] for n in lost if n not in index | head})
            step, counts = _writing(repo, names, target, progress)
            for name in names:
                index[name] = _write_counted(repo, name, target[name], step, counts)
            if step is not None:
                step.finish()
            repo.write_index(index)
            return target_oid
        changing = {n for n in set(target) | set(head) | set(index) if target.get(n) != head.get(n)}
        if not force:
            dirty = _dirty_paths(repo, index, head)
            _refuse_overwrite(sorted(dirty & changing))
            fresh = {n: oid for n, oid in target.items() if n not in index and n not in head}
            _refuse_untracked(repo, fresh)
        if rev.strip() == "HEAD":
            # The files of HEAD again: a deleted one has nothing to protect, so it comes back
            # (a switch to another version leaves such a deletion as it is, as git does).
            changing |= {
                n
                for n, oid in target.items()
                if n in index and index[n].dataset == oid and not (repo.root / n).exists()
            }
        new_index = {}
        writes = [n for n in target if force or n in changing]
        step, counts = _writing(repo, writes, target, progress)
        for name in sorted(set(index) | set(head) | set(target)):
            if name in target:
                entry = index.get(name)
                if force or name in changing:
                    new_index[name] = _write_counted(repo, name, target[name], step, counts)
                elif entry is not None:
                    new_index[name] = entry
                # else: unchanged between HEAD and REV, and unstaged with `rm --cached`: that
                # staged removal carries over, and the file (now untracked) is left alone.
            elif name in index or name in head:
                if force or name in changing:
                    with contextlib.suppress(FileNotFoundError):
                        (repo.root / check_dataset_path(name)).unlink()
                elif name in index:
                    new_index[name] = index[name]
        if step is not None:
            step.finish()
        repo.write_index(new_index, head=target_oid)
        branch = _branch_named(repo, rev)
        if rev.strip() == "HEAD":
            pass  # the files of HEAD again: HEAD itself stays, on its branch or detached
        elif branch is not None:
            repo.refs.set_symbolic("HEAD", BRANCHES + branch)
            repo.refs.append_log(
                "HEAD",
                head_oid or ZERO_OID,
                target_oid,
                user=repo.user,
                reason=f"checkout: moving to {branch}",
            )
        else:
            repo.refs.update(
                "HEAD",
                target_oid,
                user=repo.user,
                reason=f"checkout: moving to {rev}",
                deref=False,
            )
    return target_oid


def _check_paths(tree: dict[str, bytes], rev: str) -> None:
    """Refuse a version whose paths break the rule (format.md §3) before writing anything:
    its files could land outside the working tree or in `.dsv`."""
    try:
        check_tree_paths(list(tree))
    except BadPath as exc:
        raise CorruptObject(
            f"{rev} cannot be checked out: {exc.message}",
            hint="no correct dsv writes such a version; 'dsv fsck' lists every one",
        ) from exc


def _same_content(repo: Repository, a: bytes | None, b: bytes | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or repo.read_dataset(a).same_as(repo.read_dataset(b))


def _file_holds(repo: Repository, name: str, datasets: Iterable[bytes | None]) -> bool:
    """Whether the working file `name` holds one of `datasets` (records, order and format)."""
    from dsv.errors import DsvError

    for oid in dict.fromkeys(d for d in datasets if d is not None):
        try:
            if check_entry(repo, Entry(name, oid))[0] == "clean":
                return True
        except DsvError:
            return False  # not even readable as a dataset: certainly none of them
    return False


def _would_lose(
    repo: Repository,
    names: list[str],
    index: dict[str, Entry],
    head: dict[str, bytes],
    target: dict[str, bytes],
    *,
    worktree: bool,
    staged: bool,
) -> list[str]:
    """The names whose working file (`worktree`) or staged dataset (`staged`), about to be
    replaced by `target`'s, holds content that neither HEAD, `target` nor what is kept has.

    A missing working file holds nothing, so writing it never loses anything.
    """
    lost = []
    for name in names:
        entry = index.get(name)
        kept = (head.get(name), target.get(name))
        state = "deleted"
        if entry is not None:
            state = check_entry(repo, entry)[0]
        elif (repo.root / name).exists() or (repo.root / name).is_symlink():
            state = "untracked"
        if worktree and state in ("modified", "untracked"):
            file_lost = not _file_holds(repo, name, kept)
        else:
            file_lost = False
        staged_lost = (
            staged
            and entry is not None
            and not any(_same_content(repo, entry.dataset, k) for k in kept)
            # Still in the working file, which stays: nothing is lost.
            and (worktree or state != "clean")
        )
        if file_lost or staged_lost:
            lost.append(name)
    return lost


def restore(
    repo: Repository,
    paths: list[str],
    *,
    source: str | None = None,
    staged: bool = False,
    worktree: bool | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> list[str]:
    """Write working files (default) and/or index entries (`staged`) of `paths` as in
    `source` (default: the index for working files, HEAD for the index); return the names.

    Without `force`, refuses when that would discard content kept nowhere else: a working
    file or staged dataset that neither HEAD, `source` nor the index (when kept) holds.
    `progress` follows the datapoints written (phase 'writing files').
    """
    worktree = not staged if worktree is None else worktree
    if not (staged or worktree):
        raise BadInput("nothing to restore: give --staged, --worktree or both")
    with repo.lock():
        index = read_index(repo.index_path)
        head = repo.tree_of(repo.head())
        if source is None and not staged:
            label = "the index"
            target = {name: entry.dataset for name, entry in index.items()}
        else:
            label = (source or "HEAD").strip()
            target = repo.tree_of(repo.resolve(label))
        # With --staged, a path only the index has is unstaged (its addition undone).
        known = {**{n: e.dataset for n, e in index.items()}, **target} if staged else target
        names = _names_in(repo, paths, known, label)
        if not worktree:
            names = [n for n in names if n in target or n in index]
        if not force:
            lost = _would_lose(repo, names, index, head, target, worktree=worktree, staged=staged)
            if lost:
                shown = ", ".join(lost[:5]) + (
                    f" and {len(lost) - 5} more" if len(lost) > 5 else ""
                )
                raise BadState(
                    f"restore would discard uncommitted changes in {shown}",
                    hint="commit them first (or copy the file away), or use --force to "
                    "discard them",
                )
        step, counts = _writing(
            repo, [n for n in names if n in target] if worktree else [], target, progress
        )
        for name in names:
            wanted = target.get(name)
            if worktree and wanted is not None:
                written = _write_counted(repo, name, wanted, step, counts)
                if staged or (name in index and index[name].dataset == wanted):
                    index[name] = written
            elif worktree:
                with contextlib.suppress(FileNotFoundError):
                    (repo.root / name).unlink()
            if staged and not worktree:
                if wanted is None:
                    index.pop(name, None)
                elif name not in index or index[name].dataset != wanted:
                    index[name] = Entry(name, wanted)
            elif staged and wanted is None:
                index.pop(name, None)
        if step is not None:
            step.finish()
        repo.write_index(index)
    return names


def _names_in(repo: Repository, paths: list[str], tree: dict[str, bytes], rev: str) -> list[str]:
    """The datasets of `tree` that `paths` name, directly or as directories holding them."""
    wanted = _path_names(repo, paths)
    if wanted is None:
        return sorted(tree)
    names: dict[str, None] = {}
    for name in wanted:
        inside = [n for n in sorted(tree) if n == name or n.startswith(name + "/")]
        if not inside:
            raise _no_dataset(name, rev, tree)
        names.update(dict.fromkeys(inside))
    return list(names)


def _refuse_untracked(repo: Repository, fresh: dict[str, bytes]) -> None:
    """Refuse to overwrite files dsv does not track, unless they hold what would be written.

    `fresh` maps each path the checkout would create to the dataset it would write there.
    """
    from dsv.errors import DsvError

    clashing = []
    for name in sorted(fresh):
        full = repo.root / name
        if not full.exists() and not full.is_symlink():
            continue
        try:
            clean = check_entry(repo, Entry(name, fresh[name]))[0] == "clean"
        except DsvError:
            clean = False  # unreadable as that dataset: certainly not what we would write
        if not clean:
            clashing.append(name)
    if clashing:
        shown = ", ".join(clashing[:5]) + (
            f" and {len(clashing) - 5} more" if len(clashing) > 5 else ""
        )
        raise BadState(
            f"checkout would overwrite untracked files: {shown}",
            hint="move them away or add and commit them first, or use --force to overwrite them",
        )


def _branch_named(repo: Repository, rev: str) -> str | None:
    if repo.refs.read(BRANCHES + rev) is not None:
        return rev
    if rev.startswith(BRANCHES) and repo.refs.read(rev) is not None:
        return rev[len(BRANCHES) :]
    return None


def _refuse_overwrite(dirty: list[str]) -> None:
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise BadState(
            f"checkout would overwrite uncommitted changes in {shown}",
            hint="commit them first, or use --force to discard them",
        )


def switch(
    repo: Repository,
    name: str,
    *,
    create: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> bytes:
    """Make branch `name` current (creating it at HEAD with `create`); `progress` as checkout's."""
    if create:
        create_branch(repo, name)
    elif repo.refs.read(BRANCHES + name) is None:
        raise BadInput(f"no branch named {name!r}", hint=f"use 'dsv switch -c {name}' to create it")
    head = repo.head()
    if head is None:
        repo.refs.set_symbolic("HEAD", BRANCHES + name)
        return ZERO_OID
    return checkout(repo, name, force=force, progress=progress)
