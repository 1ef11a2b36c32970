"""The HTTP side of a remote: one connection to a dsv server, every request and answer checked.

The wire format is docs/protocol.md; what to send and what to do with the answers is
dsv.remote.client's.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import httpx
import msgspec

from dsv.config import Remote
from dsv.errors import CorruptObject, RemoteError
from dsv.fsutil import note_temp
from dsv.objects import (
    Kind,
    hash_object,
)
from dsv.pack import PreparedPack
from dsv.packindex import BlockCheck, index_pack
from dsv.protocol import (
    PACK_MEDIA_TYPE,
    SUPPORTED_VERSIONS,
    CommitsRequest,
    ErrorReply,
    IdsRequest,
    Info,
    MissingReply,
    PackReply,
    RefsReply,
    RefsRequest,
    RefUpdate,
    iter_pack,
    kind_name,
)
from dsv.remote import get_remote, parse_url
from dsv.repo import Repository
from dsv.text import plural
from dsv.version import __version__

__all__ = ["Connection", "RemoteRefused", "connect", "open_remote"]

_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=300.0, pool=10.0)
# The most a version-2 answer may write to disk: a server is not trusted with the disk.
MAX_ANSWER_BYTES = 1 << 30


class RemoteRefused(RemoteError):
    """The server answered with an error: its HTTP status and stable code are kept."""

    def __init__(self, message: str, hint: str | None, *, status: int, code: str) -> None:
        super().__init__(message, hint)
        self.status = status
        self.code = code


# -- HTTP ----------------------------------------------------------------------------------------


class _Counted(httpx.SyncByteStream):
    """A byte stream that adds the size of every chunk to a counter as it passes."""

    def __init__(self, inner: httpx.SyncByteStream, add: Callable[[int], None]) -> None:
        self._inner = inner
        self._add = add

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._add(len(chunk))
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _CountingTransport(httpx.BaseTransport):
    """Counts the bytes of every request and response (start line, headers and body)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport(retries=2)
        self.sent = 0
        self.received = 0

    def _add_sent(self, n: int) -> None:
        self.sent += n

    def _add_received(self, n: int) -> None:
        self.received += n

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += len(request.method) + len(request.url.raw_path) + 12
        self.sent += sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
        assert isinstance(request.stream, httpx.SyncByteStream)
        request.stream = _Counted(request.stream, self._add_sent)
        response = self._inner.handle_request(request)
        self.received += 17 + sum(len(k) + len(v) + 4 for k, v in response.headers.raw)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _Counted(response.stream, self._add_received)
        return response

    def close(self) -> None:
        self._inner.close()


