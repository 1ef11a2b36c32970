"""Dataset diffs: which datapoints were added, removed, modified or moved between two versions.

Cost model: datapoints whose id is on both sides are never read. Runs of ids that both
versions take from the same place of the same page (the usual case, since a new version is
written as slices of its parent's pages) are paired without looking at single ids; the rest
is paired id by id; only ids on one side only are read, and only to match them by key.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from dsv.canonical import decode_canonical
from dsv.errors import BadInput
from dsv.index import Entry, hash_file, read_index, stat_file
from dsv.manifest import iter_oids, read_oid_list
from dsv.objects import OID_SIZE, Dataset, Format, Kind, content_id
from dsv.worktree import FileScan, repo_path, scan_against

if TYPE_CHECKING:
    from dsv.repo import Repository
    from dsv.store import ObjectStore

__all__ = [
    "ADDED",
    "MODIFIED",
    "REMOVED",
    "Change",
    "DatasetDiff",
    "DiffResult",
    "FieldChange",
    "Status",
    "body_changes",
    "count_change",
    "diff",
    "diff_commit",
    "diff_trees",
    "field_changes",
    "json_path",
    "summarize",
]

# What happened to a datapoint, or to a whole dataset.
Status = Literal["added", "removed", "modified"]
ADDED: Final = "added"
REMOVED: Final = "removed"
MODIFIED: Final = "modified"

# Changed datapoints are read in batches: big enough that each pack block is decompressed
# about once per batch, small enough that a huge change never sits in memory at once.
_BATCH = 4096
# Bodies read while matching keys are kept for the field diff up to this many bytes, so a
# modest change reads each body once and a huge one still runs in bounded memory.
_CACHE_BYTES = 64 << 20

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_top_level_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


class FieldChange(msgspec.Struct, frozen=True):
    """One changed JSON path of a modified datapoint; `old`/`new` are UNSET when absent."""

    path: str
    old: Any = msgspec.UNSET
    new: Any = msgspec.UNSET


class Change(msgspec.Struct, frozen=True):
    """One changed datapoint; `record` (the whole datapoint) only when asked for."""

    path: str
    status: Status
    key: dict[str, Any] | None
    old: bytes | None
    new: bytes | None
    fields: tuple[FieldChange, ...] = ()
    record: dict[str, Any] | None = None


class DatasetDiff(msgspec.Struct, frozen=True):
    """Counts of one changed dataset; `key` is the key fields used to match, () for content."""

    path: str
    status: Status
    added: int
    removed: int
    modified: int
    unchanged: int
    reordered: bool
    moved: int
    duplicate_keys: int
    key: tuple[str, ...]
    schema: tuple[str, ...]
    old_count: int
    new_count: int


# -- one side of a dataset comparison ----------------------------------------------------------

_Run = tuple[bytes, int, int]  # page, start, stop
_Piece = tuple[int, int, int]  # old position, new position, length: equal ids on both sides
_KeyRaw = tuple[bytes, ...]  # canonical JSON of each key field's value
_Rec = tuple[int, bytes, _KeyRaw | None]  # position, datapoint id, key


@dataclass(slots=True)
class _Side:
    """A dataset version: stored (ids come from pages) or a working file hashed in memory."""

    fmt: Format
    key: tuple[str, ...]
    count: int
    content: bytes
    dataset: Dataset | None = None
    _ids: bytes | None = None
    # Working files only: bodies of the datapoints the other side lacks.
    bodies: dict[bytes, bytes] | None = None

    @classmethod
    def stored(cls, dataset: Dataset) -> _Side:
        return cls(dataset.format, dataset.key, dataset.count, dataset.content, dataset)

    @classmethod
    def scanned(cls, scan: FileScan, key: tuple[str, ...]) -> _Side:
        count = len(scan.oids) // OID_SIZE
        return cls(scan.format, key, count, content_id(scan.oids), None, scan.oids, scan.bodies)

    def ids(self, store: ObjectStore) -> bytes:
        if self._ids is None:
            assert self.dataset is not None
            self._ids = read_oid_list(store, self.dataset)
        return self._ids

    def runs(self) -> list[_Run] | None:
        if self.dataset is None:
            return None
        return [(s.page, s.start, s.stop) for s in self.dataset.slices]


def _read_bodies(store: ObjectStore, oids: Sequence[bytes]) -> list[bytes]:
    return store.read_bulk(list(oids), Kind.DATAPOINT)


def _bodies(
    store: ObjectStore, side: _Side, oids: Sequence[bytes], cache: dict[bytes, bytes]
) -> list[bytes]:
    """Bodies of changed datapoints: from the cache, the working file, or the store."""
    local = side.bodies or {}
    found: list[bytes | None] = [cache.get(oid) or local.get(oid) for oid in oids]
    missing = [oid for oid, body in zip(oids, found, strict=True) if body is None]
    if missing:
        fetched = iter(_read_bodies(store, missing))
        found = [body if body is not None else next(fetched) for body in found]
    return [body for body in found if body is not None]


def _decode(body: bytes) -> dict[str, Any]:
    """Decode one changed datapoint (the only place full datapoints are decoded)."""
    return decode_canonical(body)


def _key_of(body: bytes, fields: tuple[str, ...]) -> _KeyRaw | None:
    """The key fields' canonical JSON, or None when the datapoint lacks one of them."""
    top = _top_level_decoder.decode(body)
    try:
        return tuple(bytes(top[name]) for name in fields)
    except KeyError:
        return None


