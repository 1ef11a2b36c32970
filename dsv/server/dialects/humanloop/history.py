"""Which commits are the versions of a dataset, for the Humanloop API (docs/humanloop.md).

A version is the commit that produced a dataset's content: walking first parents, the first
commit whose parent holds other datapoints (or no such dataset). Moves made through the API
are undone along the way, so a dataset keeps its versions under a new path. A merge that is a
version brings in the versions its other parents made (docs/humanloop.md), listed after it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import NamedTuple

from dsv.deployment import source_of
from dsv.objects import Commit
from dsv.server.dialects.humanloop.store import DatasetRecord, HumanloopStore, VersionNote
from dsv.server.dialects.humanloop.types import not_found, version_id
from dsv.server.storage.stored import StoredObjects

__all__ = ["Chain", "History", "Version", "Versions"]

# (commit, the dataset's path at that commit), newest first.
Chain = list[tuple[bytes, str]]
_HISTORIES = 512
# How far back from a new tip the history known for an older tip is looked for: further, the
# whole history is walked again (a rewritten branch never finds it).
_EXTEND_MOST = 1024


class Version(NamedTuple):
    """One version of a dataset: the commit that produced its content, and that content."""

    commit: bytes
    info: Commit
    dataset: bytes
    path: str


class Versions(NamedTuple):
    """A dataset's versions: all, those the API shows, and those environments hold."""

    latest: Version
    first: Version
    every: list[Version]
    visible: list[Version]
    deployed: dict[str, Version]
    notes: dict[bytes, VersionNote]
    # Environment -> the path its commit holds the dataset at (the deployed ones only).
    deployed_paths: dict[str, str]
    # How many of `every` (the first ones) are on the default branch's first-parent line.
    on_branch: int

    def find(self, vid: str, dataset_id: str) -> Version:
        for v in self.visible:
            if version_id(v.commit) == vid:
                return v
        raise not_found(f"Version {vid} of dataset {dataset_id} not found")