class Connection:
    """One remote repository over HTTP; the protocol version is negotiated on open."""

    def __init__(self, url: str, *, key: str | None, key_source: str, name: str) -> None:
        self.remote = parse_url(url)
        self.name = name
        self.key_source = key_source
        self.has_key = bool(key)
        headers = {"User-Agent": f"dsv/{__version__}"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._transport = _CountingTransport()
        self._http = httpx.Client(
            base_url=self.remote.base, headers=headers, timeout=_TIMEOUT, transport=self._transport
        )
        self._prefix = f"/v1/{self.remote.repo}"
        self.version = 1
        # Where version-2 answers are written before they are checked; a fetch sets its
        # repository's pack directory, so that received packs are kept by a rename.
        self.scratch = Path(tempfile.gettempdir())
        try:
            self.info = self._negotiate()
        except BaseException:
            self._http.close()
            raise

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def bytes_sent(self) -> int:
        return self._transport.sent

    @property
    def bytes_received(self) -> int:
        return self._transport.received

    # -- plumbing --------------------------------------------------------------------------

    def _where(self) -> str:
        return f"remote {self.name!r} ({self.remote.url})"

    def _translate(self, exc: httpx.HTTPError) -> RemoteError:
        if isinstance(exc, httpx.ConnectError):
            return RemoteError(
                f"cannot reach {self._where()}: {exc}",
                hint="is 'dsv serve' running there? 'dsv remote list' shows the URL",
            )
        if isinstance(exc, httpx.TimeoutException):
            return RemoteError(f"{self._where()} did not answer in time ({type(exc).__name__})")
        return RemoteError(
            f"the connection to {self._where()} failed: {exc or type(exc).__name__}",
            hint="run the command again: it resumes where the transfer stopped",
        )

    def _fail(self, response: httpx.Response) -> NoReturn:
        try:
            detail = msgspec.json.decode(response.read(), type=ErrorReply).error
        except (msgspec.DecodeError, httpx.HTTPError):
            raise RemoteRefused(
                f"{self._where()} answered HTTP {response.status_code} {response.reason_phrase}",
                None,
                status=response.status_code,
                code=f"http_{response.status_code}",
            ) from None
        hint = detail.hint
        if detail.code == "unauthenticated" or (detail.code == "bad_key" and not self.has_key):
            hint = f"set {self.key_source} to an API key made with 'dsv keys create' on the server"
        elif detail.code == "bad_key":
            hint = f"the key in {self.key_source} was refused; ask for a new one"
        raise RemoteRefused(
            f"{self.name}: {detail.message} [request {detail.request_id}]",
            hint,
            status=response.status_code,
            code=detail.code,
        )

    def _call(self, method: str, path: str, *, body: Any = None, reply: type[Any]) -> Any:
        content = msgspec.json.encode(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        try:
            response = self._http.request(method, path, content=content, headers=headers)
            if response.status_code != 200:
                self._fail(response)
            return msgspec.json.decode(response.content, type=reply)
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        except msgspec.DecodeError as exc:
            raise RemoteError(f"{self._where()} sent a malformed answer: {exc}") from exc

    def _negotiate(self) -> Info:
        info: Info = self._call("GET", f"/v1/{self.remote.repo}/info", reply=Info)
        common = set(info.versions) & set(SUPPORTED_VERSIONS)
        if not common:
            raise RemoteError(
                f"{self._where()} speaks protocol version(s) "
                f"{', '.join(map(str, info.versions))}; this dsv speaks "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
                hint="use a dsv release that speaks one of the server's versions",
            )
        self.version = max(common)
        self._prefix = f"/v{self.version}/{self.remote.repo}"
        return info

    def _pack_stream(self, path: str, body: Any) -> Iterator[tuple[Kind, bytes]]:
        try:
            with self._http.stream(
                "POST",
                self._prefix + path,
                content=msgspec.json.encode(body),
                headers={"Content-Type": "application/json", "Accept": PACK_MEDIA_TYPE},
            ) as response:
                if response.status_code != 200:
                    self._fail(response)
                yield from iter_pack(response.iter_raw())
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        except CorruptObject as exc:
            raise RemoteError(f"{self._where()} sent a damaged pack: {exc.message}") from exc

    # -- the protocol's requests -----------------------------------------------------------

    def _batches(self, oids: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
        step = max(1, self.info.limits.max_ids)
        for start in range(0, len(oids), step):
            yield oids[start : start + step]

    def missing(self, kind: Kind, oids: Sequence[bytes]) -> set[bytes]:
        """Which of `oids` the remote lacks, asked in batches of the server's limit."""
        absent: set[bytes] = set()
        if not self.info.exists:
            return set(oids)
        for batch in self._batches(oids):
            request = IdsRequest(kind_name(kind), tuple(o.hex() for o in batch))
            reply: MissingReply = self._call(
                "POST", self._prefix + "/missing", body=request, reply=MissingReply
            )
            try:
                absent.update(batch[i] for i in reply.missing)
            except IndexError:
                raise RemoteError(f"{self._where()} answered about ids it was not asked") from None
        return absent

    def _pack_file(self, path: str, body: Any, check: BlockCheck) -> PreparedPack | None:
        """A version-2 answer written to a file in `scratch`, then indexed and checked whole
        (`check` sees every block's objects); the pack, ready to publish or discard."""
        return self._indexed(self._download(path, body), check)

    def _download(self, path: str, body: Any) -> Path:
        """A version-2 answer, written to a file in `scratch` (at most MAX_ANSWER_BYTES)."""
        tmp = self.scratch / f".tmp-{os.getpid()}-{os.urandom(4).hex()}.pack"
        note_temp(tmp)
        encoded = [msgspec.json.encode(body)]
        size = len(encoded[0])

        def once() -> Iterator[bytes]:
            # httpx keeps a finished request in a reference cycle with its response, which
            # only the garbage collector frees: a fetch's request bodies (7 MB for 100,000
            # ids) piled up, 63 MB at a 1M clone's peak. Given as a stream, the body is let
            # go once sent; the explicit length keeps the request unchunked.
            yield encoded.pop()

        try:
            with self._http.stream(
                "POST",
                self._prefix + path,
                content=once(),
                headers={
                    "Content-Type": "application/json",
                    "Content-Length": str(size),
                    "Accept": PACK_MEDIA_TYPE,
                },
            ) as response:
                if response.status_code != 200:
                    self._fail(response)
                written = 0
                with open(tmp, "wb") as out:
                    for chunk in response.iter_raw():
                        written += len(chunk)
                        if written > MAX_ANSWER_BYTES:
                            raise RemoteError(
                                f"{self._where()} sent an answer of more than "
                                f"{MAX_ANSWER_BYTES >> 20} MiB"
                            )
                        out.write(chunk)
            return tmp
        except httpx.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            raise self._translate(exc) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _indexed(self, tmp: Path, check: BlockCheck) -> PreparedPack | None:
        """The downloaded pack `tmp`, checked whole and indexed (None, and gone, if empty)."""
        try:
            prepared = index_pack(tmp, check=check)
            if prepared is None:
                tmp.unlink(missing_ok=True)
            return prepared
        except CorruptObject as exc:
            tmp.unlink(missing_ok=True)
            raise RemoteError(f"{self._where()} sent a damaged pack: {exc.message}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _asked(
        self, kind: Kind, batch: Sequence[bytes]
    ) -> tuple[Callable[[bytes, list[bytes]], list[bool] | None], _Asked]:
        """A check that refuses an object of another kind, and more objects not asked for
        (or sent twice) than were asked, which only datapoints may come with (a stored block
        sent whole, protocol.md §5), and says which of a block's objects were asked (None:
        all); and the ids still to come (none once the answer was whole)."""
        asked = _Asked(batch)
        room = len(batch) if kind == Kind.DATAPOINT else 0
        extra = 0

        def check(kinds: bytes, oids: list[bytes]) -> list[bool] | None:
            nonlocal extra
            if kinds.count(kind) != len(kinds):
                raise RemoteError(f"{self._where()} sent an object that was not asked for")
            flags = asked.take(oids)
            if flags is not None:
                extra += flags.count(False)
                if extra > room:
                    raise RemoteError(f"{self._where()} sent an object that was not asked for")
            return flags

        return check, asked

    def _checked(self, kind: Kind, batch: Sequence[bytes]) -> tuple[BlockCheck, _Asked]:
        """`_asked`'s check, as a pack's indexing calls it."""
        check, asked = self._asked(kind, batch)

        def block_check(kinds: bytes, oids: list[bytes], bodies: list[bytes]) -> None:
            check(kinds, oids)

        return block_check, asked

    def _collect(
        self, kind: Kind, batch: Sequence[bytes]
    ) -> tuple[BlockCheck, _Asked, list[tuple[bytes, bytes]]]:
        """`_asked`'s check, also keeping (oid, body) of each asked object once: a whole
        block may bring others along, which are dropped."""
        check, asked = self._asked(kind, batch)
        got: list[tuple[bytes, bytes]] = []

        def keep(kinds: bytes, ids: list[bytes], bodies: list[bytes]) -> None:
            flags = check(kinds, ids)
            pairs = zip(ids, bodies, strict=True)
            if flags is None:
                got.extend(pairs)  # each asked, and taken off what is still to come: once
                return
            got.extend(pair for pair, wanted in zip(pairs, flags, strict=True) if wanted)

        return keep, asked, got

    def _left_out(self, asked: _Asked | set[bytes]) -> None:
        if asked:
            left = plural(len(asked), "object")
            raise RemoteError(f"{self._where()} left out {left} asked for")

    def objects(self, kind: Kind, oids: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """(oid, body) of each of `oids`, each re-hashed; anything unasked or absent fails."""
        for batch in self._batches(oids):
            request = IdsRequest(kind_name(kind), tuple(o.hex() for o in batch))
            if self.version >= 2:
                keep, asked, got = self._collect(kind, batch)
                prepared = self._pack_file("/objects", request, keep)
                if prepared is not None:
                    prepared.discard()
                self._left_out(asked)
                yield from got
                continue
            expected = set(batch)
            for kind_got, body in self._pack_stream("/objects", request):
                oid = hash_object(kind_got, body)
                if kind_got != kind or oid not in expected:
                    raise RemoteError(f"{self._where()} sent an object that was not asked for")
                expected.discard(oid)
                yield oid, body
            self._left_out(expected)

    def object_packs(
        self, kind: Kind, oids: Sequence[bytes]
    ) -> Iterator[tuple[PreparedPack | None, int]]:
        """Packs of `oids` as the remote sent them (version 2), one per batch, each checked
        whole and made in `scratch`; the caller publishes them. With the count of objects."""
        if self.version < 2:
            raise RemoteError(f"{self._where()} sends no whole packs (protocol version 1)")
        step = max(1, self.info.limits.max_ids)
        # Each batch is sliced from `oids` when it is needed: `oids` may hold its ids packed.
        starts = range(0, len(oids), step)
        # The next answer downloads (and the server makes it) while this one is checked.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dsv-fetch") as pool:

            def start(n: int) -> concurrent.futures.Future[Path] | None:
                if n >= len(starts):
                    return None
                batch = oids[starts[n] : starts[n] + step]
                request = IdsRequest(kind_name(kind), tuple(o.hex() for o in batch))
                return pool.submit(self._download, "/objects", request)

            coming = start(0)
            try:
                for n, at in enumerate(starts):
                    batch = oids[at : at + step]
                    assert coming is not None
                    tmp = coming.result()
                    coming = start(n + 1)
                    check, asked = self._checked(kind, batch)
                    prepared = self._indexed(tmp, check)
                    try:
                        self._left_out(asked)
                    except BaseException:
                        if prepared is not None:
                            prepared.discard()
                        raise
                    yield prepared, len(batch)
            finally:
                if coming is not None:
                    # Stopped early: the download under way is not wanted.
                    with contextlib.suppress(BaseException):
                        coming.result().unlink(missing_ok=True)

    def commits(
        self, wants: Sequence[bytes], haves: Sequence[bytes], *, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Commits reachable from `wants`, not past `haves`, at most `limit` (default: the
        server's `max_ids`); each re-hashed."""
        most = self.info.limits.max_ids
        room = max(0, most - len(wants))
        request = CommitsRequest(
            tuple(o.hex() for o in wants[:most]),
            tuple(o.hex() for o in haves[:room]),
            min(limit or most, most),
        )
        if self.version >= 2:
            got: list[tuple[bytes, bytes]] = []

            def keep(kinds: bytes, ids: list[bytes], bodies: list[bytes]) -> None:
                if kinds.count(Kind.COMMIT) != len(kinds):
                    raise RemoteError(f"{self._where()} sent another kind of object as a commit")
                got.extend(zip(ids, bodies, strict=True))

            prepared = self._pack_file("/commits", request, keep)
            if prepared is not None:
                prepared.discard()
            yield from got
            return
        for kind, body in self._pack_stream("/commits", request):
            if kind != Kind.COMMIT:
                raise RemoteError(f"{self._where()} sent a {kind.name.lower()} as a commit")
            yield hash_object(kind, body), body

    def send_pack(self, chunks: Iterable[bytes]) -> PackReply:
        try:
            response = self._http.post(
                self._prefix + "/packs",
                content=chunks,
                headers={"Content-Type": PACK_MEDIA_TYPE},
            )
            if response.status_code != 200:
                self._fail(response)
            return msgspec.json.decode(response.content, type=PackReply)
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        except msgspec.DecodeError as exc:
            raise RemoteError(f"{self._where()} sent a malformed answer: {exc}") from exc

    def update_refs(self, updates: Sequence[RefUpdate], user: str) -> RefsReply:
        reply: RefsReply = self._call(
            "POST", self._prefix + "/refs", body=RefsRequest(tuple(updates), user), reply=RefsReply
        )
        return reply

    def require_write(self) -> None:
        """Fail early, with the server's own message, when the key may not write."""
        if not self.info.can_write:
            self._call("POST", self._prefix + "/refs", body=RefsRequest(()), reply=RefsReply)
            raise RemoteError(f"{self._where()} does not let this key push")


def connect(repo: Repository, name: str) -> Connection:
    """A connection to remote `name` of `repo`, with the key from its environment variable."""
    remote = get_remote(repo, name)
    return open_remote(remote, name)


def open_remote(remote: Remote, name: str) -> Connection:
    """A connection to `remote`, its key from the variable the remote names (or DSV_API_KEY)."""
    source = remote.key_env or "DSV_API_KEY"
    return Connection(remote.url, key=os.environ.get(source) or None, key_source=source, name=name)


class _Asked:
    """The ids of a request still to come. While the answer follows the request's order (a
    clone's does: a server stores a push in the order its versions list the datapoints), they
    are taken off the front by comparing lists; from the first object out of order, by a set.
    (A set of each request's ids, and a lookup per object, were 5% of a 1M clone.) A request
    never names an id twice (every caller asks for distinct ids)."""

    __slots__ = ("_at", "_batch", "_rest")

    def __init__(self, batch: Sequence[bytes]) -> None:
        self._batch = list(batch)
        self._at = 0
        self._rest: set[bytes] | None = None

    def _unordered(self) -> set[bytes]:
        if self._rest is None:
            self._rest = set(self._batch[self._at :])
        return self._rest

    def take(self, oids: list[bytes]) -> list[bool] | None:
        """Take `oids` off the ids still to come: None if they were the next of those, in
        order; else whether each was among them (a repeat is not: it was taken)."""
        if self._rest is None:
            stop = self._at + len(oids)
            if self._batch[self._at : stop] == oids:
                self._at = stop
                return None
        rest = self._unordered()
        flags = []
        for oid in oids:
            found = oid in rest
            if found:
                rest.discard(oid)
            flags.append(found)
        return flags

    def __len__(self) -> int:
        return len(self._batch) - self._at if self._rest is None else len(self._rest)
