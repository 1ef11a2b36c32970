"""Merging versions: merge, its conflicts and their resolution, continue and abort; revert and
cherry-pick, which are merges of one commit's change. Returns data, never prints.

A merge in progress is recorded in `.dsv/MERGE` (docs/format.md §6), written atomically
before any working file changes, so a merge killed part way is still taken back exactly by
`abort` or finished by `continue`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import msgspec

from dsv.config import now_and_tz
from dsv.errors import BadInput, BadState
from dsv.index import Entry, read_index
from dsv.manifest import build_dataset
from dsv.merge import Conflict, DatasetMerge, MergeResult, Slot, merge_base, merge_trees
from dsv.objects import Commit, Kind, Tree, TreeEntry, encode_object, split_oids
from dsv.ops.mergestate import (
    MARKED_KINDS,
    STATE_VERSION,
    MergeState,
    PathState,
    check_resolved,
    clear_state,
    finish_commit,
    key_text,
    merge_parents,
    read_state,
    settle_added,
    unresolved,
    write_state,
)
from dsv.refs import MISSING
from dsv.repo import Repository
from dsv.worktree import check_entry, write_file

__all__ = [
    "MergeOutcome",
    "MergeState",
    "PathState",
    "abort_merge",
    "check_resolved",
    "cherry_pick",
    "continue_merge",
    "finish_commit",
    "key_text",
    "merge",
    "merge_parents",
    "read_state",
    "resolve",
    "revert",
    "settle_added",
    "unresolved",
]


class MergeOutcome(msgspec.Struct, frozen=True):
    """What `merge` did: 'up-to-date', 'fast-forward', 'merged' or 'conflicts'."""

    status: Literal["up-to-date", "fast-forward", "merged", "conflicts"]
    commit: bytes | None
    base: bytes | None
    conflicts: tuple[Conflict, ...] = ()
    changed: tuple[str, ...] = ()


# -- merge -------------------------------------------------------------------------------------


def _is_ancestor(repo: Repository, ancestor: bytes, descendant: bytes) -> bool:
    return merge_base(repo, ancestor, descendant) == ancestor


def _refuse_dirty(
    repo: Repository, index: dict[str, Entry], head: dict[str, bytes], touched: set[str]
) -> None:
    """A merge starts from a clean index, and from clean files where it writes: `abort`
    must be able to give back exactly what was there."""
    staged = sorted(
        n
        for n in set(index) | set(head)
        if (index[n].dataset if n in index else None) != head.get(n)
    )
    if staged:
        raise BadState(
            f"cannot merge: staged changes in {', '.join(staged[:5])}",
            hint="commit them first, or unstage them with 'dsv restore --staged'",
        )
    dirty = sorted(n for n in touched if n in index and check_entry(repo, index[n])[0] != "clean")
    if dirty:
        raise BadState(
            f"cannot merge: uncommitted changes in {', '.join(dirty[:5])}",
            hint="commit them first, or discard them with 'dsv restore'",
        )
    clash = sorted(n for n in touched if n not in index and (repo.root / n).exists())
    if clash:
        raise BadState(
            f"cannot merge: untracked files in the way: {', '.join(clash[:5])}",
            hint="move them away first",
        )


def _swap(ids: bytes, swap: dict[bytes, bytes | None]) -> bytes:
    """`ids` with each id of `swap` replaced by its value (None: left out)."""
    return b"".join(swap[oid] or b"" if oid in swap else oid for oid in split_oids(ids))


def _view(repo: Repository, writer: Any, template: bytes, slots: tuple[Slot, ...]) -> bytes:
    """The dataset a conflicted path's file holds: its conflict records where the format can
    hold them, else ours' side of each."""
    dataset = repo.read_dataset(template)
    if dataset.format.kind in MARKED_KINDS or not slots:
        return template
    ids = repo.read_oid_list(dataset)
    out = _swap(ids, {s.marker: s.ours for s in slots})
    oid, _ = build_dataset(writer, out, dataset.format, dataset.key, base=dataset, base_oids=ids)
    return oid


def _apply(
    repo: Repository,
    index: dict[str, Entry],
    wanted: dict[str, bytes | None],
    new_head: bytes | None = None,
) -> None:
    """Write each path's dataset (None: remove it) as its file and index entry."""
    for name in sorted(wanted, key=lambda p: p.encode()):
        oid = wanted[name]
        if oid is None:
            index.pop(name, None)
            with contextlib.suppress(FileNotFoundError):
                (repo.root / name).unlink()
        else:
            index[name] = write_file(repo, name, oid)
    repo.write_index(index, head=new_head)


