"""Three-way merge of versions: datasets by path, datapoints by key, fields by JSON path.

Returns data (the merged tree, the conflicts and how to resolve each), never prints. The
rules are those of docs/merge.md; datapoints unchanged on a side are never read, so the
cost grows with the changes, as a diff's does.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import msgspec

from dsv.canonical import decode_canonical, encode_canonical
from dsv.diff import _CACHE_BYTES, _compare, _Plan, _same, _Side, json_path
from dsv.manifest import Runs, build_dataset
from dsv.objects import OID_SIZE, Dataset, Format, Kind
from dsv.parallel import can_fork, fork_map

if TYPE_CHECKING:
    from dsv.repo import Repository
    from dsv.store import ObjectStore, ObjectWriter

__all__ = [
    "MARKER",
    "Conflict",
    "DatasetMerge",
    "MergeResult",
    "Slot",
    "merge_base",
    "merge_commits",
    "merge_datasets",
    "merge_records",
    "merge_trees",
]

# The member of a conflict record, the datapoint that stands in a JSON file for a datapoint
# both sides changed differently: it holds the key, then base, ours and theirs.
MARKER: Final = "dsv-conflict"

ABSENT: Final = msgspec.UNSET
# Datapoints (ours and theirs together) from which the two alignments run in two processes:
# at 2 x 1M they took 1.55 s against 2.07 s in one, at 2 x 100k 0.29 s against 0.24 s
# (docs/performance.md).
_FORK_AT = 400_000


class Conflict(msgspec.Struct, frozen=True, omit_defaults=True):
    """One thing both sides changed differently: a field of a datapoint, a datapoint, or a
    whole dataset (`key` None); values are UNSET (left out of JSON) where a side lacks it."""

    path: str
    kind: str  # content | modify/delete | delete/modify | add/add | format | rename
    key: dict[str, Any] | None = None
    field: str | None = None
    base: Any = msgspec.UNSET
    ours: Any = msgspec.UNSET
    theirs: Any = msgspec.UNSET


class Slot(msgspec.Struct, frozen=True, array_like=True):
    """A conflicted datapoint of a merged dataset: its conflict record's id (`marker`) and
    the datapoint each side's resolution puts there (None: no datapoint)."""

    key: dict[str, Any] | None
    marker: bytes
    ours: bytes | None
    theirs: bytes | None


class DatasetMerge(msgspec.Struct, frozen=True):
    """The merge of one path: `dataset` is the result (conflict records at each slot; None:
    deleted); a dataset-level conflict has `ours`/`theirs` datasets to choose from."""

    path: str
    dataset: bytes | None
    conflicts: tuple[Conflict, ...] = ()
    slots: tuple[Slot, ...] = ()
    whole: bool = False  # a dataset-level conflict: resolved by taking a side's dataset
    ours: bytes | None = None
    theirs: bytes | None = None


class MergeResult(msgspec.Struct, frozen=True):
    """A merge: its base, the merged tree and each path it changed relative to ours."""

    base: bytes | None
    ours: bytes | None
    theirs: bytes
    tree: dict[str, bytes]
    changed: tuple[DatasetMerge, ...]

    @property
    def conflicts(self) -> list[Conflict]:
        return [c for m in self.changed for c in m.conflicts]


# -- the merge base ----------------------------------------------------------------------------


def _ancestors(repo: Repository, start: bytes) -> set[bytes]:
    seen = {start}
    todo = [start]
    while todo:
        for parent in repo.read_commit(todo.pop()).parents:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def merge_base(repo: Repository, a: bytes, b: bytes) -> bytes | None:
    """The best common ancestor of two commits, or None when they share no history.

    Of several lowest common ancestors (a criss-cross), the newest by commit time is taken,
    then the greatest id: any dsv picks the same one.
    """
    common = _ancestors(repo, a) & _ancestors(repo, b)
    if not common:
        return None
    # A common ancestor that is a proper ancestor of another is not lowest.
    below: set[bytes] = set()
    for oid in common:
        if oid in below:
            continue
        todo = list(repo.read_commit(oid).parents)
        while todo:
            parent = todo.pop()
            if parent not in below:
                below.add(parent)
                todo.extend(repo.read_commit(parent).parents)
    lowest = common - below
    return max(lowest, key=lambda oid: (repo.read_commit(oid).time, oid))