def _key_dict(fields: tuple[str, ...], key: _KeyRaw | None) -> dict[str, Any] | None:
    if key is None or not fields:
        return None
    return {f: msgspec.json.decode(v) for f, v in zip(fields, key, strict=True)}


# -- aligning id lists -------------------------------------------------------------------------


def _by_page(runs: list[_Run]) -> dict[bytes, list[tuple[int, int, int]]]:
    """page -> (start, stop, position in the dataset) of each run reading it, in order."""
    out: dict[bytes, list[tuple[int, int, int]]] = {}
    pos = 0
    for page, start, stop in runs:
        out.setdefault(page, []).append((start, stop, pos))
        pos += stop - start
    return out


def _add_piece(pieces: list[_Piece], old: int, new: int, length: int) -> None:
    if pieces:
        o, n, k = pieces[-1]
        if o + k == old and n + k == new:
            pieces[-1] = (o, n, k + length)
            return
    pieces.append((old, new, length))


def _sweep(
    olds: list[tuple[int, int, int]],
    news: list[tuple[int, int, int]],
    pieces: list[_Piece],
    old_rest: list[tuple[int, int]],
    new_rest: list[tuple[int, int]],
) -> None:
    """Pair the k-th old reader of each stretch of one page with its k-th new reader."""
    if len(olds) == 1 and _sweep_one(olds[0], news, pieces, old_rest, new_rest):
        return
    _sweep_stretches(olds, news, pieces, old_rest, new_rest)


def _sweep_stretches(
    olds: list[tuple[int, int, int]],
    news: list[tuple[int, int, int]],
    pieces: list[_Piece],
    old_rest: list[tuple[int, int]],
    new_rest: list[tuple[int, int]],
) -> None:
    """`_sweep` for any page: stretch by stretch between the readers' ends."""
    # An empty reader would stay active over the stretch after its point.
    olds = [r for r in olds if r[0] < r[1]]
    news = [r for r in news if r[0] < r[1]]
    points = sorted(
        {x for s, e, _ in olds for x in (s, e)} | {x for s, e, _ in news for x in (s, e)}
    )
    o_sorted, n_sorted = sorted(olds), sorted(news)
    oi = ni = 0
    act_o: list[tuple[int, int, int]] = []
    act_n: list[tuple[int, int, int]] = []
    by_pos: Callable[[tuple[int, int, int]], int] = operator.itemgetter(2)
    for x, y in itertools.pairwise(points):
        act_o = [iv for iv in act_o if iv[1] > x]
        act_n = [iv for iv in act_n if iv[1] > x]
        while oi < len(o_sorted) and o_sorted[oi][0] <= x:
            bisect.insort(act_o, o_sorted[oi], key=by_pos)
            oi += 1
        while ni < len(n_sorted) and n_sorted[ni][0] <= x:
            bisect.insort(act_n, n_sorted[ni], key=by_pos)
            ni += 1
        length = y - x
        # Extra readers of a stretch on one side only are left for the id-level pass.
        for o, n in zip(act_o, act_n, strict=False):
            _add_piece(pieces, o[2] + x - o[0], n[2] + x - n[0], length)
        old_rest.extend((o[2] + x - o[0], length) for o in act_o[len(act_n) :])
        new_rest.extend((n[2] + x - n[0], length) for n in act_n[len(act_o) :])


def _sweep_one(
    old: tuple[int, int, int],
    news: list[tuple[int, int, int]],
    pieces: list[_Piece],
    old_rest: list[tuple[int, int]],
    new_rest: list[tuple[int, int]],
) -> bool:
    """`_sweep` for a page the old side reads once and the new side reads without overlap
    (the usual case: a version of its parent with edits), in one step per new reader;
    False, with nothing added, for other pages."""
    ordered = sorted(news)
    if any(a[1] > b[0] for a, b in itertools.pairwise(ordered)):
        return False
    start, stop, pos = old
    covered = start
    for n_start, n_stop, n_pos in ordered:
        lo, hi = max(start, n_start), min(stop, n_stop)
        if lo < hi:
            if lo > covered:
                old_rest.append((pos + covered - start, lo - covered))
            _add_piece(pieces, pos + lo - start, n_pos + lo - n_start, hi - lo)
            covered = hi
        if n_start < start:
            new_rest.append((n_pos, min(n_stop, start) - n_start))
        if n_stop > stop:
            outside = max(n_start, stop)
            new_rest.append((n_pos + outside - n_start, n_stop - outside))
    if covered < stop:
        old_rest.append((pos + covered - start, stop - covered))
    return True