class History:
    """Versions of datasets, from the objects and the moves recorded in the metadata."""

    def __init__(self, objects: StoredObjects, store: HumanloopStore) -> None:
        self.objects = objects
        self.store = store
        self._guard = threading.Lock()
        self._histories: collections.OrderedDict[
            tuple[str, str, str, bytes, int], tuple[Chain, dict[bytes, int], list[Version]]
        ] = collections.OrderedDict()
        # The tip each dataset's history was last found for: the next tip extends it.
        self._last_tips: dict[tuple[str, str, str, int], bytes] = {}

    def _first_parents(
        self, record: DatasetRecord, tip: bytes, moves: dict[bytes, str]
    ) -> Iterator[tuple[bytes, str, tuple[bytes, ...]]]:
        """(commit, the dataset's path there, its parents) along first parents from `tip`,
        undoing moves."""
        oid: bytes | None = tip
        path = record.path
        while oid is not None:
            parents = self.objects.commit(record.repo, oid).parents
            yield oid, path, parents
            path = moves.get(oid, path)
            oid = parents[0] if parents else None

    def _chain(self, record: DatasetRecord, tip: bytes, moves: dict[bytes, str]) -> Chain:
        """(commit, the dataset's path there) along first parents from `tip`, undoing moves."""
        return [(oid, path) for oid, path, _ in self._first_parents(record, tip, moves)]

    def _joined(
        self, repo: str, start: bytes, chain: Chain, at: dict[bytes, int]
    ) -> tuple[Chain, int] | None:
        """The chain from `start`, which may be off the default branch's first-parent line,
        and where it joins that line.

        The API moves datasets only on that line, so until `start`'s first parents join it,
        the dataset's path is the one it has where they join. None if they never do.
        """
        prefix: list[bytes] = []
        oid: bytes | None = start
        while oid is not None and oid not in at:
            prefix.append(oid)
            parents = self.objects.commit(repo, oid).parents
            oid = parents[0] if parents else None
        if oid is None:
            return None
        joined = at[oid]
        return [(p, chain[joined][1]) for p in prefix] + chain[joined:], joined

    def _walk(
        self, repo: str, chain: Chain, *, first: bool, stop: int | None = None
    ) -> tuple[list[Version], bool]:
        """Versions along `chain` (newest first) while the dataset exists; only one if
        `first`; only among the first `stop` commits if given. And whether the walk ended
        because the dataset did not exist."""
        found: list[Version] = []
        entry = self.objects.tree(repo, chain[0][0]).get(chain[0][1]) if chain else None
        for i, (oid, path) in enumerate(chain[:stop]):
            if entry is None:
                return found, True
            parent = chain[i + 1] if i + 1 < len(chain) else None
            parent_entry = self.objects.tree(repo, parent[0]).get(parent[1]) if parent else None
            if parent_entry is None or not self.objects.same(repo, entry, parent_entry):
                found.append(Version(oid, self.objects.commit(repo, oid), entry, path))
                if first:
                    break
            entry = parent_entry
        return found, entry is None

    def _with_merged(
        self, repo: str, versions: list[Version], at: dict[bytes, int]
    ) -> list[Version]:
        """`versions` with, after each merge among them, the versions that came in through
        its other parents: commits off the first-parent line, back to it, each of which
        changed the dataset at the merge's path against its own first parent; newest first."""
        out: list[Version] = []
        seen: set[bytes] = set()
        for version in versions:
            out.append(version)
            parents = version.info.parents
            if len(parents) < 2:
                continue
            side: list[Version] = []
            todo = [p for p in parents[1:] if p not in at]
            while todo:
                oid = todo.pop()
                if oid in seen or oid in at:
                    continue
                seen.add(oid)
                entry = self.objects.tree(repo, oid).get(version.path)
                if entry is None:
                    continue
                info = self.objects.commit(repo, oid)
                before = (
                    self.objects.tree(repo, info.parents[0]).get(version.path)
                    if info.parents
                    else None
                )
                if before is None or not self.objects.same(repo, entry, before):
                    side.append(Version(oid, info, entry, version.path))
                todo.extend(p for p in info.parents if p not in at and p not in seen)
            out += sorted(side, key=lambda v: (v.info.time, v.commit), reverse=True)
        return out

    def _history(
        self, record: DatasetRecord, tip: bytes
    ) -> tuple[Chain, dict[bytes, int], list[Version]]:
        """The chain from `tip`, each commit's place in it, and the versions along it; kept
        for a few hundred (dataset, tip) pairs, as walking a long history costs. A history
        known for an older tip on `tip`'s first-parent line is extended by the commits since
        (`_extended`): each write moves the tip, and walking ten thousand commits again for
        each made a write's time grow with the history."""
        moves = self.store.dataset_moves(record.id)
        dataset = (record.repo, record.id, record.path, len(moves))
        key = (*dataset[:3], tip, dataset[3])
        with self._guard:
            found = self._histories.get(key)
            if found is not None:
                self._histories.move_to_end(key)
                return found
            last_tip = self._last_tips.get(dataset)
            known = self._histories.get((*dataset[:3], last_tip, dataset[3])) if last_tip else None
        found = None
        if known is not None and last_tip is not None:
            found = self._extended(record, tip, moves, last_tip, known)
        if found is None:
            chain = self._chain(record, tip, moves)
            at = {oid: i for i, (oid, _) in enumerate(chain)}
            walked, _ = self._walk(record.repo, chain, first=False)
            found = (chain, at, self._with_merged(record.repo, walked, at))
        with self._guard:
            self._histories[key] = found
            self._last_tips[dataset] = tip
            if len(self._last_tips) > 8 * _HISTORIES:  # (datasets gone, paths left)
                self._last_tips = {dataset: tip}
            while len(self._histories) > _HISTORIES:
                self._histories.popitem(last=False)
        return found

    def _extended(
        self,
        record: DatasetRecord,
        tip: bytes,
        moves: dict[bytes, str],
        known_tip: bytes,
        known: tuple[Chain, dict[bytes, int], list[Version]],
    ) -> tuple[Chain, dict[bytes, int], list[Version]] | None:
        """The history from `tip`: `known` (from `known_tip`) after the commits since, walked
        as `_history` walks them. None if `known_tip` is not within `_EXTEND_MOST` first
        parents of `tip`, if one of those is a merge, or if the dataset's path there is not
        the one `known` starts at.

        A merge lists the versions its other parents brought in, each once in the whole
        history (under the newest merge that brought it): one since the known tip may bring
        in again what a known merge listed, so after a merge the history is walked whole."""
        known_chain, _, known_versions = known
        prefix: Chain = []
        for oid, path, parents in self._first_parents(record, tip, moves):
            if oid == known_tip:
                break
            if len(prefix) >= _EXTEND_MOST or len(parents) > 1:
                return None
            prefix.append((oid, path))
        else:
            return None
        if not known_chain or path != known_chain[0][1]:
            return None
        chain = prefix + known_chain
        at = {oid: i for i, (oid, _) in enumerate(chain)}
        # Walked over the new commits only (each compared with its parent, the last with the
        # known tip); from the known tip on, the walk is the one `known` made. None of the new
        # commits is a merge, so none brings in versions of its own.
        walked, ended = self._walk(record.repo, chain, first=False, stop=len(prefix))
        return chain, at, walked if ended else walked + known_versions

    def versions(
        self, record: DatasetRecord, tip: bytes | None, environments: dict[str, bytes | None]
    ) -> Versions | None:
        """The dataset's versions from the default branch's `tip` and the environments' refs
        (name -> commit, in listing order); None if the branch does not hold the dataset."""
        repo = record.repo
        chain, at, history = self._history(record, tip) if tip else ([], {}, [])
        if not history:
            return None
        # An environment holding a commit from before this dataset's first version (say, of
        # a dataset that had its path then) holds none of its versions.
        oldest = max(at[v.commit] for v in history if v.commit in at)
        by_commit = {v.commit: v for v in history}
        deployed: dict[str, Version] = {}
        deployed_paths: dict[str, str] = {}
        for name, target in environments.items():
            joined = self._joined(repo, target, chain, at) if target else None
            path = joined[0][0][1] if joined else ""
            if joined is not None and target is not None:
                # An environment of deployment commits holds each dataset at the version it
                # was deployed from (docs/format.md §5): the walk starts there.
                source = source_of(
                    target,
                    path,
                    lambda oid: self.objects.commit(repo, oid),
                    lambda oid: self.objects.tree(repo, oid),
                )
                if source is None:
                    continue
                if source != target:
                    joined = self._joined(repo, source, chain, at)
            if joined is None or joined[1] > oldest:
                continue
            found, _ = self._walk(repo, joined[0], first=True)
            if found:
                deployed[name] = by_commit.get(found[0].commit, found[0])
                deployed_paths[name] = path
        notes = self.store.version_notes(record.id)
        extra = {v.commit: v for v in deployed.values() if v.commit not in by_commit}
        every = history + sorted(extra.values(), key=lambda v: v.info.time, reverse=True)
        # A version is hidden once deleted, unless a ref needs it (docs/humanloop.md).
        needed = {history[0].commit} | {v.commit for v in deployed.values()}
        visible = [
            v for v in every if v.commit in needed or not getattr(notes.get(v.commit), "hidden", 0)
        ]
        return Versions(
            history[0], history[-1], every, visible, deployed, notes, deployed_paths, len(history)
        )
