"""The remote protocol, version 1 (docs/protocol.md): messages, the pack stream, the object graph.

Both sides use these: the server (dsv.server) to answer and verify, the client (dsv.remote) to
ask and send. Below both, it knows nothing of HTTP: it raises dsv's own errors.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Annotated, Literal

import blake3
import msgspec
import zstandard

from dsv.canonical import canonicalize, canonicalize_many
from dsv.errors import CorruptObject, DsvError
from dsv.objects import (
    OID_SIZE,
    Kind,
    decode_commit,
    decode_dataset,
    decode_tree,
    split_oids,
)
from dsv.pack import BLOCK_SIZE, PACK_MAGIC
from dsv.paths import BadPath, check_tree_paths

__all__ = [
    "KIND_ORDER",
    "MAX_BLOCK_RAW",
    "PACK_MEDIA_TYPE",
    "PROTOCOL_VERSION",
    "REQUEST_ID_HEADER",
    "SUPPORTED_VERSIONS",
    "CommitsRequest",
    "ErrorDetail",
    "ErrorReply",
    "Health",
    "IdsRequest",
    "Info",
    "KindName",
    "Limits",
    "MissingReply",
    "PackEncoder",
    "PackReply",
    "RefUpdate",
    "RefsReply",
    "RefsRequest",
    "block_bound",
    "check_datapoints",
    "encode_pack",
    "iter_pack",
    "kind_name",
    "kind_named",
    "references",
]

PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS: tuple[int, ...] = (1, 2)
PACK_MEDIA_TYPE = "application/x-dsv-pack"
REQUEST_ID_HEADER = "X-Request-ID"
# A block may hold one object bigger than BLOCK_SIZE, but no more than this: a cap on what
# one zstd frame may expand to, so a tiny hostile frame cannot claim gigabytes.
MAX_BLOCK_RAW = 256 << 20
# Bottom-up: an object is sent only after everything it references, so a receiver that
# stores packs in order never holds an object whose references are missing.
KIND_ORDER: tuple[Kind, ...] = (Kind.DATAPOINT, Kind.PAGE, Kind.DATASET, Kind.TREE, Kind.COMMIT)

_HEADER = struct.Struct("<8sII")  # magic, version, reserved (format.md §4)
_BLOCK = struct.Struct("<II")  # compressed length, raw length
_COUNT = struct.Struct("<I")
_PACK_VERSION = 1
_TRAILER = 32

# msgspec searches the pattern, whose `$` also matches before a final newline: max_length
# keeps "HEX\n" out.
Hex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$", max_length=64, examples=["0" * 64])]
KindName = Literal["datapoint", "page", "dataset", "tree", "commit"]


_KIND_NAMES: dict[Kind, KindName] = {
    Kind.DATAPOINT: "datapoint",
    Kind.PAGE: "page",
    Kind.DATASET: "dataset",
    Kind.TREE: "tree",
    Kind.COMMIT: "commit",
}


def kind_named(name: str) -> Kind:
    return Kind[name.upper()]


def kind_name(kind: Kind) -> KindName:
    return _KIND_NAMES[kind]


# -- messages ------------------------------------------------------------------------------


class Limits(msgspec.Struct, frozen=True):
    """What one request may carry: body bytes, and ids in one id list."""

    max_request_bytes: int
    max_ids: int


class Info(msgspec.Struct, frozen=True):
    """`GET /v1/OWNER/NAME/info`: versions, the repository's refs, and limits."""

    versions: tuple[int, ...]
    server: str
    repository: str
    exists: bool
    head: str | None
    refs: dict[str, Hex]
    limits: Limits
    can_write: bool


class IdsRequest(msgspec.Struct, frozen=True):
    """Ids of one kind: which are missing (`missing`), or send them (`objects`)."""

    kind: KindName
    ids: tuple[Hex, ...]


class MissingReply(msgspec.Struct, frozen=True):
    """Positions (ascending) in the request's `ids` of those the repository lacks."""

    missing: tuple[int, ...]


class CommitsRequest(msgspec.Struct, frozen=True):
    """Commits reachable from `wants`, not walking past `haves`, at most `limit` of them."""

    wants: tuple[Hex, ...]
    haves: tuple[Hex, ...] = ()
    limit: int = 10_000


