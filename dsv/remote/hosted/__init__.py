"""Hosted platforms as remotes: `KIND+https://HOST/…` URLs, the sync state a remote keeps, and
what every platform module offers the sync engine (docs/remotes.md).

- `dsv.remote.hosted.http`: requests with retries and backoff, byte counts, error bodies;
- one module a platform (`humanloop`, `orq`, `tensorzero`, `overmind`): datasets, versions,
  datapoints and record translation; `mutable` gives versions to platforms that change
  datasets in place and list none (orq.ai, TensorZero);
- `dsv.remote.hosted.engine`: push, fetch, pull and clone over any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import msgspec

from dsv.errors import BadInput, BadState
from dsv.fsutil import write_atomic
from dsv.repo import Repository

__all__ = [
    "KINDS",
    "Change",
    "DatasetState",
    "HostedUrl",
    "Platform",
    "PlatformDataset",
    "PlatformVersion",
    "SyncState",
    "VersionLink",
    "is_hosted",
    "json_kind",
    "parse_hosted_url",
    "read_state",
    "write_state",
]

KINDS = ("humanloop", "orq", "tensorzero", "overmind")


class HostedUrl(msgspec.Struct, frozen=True):
    """`KIND+http(s)://HOST[:PORT][/PREFIX]`: the platform kind and its API base URL."""

    kind: str
    base: str


def is_hosted(url: str) -> bool:
    scheme = urlsplit(url.strip()).scheme
    return "+" in scheme


def parse_hosted_url(url: str) -> HostedUrl:
    parts = urlsplit(url.strip())
    kind, _, transport = parts.scheme.partition("+")
    if kind not in KINDS or transport not in ("http", "https") or not parts.netloc:
        raise BadInput(
            f"invalid remote URL {url!r}",
            hint=f"a hosted platform's URL is KIND+https://HOST/…, KIND one of {', '.join(KINDS)}"
            " (e.g. humanloop+https://api.humanloop.com/v5)",
        )
    if parts.query or parts.fragment:
        raise BadInput(f"invalid remote URL {url!r}: no query or fragment is allowed")
    return HostedUrl(kind, f"{transport}://{parts.netloc}{parts.path.rstrip('/')}")


def json_kind(value: Any) -> str:
    """What a JSON value is, for messages: `a number`, `an object`…"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# -- what a platform module offers --------------------------------------------------------------


class PlatformDataset(msgspec.Struct, frozen=True):
    id: str
    path: str


class PlatformVersion(msgspec.Struct, frozen=True):
    """One version of a platform dataset; `time` in unix seconds (0: unknown)."""

    id: str
    time: int = 0
    author: str = ""
    message: str = ""


class Change(msgspec.Struct, frozen=True):
    """What one push writes: the whole version (`set`) or only records added or removed;
    `full` is the whole new version, for platforms that work out the change themselves."""

    action: Literal["set", "add", "remove"]
    records: list[dict[str, Any]]
    message: str
    full: list[dict[str, Any]] = []


class Platform(Protocol):
    """A hosted platform's dataset API, as the sync engine uses it."""

    kind: str
    title: str
    # which fields a datapoint holds, for messages and docs
    carries: str
    # Does the platform keep a dataset's datapoints in the order written? If not, a fetched
    # version keeps the order the branch had, new datapoints last.
    ordered: bool

    def find_dataset(self, name: str) -> PlatformDataset | None:
        """The dataset with this path (or id), None if the platform has none."""
        ...

    def default_path(self, file: str, prefix: str | None) -> str: ...

    def versions(self, dataset: PlatformDataset) -> list[PlatformVersion]:
        """Every version, oldest first."""
        ...

    def datapoints(self, dataset: PlatformDataset, version: str) -> Iterator[dict[str, Any]]:
        """The version's datapoints as the platform returns them, in its order."""
        ...

    def write(
        self, dataset: PlatformDataset | None, path: str, change: Change
    ) -> tuple[PlatformDataset, str]:
        """Apply `change` (to the latest version; `dataset` None: a new dataset at `path`);
        return the dataset and the id of the version it now has as latest."""
        ...

    def to_platform(
        self, record: dict[str, Any], where: str, drop: frozenset[str]
    ) -> dict[str, Any]:
        """The platform's datapoint for a dsv record; BadInput naming `where` and the field
        when the platform has no place for it (fields in `drop` are left out instead)."""
        ...

    def from_platform(self, datapoint: dict[str, Any]) -> dict[str, Any]:
        """The dsv record of a platform datapoint."""
        ...

    def environments(self, dataset: PlatformDataset) -> dict[str, str | None] | None:
        """Environment -> the version deployed there; None when the platform has none."""
        ...

    def deploy(self, dataset: PlatformDataset, environment: str, version: str) -> None: ...

    @property
    def bytes_sent(self) -> int: ...

    @property
    def bytes_received(self) -> int: ...

    def close(self) -> None: ...


# -- the sync state ----------------------------------------------------------------------------


class VersionLink(msgspec.Struct, frozen=True):
    """A platform version and the local commit and dataset it is."""

    commit: str
    dataset: str


class DatasetState(msgspec.Struct):
    """One mapped dataset: the platform's id and path, the version last synced, and every
    platform version known here with the commit it is (so fetch never brings back a push)."""

    id: str
    path: str
    synced: str | None = None
    versions: dict[str, VersionLink] = {}
    # The local dataset a push was writing when it stopped: a platform whose writes take
    # several requests may hold part of it, which the next push of it completes.
    pending: str | None = None


class SyncState(msgspec.Struct):
    """`.dsv/hosted/REMOTE.json`: the branch a hosted remote tracks and its datasets' state."""

    branch: str = "main"
    datasets: dict[str, DatasetState] = {}
    # file -> the local dataset a push was creating on the platform when it stopped
    creating: dict[str, str] = {}


def _state_path(repo: Repository, remote: str) -> Any:
    return repo.dsv_dir / "hosted" / f"{remote}.json"


def read_state(repo: Repository, remote: str) -> SyncState:
    path = _state_path(repo, remote)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return SyncState()
    try:
        return msgspec.json.decode(data, type=SyncState)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadState(
            f"{path}: damaged sync state ({exc})",
            hint=f"remove it, then 'dsv fetch {remote}': the platform's versions are linked again",
        ) from exc


def write_state(repo: Repository, remote: str, state: SyncState) -> None:
    path = _state_path(repo, remote)
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, msgspec.json.format(msgspec.json.encode(state), indent=2) + b"\n")
