"""Staging and recording: add, rm, mv, status and commit. Returns data, never prints."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from dsv.config import now_and_tz
from dsv.errors import BadInput, BadState
from dsv.index import Entry, read_index, stat_file
from dsv.objects import (
    OID_SIZE,
    Commit,
    Kind,
    Tree,
    TreeEntry,
    encode_object,
)
from dsv.ops.mergestate import check_resolved, finish_commit, merge_parents, settle_added
from dsv.paths import BadPath, check_dataset_path, check_tree_paths
from dsv.progress import ProgressFn, Step
from dsv.refs import MISSING
from dsv.repo import DSV_DIR, Repository
from dsv.worktree import check_entry, repo_path, stage_file

if TYPE_CHECKING:
    from dsv.diff import DatasetDiff
    from dsv.store import ObjectWriter

__all__ = [
    "DatasetStatus",
    "add",
    "commit",
    "move",
    "remove",
    "status",
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
        settle_added(repo, staged)
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


# How a dataset changed, between HEAD and the index or between the index and its file.
Change = Literal["added", "modified", "deleted"]


class DatasetStatus(msgspec.Struct, frozen=True):
    """One dataset's change: `staged` is index vs HEAD, `unstaged` is working file vs index.

    Each is 'added', 'modified', 'deleted' or None; counts are datapoints, matched as `diff`
    matches them (by the dataset's key, else by a distinct `id`, else by content). `count`,
    `added`, `removed` and `modified` compare the working file with HEAD (what `commit -a`
    would record); the `staged_*` counts compare the index with HEAD, the `unstaged_*` ones
    the working file with the index.
    """

    path: str
    staged: Change | None
    unstaged: Change | None
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
        staged_state: Change | None = None
        staged_counts = (0, 0, 0)
        if old is None:
            staged_state = "added"
            staged_counts = (staged.count, 0, 0)
        elif not old.same_as(staged):
            staged_state = "modified"
            staged_counts = _counts(count_change(repo, name, old, staged))
        unstaged_state: Change | None = None
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
        parents = merge_parents(repo)
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
                staged = _stage_files(
                    repo, writer, todo, key=None, progress=progress, phase="staging"
                )
                settle_added(repo, staged)
                index.update(staged)
        check_resolved(repo)
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
            if parents is None and not _tree_changed(repo, head_tree, entries):
                raise BadState(
                    "nothing to commit: the index matches HEAD",
                    hint="stage changes with 'dsv add', or use -a for every tracked file",
                )
            tree_oid = writer.write(Kind.TREE, encode_object(Tree(entries)))
            when, tz = now_and_tz()
            new = Commit(
                tree=tree_oid,
                parents=parents or ((head,) if head else ()),
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
        finish_commit(repo)
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
