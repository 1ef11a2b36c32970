"""Writing versions into the work tree: checkout, restore and switch. Returns data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from dsv.errors import BadInput, BadState, CorruptObject
from dsv.index import Entry, read_index
from dsv.labels import create_branch
from dsv.objects import ZERO_OID
from dsv.ops.history import no_dataset, path_names
from dsv.paths import BadPath, check_dataset_path, check_tree_paths
from dsv.progress import ProgressFn, Step
from dsv.refs import BRANCHES
from dsv.repo import Repository
from dsv.worktree import check_entry, write_file

__all__ = [
    "checkout",
    "restore",
    "switch",
]


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
        if not paths and repo.merge_path.exists() and _merge_in_progress(repo):
            raise BadState(
                "a merge is in progress: it would be left behind",
                hint="finish it with 'dsv merge --continue' or 'dsv merge --abort' first",
            )
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


def _merge_in_progress(repo: Repository) -> bool:
    # Only here: the merge record's types load the merge machinery, a fifth of a checkout's
    # start-up, and most checkouts find no record at all.
    from dsv.ops.mergestate import read_state

    return read_state(repo) is not None


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
    wanted = path_names(repo, paths)
    if wanted is None:
        return sorted(tree)
    names: dict[str, None] = {}
    for name in wanted:
        inside = [n for n in sorted(tree) if n == name or n.startswith(name + "/")]
        if not inside:
            raise no_dataset(name, rev, tree)
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