def _commit(
    repo: Repository, writer: Any, tree: dict[str, bytes], parents: tuple[bytes, ...], message: str
) -> bytes:
    entries = tuple(TreeEntry(p, tree[p]) for p in sorted(tree, key=lambda p: p.encode()))
    tree_oid = writer.write(Kind.TREE, encode_object(Tree(entries)))
    when, tz = now_and_tz()
    commit = Commit(tree_oid, parents, repo.user, when, tz, message.strip() + "\n")
    return writer.write(Kind.COMMIT, encode_object(commit))  # type: ignore[no-any-return]


def _path_state(m: DatasetMerge) -> PathState:
    return PathState(m.path, m.dataset, m.slots, m.conflicts, m.whole, m.ours, m.theirs)


def _start(
    repo: Repository,
    *,
    head: bytes | None,
    theirs: bytes,
    base: bytes | None,
    parents: tuple[bytes, ...],
    message: str,
    reason: str,
) -> MergeOutcome:
    """Merge the change from `base` to `theirs` into HEAD (under the lock): commit it when
    clean, else leave it staged with its conflicts recorded."""
    index = read_index(repo.index_path)
    head_tree = repo.tree_of(head)
    with repo.store.writer() as writer:
        tree, changed = merge_trees(
            repo, writer, repo.tree_of(base), head_tree, repo.tree_of(theirs)
        )
    result = MergeResult(base, head, theirs, tree, tuple(changed))
    touched = {m.path for m in changed} | (set(head_tree) ^ set(tree))
    touched |= {p for p in tree if head_tree.get(p) != tree[p]}
    _refuse_dirty(repo, index, head_tree, touched)
    with repo.store.writer() as writer:
        paths = tuple(_path_state(m) for m in changed if m.conflicts)
        wanted: dict[str, bytes | None] = {p: tree.get(p) for p in touched}
        for p in paths:
            if p.template is not None and p.slots:
                wanted[p.path] = _view(repo, writer, p.template, p.slots)
        conflicts = tuple(result.conflicts)
        commit = None
        if not conflicts:
            if not parents[1:] and tree == head_tree:
                raise BadState("nothing to commit: the change is already here")
            commit = _commit(repo, writer, tree, parents, message)
    state = MergeState(
        STATE_VERSION,
        head,
        theirs,
        message,
        tuple((p, head_tree.get(p)) for p in sorted(touched)),
        paths,
        parents,
        commit,
    )
    # Recorded before the first file changes: from here, abort takes it all back.
    write_state(repo, state)
    if commit is None:
        _apply(repo, index, wanted)
        return MergeOutcome("conflicts", None, base, conflicts, tuple(sorted(touched)))
    _apply(repo, index, wanted, new_head=commit)
    repo.refs.update("HEAD", commit, expected=head or MISSING, user=repo.user, reason=reason)
    repo.write_index(read_index(repo.index_path))
    clear_state(repo)
    return MergeOutcome("merged", commit, base, (), tuple(sorted(touched)))


def merge(
    repo: Repository, rev: str, *, message: str | None = None, ff_only: bool = False
) -> MergeOutcome:
    """Merge revision `rev` into HEAD: fast-forward when HEAD is its ancestor, else a
    three-way merge from their merge base, committed with two parents when clean."""
    from dsv.ops.checkout import checkout

    with repo.lock():
        if read_state(repo) is not None:
            raise BadState(
                "a merge is in progress", hint="finish it with 'dsv merge --continue' or --abort"
            )
        theirs = repo.resolve(rev)
        head = repo.head()
        if head is not None and (head == theirs or _is_ancestor(repo, theirs, head)):
            return MergeOutcome("up-to-date", head, theirs)
        if head is None or _is_ancestor(repo, head, theirs):
            branch = repo.current_branch()
            checkout(repo, theirs.hex())
            if branch is not None:
                repo.refs.update(
                    "refs/heads/" + branch,
                    theirs,
                    expected=head or MISSING,
                    user=repo.user,
                    reason=f"merge {rev}: fast-forward",
                )
                repo.refs.set_symbolic("HEAD", "refs/heads/" + branch)
            return MergeOutcome("fast-forward", theirs, head)
        if ff_only:
            raise BadState(
                f"cannot fast-forward to {rev}: the histories have diverged",
                hint=f"merge them with 'dsv merge {rev}'",
            )
        base = merge_base(repo, head, theirs)
        text = message or f"Merge {rev}"
        return _start(
            repo,
            head=head,
            theirs=theirs,
            base=base,
            parents=(head, theirs),
            message=text,
            reason=f"merge {rev}",
        )