def _expand(ranges: Iterable[tuple[int, int]]) -> list[int]:
    return sorted(itertools.chain.from_iterable(range(p, p + n) for p, n in ranges))


def _align(
    old_runs: list[_Run] | None, old_count: int, new_runs: list[_Run] | None, new_count: int
) -> tuple[list[_Piece], list[int], list[int]]:
    """Equal stretches found from page references alone, and the positions left over."""
    if old_runs is None or new_runs is None:
        return [], list(range(old_count)), list(range(new_count))
    old_pages, new_pages = _by_page(old_runs), _by_page(new_runs)
    pieces: list[_Piece] = []
    old_rest: list[tuple[int, int]] = []
    new_rest: list[tuple[int, int]] = []
    for page, olds in old_pages.items():
        news = new_pages.get(page)
        if news is None:
            old_rest.extend((pos, stop - start) for start, stop, pos in olds)
        else:
            _sweep(olds, news, pieces, old_rest, new_rest)
    for page, news in new_pages.items():
        if page not in old_pages:
            new_rest.extend((pos, stop - start) for start, stop, pos in news)
    return pieces, _expand(old_rest), _expand(new_rest)


def _match_ids(
    old_ids: bytes, old_rest: list[int], new_ids: bytes, new_rest: list[int]
) -> tuple[list[_Piece], list[int], list[int]]:
    """Pair equal ids in order of appearance; return the pairs and the unpaired positions."""
    old_list = [old_ids[p * OID_SIZE : (p + 1) * OID_SIZE] for p in old_rest]
    new_list = [new_ids[p * OID_SIZE : (p + 1) * OID_SIZE] for p in new_rest]
    # Comprehensions over dicts keep a working-tree diff (every id left over) fast; `pop`
    # lets each new id pair once even when old ids repeat.
    first = dict(zip(reversed(new_list), reversed(new_rest), strict=True))
    if len(first) == len(new_list):
        matched = [first.pop(oid, -1) for oid in old_list]
        added = sorted(first.values())
    else:
        waiting: dict[bytes, list[int]] = {}
        for oid, p in zip(reversed(new_list), reversed(new_rest), strict=True):
            waiting.setdefault(oid, []).append(p)
        matched = [found.pop() if (found := waiting.get(oid)) else -1 for oid in old_list]
        added = sorted(p for found in waiting.values() for p in found)
    removed = [p for p, m in zip(old_rest, matched, strict=True) if m < 0]
    singles: list[_Piece] = []
    last_o = last_n = start_o = start_n = length = -2
    for o, n in zip(old_rest, matched, strict=True):
        if n < 0:
            continue
        if o == last_o + 1 and n == last_n + 1:
            length += 1
        else:
            if length > 0:
                singles.append((start_o, start_n, length))
            start_o, start_n, length = o, n, 1
        last_o, last_n = o, n
    if length > 0:
        singles.append((start_o, start_n, length))
    return singles, removed, added


def _moved(pieces: list[_Piece]) -> int:
    """Fewest datapoints to move to turn the old order into the new one.

    That is the total minus the heaviest run of pieces increasing on both sides; pieces are
    disjoint on both sides, so no optimum takes part of a piece.
    """
    pieces = sorted(pieces, key=operator.itemgetter(1))
    olds = [p[0] for p in pieces]
    if all(map(operator.lt, olds, olds[1:])):
        return 0
    total = sum(p[2] for p in pieces)
    if all(p[2] == 1 for p in pieces):
        tails: list[int] = []
        for o in olds:
            i = bisect.bisect_left(tails, o)
            if i == len(tails):
                tails.append(o)
            else:
                tails[i] = o
        return total - len(tails)
    rank = {o: i + 1 for i, o in enumerate(sorted(olds))}
    tree = [0] * (len(olds) + 1)
    best = 0
    for o, _, weight in pieces:
        r = rank[o]
        i, prefix = r - 1, 0
        while i > 0:
            prefix = max(prefix, tree[i])
            i -= i & -i
        value = prefix + weight
        best = max(best, value)
        while r < len(tree):
            tree[r] = max(tree[r], value)
            r += r & -r
    return total - best


# -- keys --------------------------------------------------------------------------------------


