"""dsv for eval code: a repository that reads, logs, diffs and commits, and `load`.

The core `dsv.repo.Repository` knows objects, refs and revision names only; this face adds
the commands a notebook or an eval script wants, as calls into the command modules, without
printing. `dsv.Repository`, `dsv.load` and `dsv.iter_records` are these.

`load` reads a dataset version from the repository around a path, from a remote (into the
user cache, `dsv.remote.cache`) or as the project's `dsv.lock` pins it (docs/python.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec
import pyarrow

from dsv import diff as diff_module
from dsv import diffview, labels, ops
from dsv.canonical import decode_canonical
from dsv.config import Remote
from dsv.diff import DiffResult
from dsv.errors import BadInput, BadState
from dsv.fsutil import write_atomic
from dsv.labels import EnvInfo
from dsv.lockfile import LOCK_NAME, find_lock, read_lock
from dsv.objects import Dataset
from dsv.ops import LogEntry
from dsv.ops.history import no_dataset
from dsv.progress import ProgressFn
from dsv.remote import missing_from
from dsv.remote.cache import (
    cache_dir,
    fetch_version,
    iter_datapoints,
    open_cache,
    read_cached,
    resolve_remote_rev,
)
from dsv.remote.connection import open_remote
from dsv.repo import Repository as CoreRepository
from dsv.worktree import repo_path

__all__ = ["Into", "Repository", "Source", "iter_records", "load", "to_hf", "to_polars"]

Into = Literal["arrow", "pandas", "polars", "hf"]


class Repository(CoreRepository):
    """A repository with the commands eval code uses (`dsv.Repository`)."""

    def add(
        self,
        paths: list[str],
        *,
        key: tuple[str, ...] | None = None,
        progress: ProgressFn | None = None,
    ) -> list[str]:
        return ops.add(self, paths, key=key, progress=progress)

    def commit(
        self,
        message: str,
        *,
        all: bool = False,
        author: str | None = None,
        progress: ProgressFn | None = None,
    ) -> bytes:
        return ops.commit(self, message, all=all, author=author, progress=progress)

    def log(
        self,
        rev: str | None = None,
        *,
        max_count: int | None = None,
        paths: list[str] | None = None,
    ) -> Iterator[LogEntry]:
        return ops.log(self, rev, max_count=max_count, paths=paths)

    def read(self, rev: str, path: str) -> pyarrow.Table:
        """A dataset version as an Arrow table."""
        return ops.read_table(self, rev, path)

    def records(self, rev: str, path: str) -> Iterator[dict[str, Any]]:
        """A dataset version's records, decoded, in order."""
        return ops.iter_records(self, rev, path)

    def diff(self, a: str | None = None, b: str | None = None, **options: Any) -> DiffResult:
        return diff_module.diff(self, a, b, **options)

    def diff_records(
        self, a: str | None = None, b: str | None = None, **options: Any
    ) -> Iterator[dict[str, Any]]:
        """The changed datapoints of `diff` as dicts, the records `dsv diff --format jsonl`
        prints (path, status, key, old, new, fields), streamed."""
        for line in diffview.render_jsonl(self.diff(a, b, **options)):
            yield msgspec.json.decode(line)

    def environments(self) -> list[EnvInfo]:
        """This repository's environments: name, version, when and by whom deployed."""
        return labels.list_envs(self)

    def deploy(self, name: str, rev: str | None = None) -> bytes:
        """Point environment `name` at version `rev` (default HEAD); return that commit."""
        return labels.deploy(self, name, rev)[1]


class Source(msgspec.Struct, frozen=True):
    """Which dataset version a load reads: cited in the table's schema metadata."""

    path: str
    commit: bytes
    dataset_oid: bytes
    dataset: Dataset
    remote: str | None = None

    def metadata(self) -> dict[bytes, bytes]:
        meta = {
            b"dsv.path": self.path.encode(),
            b"dsv.commit": self.commit.hex().encode(),
            b"dsv.dataset": self.dataset_oid.hex().encode(),
            b"dsv.content": self.dataset.content.hex().encode(),
        }
        if self.remote is not None:
            meta[b"dsv.remote"] = self.remote.encode()
        return meta