def continue_merge(repo: Repository, *, message: str | None = None) -> bytes:
    """Commit the merge in progress, once every conflict is resolved."""
    from dsv.ops.stage import commit

    with repo.lock():
        state = read_state(repo)
        if state is None:
            raise BadState("no merge in progress")
        head = repo.head()
        if head != state.head and head is not None:
            # Killed after the merge commit moved HEAD: only the record was left to remove.
            clear_state(repo)
            return head
        if state.commit is not None:
            # A clean merge killed while writing its files: write them all, then move HEAD.
            tree = repo.tree_of(state.commit)
            index = read_index(repo.index_path)
            _apply(repo, index, {p: tree.get(p) for p, _ in state.before}, new_head=state.commit)
            repo.refs.update(
                "HEAD", state.commit, expected=head or MISSING, user=repo.user, reason="merge"
            )
            repo.write_index(read_index(repo.index_path))
            clear_state(repo)
            return state.commit
        return commit(repo, message or state.message)


def abort_merge(repo: Repository) -> None:
    """Give back exactly the files, index and HEAD from before the merge in progress."""
    with repo.lock():
        state = read_state(repo)
        if state is None:
            raise BadState("no merge in progress")
        index = read_index(repo.index_path)
        current = repo.head()
        _apply(repo, index, dict(state.before), new_head=state.head)
        if current != state.head and state.head is not None:
            # Killed after the commit moved HEAD: take that back too.
            repo.refs.update(
                "HEAD", state.head, expected=current, user=repo.user, reason="merge --abort"
            )
            repo.write_index(read_index(repo.index_path))
        clear_state(repo)


# -- resolving ---------------------------------------------------------------------------------


def _parse_key(text: str, fields: dict[str, Any]) -> dict[str, Any]:
    """`--key` as `F=V,...` (V JSON, else a string), or a bare value of a one-field key."""
    out: dict[str, Any] = {}
    parts = text.split(",") if "=" in text else [text]
    for part in parts:
        name, sep, value = part.partition("=")
        if not sep:
            if len(fields) != 1:
                raise BadInput(f"--key {text!r}: name each key field, as F=V,F=V")
            name, value = next(iter(fields)), part
        try:
            out[name.strip()] = msgspec.json.decode(value.strip())
        except msgspec.DecodeError:
            out[name.strip()] = value.strip()
    return out


def resolve(
    repo: Repository,
    side: Literal["ours", "theirs"],
    *,
    paths: list[str] | None = None,
    key: str | None = None,
) -> list[Conflict]:
    """Take one side for the conflicts of the merge in progress: all, those of `paths`, or of
    one datapoint (`key`); return the conflicts resolved."""
    from dsv.worktree import repo_path

    with repo.lock():
        state = read_state(repo)
        if state is None:
            raise BadState("no merge in progress")
        names = {repo_path(repo, p) for p in paths} if paths else None
        if names is not None:
            unknown = sorted(names - {p.path for p in state.paths if p.conflicts})
            if unknown:
                raise BadInput(f"{unknown[0]}: no unresolved conflict in it")
        index = read_index(repo.index_path)
        done: list[Conflict] = []
        kept: list[PathState] = []
        wanted: dict[str, bytes | None] = {}
        with repo.store.writer() as writer:
            for p in state.paths:
                if not p.conflicts or (names is not None and p.path not in names):
                    kept.append(p)
                    continue
                if p.path in index and check_entry(repo, index[p.path])[0] != "clean":
                    raise BadState(
                        f"{p.path} was changed since the merge wrote it",
                        hint=f"'dsv add {p.path}' takes it as it is now, as resolved",
                    )
                new, chosen, resolved = _resolve_path(repo, writer, p, side, key)
                if resolved:
                    wanted.update(chosen)
                    done += resolved
                kept.append(new)
        if key is not None and not done:
            raise BadInput(f"--key {key}: no unresolved conflict of that datapoint")
        write_state(repo, msgspec.structs.replace(state, paths=tuple(kept)))
        _apply(repo, index, wanted)
    return done