def _extract_keys(
    store: ObjectStore,
    side: _Side,
    recs: list[_Rec],
    fields: tuple[str, ...],
    cache: dict[bytes, bytes],
    budget: list[int],
) -> list[_Rec]:
    """`recs` with their keys filled in, caching bodies for the field diff within budget."""
    local = side.bodies or {}
    keys: list[_KeyRaw | None] = [None] * len(recs)
    stored: list[int] = []
    for i, (_, oid, _) in enumerate(recs):
        body = cache.get(oid) or local.get(oid)
        if body is None:
            stored.append(i)
        else:
            keys[i] = _key_of(body, fields)
    # One pass in storage order: a block is decompressed once however many batches of
    # scattered ids would have touched it.
    for j, body in store.iter_bulk([recs[i][1] for i in stored], Kind.DATAPOINT):
        i = stored[j]
        keys[i] = _key_of(body, fields)
        oid = recs[i][1]
        if budget[0] >= len(body) and oid not in cache:
            cache[oid] = body
            budget[0] -= len(body)
    return [(pos, oid, key) for (pos, oid, _), key in zip(recs, keys, strict=True)]


def _unique_complete(recs: list[_Rec]) -> bool:
    keys = [r[2] for r in recs]
    return None not in keys and len(set(keys)) == len(keys)


def _pair(
    removed: list[_Rec], added: list[_Rec]
) -> tuple[list[tuple[_Rec, _Rec]], list[_Rec], list[_Rec], int]:
    """Match by key, k-th old with k-th new of the same key; also count duplicated keys.

    Only changed datapoints are here (identical ones were paired by id before), so the count
    is of keys that two or more changed datapoints of one side share: unchanged ones are
    never read, and counting theirs would cost a read of every datapoint.
    """
    waiting: dict[_KeyRaw, list[_Rec]] = {}
    for rec in reversed(removed):
        if rec[2] is not None:
            waiting.setdefault(rec[2], []).append(rec)
    pairs: list[tuple[_Rec, _Rec]] = []
    added_left: list[_Rec] = []
    for rec in added:
        found = waiting.get(rec[2]) if rec[2] is not None else None
        if found:
            pairs.append((found.pop(), rec))
        else:
            added_left.append(rec)
    paired = {old[0] for old, _ in pairs}
    removed_left = [r for r in removed if r[0] not in paired]
    dups: set[_KeyRaw] = set()
    for recs in (removed, added):
        counts = Counter(r[2] for r in recs if r[2] is not None)
        dups.update(k for k, n in counts.items() if n > 1)
    return pairs, removed_left, added_left, len(dups)


# -- schema ------------------------------------------------------------------------------------


def _arrow_types(schema: bytes) -> dict[str, str]:
    import pyarrow as pa

    parsed = pa.ipc.read_schema(pa.py_buffer(schema))
    return {field.name: str(field.type) for field in parsed}


def _schema_changes(old: _Side, new: _Side) -> tuple[str, ...]:
    """Human-readable differences of format, columns, column types and key."""
    a, b = old.fmt, new.fmt
    out: list[str] = []
    if a.kind != b.kind:
        out.append(f"format changed: {a.kind} → {b.kind}")
    if a.columns != b.columns and (a.columns or b.columns):
        gone = set(a.columns) - set(b.columns)
        came = set(b.columns) - set(a.columns)
        out += [f"column added: {c}" for c in b.columns if c in came]
        out += [f"column removed: {c}" for c in a.columns if c in gone]
        kept_a = [c for c in a.columns if c not in gone]
        kept_b = [c for c in b.columns if c not in came]
        if kept_a != kept_b:
            out.append(f"column order changed: {', '.join(kept_a)} → {', '.join(kept_b)}")
    if a.options != b.options:
        before, after = dict(a.options), dict(b.options)
        for name in sorted(before.keys() | after.keys()):
            if before.get(name) != after.get(name):
                out.append(f"option {name} changed: {before.get(name)!r} → {after.get(name)!r}")
    if a.kind == b.kind == "parquet" and a.schema != b.schema and a.schema and b.schema:
        types_a, types_b = _arrow_types(a.schema), _arrow_types(b.schema)
        for name in b.columns:
            if name in types_a and types_a[name] != types_b.get(name):
                out.append(f"column type changed: {name}: {types_a[name]} → {types_b[name]}")
    if old.key != new.key:
        out.append(f"key changed: {_fields_text(old.key)} → {_fields_text(new.key)}")
    return tuple(out)


def _fields_text(fields: tuple[str, ...]) -> str:
    return ",".join(fields) if fields else "(none)"


# -- comparing one dataset ---------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """What `DiffResult.changes` needs to stream one dataset's changes."""

    path: str
    old: _Side | None
    new: _Side | None
    key: tuple[str, ...]
    removed: list[_Rec] = field(default_factory=list)
    added: list[_Rec] = field(default_factory=list)
    pairs: list[tuple[_Rec, _Rec]] = field(default_factory=list)
    pieces: list[_Piece] = field(default_factory=list)
    cache: dict[bytes, bytes] = field(default_factory=dict)


