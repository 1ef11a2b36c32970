"""The record of a merge in progress (`.dsv/MERGE`, docs/format.md v7 (g)): reading and
writing it, and the checks `add` and `commit` make against it. Below the merge commands
(dsv.ops.merging), so that stage and checkout consult it without importing them."""

from __future__ import annotations

import contextlib
from typing import Any, Final

import msgspec

from dsv.canonical import decode_canonical
from dsv.errors import BadState
from dsv.fsutil import write_atomic
from dsv.index import Entry
from dsv.merge import MARKER, Conflict, Slot
from dsv.objects import Kind, split_oids
from dsv.repo import Repository

__all__ = [
    "MARKED_KINDS",
    "STATE_VERSION",
    "MergeState",
    "PathState",
    "check_resolved",
    "clear_state",
    "finish_commit",
    "key_text",
    "merge_parents",
    "read_state",
    "settle_added",
    "unresolved",
    "write_state",
]

STATE_VERSION: Final = 1
# Formats whose files can hold a conflict record; the others show ours' side at a conflict.
MARKED_KINDS: Final = ("jsonl", "json")


class PathState(msgspec.Struct, frozen=True):
    """A conflicted path of a merge in progress: its result with conflict records in place
    (`template`), the unresolved slots and conflicts, and for a dataset-level conflict the
    datasets of each side."""

    path: str
    template: bytes | None
    slots: tuple[Slot, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    whole: bool = False
    ours: bytes | None = None
    theirs: bytes | None = None


class MergeState(msgspec.Struct, frozen=True):
    """`.dsv/MERGE`: what `continue` commits and what `abort` restores."""

    version: int
    head: bytes | None  # HEAD before the merge
    theirs: bytes
    message: str
    before: tuple[tuple[str, bytes | None], ...]  # each path the merge writes, as it was
    paths: tuple[PathState, ...]
    parents: tuple[bytes, ...] = ()  # of the commit to make
    commit: bytes | None = None  # a clean merge's commit, made before any file was written


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(MergeState)


def read_state(repo: Repository) -> MergeState | None:
    """The merge in progress, or None."""
    try:
        data = repo.merge_path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        state = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise BadState(
            f"{repo.merge_path} is not a merge record: {exc}",
            hint="remove it to forget the merge in progress",
        ) from exc
    if state.version != STATE_VERSION:
        raise BadState(f"{repo.merge_path}: unknown merge record version {state.version}")
    return state


def write_state(repo: Repository, state: MergeState) -> None:
    write_atomic(repo.merge_path, _encoder.encode(state))


def clear_state(repo: Repository) -> None:
    with contextlib.suppress(FileNotFoundError):
        repo.merge_path.unlink()


def key_text(key: dict[str, Any] | None) -> str:
    """A datapoint's key as shown and as `--key` takes it: `id=3`, `lang="en",id=3`."""
    if not key:
        return ""
    return ",".join(f"{f}={msgspec.json.encode(v).decode()}" for f, v in key.items())


def unresolved(repo: Repository) -> list[Conflict]:
    """The conflicts of the merge in progress not resolved yet (none without a merge)."""
    state = read_state(repo)
    return [c for p in state.paths for c in p.conflicts] if state is not None else []


def merge_parents(repo: Repository) -> tuple[bytes, ...] | None:
    """The parents a commit made now takes (a merge in progress), or None (the usual)."""
    state = read_state(repo)
    if state is None:
        return None
    return state.parents


def check_resolved(repo: Repository) -> None:
    """Refuse to commit while a conflict of the merge in progress is unresolved."""
    state = read_state(repo)
    if state is None:
        return
    left = [p for p in state.paths if p.conflicts]
    if left:
        first = left[0]
        count = sum(len(p.conflicts) for p in left)
        raise BadState(
            f"cannot commit: {first.path} holds {_conflicts_text(len(first.conflicts))}"
            + (f" ({count} in all)" if len(left) > 1 else ""),
            hint=f"edit it and 'dsv add {first.path}', or 'dsv resolve --ours|--theirs "
            f"{first.path}'; 'dsv conflicts' lists them",
        )


def _conflicts_text(n: int) -> str:
    return f"{n} unresolved conflict{'s' if n != 1 else ''}"


def finish_commit(repo: Repository) -> None:
    """After a commit that concluded a merge (under the lock): forget it."""
    clear_state(repo)


def settle_added(repo: Repository, staged: dict[str, Entry]) -> None:
    """After `dsv add` of conflicted paths (under the lock, before the index is written):
    refuse a file that still holds a conflict record, else mark its conflicts resolved."""
    state = read_state(repo)
    if state is None:
        return
    changed = False
    kept: list[PathState] = []
    for p in state.paths:
        entry = staged.get(p.path)
        if entry is None or not p.conflicts:
            kept.append(p)
            continue
        _refuse_records(repo, p, entry.dataset)
        kept.append(msgspec.structs.replace(p, conflicts=(), slots=()))
        changed = True
    if changed:
        write_state(repo, msgspec.structs.replace(state, paths=tuple(kept)))


def _refuse_records(repo: Repository, p: PathState, dataset_oid: bytes) -> None:
    dataset = repo.read_dataset(dataset_oid)
    if dataset.format.kind not in MARKED_KINDS:
        return
    ids = split_oids(repo.read_oid_list(dataset))
    known = (
        set(split_oids(repo.read_oid_list(repo.read_dataset(p.template)))) if p.template else set()
    )
    markers = {s.marker: s for s in p.slots}
    fresh = [oid for oid in ids if oid not in known]
    edited: dict[bytes, dict[str, Any]] = {}
    if fresh:
        marker = f'"{MARKER}":'.encode()
        for oid, body in zip(fresh, repo.store.read_bulk(fresh, Kind.DATAPOINT), strict=True):
            if marker in body:
                record = decode_canonical(body)
                if MARKER in record:
                    edited[oid] = record
    for position, oid in enumerate(ids):
        if oid in markers:
            _still_conflict(p.path, position, markers[oid].key)
        if oid in edited:
            record = edited[oid]
            key = {f: record[f] for f in dataset.key if f in record}
            _still_conflict(p.path, position, key if len(key) == len(dataset.key) else None)


def _still_conflict(path: str, position: int, key: dict[str, Any] | None) -> None:
    what = f"datapoint {key_text(key)}" if key else f"datapoint {position + 1}"
    raise BadState(
        f"{path}: {what} is still a conflict record ({MARKER!r})",
        hint="edit it into the one datapoint you want, or run "
        f"'dsv resolve --ours|--theirs {path}" + (f" --key {key_text(key)}'" if key else "'"),
    )