def _split(spec: str) -> tuple[str, str]:
    path, at, rev = spec.rpartition("@")
    if not at:
        return spec, "HEAD"
    if not rev.strip():
        raise BadInput(f"{spec!r}: empty revision after '@'")
    return path, rev


def _split_remote(spec: str) -> tuple[str, str, str]:
    """'http(s)://HOST[:PORT]/OWNER/NAME/PATH[@REV]' as (repository URL, PATH, REV)."""
    location, rev = _split(spec)
    scheme, _, rest = location.partition("://")
    host, _, tail = rest.partition("/")
    parts = tail.split("/")
    if len(parts) < 3 or not all(parts):
        raise BadInput(
            f"{spec!r}: a remote load names OWNER/NAME/PATH after the host",
            hint="e.g. http://127.0.0.1:8080/acme/evals/qa.jsonl@v3, "
            "or remote=URL and the dataset path",
        )
    return f"{scheme}://{host}/{parts[0]}/{parts[1]}", "/".join(parts[2:]), rev


@contextlib.contextmanager
def _open_source(
    spec: str,
    *,
    cwd: str | os.PathLike[str],
    locked: bool,
    remote: str | None,
    key_env: str | None,
) -> Iterator[tuple[Source, Iterable[bytes]]]:
    """The version `spec` names and its datapoints (valid while the context is open)."""
    if spec.startswith(("http://", "https://")) and remote is None:
        remote, path, rev = _split_remote(spec)
        yield _remote_source(remote, key_env, path, rev, None)
        return
    if remote is not None:
        path, rev = _split(spec)
        yield _remote_source(remote.rstrip("/"), key_env, path, rev, None)
        return
    if locked:
        yield from _locked_source(spec, Path(os.fspath(cwd)))
        return
    path, rev = _split(spec)
    full = os.path.abspath(os.path.join(os.fspath(cwd), path))
    with Repository.open(os.path.dirname(full)) as repo:
        commit = repo.resolve(rev)
        name = repo_path(repo, full)
        dataset_oid = repo.tree_of(commit).get(name)
        if dataset_oid is None:
            raise no_dataset(name, rev, repo.tree_of(commit))
        dataset = repo.read_dataset(dataset_oid)
        yield Source(name, commit, dataset_oid, dataset), repo.read_datapoints(dataset)


def _remote_source(
    url: str, key_env: str | None, path: str, rev: str, commit: bytes | None
) -> tuple[Source, Iterable[bytes]]:
    store = open_cache()
    version = read_cached(store, commit, path) if commit is not None else None
    if version is None:
        with open_remote(Remote(url=url, key_env=key_env), url) as conn:
            if commit is None:
                commit = resolve_remote_rev(conn, rev)
            version = read_cached(store, commit, path) or fetch_version(conn, store, commit, path)
    source = Source(path, version.commit, version.dataset_oid, version.dataset, url)
    return source, iter_datapoints(store, version.dataset)


def _locked_source(spec: str, cwd: Path) -> Iterator[tuple[Source, Iterable[bytes]]]:
    lock_path = find_lock(cwd)
    if lock_path is None:
        raise BadState(
            f"no {LOCK_NAME} in {cwd} or above it", hint="pin a dataset first: dsv lock PATH@REV"
        )
    root = lock_path.parent
    if "@" in spec:
        raise BadInput(f"{spec!r}: a locked load takes the revision from {LOCK_NAME}, not '@'")
    name = Path(os.path.relpath(os.path.abspath(cwd / spec), root)).as_posix()
    pins = read_lock(lock_path).pins
    pin = pins.get(name)
    if pin is None:
        raise BadInput(
            f"{name}: not pinned in {lock_path}", hint=f"pin it with 'dsv lock {name}@REV'"
        )
    # After 'dsv sync' the project's own store holds the version: no network at all.
    if (root / ".dsv").is_dir():
        with Repository.open(root) as repo:
            if not missing_from(repo.store, [pin.commit]):
                dataset = repo.read_dataset(pin.dataset)
                yield (
                    Source(name, pin.commit, pin.dataset, dataset, pin.remote),
                    (repo.read_datapoints(dataset)),
                )
                return
    source, points = _remote_source(pin.remote, pin.key_env, name, pin.rev, pin.commit)
    if source.dataset_oid != pin.dataset:
        raise BadState(
            f"{LOCK_NAME}: {name}: version {pin.commit.hex()[:12]} holds dataset "
            f"{source.dataset_oid.hex()[:12]}, not the pinned {pin.dataset.hex()[:12]}",
            hint=f"the lock was edited by hand; 'dsv lock --update {name}' rewrites it",
        )
    yield source, points


