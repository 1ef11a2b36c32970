"""`dsv lock`, `dsv sync` and `dsv verify`: a code project's pinned dataset versions.

The lock file itself is `dsv.lockfile`; this module resolves pins against their remotes,
brings the pinned versions into the project's `.dsv` and checks the working files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import msgspec

from dsv.config import Remote
from dsv.errors import BadInput, BadState, RemoteError
from dsv.index import read_index
from dsv.lockfile import LOCK_NAME, LockFile, Pin, read_lock, working_content, write_lock
from dsv.paths import check_dataset_path
from dsv.progress import ProgressFn
from dsv.project import ignore_in_git
from dsv.remote import add_remote, missing_from
from dsv.remote.cache import fetch_version, locate_dataset, open_cache, resolve_remote_rev
from dsv.remote.client import fetch
from dsv.remote.connection import Connection, open_remote
from dsv.repo import DSV_DIR, Repository
from dsv.store import ObjectStore
from dsv.worktree import write_file

__all__ = [
    "PinChange",
    "Problem",
    "SyncResult",
    "lock",
    "split_spec",
    "sync",
    "verify",
]


class PinChange(msgspec.Struct, frozen=True):
    """What `dsv lock` did to one pin."""

    path: str
    status: Literal["added", "updated", "unchanged"]
    old: Pin | None
    new: Pin


class SyncResult(msgspec.Struct, frozen=True):
    """What `dsv sync` did to one working file."""

    path: str
    status: Literal["written", "unchanged"]
    commit: bytes


class Problem(msgspec.Struct, frozen=True):
    """One way the project disagrees with its lock (`dsv verify`)."""

    path: str
    kind: Literal["missing", "modified", "moved"]
    message: str


def split_spec(spec: str) -> tuple[str, str | None]:
    """'PATH@REV' as (PATH, REV); REV is None when not given."""
    path, at, rev = spec.rpartition("@")
    if not at:
        return spec, None
    if not rev.strip():
        raise BadInput(f"{spec!r}: empty revision after '@'")
    return path, rev


def _connect(pin_remote: str, key_env: str | None) -> Connection:
    return open_remote(Remote(url=pin_remote, key_env=key_env), pin_remote)


def _resolve(
    conn: Connection, cache: ObjectStore, path: str, rev: str, url: str, key_env: str | None
) -> Pin:
    commit = resolve_remote_rev(conn, rev)
    version = fetch_version(conn, cache, commit, path)
    return Pin(path, url, rev, commit, version.dataset_oid, version.dataset.content, key_env)


def lock(
    root: Path,
    specs: Iterable[str] = (),
    *,
    remote: Remote | None = None,
    update: Iterable[str] | None = None,
) -> list[PinChange]:
    """Pin `specs` ('PATH@REV', from `remote`) in `root`'s dsv.lock; with `update`, move the
    named pins (all when empty; 'PATH@REV' also changes what a pin asks for) to what their
    revisions name now. A pin that exists is never moved otherwise."""
    lock_path = root / LOCK_NAME
    current = read_lock(lock_path)
    pins = dict(current.pins)
    changes: list[PinChange] = []
    cache = open_cache()
    wanted: dict[str, tuple[str, str, str | None]] = {}  # path -> rev, url, key_env
    for spec in specs:
        path, rev = split_spec(spec)
        check_dataset_path(path)
        if remote is None:
            raise BadInput(f"{path}: no remote to pin it from", hint="give --remote NAME or URL")
        rev = rev or "HEAD"
        old = pins.get(path)
        if old is not None and (old.rev != rev or old.remote != remote.url):
            raise BadState(
                f"{path} is pinned already ({old.rev} from {old.remote})",
                hint=f"'dsv lock --update {path}@{rev}' moves the pin on purpose",
            )
        if old is None:
            wanted[path] = (rev, remote.url, remote.key_env)
        else:
            changes.append(PinChange(path, "unchanged", old, old))
    if update is not None:
        names = list(update) or list(pins)
        for name in names:
            path, rev = split_spec(name)
            old = pins.get(path)
            if old is None:
                raise BadInput(
                    f"{path}: not pinned in {lock_path}", hint=f"pin it with 'dsv lock {name}'"
                )
            wanted[path] = (rev or old.rev, old.remote, old.key_env)
    by_remote: dict[tuple[str, str | None], list[str]] = {}
    for path, (_, url, key_env) in wanted.items():
        by_remote.setdefault((url, key_env), []).append(path)
    for (url, key_env), paths in sorted(by_remote.items(), key=lambda item: item[0][0]):
        with _connect(url, key_env) as conn:
            for path in paths:
                new = _resolve(conn, cache, path, wanted[path][0], url, key_env)
                old = pins.get(path)
                status: Literal["added", "updated", "unchanged"] = (
                    "added" if old is None else "unchanged" if old == new else "updated"
                )
                pins[path] = new
                changes.append(PinChange(path, status, old, new))
    write_lock(lock_path, LockFile(pins))
    return sorted(changes, key=lambda c: c.path.encode())


def _project_repo(root: Path) -> Repository:
    if (root / DSV_DIR).is_dir():
        return Repository.open(root)
    repo = Repository.init(root)
    ignore_in_git(root)
    return repo


def _remote_name(repo: Repository, url: str, key_env: str | None) -> str:
    """The name of the repository's remote at `url`, added if it has none."""
    for name, known in sorted(repo.config.remotes.items()):
        if known.url.rstrip("/") == url:
            return name
    taken = set(repo.config.remotes)
    name = "origin" if "origin" not in taken else ""
    number = 2
    while not name:
        if f"origin-{number}" not in taken:
            name = f"origin-{number}"
        number += 1
    add_remote(repo, name, url, key_env=key_env)
    return name


