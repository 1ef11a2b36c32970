"""Platforms whose datasets are changed in place, a datapoint at a time, with no version
history in their API (orq.ai, TensorZero): the sync engine's versions are made here.

A "version" of such a dataset is its content: its id is `snap_` + a hash of its datapoints
(as dsv records, in any order), so the same content is the same version whoever wrote it.
A write lists what the platform holds, then creates what is missing and deletes what is too
many; after an interruption it starts again from a fresh listing, so no datapoint is made
twice (docs/remotes.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import blake3

from dsv.canonical import encode_canonical
from dsv.errors import RemoteError
from dsv.remote.hosted import Change, PlatformDataset, PlatformVersion
from dsv.remote.hosted.http import HostedHttp, Interrupted

__all__ = ["MutableDatasets", "snapshot_id"]

_ROUNDS = 4


def snapshot_id(keys: list[bytes]) -> str:
    """The version id of a dataset holding the records whose canonical bytes are `keys`."""
    digest = blake3.blake3(b"snapshot\x00")
    for key in sorted(keys):
        digest.update(len(key).to_bytes(8, "big") + key)
    return "snap_" + digest.hexdigest()[:32]


class MutableDatasets(ABC):
    """The engine's view of a platform of in-place datasets; a subclass lists, creates and
    deletes datapoints and creates datasets."""

    title = ""
    ordered = False
    http: HostedHttp

    # -- what a platform module gives ------------------------------------------------------

    @abstractmethod
    def list_points(self, dataset: PlatformDataset) -> Iterator[dict[str, Any]]:
        """Every datapoint the dataset holds now."""

    @abstractmethod
    def point_id(self, point: dict[str, Any]) -> str:
        """The platform's id of a listed datapoint."""

    @abstractmethod
    def create_points(self, dataset: PlatformDataset, points: list[dict[str, Any]]) -> None:
        """Add `points` (the platform's datapoints, as to_platform made them)."""

    @abstractmethod
    def delete_points(self, dataset: PlatformDataset, ids: list[str]) -> None:
        """Delete the datapoints `ids`."""

    @abstractmethod
    def create_dataset(self, path: str, first: list[dict[str, Any]]) -> PlatformDataset:
        """A new dataset at `path`; platforms that make one by its first datapoints are given
        them (and return with them written)."""

    @abstractmethod
    def from_platform(self, datapoint: dict[str, Any]) -> dict[str, Any]:
        """The dsv record of a platform datapoint."""

    # -- the engine's view -------------------------------------------------------------------

    def _key(self, point: dict[str, Any]) -> bytes:
        return encode_canonical(self.from_platform(point))

    def _snapshot(self, dataset: PlatformDataset) -> tuple[str, list[dict[str, Any]]]:
        points = list(self.list_points(dataset))
        return snapshot_id([self._key(p) for p in points]), points

    _last: tuple[str, str, list[dict[str, Any]]] | None = None

    def versions(self, dataset: PlatformDataset) -> list[PlatformVersion]:
        version, points = self._snapshot(dataset)
        self._last = (dataset.id, version, points)
        return [PlatformVersion(version)]

    def datapoints(self, dataset: PlatformDataset, version: str) -> Iterator[dict[str, Any]]:
        last = self._last
        if last is not None and last[:2] == (dataset.id, version):
            return iter(last[2])
        current, points = self._snapshot(dataset)
        if current != version:
            raise RemoteError(
                f"{self.http.name}: {dataset.path} changed while it was read",
                hint="run the command again",
            )
        return iter(points)

    def environments(self, dataset: PlatformDataset) -> dict[str, str | None] | None:
        return None

    def deploy(self, dataset: PlatformDataset, environment: str, version: str) -> None:
        raise RemoteError(f"{self.title} has no environments")  # pragma: no cover

    def write(
        self, dataset: PlatformDataset | None, path: str, change: Change
    ) -> tuple[PlatformDataset, str]:
        wanted = [self._key(p) for p in change.full]
        if dataset is None:
            dataset = self.create_dataset(path, change.full)
        # The listing this push just compared is the first round's: a write follows its
        # check at once, and any round after an interruption lists again.
        last = self._last
        listed = last[2] if last is not None and last[0] == dataset.id else None
        for _ in range(_ROUNDS):
            try:
                current = listed if listed is not None else list(self.list_points(dataset))
                listed = None
                left: dict[bytes, int] = {}
                for key in wanted:
                    left[key] = left.get(key, 0) + 1
                extra: list[str] = []
                for point in current:
                    key = self._key(point)
                    if left.get(key):
                        left[key] -= 1
                    else:
                        extra.append(self.point_id(point))
                missing: list[dict[str, Any]] = []
                for key, point in zip(wanted, change.full, strict=True):
                    if left.get(key):
                        left[key] -= 1
                        missing.append(point)
                if missing:
                    self.create_points(dataset, missing)
                if extra:
                    self.delete_points(dataset, extra)
                self._last = None
                return dataset, snapshot_id(wanted)
            except Interrupted:
                continue  # maybe applied: what the platform holds now is listed again
        raise RemoteError(
            f"{self.http.name}: writing {dataset.path} failed {_ROUNDS} times",
            hint="run the command again: it resumes where it stopped",
        )