def _whole(
    path: str, status: Status, side: _Side, key: tuple[str, ...]
) -> tuple[DatasetDiff, _Plan]:
    added, removed = (side.count, 0) if status == ADDED else (0, side.count)
    summary = DatasetDiff(
        path, status, added, removed, 0, 0, False, 0, 0, key, (),
        old_count=removed, new_count=added,
    )  # fmt: skip
    plan = _Plan(path, None, side, key) if status == ADDED else _Plan(path, side, None, key)
    return summary, plan


def _compare(
    store: ObjectStore,
    path: str,
    old: _Side | None,
    new: _Side | None,
    key: tuple[str, ...] | None,
    budget: list[int],
) -> tuple[DatasetDiff, _Plan] | None:
    """Summary and change plan of one dataset; None when both sides are the same version.

    `budget` is the bytes of datapoint bodies still allowed in memory for the field diff.
    """
    if old is None or new is None:
        if new is not None:
            return _whole(path, ADDED, new, new.key if key is None else key)
        if old is not None:
            return _whole(path, REMOVED, old, old.key if key is None else key)
        return None
    schema = _schema_changes(old, new)
    if old.content == new.content:
        if not schema:
            return None
        used = key if key is not None else new.key or old.key
        summary = DatasetDiff(
            path, MODIFIED, 0, 0, 0, old.count, False, 0, 0, used, schema, old.count, new.count
        )
        return summary, _Plan(path, old, new, used)
    old_ids, new_ids = old.ids(store), new.ids(store)
    pieces, old_rest, new_rest = _align(old.runs(), old.count, new.runs(), new.count)
    singles, removed_pos, added_pos = _match_ids(old_ids, old_rest, new_ids, new_rest)
    pieces += singles
    removed: list[_Rec] = [
        (p, old_ids[p * OID_SIZE : (p + 1) * OID_SIZE], None) for p in removed_pos
    ]
    added: list[_Rec] = [(p, new_ids[p * OID_SIZE : (p + 1) * OID_SIZE], None) for p in added_pos]
    plan = _Plan(path, old, new, ())
    fields = key if key is not None else new.key or old.key or ("id",)
    if fields:
        removed = _extract_keys(store, old, removed, fields, plan.cache, budget)
        added = _extract_keys(store, new, added, fields, plan.cache, budget)
        # `id` is used unasked only when every changed datapoint has one, unique on its side.
        if (
            key is None
            and not (new.key or old.key)
            and not (_unique_complete(removed) and _unique_complete(added))
        ):
            fields = ()
            removed = [(p, oid, None) for p, oid, _ in removed]
            added = [(p, oid, None) for p, oid, _ in added]
    pairs, removed, added, duplicates = _pair(removed, added)
    pieces += [(o[0], n[0], 1) for o, n in pairs]
    plan.key, plan.removed, plan.added, plan.pairs = fields, removed, added, pairs
    plan.pieces = sorted(pieces)
    moved = _moved(pieces)
    summary = DatasetDiff(
        path, MODIFIED, len(added), len(removed), len(pairs),
        old.count - len(removed_pos), moved > 0, moved, duplicates, fields, schema,
        old.count, new.count,
    )  # fmt: skip
    return summary, plan


# -- field paths -------------------------------------------------------------------------------


def json_path(parent: str, step: str | int) -> str:
    """`parent` extended by one object member or list index: `a.b`, `a[2]`, `a["x y"]`."""
    if isinstance(step, int):
        return f"{parent}[{step}]"
    if _IDENT.match(step):
        return f"{parent}.{step}" if parent else step
    return f"{parent}[{msgspec.json.encode(step).decode()}]"


def _same(a: Any, b: Any) -> bool:
    # JSON tells true from 1 and 1 from 1.0; Python's == does not.
    if type(a) is not type(b) or a != b:
        return False
    # 0.0 == -0.0, yet their texts, and so the ids of datapoints holding them, differ.
    return type(a) is not float or math.copysign(1.0, a) == math.copysign(1.0, b)


_encode = msgspec.json.Encoder().encode


def _unchanged(a: Any, b: Any) -> bool:
    """Exactly equal JSON values, decided at C speed for whole subtrees.

    `==` alone takes 1 for 1.0 or true, and 0.0 for -0.0; equal values also equal in their
    JSON text are the same (decoded records keep their canonical, sorted key order).
    """
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, dict | list):
        return _encode(a) == _encode(b)
    return type(a) is not float or math.copysign(1.0, a) == math.copysign(1.0, b)