def _table(source: Source, points: Iterable[bytes]) -> pyarrow.Table:
    """The version's table, kept in the user cache by dataset id: a version read once is
    read again by mapping its Arrow file."""
    import pyarrow as pa

    path = cache_dir() / "tables" / f"{source.dataset_oid.hex()}.arrow"
    table: pyarrow.Table | None = None
    try:
        with pa.memory_map(str(path)) as mapped:
            table = pa.ipc.open_file(mapped).read_all()
    except (OSError, pa.ArrowInvalid):
        table = None
    if table is None:
        table = ops.dataset_table(source.dataset, points, source.path)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # only a cache: a full disk still loads
            write_atomic(path, sink.getvalue().to_pybytes())
    meta = dict(table.schema.metadata or {})
    meta.update(source.metadata())
    return table.replace_schema_metadata(meta)


def to_polars(table: pyarrow.Table) -> Any:
    """A polars DataFrame of a loaded table (polars is not a dsv dependency)."""
    try:
        import polars
    except ImportError as exc:
        raise BadState("polars is not installed", hint="pip install polars") from exc
    return polars.from_arrow(table)


def to_hf(table: pyarrow.Table) -> Any:
    """A Hugging Face `datasets.Dataset` of a loaded table (`datasets` is not a dsv dependency)."""
    try:
        import datasets
    except ImportError as exc:
        raise BadState(
            "the Hugging Face datasets package is not installed", hint="pip install datasets"
        ) from exc
    return datasets.Dataset(table)


def load(
    spec: str,
    *,
    cwd: str | os.PathLike[str] = ".",
    locked: bool = False,
    remote: str | None = None,
    key_env: str | None = None,
    into: Into = "arrow",
) -> Any:
    """A dataset version as an Arrow table (or `into` pandas, polars, hf): 'PATH@REV' in the
    repository around PATH, 'http://HOST/OWNER/NAME/PATH@REV' (or `remote=URL`) from a remote,
    or PATH as `dsv.lock` pins it (`locked`). REV defaults to HEAD. The schema metadata names
    the version: `dsv.path`, `dsv.commit`, `dsv.dataset`, `dsv.content` (and `dsv.remote`)."""
    with _open_source(spec, cwd=cwd, locked=locked, remote=remote, key_env=key_env) as (
        source,
        points,
    ):
        table = _table(source, points)
    if into == "arrow":
        return table
    if into == "pandas":
        frame = table.to_pandas()
        frame.attrs["dsv"] = {k.decode(): v.decode() for k, v in source.metadata().items()}
        return frame
    if into == "polars":
        return to_polars(table)
    if into == "hf":
        return to_hf(table)
    raise BadInput(f"into={into!r}: choose arrow, pandas, polars or hf")


def iter_records(
    spec: str,
    *,
    cwd: str | os.PathLike[str] = ".",
    locked: bool = False,
    remote: str | None = None,
    key_env: str | None = None,
) -> Iterator[dict[str, Any]]:
    """A dataset version's records as dicts, in order, one at a time (any size): the same
    `spec` forms as `load`."""
    with _open_source(spec, cwd=cwd, locked=locked, remote=remote, key_env=key_env) as (
        _,
        points,
    ):
        for body in points:
            yield decode_canonical(body)