class PackReply(msgspec.Struct, frozen=True):
    """A stored pack: objects received, how many were new, bytes received."""

    objects: int
    new: int
    bytes: int


class RefUpdate(msgspec.Struct, frozen=True):
    """Move `name` from `old` (None: must not exist) to `new`."""

    name: str
    old: Hex | None
    new: Hex
    force: bool = False


class RefsRequest(msgspec.Struct, frozen=True):
    updates: tuple[RefUpdate, ...]
    user: str = ""


class RefsReply(msgspec.Struct, frozen=True):
    updated: tuple[RefUpdate, ...]


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str
    request_id: str
    hint: str | None = None


class ErrorReply(msgspec.Struct, frozen=True):
    """Every error response: `{"error": {"code", "message", "request_id", "hint"?}}`."""

    error: ErrorDetail


class Health(msgspec.Struct, frozen=True):
    status: str
    versions: tuple[int, ...]


# -- the pack stream (docs/format.md §4, without the index) ------------------------------------


def block_bound(raw: int) -> int:
    """Most bytes a block of `raw` raw bytes can take on the wire (header included)."""
    return _BLOCK.size + raw + (raw >> 7) + 512


class PackEncoder:
    """Produces a pack piece by piece: `start`, any number of `block`s, `finish`."""

    def __init__(self, level: int = 3) -> None:
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._hasher = blake3.blake3()
        self.bytes_out = 0
        self.objects = 0

    def _emit(self, data: bytes) -> bytes:
        self._hasher.update(data)
        self.bytes_out += len(data)
        return data

    def start(self) -> bytes:
        return self._emit(_HEADER.pack(PACK_MAGIC, _PACK_VERSION, 0))

    def block(self, objects: Sequence[tuple[Kind, bytes]]) -> bytes:
        n = len(objects)
        head = _COUNT.pack(n) + bytes(k for k, _ in objects)
        head += struct.pack(f"<{n}I", *(len(b) for _, b in objects))
        raw = head + b"".join(b for _, b in objects)
        frame = self._compressor.compress(raw)
        self.objects += n
        return self._emit(_BLOCK.pack(len(frame), len(raw)) + frame)

    def finish(self) -> bytes:
        digest = self._hasher.digest()
        self.bytes_out += len(digest)
        return digest


def encode_pack(
    objects: Iterable[tuple[Kind, bytes]], *, block_size: int = BLOCK_SIZE
) -> Iterator[bytes]:
    """The pack of `objects`, one block at a time (never the whole pack in memory)."""
    encoder = PackEncoder()
    yield encoder.start()
    pending: list[tuple[Kind, bytes]] = []
    size = 0
    for kind, body in objects:
        pending.append((kind, body))
        size += len(body)
        if size >= block_size:
            yield encoder.block(pending)
            pending, size = [], 0
    if pending:
        yield encoder.block(pending)
    yield encoder.finish()