def sync(
    root: Path, *, force: bool = False, progress: ProgressFn | None = None
) -> list[SyncResult]:
    """Make the working files of `root` exactly the versions its dsv.lock pins, fetching from
    their remotes into `root/.dsv` (made if absent) what it lacks.

    A working file whose records are neither the pinned ones nor its staged version's is
    local work: it is refused unless `force`.
    """
    pins = read_lock(root / LOCK_NAME).pins
    if not pins:
        raise BadInput(
            f"{root / LOCK_NAME}: nothing is pinned", hint="pin a dataset: dsv lock PATH@REV"
        )
    results: list[SyncResult] = []
    with _project_repo(root) as repo:
        fetched: set[str] = set()
        for pin in pins.values():
            if not missing_from(repo.store, [pin.commit]):
                continue
            name = _remote_name(repo, pin.remote, pin.key_env)
            if name not in fetched:
                fetch(repo, name, progress=progress)
                fetched.add(name)
            if missing_from(repo.store, [pin.commit]):
                raise RemoteError(
                    f"{pin.path}: {pin.remote} no longer has the pinned version "
                    f"{pin.commit.hex()[:12]}",
                    hint=f"'dsv lock --update {pin.path}' pins what {pin.rev} is now",
                )
        for path in sorted(pins, key=str.encode):
            pin = pins[path]
            if repo.tree_of(pin.commit).get(path) != pin.dataset:
                raise BadState(
                    f"{LOCK_NAME}: {path}: version {pin.commit.hex()[:12]} does not hold the "
                    f"pinned dataset {pin.dataset.hex()[:12]}",
                    hint=f"the lock was edited by hand; 'dsv lock --update {path}' rewrites it",
                )
            with repo.lock():
                have = working_content(root, path)
                if have == pin.content:
                    results.append(SyncResult(path, "unchanged", pin.commit))
                    continue
                index = read_index(repo.index_path)
                staged = index.get(path)
                if (
                    have is not None
                    and not force
                    and (staged is None or repo.read_dataset(staged.dataset).content != have)
                ):
                    raise BadState(
                        f"{path}: the working file has changes the lock does not pin",
                        hint="'dsv sync --force' overwrites them",
                    )
                index[path] = write_file(repo, path, pin.dataset)
                repo.write_index(index)
            results.append(SyncResult(path, "written", pin.commit))
    return results


def verify(root: Path, *, offline: bool = False) -> list[Problem]:
    """Every way `root` disagrees with its dsv.lock: a working file that is missing or holds
    other records, and (unless `offline`) a pin whose revision now names another dataset
    version on its remote."""
    pins = read_lock(root / LOCK_NAME).pins
    if not pins:
        raise BadInput(
            f"{root / LOCK_NAME}: nothing is pinned", hint="pin a dataset: dsv lock PATH@REV"
        )
    problems: list[Problem] = []
    for path in sorted(pins, key=str.encode):
        pin = pins[path]
        have = working_content(root, path)
        if have is None:
            problems.append(Problem(path, "missing", f"{path}: no working file (run 'dsv sync')"))
        elif have != pin.content:
            problems.append(
                Problem(
                    path,
                    "modified",
                    f"{path}: the working file's records (content {have.hex()[:12]}) are not "
                    f"the pinned ones (content {pin.content.hex()[:12]})",
                )
            )
    if offline:
        return problems
    cache = open_cache()
    by_remote: dict[tuple[str, str | None], list[Pin]] = {}
    for pin in pins.values():
        by_remote.setdefault((pin.remote, pin.key_env), []).append(pin)
    for (url, key_env), group in sorted(by_remote.items(), key=lambda item: item[0][0]):
        with _connect(url, key_env) as conn:
            for pin in group:
                moved = _moved(conn, cache, pin)
                if moved is not None:
                    problems.append(Problem(pin.path, "moved", moved))
    return sorted(problems, key=lambda p: p.path.encode())


def _moved(conn: Connection, cache: ObjectStore, pin: Pin) -> str | None:
    """Why `pin`'s revision no longer names the pinned dataset on its remote, or None."""
    try:
        commit = resolve_remote_rev(conn, pin.rev)
    except BadInput:
        return f"{pin.path}: {pin.rev} no longer exists on {pin.remote}"
    if commit == pin.commit:
        return None
    try:
        now = locate_dataset(conn, cache, commit, pin.path)
    except BadInput:
        return f"{pin.path}: {pin.rev} on {pin.remote} no longer holds this dataset"
    if now == pin.dataset:
        return None
    return (
        f"{pin.path}: {pin.rev} on {pin.remote} is now version {commit.hex()[:12]} "
        f"(dataset {now.hex()[:12]}); the lock pins {pin.commit.hex()[:12]} "
        f"(dataset {pin.dataset.hex()[:12]}): 'dsv lock --update {pin.path}' moves the pin"
    )
