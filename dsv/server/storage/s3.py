"""The shared blob store: each repository's packs and their indexes as S3 objects.

`s3://BUCKET/PREFIX` holds `PREFIX/OWNER/NAME/pack/P.pack` and `P.idx`, written pack first and
index last: as on disk (format.md §4), a pack counts only once its index exists, and a pack is
reachable only once a ref moves to what it holds, so an upload cut short never matters.
Objects never change, so every server keeps the packs it has read in a local cache (a dsv
object store per repository) and never invalidates it; a lookup that misses lists the
repository's indexes again and fetches the packs it does not have.

Client: obstore (Rust's object_store). Against SeaweedFS here it stored and fetched 4 KiB
objects about twice as fast as boto3 with a seventh of the CPU, imports in 4 ms against
boto3's 120-180 ms, and is as fast on 8 MiB packs (docs/deploy.md, Settings).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from dsv.errors import BadInput, CorruptObject
from dsv.fsutil import fsync_dir
from dsv.objects import Kind
from dsv.pack import PreparedPack
from dsv.server.storage import StorageError, check_repo_name
from dsv.server.storage.local import LocalBlobStore

__all__ = ["S3BlobStore", "parse_s3_url"]

_SEEN = "s3-packs"


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://BUCKET/PREFIX`; the prefix may be empty."""
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise BadInput(
            f"invalid object store URL {url!r}", hint="use s3://BUCKET or s3://BUCKET/PREFIX"
        )
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


class S3BlobStore:
    """Packs in an S3 bucket under a prefix, read through a local cache of whole packs.

    Credentials, region and endpoint come from the environment as AWS tools read them
    (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, and
    `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint such as a test's SeaweedFS).
    """

    def __init__(self, url: str, cache: Path, *, retry_seconds: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_s3_url(url)
        self.cache = LocalBlobStore(cache)
        try:
            self.store = S3Store(
                self.bucket,
                prefix=self.prefix or None,
                client_options={
                    "timeout": "60s",
                    "connect_timeout": "5s",
                    # Explicit client options replace the environment's, so this one is read here.
                    "allow_http": os.environ.get("AWS_ALLOW_HTTP", "").lower() == "true",
                },
                retry_config={
                    "max_retries": 4,
                    "retry_timeout": datetime.timedelta(seconds=retry_seconds),
                    "backoff": {
                        "init_backoff": datetime.timedelta(milliseconds=100),
                        "max_backoff": datetime.timedelta(seconds=2),
                        "base": 2,
                    },
                },
            )
        except BaseError as exc:
            raise StorageError(f"cannot open {self.url}: {_reason(exc)}") from exc
        # Downloads cut short by a crash of this server (its cache is its own).
        for stale in cache.glob("repos/*/*/objects/pack/.fetch-*"):
            with contextlib.suppress(OSError):
                stale.unlink()
        self._guard = threading.Lock()
        self._syncing: dict[str, threading.Lock] = {}
        self._seen: dict[str, set[str]] = {}
        # Packs fetched per repository so far: a miss that waited on another thread's sync
        # must not take "nothing new" for "nothing fetched since I looked".
        self._fetched: dict[str, int] = {}

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (BaseError, OSError) as exc:
            raise StorageError(
                f"object store {self.url}: cannot {what}: {_reason(exc)}",
                hint="check that the S3 endpoint is up and the AWS_* settings; "
                "the write did not happen",
            ) from exc

    def _pack_dir(self, repo: str) -> str:
        return f"{check_repo_name(repo)}/pack"

    def _cache_dir(self, repo: str) -> Path:
        owner, name = check_repo_name(repo).split("/")
        return self.cache.root / "repos" / owner / name

    def _seen_names(self, repo: str) -> set[str]:
        """Packs of S3 already in the cache; the cache may have merged them since."""
        seen = self._seen.get(repo)
        if seen is None:
            try:
                text = (self._cache_dir(repo) / _SEEN).read_text()
            except FileNotFoundError:
                text = ""
            seen = self._seen[repo] = set(text.split())
        return seen

    def _note_seen(self, repo: str, name: str) -> None:
        self._seen_names(repo).add(name)
        path = self._cache_dir(repo) / _SEEN
        # Losing a line only costs fetching that pack again: no fsync needed.
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as out:
            out.write(name + "\n")

    def _gained(self, repo: str) -> None:
        with self._guard:
            self._fetched[repo] = self._fetched.get(repo, 0) + 1

    def _sync(self, repo: str, *, since: int) -> bool:
        """Fetch the packs of `repo` that S3 has and the cache lacks; has the cache gained
        any since the count `since` was read?"""
        with self._guard:
            lock = self._syncing.setdefault(repo, threading.Lock())
        with lock, self._errors(f"list the packs of {repo}"):
            listed = obstore.list(self.store, self._pack_dir(repo) + "/").collect()
            seen = self._seen_names(repo)
            names = {
                item["path"].rsplit("/", 1)[1][:-4]
                for item in listed
                if item["path"].endswith(".idx")
            }
            new = sorted(names - seen)
            if not new:
                return self._fetched.get(repo, 0) != since
            pack_dir = self._cache_dir(repo) / "objects" / "pack"
            pack_dir.mkdir(parents=True, exist_ok=True)
            for name in new:
                # Pack before index, each complete before its rename: as a local pack is.
                for ext in (".pack", ".idx"):
                    tmp = pack_dir / f".fetch-{name}{ext}"
                    data = obstore.get(self.store, f"{self._pack_dir(repo)}/{name}{ext}")
                    with open(tmp, "wb") as out:
                        for chunk in data.stream():
                            out.write(chunk)
                    os.replace(tmp, pack_dir / f"{name}{ext}")
                self._note_seen(repo, name)
                self._gained(repo)
            return True

    def missing(self, repo: str, oids: Iterable[bytes]) -> set[bytes]:
        since = self._fetched.get(repo, 0)
        wanted = self.cache.missing(repo, oids)
        if wanted and self._sync(repo, since=since):
            return self.cache.missing(repo, wanted)
        return wanted

    def read(self, repo: str, kind: Kind, oids: Sequence[bytes]) -> list[bytes]:
        since = self._fetched.get(repo, 0)
        try:
            return self.cache.read(repo, kind, oids)
        except CorruptObject:
            if not self._sync(repo, since=since):
                raise
        return self.cache.read(repo, kind, oids)

    def put_pack(self, repo: str, pack: PreparedPack) -> None:
        where = self._pack_dir(repo)
        try:
            with self._errors(f"store a pack of {repo}"):
                # The index last: a pack without one is invisible to every server.
                obstore.put(self.store, f"{where}/{pack.name}.pack", Path(pack.pack_tmp))
                obstore.put(self.store, f"{where}/{pack.name}.idx", Path(pack.idx_tmp))
        except BaseException:
            pack.discard()
            raise
        self.cache.put_pack(repo, pack)
        self._note_seen(repo, pack.name)
        self._gained(repo)
        fsync_dir(self._cache_dir(repo))

    def health(self) -> None:
        # obstore raises its NotFoundError as a FileNotFoundError.
        with self._errors("answer a health check"), contextlib.suppress(FileNotFoundError):
            # Any answer about a key shows the bucket is reachable with these credentials.
            obstore.head(self.store, ".dsv-health")

    def close(self) -> None:
        self.cache.close()


def _reason(exc: BaseException) -> str:
    """The first line of an object_store error: the rest is a debug dump."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