# -- values: three-way merge of JSON ---------------------------------------------------------


def _same_value(a: Any, b: Any) -> bool:
    if a is ABSENT or b is ABSENT:
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_value, a, b))
    return _same(a, b)


def _merge_value(
    base: Any, ours: Any, theirs: Any, path: str, prefer: str, out: list[Conflict], where: str
) -> Any:
    """The three-way merge of one JSON value; a conflict takes `prefer`'s side and is noted."""
    if _same_value(ours, theirs) or _same_value(base, theirs):
        return ours
    if _same_value(base, ours):
        return theirs
    if isinstance(base, dict) and isinstance(ours, dict) and isinstance(theirs, dict):
        merged: dict[str, Any] = {}
        for name in sorted(base.keys() | ours.keys() | theirs.keys()):
            value = _merge_value(
                base.get(name, ABSENT),
                ours.get(name, ABSENT),
                theirs.get(name, ABSENT),
                json_path(path, name),
                prefer,
                out,
                where,
            )
            if value is not ABSENT:
                merged[name] = value
        return merged
    if isinstance(base, list) and isinstance(ours, list) and isinstance(theirs, list):
        # Index by index, as `dsv diff` reports lists; a hole left in the middle is a conflict
        # of the whole list.
        found: list[Conflict] = []
        items = [
            _merge_value(
                base[i] if i < len(base) else ABSENT,
                ours[i] if i < len(ours) else ABSENT,
                theirs[i] if i < len(theirs) else ABSENT,
                json_path(path, i),
                prefer,
                found,
                where,
            )
            for i in range(max(len(base), len(ours), len(theirs)))
        ]
        while items and items[-1] is ABSENT:
            items.pop()
        if ABSENT not in items:
            out.extend(found)
            return items
    out.append(Conflict(where, "content", None, path, base, ours, theirs))
    return ours if prefer == "ours" else theirs


def merge_records(
    base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any], *, path: str = ""
) -> tuple[dict[str, Any], dict[str, Any], list[Conflict]]:
    """Field-by-field merge of one datapoint: (taking ours at conflicts, taking theirs at
    conflicts, the conflicting fields)."""
    conflicts: list[Conflict] = []
    with_ours = _merge_value(base, ours, theirs, "", "ours", conflicts, path)
    with_theirs = (
        with_ours if not conflicts else _merge_value(base, ours, theirs, "", "theirs", [], path)
    )
    return with_ours, with_theirs, conflicts


# -- one dataset -------------------------------------------------------------------------------


class _Mapper:
    """Positions of one side's version of the base's datapoints, from an alignment."""

    def __init__(self, plan: _Plan | None, *, by_new: bool = False) -> None:
        self.identity = plan is None or (
            plan.old is not None and plan.new is not None and plan.old.content == plan.new.content
        )
        pieces = [] if plan is None else list(plan.pieces)
        if by_new:
            pieces = sorted((n, o, k) for o, n, k in pieces)
        self.pieces = pieces
        self.starts = [p[0] for p in pieces]

    def get(self, pos: int) -> int | None:
        if self.identity:
            return pos
        i = bisect.bisect_right(self.starts, pos) - 1
        if i < 0:
            return None
        start, other, length = self.pieces[i]
        return other + pos - start if pos < start + length else None