def _resolve_path(
    repo: Repository, writer: Any, p: PathState, side: str, key: str | None
) -> tuple[PathState, dict[str, bytes | None], list[Conflict]]:
    if p.whole or not p.slots:
        if key is not None:
            return p, {}, []
        chosen = p.ours if side == "ours" else p.theirs
        renames = [c for c in p.conflicts if c.kind == "rename"]
        wanted: dict[str, bytes | None] = {}
        if not p.whole:
            chosen = p.template
        if renames and side == "theirs":
            wanted[p.path] = None
            wanted[str(renames[0].theirs)] = chosen
        else:
            wanted[p.path] = chosen
        return msgspec.structs.replace(p, conflicts=()), wanted, list(p.conflicts)
    assert p.template is not None
    fields = p.slots[0].key or {}
    target = _parse_key(key, fields) if key is not None else None
    take = [s for s in p.slots if target is None or s.key == target]
    if not take:
        return p, {}, []
    dataset = repo.read_dataset(p.template)
    ids = repo.read_oid_list(dataset)
    out = _swap(ids, {s.marker: (s.ours if side == "ours" else s.theirs) for s in take})
    template, _ = build_dataset(
        writer, out, dataset.format, dataset.key, base=dataset, base_oids=ids
    )
    left = tuple(s for s in p.slots if s not in take)
    keys = [s.key for s in take]
    resolved = [c for c in p.conflicts if c.key in keys]
    conflicts = tuple(c for c in p.conflicts if c.key not in keys)
    new = msgspec.structs.replace(p, template=template, slots=left, conflicts=conflicts)
    view = template
    if dataset.format.kind not in MARKED_KINDS and left:
        view, _ = build_dataset(
            writer,
            _swap(out, {s.marker: s.ours for s in left}),
            dataset.format,
            dataset.key,
            base=dataset,
            base_oids=ids,
        )
    return new, {p.path: view}, resolved


# -- revert and cherry-pick --------------------------------------------------------------------


def _one_parent(repo: Repository, oid: bytes, rev: str, mainline: int | None) -> bytes | None:
    parents = repo.read_commit(oid).parents
    if len(parents) > 1 and mainline is None:
        raise BadInput(f"{rev} is a merge: say which parent's side to take with -m 1 or -m 2")
    number = mainline or 1
    if parents and not 1 <= number <= len(parents):
        raise BadInput(f"{rev} has no parent {number}")
    return parents[number - 1] if parents else None


def revert(repo: Repository, rev: str, *, mainline: int | None = None) -> MergeOutcome:
    """A new commit undoing `rev`'s datapoint changes (a three-way merge of its parent)."""
    with repo.lock():
        _no_merge(repo)
        oid = repo.resolve(rev)
        parent = _one_parent(repo, oid, rev, mainline)
        head = repo.head()
        if head is None or parent is None:
            raise BadState(f"cannot revert {rev}: it has no parent to go back to")
        subject = repo.read_commit(oid).message.splitlines()[0]
        message = f'Revert "{subject}"\n\nThis reverts commit {oid.hex()}.'
        return _start(
            repo, head=head, theirs=parent, base=oid, parents=(head,), message=message,
            reason=f"revert: {subject}",
        )  # fmt: skip


def cherry_pick(repo: Repository, rev: str, *, mainline: int | None = None) -> MergeOutcome:
    """A new commit making `rev`'s datapoint changes on HEAD (a three-way merge)."""
    with repo.lock():
        _no_merge(repo)
        oid = repo.resolve(rev)
        parent = _one_parent(repo, oid, rev, mainline)
        head = repo.head()
        if head is None:
            raise BadState("cannot cherry-pick onto an unborn branch")
        commit = repo.read_commit(oid)
        message = f"{commit.message.rstrip()}\n\n(cherry picked from commit {oid.hex()})"
        return _start(
            repo, head=head, theirs=oid, base=parent, parents=(head,), message=message,
            reason=f"cherry-pick: {commit.message.splitlines()[0]}",
        )  # fmt: skip


def _no_merge(repo: Repository) -> None:
    if read_state(repo) is not None:
        raise BadState(
            "a merge is in progress", hint="finish it with 'dsv merge --continue' or --abort"
        )