def field_changes(old: Any, new: Any, path: str = "") -> Iterator[FieldChange]:
    """Changed JSON paths between two values; lists are compared index by index."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(old.keys() | new.keys()):
            if name not in new:
                yield FieldChange(json_path(path, name), old=old[name])
            elif name not in old:
                yield FieldChange(json_path(path, name), new=new[name])
            elif not _unchanged(old[name], new[name]):
                yield from field_changes(old[name], new[name], json_path(path, name))
    elif isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            if i >= len(new):
                yield FieldChange(json_path(path, i), old=old[i])
            elif i >= len(old):
                yield FieldChange(json_path(path, i), new=new[i])
            elif not _unchanged(old[i], new[i]):
                yield from field_changes(old[i], new[i], json_path(path, i))
    elif not _same(old, new):
        yield FieldChange(path, old=old, new=new)


_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_value_decoder = msgspec.json.Decoder()


def body_changes(
    old: bytes | msgspec.Raw, new: bytes | msgspec.Raw, path: str = ""
) -> Iterator[FieldChange]:
    """`field_changes` of two canonical bodies, found on their JSON text.

    Canonical JSON has one text per value, so a member or item whose text is the same on
    both sides is skipped unread; only the parts that differ are decoded.
    """
    if old == new:
        return
    o, n = memoryview(old)[0], memoryview(new)[0]
    if o == n == 0x7B:  # {
        olds, news = _top_level_decoder.decode(old), _top_level_decoder.decode(new)
        for name in sorted(olds.keys() | news.keys()):
            if name not in news:
                yield FieldChange(json_path(path, name), old=_value_decoder.decode(olds[name]))
            elif name not in olds:
                yield FieldChange(json_path(path, name), new=_value_decoder.decode(news[name]))
            elif olds[name] != news[name]:
                yield from body_changes(olds[name], news[name], json_path(path, name))
    elif o == n == 0x5B:  # [
        oldl, newl = _array_decoder.decode(old), _array_decoder.decode(new)
        for i in range(max(len(oldl), len(newl))):
            if i >= len(newl):
                yield FieldChange(json_path(path, i), old=_value_decoder.decode(oldl[i]))
            elif i >= len(oldl):
                yield FieldChange(json_path(path, i), new=_value_decoder.decode(newl[i]))
            elif oldl[i] != newl[i]:
                yield from body_changes(oldl[i], newl[i], json_path(path, i))
    else:
        # Not two containers: decided on the values, as `field_changes` decides them.
        yield from field_changes(_value_decoder.decode(old), _value_decoder.decode(new), path)


# -- the result --------------------------------------------------------------------------------


class DiffResult:
    """Per-dataset summaries of a comparison, and its datapoint changes as a stream."""

    __slots__ = ("_plans", "_store", "datasets", "from_oid", "to_oid")

    def __init__(
        self,
        store: ObjectStore,
        from_oid: bytes | None,
        to_oid: bytes | None,
        found: list[tuple[DatasetDiff, _Plan]],
    ) -> None:
        self._store = store
        self.from_oid = from_oid
        self.to_oid = to_oid
        self.datasets = [summary for summary, _ in found]
        self._plans = [plan for _, plan in found]

    def changes(self, *, limit: int | None = None, records: bool = False) -> Iterator[Change]:
        """Changed datapoints, dataset by dataset in new order; at most `limit` per dataset.

        Added and removed datapoints carry their whole record only with `records`.
        """
        for plan in self._plans:
            if plan.old is None or plan.new is None:
                yield from self._whole_changes(plan, limit, records)
            else:
                yield from self._changes(plan, limit, records)

    def _whole_changes(self, plan: _Plan, limit: int | None, records: bool) -> Iterator[Change]:
        side = plan.new or plan.old
        assert side is not None
        status: Status = ADDED if plan.old is None else REMOVED
        ids = side.ids(self._store)
        count = side.count if limit is None else min(limit, side.count)
        for start in range(0, count, _BATCH):
            oids = list(iter_oids(ids[start * OID_SIZE : min(count, start + _BATCH) * OID_SIZE]))
            bodies = _bodies(self._store, side, oids, plan.cache) if plan.key or records else None
            for i, oid in enumerate(oids):
                body = bodies[i] if bodies is not None else b""
                key = _key_dict(plan.key, _key_of(body, plan.key)) if plan.key else None
                record = _decode(body) if records else None
                old, new = (None, oid) if status == ADDED else (oid, None)
                yield Change(plan.path, status, key, old, new, (), record)

    def _changes(self, plan: _Plan, limit: int | None, records: bool) -> Iterator[Change]:
        starts = [p[0] for p in plan.pieces]
        events: list[tuple[int, int, int, Status, _Rec, _Rec | None]] = []
        for rec in plan.removed:
            # A removal shows where its old neighbour ended up in the new order.
            i = bisect.bisect_right(starts, rec[0]) - 1
            anchor = plan.pieces[i][1] + plan.pieces[i][2] if i >= 0 else 0
            events.append((anchor, 0, rec[0], REMOVED, rec, None))
        events += [(rec[0], 1, rec[0], ADDED, rec, None) for rec in plan.added]
        events += [(new[0], 1, new[0], MODIFIED, old, new) for old, new in plan.pairs]
        events.sort(key=operator.itemgetter(0, 1, 2))
        if limit is not None:
            del events[limit:]
        assert plan.old is not None and plan.new is not None
        store = self._store
        for start in range(0, len(events), _BATCH):
            batch = events[start : start + _BATCH]
            want_old = [e[4][1] for e in batch if e[3] == MODIFIED or (records and e[3] == REMOVED)]
            want_new = [
                (e[5] or e[4])[1] for e in batch if e[3] == MODIFIED or (records and e[3] == ADDED)
            ]
            olds = dict(zip(want_old, _bodies(store, plan.old, want_old, plan.cache), strict=True))
            news = dict(zip(want_new, _bodies(store, plan.new, want_new, plan.cache), strict=True))
            for _, _, _, status, rec, other in batch:
                key = _key_dict(plan.key, rec[2])
                if status == MODIFIED:
                    assert other is not None
                    fields = tuple(body_changes(olds[rec[1]], news[other[1]]))
                    yield Change(plan.path, status, key, rec[1], other[1], fields)
                elif status == REMOVED:
                    record = _decode(olds[rec[1]]) if records else None
                    yield Change(plan.path, status, key, rec[1], None, (), record)
                else:
                    record = _decode(news[rec[1]]) if records else None
                    yield Change(plan.path, status, key, None, rec[1], (), record)


# -- building sides from revisions, the index and working files --------------------------------


def _stored(repo: Repository, oid: bytes | None) -> _Side | None:
    return _Side.stored(repo.read_dataset(oid)) if oid is not None else None


def _worktree(repo: Repository, entry: Entry) -> _Side | None:
    """The working file of a tracked dataset; None when it is gone."""
    full = repo.root / entry.path
    stat = stat_file(full)
    if stat is None:
        return None
    staged = repo.read_dataset(entry.dataset)
    if entry.stat is not None and entry.stat == stat:
        return _Side.stored(staged)
    # A file dsv wrote (e.g. by checkout) is proven by the hash of its bytes, without parsing.
    if entry.file_hash and hash_file(full) == entry.file_hash:
        return _Side.stored(staged)
    # The recommit's reader (for JSONL: cached groups and lines, both cores). The bodies it
    # returns are those the staged version lacks; any other id is in the store.
    return _Side.scanned(scan_against(repo, entry.path, staged, collect=True), staged.key)


def _path_filter(repo: Repository, paths: list[str] | None) -> Callable[[str], bool]:
    """Datasets named by `paths` (root-relative or absolute), or inside those directories."""
    if not paths:
        return lambda name: True
    names: list[str] = []
    for path in paths:
        if Path(os.path.normpath(repo.root / path)) == repo.root:
            return lambda name: True
        names.append(repo_path(repo, path))
    return lambda name: any(name == n or name.startswith(n + "/") for n in names)


def _between(
    repo: Repository,
    from_oid: bytes | None,
    to_oid: bytes | None,
    new_tree: dict[str, bytes],
    worktree: dict[str, Entry] | None,
    paths: list[str] | None,
    key: tuple[str, ...] | None,
) -> DiffResult:
    """Compare version `from_oid` with `new_tree`, whose datasets are working files if given."""
    old_tree = repo.tree_of(from_oid)
    accept = _path_filter(repo, paths)
    if worktree is None:
        return diff_trees(
            repo.store, repo.read_dataset, old_tree, new_tree,
            from_oid=from_oid, to_oid=to_oid, accept=accept, key=key,
        )  # fmt: skip
    found: list[tuple[DatasetDiff, _Plan]] = []
    budget = [_CACHE_BYTES]
    for name in sorted(old_tree.keys() | new_tree.keys(), key=lambda p: p.encode()):
        if not accept(name):
            continue
        old_oid, new_oid = old_tree.get(name), new_tree.get(name)
        entry = worktree.get(name) if worktree is not None else None
        # A working file whose stat matches its index entry holds exactly the staged dataset.
        if old_oid == new_oid and (
            entry is None or (entry.stat is not None and entry.stat == stat_file(repo.root / name))
        ):
            continue
        old = _stored(repo, old_oid)
        new = _worktree(repo, entry) if entry is not None else _stored(repo, new_oid)
        compared = _compare(repo.store, name, old, new, key, budget)
        if compared is not None:
            found.append(compared)
    return DiffResult(repo.store, from_oid, to_oid, found)


def diff_trees(
    store: ObjectStore,
    read_dataset: Callable[[bytes], Dataset],
    old_tree: dict[str, bytes],
    new_tree: dict[str, bytes],
    *,
    from_oid: bytes | None,
    to_oid: bytes | None,
    accept: Callable[[str], bool] = lambda name: True,
    key: tuple[str, ...] | None = None,
) -> DiffResult:
    """Compare two stored trees (path -> dataset id) as `diff` compares two revisions.

    `store` is anything that reads objects as an ObjectStore does (a server's blob store
    through an adapter), so a web page shows what `dsv diff --format jsonl` prints.
    """
    found: list[tuple[DatasetDiff, _Plan]] = []
    budget = [_CACHE_BYTES]
    for name in sorted(old_tree.keys() | new_tree.keys(), key=lambda p: p.encode()):
        old_oid, new_oid = old_tree.get(name), new_tree.get(name)
        if not accept(name) or old_oid == new_oid:
            continue
        old = _Side.stored(read_dataset(old_oid)) if old_oid is not None else None
        new = _Side.stored(read_dataset(new_oid)) if new_oid is not None else None
        compared = _compare(store, name, old, new, key, budget)
        if compared is not None:
            found.append(compared)
    return DiffResult(store, from_oid, to_oid, found)


def diff(
    repo: Repository,
    a: str | None = None,
    b: str | None = None,
    *,
    staged: bool = False,
    paths: list[str] | None = None,
    key: tuple[str, ...] | str | None = None,
) -> DiffResult:
    """Compare two versions: HEAD (or `a`) with the working tree, the index (`staged`) or `b`.

    Datapoints are matched by `key` if given ("f1,f2" or a tuple; () forces content only),
    else by the key stored with the newer side, else by `id` when every changed datapoint
    on both sides has a distinct one (unchanged datapoints are never read, so only changed
    ones are checked), else by content alone. Key fields are top-level fields; a datapoint
    lacking one is matched by content only; datapoints of added or removed datasets carry
    a key only when one is given or stored. An unborn HEAD is an empty version.
    """
    if b is not None and (a is None or staged):
        raise BadInput("give two revisions, or one revision and --staged, not both")
    if isinstance(key, str):
        key = tuple(part.strip() for part in key.split(","))
    elif key is not None:
        key = tuple(key)
    if key is not None and not all(isinstance(f, str) and f for f in key):
        raise BadInput(f"key {','.join(map(str, key))!r}: empty field name", hint="--key id,lang")
    from_oid = repo.head() if a is None else repo.resolve(a)
    if b is not None:
        to_oid = repo.resolve(b)
        return _between(repo, from_oid, to_oid, repo.tree_of(to_oid), None, paths, key)
    entries = read_index(repo.index_path)
    staged_tree = {name: entry.dataset for name, entry in entries.items()}
    return _between(repo, from_oid, None, staged_tree, None if staged else entries, paths, key)


def diff_commit(
    repo: Repository,
    commit_oid: bytes,
    *,
    paths: list[str] | None = None,
    key: tuple[str, ...] | None = None,
    parent_number: int = 1,
) -> DiffResult:
    """A version against its first parent, or parent `parent_number` (an empty version for
    a first commit)."""
    parents = repo.read_commit(commit_oid).parents
    if parents and not 1 <= parent_number <= len(parents):
        raise BadInput(f"version {commit_oid.hex()[:12]} has no parent {parent_number}")
    parent = parents[parent_number - 1] if parents else None
    return _between(repo, parent, commit_oid, repo.tree_of(commit_oid), None, paths, key)


def summarize(
    repo: Repository,
    old_dataset_oid: bytes | None,
    new_dataset_oid: bytes | None,
    *,
    path: str,
    key: tuple[str, ...] | None = None,
) -> DatasetDiff | None:
    """Counts of one dataset between two stored versions; None when they are the same."""
    if old_dataset_oid == new_dataset_oid:
        return None
    old = repo.read_dataset(old_dataset_oid) if old_dataset_oid is not None else None
    new = repo.read_dataset(new_dataset_oid) if new_dataset_oid is not None else None
    return count_change(repo, path, old, new, key=key)


def count_change(
    repo: Repository,
    path: str,
    old: Dataset | None,
    new: Dataset | None,
    *,
    scan: FileScan | None = None,
    key: tuple[str, ...] | None = None,
) -> DatasetDiff | None:
    """One dataset's change counted as every command counts it; None when unchanged.

    `old` and `new` are stored versions (None: absent on that side); with `scan`, the new
    side is that read of the working file whose staged version is `new`. Datapoints are
    matched as `diff` matches them, so `status`, `show`, `log --stat` and `diff --stat`
    report the same added, removed and modified counts.
    """
    old_side = _Side.stored(old) if old is not None else None
    if scan is not None:
        assert new is not None
        new_side: _Side | None = _Side.scanned(scan, new.key)
    else:
        new_side = _Side.stored(new) if new is not None else None
    compared = _compare(repo.store, path, old_side, new_side, key, [0])
    return compared[0] if compared is not None else None