class _Build:
    """Edits to ours' id list: replacements, deletions and insertions after a position."""

    def __init__(self) -> None:
        self.replace: dict[int, bytes] = {}
        self.delete: set[int] = set()
        self.after: dict[int, list[bytes]] = {}

    def ids(self, ours: bytes, count: int) -> tuple[bytes, Runs, bytes]:
        """The new id list, with the runs of ours' positions and fresh ids that make it."""
        runs: Runs = []
        fresh = bytearray()
        parts: list[bytes] = []

        def add_fresh(oids: list[bytes]) -> None:
            if not oids:
                return
            runs.append((False, len(fresh) // OID_SIZE, len(oids)))
            for oid in oids:
                fresh.extend(oid)
                parts.append(oid)

        points = sorted(self.replace.keys() | self.delete | self.after.keys())
        add_fresh(self.after.get(-1, []))
        at = 0
        for p in points:
            if p < 0:
                continue
            if p > at:
                runs.append((True, at, p - at))
                parts.append(ours[at * OID_SIZE : p * OID_SIZE])
            if p in self.delete:
                pass
            elif p in self.replace:
                add_fresh([self.replace[p]])
            else:
                runs.append((True, p, 1))
                parts.append(ours[p * OID_SIZE : (p + 1) * OID_SIZE])
            add_fresh(self.after.get(p, []))
            at = p + 1
        if at < count:
            runs.append((True, at, count - at))
            parts.append(ours[at * OID_SIZE :])
        return b"".join(parts), runs, bytes(fresh)


def _key_dict(fields: tuple[str, ...], key: tuple[bytes, ...]) -> dict[str, Any]:
    return {f: msgspec.json.decode(v) for f, v in zip(fields, key, strict=True)}


class _DatasetMerger:
    """Merges one path whose three versions exist (an empty base for add/add)."""

    def __init__(
        self,
        repo: Repository,
        writer: ObjectWriter,
        path: str,
        base: Dataset | None,
        ours: Dataset,
        theirs: Dataset,
    ) -> None:
        self.repo, self.writer, self.path = repo, writer, path
        self.base, self.ours, self.theirs = base, ours, theirs
        self.conflicts: list[Conflict] = []
        self.slots: list[Slot] = []
        # Bodies written here: not readable from the store until the writer publishes them.
        self.written: dict[bytes, bytes] = {}

    def _write(self, record: dict[str, Any]) -> bytes:
        body = encode_canonical(record)
        oid = self.writer.write(Kind.DATAPOINT, body)
        self.written[oid] = body
        return oid

    def _fit_columns(self, oids: bytes, columns: tuple[str, ...]) -> bytes:
        """A CSV result whose columns both sides changed: each datapoint with exactly the
        merged columns (a missing one empty, as a CSV file reads back; a removed one gone),
        so that the file written reads back as the version stored."""
        ids = [oids[i : i + OID_SIZE] for i in range(0, len(oids), OID_SIZE)]
        stored = [oid for oid in dict.fromkeys(ids) if oid not in self.written]
        bodies = dict(self.written)
        bodies.update(zip(stored, self.repo.store.read_bulk(stored, Kind.DATAPOINT), strict=True))
        fitted: dict[bytes, bytes] = {}
        for oid in dict.fromkeys(ids):
            record = decode_canonical(bodies[oid])
            if MARKER in record or sorted(record) == sorted(columns):
                fitted[oid] = oid
            else:
                fitted[oid] = self._write({c: record.get(c, "") for c in columns})
        return b"".join(fitted[oid] for oid in ids)

    def _bodies(self, oids: list[bytes], *plans: _Plan | None) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        for plan in plans:
            if plan is not None:
                found.update((o, plan.cache[o]) for o in oids if o in plan.cache)
        missing = [o for o in dict.fromkeys(oids) if o not in found]
        if missing:
            found.update(
                zip(missing, self.repo.store.read_bulk(missing, Kind.DATAPOINT), strict=True)
            )
        return found

    def merge_format(self) -> Format | None:
        """The merged format, or None (a conflict) when the sides changed it incompatibly."""
        base = self.base.format if self.base is not None else None
        o, t = self.ours.format, self.theirs.format
        if o == t or t == base:
            return o
        if o == base:
            return t
        schema_conflict = (
            o.schema != t.schema
            and base is not None
            and base.schema
            not in (
                o.schema,
                t.schema,
            )
        )
        if base is None or o.kind != t.kind or schema_conflict:
            return None
        options = _merge_options(base.options, o.options, t.options)
        if options is None:
            return None
        columns = _merge_order(base.columns, o.columns, t.columns)
        schema = o.schema if t.schema == base.schema else t.schema
        if o.kind == "parquet" and o.schema != t.schema:
            return None  # two changed Arrow schemas: no rule here merges them
        return Format(o.kind, columns, options, schema)

    def run(self) -> tuple[bytes, tuple[str, ...]] | None:
        """The merged dataset's id; None when the format conflicts."""
        fmt = self.merge_format()
        if fmt is None:
            return None
        key = self.ours.key if self.ours.key == self.theirs.key else None
        if key is None:
            base_key = self.base.key if self.base is not None else ()
            key = self.theirs.key if self.ours.key == base_key else self.ours.key
        store = self.repo.store
        base_side = _Side.stored(self.base) if self.base is not None else None
        if base_side is None:
            base_side = _Side(fmt, key, 0, _empty_content(), None, b"")
        ours_side, theirs_side = _Side.stored(self.ours), _Side.stored(self.theirs)
        # Both alignments share the base's ids, read once.
        base_side._ids = base_side.ids(store)
        if can_fork() and self.ours.count + self.theirs.count >= _FORK_AT:
            # The two sides' alignments are independent: one core each.
            po, pt = fork_map(
                _slim_align,
                [(store, base_side, side, key) for side in (ours_side, theirs_side)],
            )
        else:
            budget = [_CACHE_BYTES]
            po = _align(store, base_side, ours_side, key, budget)
            pt = _align(store, base_side, theirs_side, key, budget)
        ours_ids = ours_side.ids(store)
        build = _Build()
        if key:
            self._keyed(po, pt, build, key)
        else:
            self._multiset(po, pt, build)
        oids, runs, fresh = build.ids(ours_ids, self.ours.count)
        if self.slots:
            # Conflicts are listed in the order of the merged dataset.
            where: dict[bytes, tuple[int, int]] = {
                oid: (at, 0) for at, oid in build.replace.items()
            }
            for at, placed in build.after.items():
                where.update((oid, (at, 1 + i)) for i, oid in enumerate(placed))
            self.slots.sort(key=lambda s: where[s.marker])
            rank = {msgspec.json.encode(s.key): i for i, s in enumerate(self.slots)}
            self.conflicts.sort(key=lambda c: rank[msgspec.json.encode(c.key)])
        both = (self.ours.format.columns, self.theirs.format.columns)
        if fmt.kind == "csv" and any(columns != fmt.columns for columns in both):
            oids = self._fit_columns(oids, fmt.columns)
            runs, fresh = [], b""  # not a cover of the new list: build_dataset finds its own
        oid, _ = build_dataset(
            self.writer, oids, fmt, key, base=self.ours, base_oids=ours_ids, runs=(runs, fresh)
        )
        return oid, key

    # -- keyed -------------------------------------------------------------------------------

    def _keyed(
        self, po: _Plan | None, pt: _Plan | None, build: _Build, key: tuple[str, ...]
    ) -> None:
        Rec = tuple[int, bytes, Any]
        oc: dict[Any, tuple[Rec | None, Rec | None]] = _changes(po)
        tc: dict[Any, tuple[Rec | None, Rec | None]] = _changes(pt)
        to_ours = _Mapper(po)
        placed: dict[int, int] = {}  # theirs position -> ours position, where known
        inserts: list[tuple[int, bytes]] = []  # theirs position, id to place
        both: list[tuple[Any, Rec | None, Rec | None, Rec | None, Rec | None]] = []
        for k, (tb, tn) in tc.items():
            mine = oc.get(k)
            if mine is None:
                if tb is not None:
                    at = to_ours.get(tb[0])
                    assert at is not None
                    if tn is not None:
                        build.replace[at] = tn[1]
                        placed[tn[0]] = at
                    else:
                        build.delete.add(at)
                elif tn is not None:
                    inserts.append((tn[0], tn[1]))
                continue
            ob, on = mine
            if on is not None and tn is not None:
                placed[tn[0]] = on[0]
            if (on[1] if on else None) == (tn[1] if tn else None):
                continue  # the same change on both sides, taken once
            both.append((k, ob, on, tb, tn))
        if both:
            self._both(both, build, inserts, key, po, pt)
        self._insert(inserts, placed, build, to_ours, pt)

    def _both(
        self,
        both: list[tuple[Any, Any, Any, Any, Any]],
        build: _Build,
        inserts: list[tuple[int, bytes]],
        key: tuple[str, ...],
        po: _Plan | None,
        pt: _Plan | None,
    ) -> None:
        wanted = [r[1] for item in both for r in item[1:] if r is not None]
        bodies = self._bodies(wanted, po, pt)
        for k, ob, on, _tb, tn in both:
            keyd = _key_dict(key, k)
            b = decode_canonical(bodies[ob[1]]) if ob is not None else None
            o = decode_canonical(bodies[on[1]]) if on is not None else None
            t = decode_canonical(bodies[tn[1]]) if tn is not None else None
            if b is not None and o is not None and t is not None:
                with_ours, with_theirs, found = merge_records(b, o, t, path=self.path)
                if not found:
                    build.replace[on[0]] = self._write(with_ours)
                    continue
                self.conflicts += [msgspec.structs.replace(c, key=keyd) for c in found]
                ours_oid: bytes | None = self._write(with_ours)
                theirs_oid: bytes | None = self._write(with_theirs)
            else:
                kind = (
                    "add/add"
                    if b is None
                    else "modify/delete"
                    if o is not None
                    else "delete/modify"
                )
                self.conflicts.append(
                    Conflict(
                        self.path,
                        kind,
                        keyd,
                        None,
                        ABSENT if b is None else b,
                        ABSENT if o is None else o,
                        ABSENT if t is None else t,
                    )
                )
                ours_oid = on[1] if on is not None else None
                theirs_oid = tn[1] if tn is not None else None
            record: dict[str, Any] = dict(keyd)
            record[MARKER] = {"base": b, "ours": o, "theirs": t}
            marker = self._write(record)
            self.slots.append(Slot(keyd, marker, ours_oid, theirs_oid))
            if on is not None:
                build.replace[on[0]] = marker
            else:
                inserts.append((tn[0], marker))

    def _insert(
        self,
        inserts: list[tuple[int, bytes]],
        placed: dict[int, int],
        build: _Build,
        to_ours: _Mapper,
        pt: _Plan | None,
    ) -> None:
        """Place theirs' additions after their nearest preceding neighbour that survives."""
        from_theirs = _Mapper(pt, by_new=True)
        anchor_of: dict[int, int] = {}
        inserted = {pos for pos, _ in inserts}
        for pos, oid in sorted(inserts):
            anchor = -1
            q = pos - 1
            while q >= 0:
                if q in inserted:
                    anchor = anchor_of[q]
                    break
                if q in placed:
                    anchor = placed[q]
                    break
                b = from_theirs.get(q)
                at = to_ours.get(b) if b is not None else None
                if at is not None and at not in build.delete:
                    anchor = at
                    break
                q -= 1
            anchor_of[pos] = anchor
            build.after.setdefault(anchor, []).append(oid)

    # -- multisets ---------------------------------------------------------------------------

    def _multiset(self, po: _Plan | None, pt: _Plan | None, build: _Build) -> None:
        """Adds and removes of both sides, by content; the same change of a datapoint's count
        on both sides is taken once."""

        def delta(plan: _Plan | None) -> Counter[bytes]:
            c: Counter[bytes] = Counter()
            if plan is not None:
                c.update(r[1] for r in plan.added)
                c.subtract(r[1] for r in plan.removed)
            return c

        d_o, d_t = delta(po), delta(pt)
        to_ours = _Mapper(po)
        inserts: list[tuple[int, bytes]] = []
        if pt is None:
            return
        for rec in pt.removed:
            if d_o.get(rec[1], 0) == d_t[rec[1]]:
                continue
            at = to_ours.get(rec[0])
            if at is not None:
                build.delete.add(at)
        for rec in pt.added:
            if d_o.get(rec[1], 0) == d_t[rec[1]]:
                continue
            inserts.append((rec[0], rec[1]))
        self._insert(inserts, {}, build, to_ours, pt)


def _empty_content() -> bytes:
    from dsv.objects import content_id

    return content_id(b"")


def _align(
    store: ObjectStore, old: _Side, new: _Side, key: tuple[str, ...], budget: list[int]
) -> _Plan | None:
    if old.content == new.content:
        return None
    found = _compare(store, "", old, new, key, budget)
    return found[1] if found is not None else None


def _slim_align(store: ObjectStore, old: _Side, new: _Side, key: tuple[str, ...]) -> _Plan | None:
    """`_align` in a forked worker: what the merge reads of it, without the sides and bodies
    (sent back pickled)."""
    plan = _align(store, old, new, key, [_CACHE_BYTES])
    if plan is None:
        return None
    return _Plan(plan.path, None, None, plan.key, plan.removed, plan.added, plan.pairs, plan.pieces)


def _changes(plan: _Plan | None) -> dict[Any, tuple[Any, Any]]:
    """key -> (base record or None, new record or None) of each changed datapoint."""
    out: dict[Any, tuple[Any, Any]] = {}
    if plan is None:
        return out
    for rec in plan.removed:
        out[rec[2]] = (rec, None)
    for rec in plan.added:
        out[rec[2]] = (None, rec)
    for old, new in plan.pairs:
        out[old[2]] = (old, new)
    return out


def _merge_options(
    base: tuple[tuple[str, str], ...],
    ours: tuple[tuple[str, str], ...],
    theirs: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, str], ...] | None:
    b, o, t = dict(base), dict(ours), dict(theirs)
    out: dict[str, str] = {}
    for name in sorted(b.keys() | o.keys() | t.keys()):
        bv, ov, tv = b.get(name), o.get(name), t.get(name)
        if ov == tv or tv == bv:
            value = ov
        elif ov == bv:
            value = tv
        else:
            return None
        if value is not None:
            out[name] = value
    return tuple(out.items())


def _merge_order(
    base: tuple[str, ...], ours: tuple[str, ...], theirs: tuple[str, ...]
) -> tuple[str, ...]:
    """Ours' order without what theirs removed, theirs' additions after their nearest
    preceding neighbour that is kept (the rule of records, applied to columns)."""
    gone = set(base) - set(theirs)
    out = [c for c in ours if c not in gone]
    for i, name in enumerate(theirs):
        if name in base or name in out:
            continue
        j = i - 1
        while j >= 0 and theirs[j] not in out:
            j -= 1
        out.insert(out.index(theirs[j]) + 1 if j >= 0 else 0, name)
    return tuple(out)


# -- trees -------------------------------------------------------------------------------------


def _renames(repo: Repository, base: dict[str, bytes], side: dict[str, bytes]) -> dict[str, str]:
    """Paths of the base a side renamed: old -> new, when the new path holds the same
    records (as `dsv mv` leaves them) or shares at least half of its ids with the old."""
    gone = [p for p in base if p not in side]
    came = [p for p in side if p not in base]
    out: dict[str, str] = {}
    if not gone or not came:
        return out
    for old in gone:
        old_ds = repo.read_dataset(base[old])
        for new in came:
            if new in out.values():
                continue
            new_ds = repo.read_dataset(side[new])
            if new_ds.content == old_ds.content and new_ds.format.kind == old_ds.format.kind:
                out[old] = new
                break
    for old in gone:
        if old in out:
            continue
        old_ds = repo.read_dataset(base[old])
        old_ids = set(_split(repo.read_oid_list(old_ds)))
        for new in came:
            if new in out.values():
                continue
            new_ds = repo.read_dataset(side[new])
            if new_ds.format.kind != old_ds.format.kind or not old_ids:
                continue
            shared = sum(1 for oid in _split(repo.read_oid_list(new_ds)) if oid in old_ids)
            if shared * 2 >= max(len(old_ids), new_ds.count):
                out[old] = new
                break
    return out


def _split(ids: bytes) -> Iterator[bytes]:
    for i in range(0, len(ids), OID_SIZE):
        yield ids[i : i + OID_SIZE]


def merge_trees(
    repo: Repository,
    writer: ObjectWriter,
    base: dict[str, bytes],
    ours: dict[str, bytes],
    theirs: dict[str, bytes],
) -> tuple[dict[str, bytes], list[DatasetMerge]]:
    """The merged tree (path -> dataset) and the merge of each path that differs from ours."""
    ours_moves, theirs_moves = _renames(repo, base, ours), _renames(repo, base, theirs)
    renamed: list[Conflict] = []
    for old in set(ours_moves) & set(theirs_moves):
        new_t = theirs_moves[old]
        if ours_moves[old] != new_t:
            # Both renamed it, differently: merged under ours' name, the rename a conflict.
            renamed.append(
                Conflict(ours_moves[old], "rename", None, None, old, ours_moves[old], new_t)
            )
            theirs_moves[old] = ours_moves[old]
            if new_t in theirs:
                theirs = {**theirs, ours_moves[old]: theirs[new_t]}
                del theirs[new_t]
    # Each side's renames are followed: the base and the other side are seen at the new name.
    base, ours, theirs = dict(base), dict(ours), dict(theirs)
    for old, new in {**theirs_moves, **ours_moves}.items():
        if old in base:
            base[new] = base.pop(old)
    for old, new in ours_moves.items():
        if old in theirs and new not in theirs:
            theirs[new] = theirs.pop(old)
    for old, new in theirs_moves.items():
        if old in ours and new not in ours:
            ours[new] = ours.pop(old)
    result = dict(ours)
    changed: list[DatasetMerge] = []
    for path in sorted(base.keys() | ours.keys() | theirs.keys(), key=lambda p: p.encode()):
        extra = tuple(c for c in renamed if c.path == path)
        b, o, t = base.get(path), ours.get(path), theirs.get(path)
        if o == t or t == b:
            if extra:
                changed.append(DatasetMerge(path, o, extra))
            continue
        if o == b:
            if t is None:
                del result[path]
            else:
                result[path] = t
            changed.append(DatasetMerge(path, t, extra))
            continue
        if o is None or t is None:
            kept = o if o is not None else t
            kind = "modify/delete" if o is not None else "delete/modify"
            conflict = Conflict(path, kind, None, None, "(dataset)", _presence(o), _presence(t))
            assert kept is not None
            result[path] = kept
            changed.append(DatasetMerge(path, kept, (conflict, *extra), (), True, o, t))
            continue
        merged = merge_datasets(repo, writer, path, b, o, t)
        if merged.dataset is not None:
            result[path] = merged.dataset
        if extra:
            merged = msgspec.structs.replace(merged, conflicts=merged.conflicts + extra)
        if merged.dataset != o or merged.conflicts:
            changed.append(merged)
    return result, changed


def _presence(oid: bytes | None) -> str:
    return "(dataset)" if oid is not None else "(deleted)"


def merge_datasets(
    repo: Repository,
    writer: ObjectWriter,
    path: str,
    base: bytes | None,
    ours: bytes,
    theirs: bytes,
) -> DatasetMerge:
    """The three-way merge of one path's versions (no base: both added it)."""
    b = repo.read_dataset(base) if base is not None else None
    o, t = repo.read_dataset(ours), repo.read_dataset(theirs)
    if o.same_as(t):
        return DatasetMerge(path, ours)
    merger = _DatasetMerger(repo, writer, path, b, o, t)
    ran = merger.run()
    if ran is None:
        conflict = Conflict(
            path,
            "format",
            None,
            None,
            _format_text(b.format) if b is not None else ABSENT,
            _format_text(o.format),
            _format_text(t.format),
        )
        return DatasetMerge(path, ours, (conflict,), (), True, ours, theirs)
    return DatasetMerge(path, ran[0], tuple(merger.conflicts), tuple(merger.slots))


def _format_text(fmt: Format) -> str:
    options = "".join(f" {k}={v!r}" for k, v in fmt.options)
    columns = f" columns {','.join(fmt.columns)}" if fmt.columns else ""
    return f"{fmt.kind}{columns}{options}"


def merge_commits(
    repo: Repository, writer: ObjectWriter, ours: bytes | None, theirs: bytes
) -> MergeResult:
    """Merge commit `theirs` into `ours` (None: an unborn branch) from their merge base."""
    base = merge_base(repo, ours, theirs) if ours is not None else None
    tree, changed = merge_trees(
        repo, writer, repo.tree_of(base), repo.tree_of(ours), repo.tree_of(theirs)
    )
    return MergeResult(base, ours, theirs, tree, tuple(changed))
