"""The repository: where `.dsv` is, its store, refs, config and lock, and revision names."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import msgspec

from dsv.config import FORMAT_VERSION, Config, read_config, user_identity, write_config
from dsv.errors import BadInput, BadState, NotARepository
from dsv.fsutil import RepoLock
from dsv.index import Entry, write_index
from dsv.manifest import iter_datapoint_oids, read_oid_list
from dsv.objects import (
    Commit,
    Dataset,
    Kind,
    Tree,
    decode_commit,
    decode_dataset,
    decode_tree,
)
from dsv.refs import BRANCHES, ENVS, REMOTES, TAGS, Refs
from dsv.store import ObjectStore
from dsv.text import plural

__all__ = ["DSV_DIR", "REMOTE_ENVS", "Repository", "remote_short_name"]

DSV_DIR = ".dsv"
_REV_SUFFIX = re.compile(r"(~\d*|\^\d*)\Z")
_HEX = re.compile(r"[0-9a-f]{4,64}")
_SHORT_HEX = re.compile(r"[0-9a-f]{1,3}")
# What could be a ref's short name (a path in the refs directory must never escape it).
_REMOTE_NAME = re.compile(r"(?!.*(?:^|/)\.\.?(?:/|$))[^\x00]+")
# Where a remote's environments are tracked, under refs/remotes/REMOTE/ (dsv.remote.client).
REMOTE_ENVS = "envs/"


def remote_short_name(full: str) -> str:
    """`refs/remotes/origin/envs/production` -> `origin/production` (as `env list` shows it)."""
    short = full[len(REMOTES) :]
    remote, rest = short.split("/", 1)
    return f"{remote}/{rest[len(REMOTE_ENVS) :]}" if rest.startswith(REMOTE_ENVS) else short


def _lock_timeout() -> float | None:
    """DSV_LOCK_TIMEOUT in seconds (None: the default), refused when it is not a number."""
    text = os.environ.get("DSV_LOCK_TIMEOUT")
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise BadInput(
            f"DSV_LOCK_TIMEOUT={text!r} is not a number of seconds", hint="e.g. DSV_LOCK_TIMEOUT=10"
        )
    return value


class Repository:
    """A dsv repository: a working tree with a `.dsv` directory at its root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dsv_dir = root / DSV_DIR
        self.index_path = self.dsv_dir / "index"
        self.merge_path = self.dsv_dir / "MERGE"  # a merge in progress (dsv.ops.mergestate)
        self.config = read_config(self.dsv_dir / "config")
        self.store = ObjectStore(self.dsv_dir / "objects", before_pack=self._upgrade_format)
        self.refs = Refs(self.dsv_dir)
        self._lock = RepoLock(self.dsv_dir / "lock", timeout=_lock_timeout())

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".", *, branch: str = "main") -> Self:
        """Create an empty repository at `path`."""
        root = Path(path).resolve()
        dsv_dir = root / DSV_DIR
        if (dsv_dir / "config").exists():
            raise BadState(f"{dsv_dir} already exists: {root} is a dsv repository already")
        try:
            root.mkdir(parents=True, exist_ok=True)
            for sub in ("objects/pack", "refs/heads", "refs/tags", "refs/envs", "logs"):
                (dsv_dir / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadState(f"cannot create {dsv_dir}: {exc.strerror}") from exc
        Refs(dsv_dir).set_symbolic("HEAD", BRANCHES + branch)
        # config last: its presence is what makes the directory a repository.
        write_config(dsv_dir / "config", Config())
        return cls(root)

    @classmethod
    def open(cls, path: str | os.PathLike[str] = ".") -> Self:
        """Open the repository containing `path`, looking upwards for `.dsv`."""
        start = Path(path).resolve()
        for candidate in (start, *start.parents):
            if (candidate / DSV_DIR).is_dir():
                return cls(candidate)
        raise NotARepository(
            "not a dsv repository (or any parent)", hint="run 'dsv init' to create one"
        )

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lock(self) -> RepoLock:
        """The writer lock; every change to refs, the index or objects happens under it."""
        return self._lock

    def _upgrade_format(self) -> None:
        """Before a pack of this dsv is published (under the lock): a repository of an older
        format this dsv reads is marked as of this one's, whose packs readers of the older
        format cannot read."""
        config = read_config(self.dsv_dir / "config")
        if config.format < FORMAT_VERSION:
            self.save_config(msgspec.structs.replace(config, format=FORMAT_VERSION))
        else:
            self.config = config

    def save_config(self, config: Config) -> None:
        # A config read before another process upgraded the format must not undo that.
        path = self.dsv_dir / "config"
        config = msgspec.structs.replace(
            config, format=max(config.format, read_config(path).format)
        )
        write_config(path, config)
        self.config = config

    @property
    def user(self) -> str:
        return user_identity(self.config)

    # -- objects -----------------------------------------------------------------------

    def read_commit(self, oid: bytes) -> Commit:
        return decode_commit(self.store.read_body(oid, Kind.COMMIT), oid)

    def read_tree(self, oid: bytes) -> Tree:
        return decode_tree(self.store.read_body(oid, Kind.TREE), oid)

    def read_dataset(self, oid: bytes) -> Dataset:
        return decode_dataset(self.store.read_body(oid, Kind.DATASET), oid)

    def read_oid_list(self, dataset: Dataset) -> bytes:
        return read_oid_list(self.store, dataset)

    def read_datapoints(self, dataset: Dataset) -> Iterator[bytes]:
        """Canonical bytes of each datapoint of a dataset, in order, each re-hashed."""
        return self.store.read_many(iter_datapoint_oids(self.store, dataset), Kind.DATAPOINT)

    def tree_of(self, commit_oid: bytes | None) -> dict[str, bytes]:
        """path -> dataset oid of a commit (empty for None)."""
        if commit_oid is None:
            return {}
        tree = self.read_tree(self.read_commit(commit_oid).tree)
        return {entry.path: entry.dataset for entry in tree.entries}

    def write_index(self, entries: dict[str, Entry], *, head: bytes | None = None) -> None:
        """Write the index (under the lock), naming the commit whose tree it equals if HEAD,
        or `head` that HEAD is about to move to, is one: then a clean `status` reads no
        object, and needs neither msgspec nor click (dsv.quick)."""
        commit = self.head() if head is None else head
        datasets = {name: entry.dataset for name, entry in entries.items()}
        matched = commit is not None and self.tree_of(commit) == datasets
        write_index(self.index_path, entries, head=commit if matched and commit else b"")

    # -- refs and revisions ------------------------------------------------------------

    def head(self) -> bytes | None:
        """The commit HEAD points to; None on an unborn branch."""
        return self.refs.read("HEAD")

    def current_branch(self) -> str | None:
        target = self.refs.symbolic_target("HEAD")
        if target and target.startswith(BRANCHES):
            return target[len(BRANCHES) :]
        return None

    def ref_names(self) -> list[str]:
        """Every short name a revision may use."""
        names = ["HEAD"]
        for prefix in (BRANCHES, TAGS, ENVS):
            names += [name[len(prefix) :] for name, _ in self.refs.list_refs(prefix)]
        for remote in self.remote_names():
            names += [f"{remote}/{short}" for short, _ in self.remote_refs(remote)]
        return names

    def remote_names(self) -> list[str]:
        """The remotes that have remote-tracking refs, sorted."""
        try:
            return sorted(
                entry.name for entry in os.scandir(self.dsv_dir / REMOTES) if entry.is_dir()
            )
        except (FileNotFoundError, NotADirectoryError):
            return []

    def remote_refs(self, remote: str, *, envs: bool | None = None) -> list[tuple[str, bytes]]:
        """(short name, oid) of one remote's tracking refs: branches as `NAME`, environments
        as `envs/NAME`; only environments with `envs=True`, only branches with False."""
        prefix = f"{REMOTES}{remote}/"
        out = []
        for full, oid in self.refs.list_refs(prefix):
            short = full[len(prefix) :]
            if envs is None or short.startswith(REMOTE_ENVS) == envs:
                out.append((short[len(REMOTE_ENVS) :] if envs else short, oid))
        return out

    def _remote_candidates(self, name: str) -> list[tuple[str, bytes]]:
        """(full ref, oid) of `name` as a branch, else as an environment, on each remote;
        `REMOTE/NAME` also names that remote's environment NAME."""
        found = []
        if "/" in name:
            remote, rest = name.split("/", 1)
            full = f"{REMOTES}{remote}/{REMOTE_ENVS}{rest}"
            oid = self.refs.read(full)
            if oid is not None and not rest.startswith(REMOTE_ENVS):
                found.append((full, oid))
        for remote in self.remote_names():
            for full in (f"{REMOTES}{remote}/{name}", f"{REMOTES}{remote}/{REMOTE_ENVS}{name}"):
                oid = self.refs.read(full)
                if oid is not None:
                    found.append((full, oid))
                    break
        return found

    def resolve_remote_name(self, name: str) -> str | None:
        """The remote-tracking ref a name that is no local one stands for (`production` ->
        `refs/remotes/origin/envs/production` when only origin has it), or None; a name on
        several remotes that point at different versions is ambiguous."""
        if name == "HEAD" or any(
            self.refs.read(prefix + name) is not None
            for prefix in ("refs/", BRANCHES, TAGS, ENVS, REMOTES)
        ):
            return None
        found = self._remote_candidates(name)
        if len({oid for _, oid in found}) > 1:
            shown = " and ".join(remote_short_name(full) for full, _ in found)
            raise BadInput(
                f"ambiguous revision {name!r}: it names {shown}",
                hint="say which one: " + " or ".join(repr(remote_short_name(f)) for f, _ in found),
            )
        return found[0][0] if found else None

    def _lookup_name(self, name: str, *, prefer_commits: bool = True) -> bytes | None:
        if name == "HEAD":
            return self.head()
        for prefix in ("", "refs/", BRANCHES, TAGS, ENVS, REMOTES):
            full = prefix + name
            if full.startswith("refs/") or full == "HEAD":
                oid = self.refs.read(full)
                if oid is not None:
                    return oid
        # As git: local names first, then one found on the remotes (refs before ids).
        remote = self.resolve_remote_name(name) if _REMOTE_NAME.fullmatch(name) else None
        if remote is not None:
            return self.refs.read(remote)
        hex_name = name.lower()
        if _HEX.fullmatch(hex_name):
            found = self.store.find_prefix(hex_name)
            if len(found) > 1:
                kinds = {oid: self.store.read(oid)[0] for oid in found}
                commits = [oid for oid, kind in kinds.items() if kind == Kind.COMMIT]
                if prefer_commits and len(commits) == 1:
                    return commits[0]
                shown = sorted(kinds.items())[:5]
                raise BadInput(
                    f"ambiguous id {name!r}: {plural(len(found), 'object')} start with it",
                    hint="give more characters; candidates: "
                    + ", ".join(f"{oid.hex()[:16]} ({kind.name.lower()})" for oid, kind in shown)
                    + (" …" if len(found) > len(shown) else ""),
                )
            if found:
                return found.pop()
        return None

    def resolve_object(self, rev: str) -> bytes:
        """The oid named by `rev`: any object kind by id or unique prefix (at least 4 hex
        digits), or the commit a revision names (`HEAD~2`, `production`, ...)."""
        rev = rev.strip()
        if not rev:
            raise BadInput("empty object id")
        if _REV_SUFFIX.search(rev):
            return self.resolve(rev)
        oid = self._lookup_name(rev, prefer_commits=False)
        if oid is None:
            if rev == "HEAD":
                raise BadState("HEAD has no commits yet", hint="commit something first")
            raise self._unknown(rev)
        return oid

    def resolve(self, rev: str) -> bytes:
        """The commit named by `rev`: id or prefix, HEAD, branch, tag, environment, ~N, ^N."""
        rev = rev.strip()
        if not rev:
            raise BadInput("empty revision")
        suffixes: list[str] = []
        base = rev
        while True:
            match = _REV_SUFFIX.search(base)
            if not match or match.start() == 0:
                break
            suffixes.insert(0, match.group(1))
            base = base[: match.start()]
        oid = self._lookup_name(base)
        if oid is None:
            if base == "HEAD":
                raise BadState("HEAD has no commits yet", hint="commit something first")
            raise self._unknown(base)
        kind, _ = self.store.read(oid)
        if kind != Kind.COMMIT:
            raise BadInput(f"{base} is a {kind.name.lower()}, not a version")
        for suffix in suffixes:
            if suffix[0] == "~":
                steps = int(suffix[1:] or "1")
                for _ in range(steps):
                    oid = self._parent(oid, 1, rev)
            else:
                number = int(suffix[1:] or "1")
                oid = self._parent(oid, number, rev) if number else oid
        return oid

    def _parent(self, oid: bytes, number: int, rev: str) -> bytes:
        parents = self.read_commit(oid).parents
        if len(parents) < number:
            raise BadInput(f"revision {rev!r} goes past the first version of the history")
        return parents[number - 1]

    def _unknown(self, name: str) -> BadInput:
        import difflib  # only for an error's hint: not on every command's start-up path

        close = difflib.get_close_matches(name, self.ref_names(), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None
        if hint is None and _SHORT_HEX.fullmatch(name.lower()):
            hint = "an abbreviated id needs at least 4 hex digits"
        return BadInput(f"unknown revision {name!r}", hint=hint)