class _Source:
    """Exact reads over an iterator of chunks of any size."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = bytearray()
        self.eof = False

    def fill(self, n: int) -> int:
        """Buffer at least `n` bytes if the stream has them; return how many are buffered."""
        while len(self._buf) < n and not self.eof:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.eof = True
                break
            self._buf += chunk
        return len(self._buf)

    def take(self, n: int) -> bytes:
        if self.fill(n) < n:
            raise CorruptObject("pack stream is truncated")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data


def _entries(raw: bytes) -> Iterator[tuple[Kind, bytes]]:
    (count,) = _COUNT.unpack_from(raw, 0)
    if 4 + 5 * count > len(raw):
        raise ValueError("block header is longer than the block")
    kinds = raw[4 : 4 + count]
    lengths = struct.unpack_from(f"<{count}I", raw, 4 + count)
    at = 4 + 5 * count
    if at + sum(lengths) != len(raw):
        raise ValueError("block length does not match its entries")
    for code, length in zip(kinds, lengths, strict=True):
        yield Kind(code), raw[at : at + length]
        at += length


def iter_pack(chunks: Iterable[bytes]) -> Iterator[tuple[Kind, bytes]]:
    """(kind, body) of every object of a pack stream, checking framing and the trailer.

    The trailer is checked last, so a consumer must treat what it received as unverified
    until the iterator is exhausted without error.
    """
    source = _Source(chunks)
    hasher = blake3.blake3()
    decompressor = zstandard.ZstdDecompressor()
    header = source.take(_HEADER.size)
    magic, version, _ = _HEADER.unpack(header)
    if magic != PACK_MAGIC or version != _PACK_VERSION:
        raise CorruptObject(f"not a dsv pack of version {_PACK_VERSION}")
    hasher.update(header)
    while True:
        # What follows is either a block (8-byte header) or the 32-byte trailer, then the end.
        buffered = source.fill(_TRAILER + _BLOCK.size)
        if buffered == _TRAILER and source.eof:
            break
        if buffered < _TRAILER + _BLOCK.size:
            raise CorruptObject("pack stream is truncated")
        block_head = source.take(_BLOCK.size)
        clen, rlen = _BLOCK.unpack(block_head)
        if rlen > MAX_BLOCK_RAW:
            raise CorruptObject(f"pack block of {rlen} bytes is over the {MAX_BLOCK_RAW} limit")
        frame = source.take(clen)
        hasher.update(block_head)
        hasher.update(frame)
        try:
            raw = decompressor.decompress(frame, max_output_size=rlen)
            if len(raw) != rlen:
                raise ValueError("block has the wrong size")
            entries = list(_entries(raw))
        except (zstandard.ZstdError, ValueError, struct.error) as exc:
            raise CorruptObject(f"corrupt pack block: {exc}") from exc
        yield from entries
    if source.take(_TRAILER) != hasher.digest():
        raise CorruptObject("pack checksum mismatch: the pack was damaged in transit")


# -- the object graph ------------------------------------------------------------------------


def references(kind: Kind, oid: bytes, body: bytes) -> list[bytes]:
    """The ids an object refers to, after checking that it is well formed (format.md §3)."""
    if kind == Kind.DATAPOINT:
        return []
    if kind == Kind.PAGE:
        if not body or len(body) % OID_SIZE:
            raise CorruptObject(f"corrupt object {oid.hex()}: a page must hold whole ids")
        return split_oids(body)
    if kind == Kind.DATASET:
        dataset = decode_dataset(body, oid)
        for s in dataset.slices:
            if len(s.page) != OID_SIZE or not 0 <= s.start < s.stop:
                raise CorruptObject(f"corrupt object {oid.hex()}: bad slice")
        if len(dataset.content) != OID_SIZE:
            raise CorruptObject(f"corrupt object {oid.hex()}: bad content id")
        return list(dict.fromkeys(s.page for s in dataset.slices))
    if kind == Kind.TREE:
        entries = decode_tree(body, oid).entries
        try:
            check_tree_paths([e.path for e in entries])
        except BadPath as exc:
            raise CorruptObject(f"corrupt object {oid.hex()}: {exc.message}") from exc
        if any(len(e.dataset) != OID_SIZE for e in entries):
            raise CorruptObject(f"corrupt object {oid.hex()}: bad dataset id in tree")
        return [e.dataset for e in entries]
    commit = decode_commit(body, oid)
    ids = [commit.tree, *commit.parents]
    if any(len(i) != OID_SIZE for i in ids):
        raise CorruptObject(f"corrupt object {oid.hex()}: bad id in commit")
    return ids


def check_datapoints(oids: Sequence[bytes], bodies: list[bytes]) -> None:
    """Refuse datapoints that are not canonical JSON objects (format.md §2)."""
    try:
        if canonicalize_many(bodies) == bodies:
            return
    except DsvError:
        pass
    # Slow path, only for a bad batch: name the first bad datapoint.
    for oid, body in zip(oids, bodies, strict=True):
        try:
            good = canonicalize(body)
        except DsvError as exc:
            raise CorruptObject(
                f"corrupt object {oid.hex()}: datapoint is not a JSON object ({exc.message})"
            ) from exc
        if good != body:
            raise CorruptObject(f"corrupt object {oid.hex()}: datapoint is not canonical JSON")
