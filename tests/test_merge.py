"""The merge engine: merge bases, datapoints by key, fields by JSON path, multisets, order,
formats and paths; and its properties, over generated edits (hypothesis)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from dsv.canonical import encode_canonical
from dsv.manifest import build_dataset
from dsv.merge import (
    MARKER,
    Conflict,
    merge_base,
    merge_datasets,
    merge_records,
    merge_trees,
)
from dsv.objects import Commit, Format, Kind, Tree, encode_object
from dsv.repo import Repository

JSONL = Format("jsonl")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    return Repository.init(tmp_path_factory.mktemp("merge"))


def store(
    repo: Repository,
    records: list[dict[str, Any]],
    key: tuple[str, ...] = ("id",),
    fmt: Format = JSONL,
) -> bytes:
    with repo.store.writer() as writer:
        ids = b"".join(writer.write(Kind.DATAPOINT, encode_canonical(r)) for r in records)
        oid, _ = build_dataset(writer, ids, fmt, key)
    return oid


def records(repo: Repository, oid: bytes | None) -> list[dict[str, Any]]:
    if oid is None:
        return []
    return [json.loads(b) for b in repo.read_datapoints(repo.read_dataset(oid))]


def merge3(
    repo: Repository,
    base: list[dict[str, Any]],
    ours: list[dict[str, Any]],
    theirs: list[dict[str, Any]],
    key: tuple[str, ...] = ("id",),
) -> tuple[list[dict[str, Any]], list[Conflict]]:
    b, o, t = (store(repo, r, key) for r in (base, ours, theirs))
    with repo.store.writer() as writer:
        merged = merge_datasets(repo, writer, "qa.jsonl", b, o, t)
    return records(repo, merged.dataset), list(merged.conflicts)


def rec(i: int, **fields: Any) -> dict[str, Any]:
    return {"id": i, "q": f"q{i}", "a": {"x": i, "y": i}, **fields}


BASE = [rec(i) for i in range(6)]


def edited(rows: list[dict[str, Any]], i: int, **fields: Any) -> list[dict[str, Any]]:
    return [({**r, **fields} if r["id"] == i else r) for r in rows]


# -- the merge base ----------------------------------------------------------------------------


def commit(repo: Repository, parents: tuple[bytes, ...], when: int) -> bytes:
    with repo.store.writer() as writer:
        tree = writer.write(Kind.TREE, encode_object(Tree(())))
        return writer.write(
            Kind.COMMIT, encode_object(Commit(tree, parents, "t <t@t>", when, 0, f"{when}\n"))
        )


def test_merge_base_is_the_lowest_common_ancestor(repo: Repository) -> None:
    root = commit(repo, (), 1)
    a1 = commit(repo, (root,), 2)
    b1 = commit(repo, (root,), 3)
    a2 = commit(repo, (a1,), 4)
    assert merge_base(repo, a2, b1) == root
    assert merge_base(repo, a2, a1) == a1
    assert merge_base(repo, a1, commit(repo, (), 5)) is None


def test_a_criss_cross_takes_the_newest_lowest_ancestor_either_way(repo: Repository) -> None:
    root = commit(repo, (), 10)
    x = commit(repo, (root,), 11)
    y = commit(repo, (root,), 12)
    # Each side merged the other: x and y are both lowest common ancestors.
    m1 = commit(repo, (x, y), 13)
    m2 = commit(repo, (y, x), 14)
    assert merge_base(repo, m1, m2) == y
    assert merge_base(repo, m2, m1) == y


# -- keyed datasets ----------------------------------------------------------------------------


def test_one_sides_change_wins_and_fields_merge_by_path(repo: Repository) -> None:
    ours = edited(BASE, 1, q="Q1")
    ours = edited(ours, 2, a={"x": 20, "y": 2})
    theirs = edited(BASE, 2, a={"x": 2, "y": 21})
    theirs = edited(theirs, 3, q="Q3")
    merged, conflicts = merge3(repo, BASE, ours, theirs)
    assert conflicts == []
    assert merged == [
        rec(0), rec(1, q="Q1"), rec(2, a={"x": 20, "y": 21}), rec(3, q="Q3"), rec(4), rec(5)
    ]  # fmt: skip


def test_the_same_change_on_both_sides_is_taken_once(repo: Repository) -> None:
    both = [*edited(BASE, 1, q="same"), rec(9)]
    merged, conflicts = merge3(repo, BASE, both, both[:])
    assert conflicts == [] and merged == both


def test_each_conflict_kind(repo: Repository) -> None:
    ours = edited(BASE, 1, q="ours")  # content
    ours = [r for r in ours if r["id"] != 2]  # delete/modify
    ours = edited(ours, 3, q="ours3")  # modify/delete
    ours.append(rec(7, q="ours7"))  # add/add
    theirs = edited(BASE, 1, q="theirs")
    theirs = edited(theirs, 2, q="theirs2")
    theirs = [r for r in theirs if r["id"] != 3]
    theirs.append(rec(7, q="theirs7"))
    merged, conflicts = merge3(repo, BASE, ours, theirs)
    assert conflicts == [
        Conflict("qa.jsonl", "content", {"id": 1}, "q", "q1", "ours", "theirs"),
        Conflict("qa.jsonl", "delete/modify", {"id": 2}, None, rec(2), UNSET, rec(2, q="theirs2")),
        Conflict("qa.jsonl", "modify/delete", {"id": 3}, None, rec(3), rec(3, q="ours3"), UNSET),
        Conflict(
            "qa.jsonl", "add/add", {"id": 7}, None, UNSET, rec(7, q="ours7"), rec(7, q="theirs7")
        ),
    ]
    # Each conflicted datapoint is a conflict record in its place: ours' place, or theirs'
    # neighbour's for a datapoint ours deleted.
    assert [r.get("id") for r in merged] == [0, 1, 2, 3, 4, 5, 7]
    assert merged[1] == {
        "id": 1,
        MARKER: {"base": rec(1), "ours": rec(1, q="ours"), "theirs": rec(1, q="theirs")},
    }
    assert merged[2][MARKER]["ours"] is None


def test_theirs_additions_follow_their_nearest_surviving_neighbour(repo: Repository) -> None:
    ours = [r for r in BASE if r["id"] != 2] + [rec(10)]
    theirs = [*BASE[:3], rec(20), rec(21), *BASE[3:]]  # after 2, which ours deleted
    theirs = [rec(19), *theirs]
    merged, _ = merge3(repo, BASE, ours, theirs)
    assert [r["id"] for r in merged] == [19, 0, 1, 20, 21, 3, 4, 5, 10]


def test_ours_order_wins(repo: Repository) -> None:
    ours = list(reversed(BASE))
    theirs = edited(BASE, 4, q="Q4")
    merged, _ = merge3(repo, BASE, ours, theirs)
    assert [r["id"] for r in merged] == [5, 4, 3, 2, 1, 0]
    assert merged[1]["q"] == "Q4"


def test_lists_merge_index_by_index_and_a_hole_is_a_conflict() -> None:
    base = {"m": ["a", "b"]}
    merged, _, found = merge_records(base, {"m": ["A", "b"]}, {"m": ["a", "b", "c"]})
    assert found == [] and merged == {"m": ["A", "b", "c"]}
    _, _, found = merge_records(base, {"m": ["a"]}, {"m": ["a", "B", "c"]})
    assert [c.field for c in found] == ["m"]  # m[1] alone would leave a hole


def test_types_matter_in_field_merges() -> None:
    # true is not 1 and 1 is not 1.0: each is a change, as `dsv diff` sees it.
    _, _, found = merge_records({"v": 1}, {"v": True}, {"v": 1.0})
    assert [(c.field, c.ours, c.theirs) for c in found] == [("v", True, 1.0)]


# -- datasets without a key ---------------------------------------------------------------------


def test_unkeyed_datasets_merge_as_multisets(repo: Repository) -> None:
    base = [{"t": "a"}, {"t": "b"}, {"t": "c"}]
    ours = [{"t": "a"}, {"t": "c"}, {"t": "d"}]
    theirs = [{"t": "a"}, {"t": "b"}, {"t": "c"}, {"t": "e"}, {"t": "d"}]
    merged, conflicts = merge3(repo, base, ours, theirs, key=())
    assert conflicts == []
    # ours removed b and added d; theirs added e and d: d is one change, taken once.
    assert merged == [{"t": "a"}, {"t": "c"}, {"t": "e"}, {"t": "d"}]


# -- formats and paths --------------------------------------------------------------------------


def test_csv_column_changes_merge_and_incompatible_options_conflict(repo: Repository) -> None:
    rows = [{"id": "1", "q": "x"}]
    base = store(repo, rows, fmt=Format("csv", ("id", "q"), (("delimiter", ","),)))
    ours = store(
        repo, [{**rows[0], "a": ""}], fmt=Format("csv", ("id", "q", "a"), (("delimiter", ","),))
    )
    theirs = store(repo, [{"id": "1"}], fmt=Format("csv", ("id",), (("delimiter", ","),)))
    with repo.store.writer() as writer:
        merged = merge_datasets(repo, writer, "t.csv", base, ours, theirs)
    assert merged.conflicts == ()
    assert merged.dataset is not None
    assert repo.read_dataset(merged.dataset).format.columns == ("id", "a")
    assert records(repo, merged.dataset) == [{"id": "1", "a": ""}]
    semi = store(repo, rows, fmt=Format("csv", ("id", "q"), (("delimiter", ";"),)))
    tab = store(repo, rows, fmt=Format("csv", ("id", "q"), (("delimiter", "\t"),)))
    with repo.store.writer() as writer:
        clash = merge_datasets(repo, writer, "t.csv", base, semi, tab)
    assert clash.whole and [c.kind for c in clash.conflicts] == ["format"]


def test_datasets_added_removed_and_renamed_on_either_side(repo: Repository) -> None:
    qa = store(repo, BASE)
    other = store(repo, [rec(100)])
    changed = store(repo, edited(BASE, 1, q="theirs"))
    base = {"qa.jsonl": qa, "old.jsonl": other}
    ours = {"renamed/qa.jsonl": qa, "old.jsonl": other, "mine.jsonl": other}
    theirs = {"qa.jsonl": changed}  # edited qa.jsonl, removed old.jsonl
    with repo.store.writer() as writer:
        tree, merges = merge_trees(repo, writer, base, ours, theirs)
    assert sorted(tree) == ["mine.jsonl", "renamed/qa.jsonl"]
    assert records(repo, tree["renamed/qa.jsonl"]) == edited(BASE, 1, q="theirs")
    assert all(not m.conflicts for m in merges)


def test_a_dataset_modified_on_one_side_and_deleted_on_the_other_conflicts(
    repo: Repository,
) -> None:
    qa = store(repo, BASE)
    with repo.store.writer() as writer:
        tree, merges = merge_trees(
            repo, writer, {"qa.jsonl": qa}, {"qa.jsonl": store(repo, BASE[1:])}, {}
        )
    assert tree == {"qa.jsonl": store(repo, BASE[1:])}
    assert merges[0].whole
    assert merges[0].conflicts == (
        Conflict("qa.jsonl", "modify/delete", None, None, "(dataset)", "(dataset)", "(deleted)"),
    )


# -- properties ---------------------------------------------------------------------------------

KEYS = list(range(12))


@st.composite
def edits(draw: st.DrawFn, keys: list[int], new: range) -> dict[int, dict[str, Any] | None]:
    """A side's changes: key -> new record (None: deleted)."""
    out: dict[int, dict[str, Any] | None] = {}
    picked = draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys))) if keys else []
    for k in picked:
        what = draw(st.sampled_from(["q", "x", "y", "del"]))
        if what == "del":
            out[k] = None
        elif what == "q":
            out[k] = rec(k, q=draw(st.sampled_from(["A", "B"])))
        else:
            out[k] = rec(k, a={"x": k, "y": k, what: draw(st.integers(0, 2))})
    for k in draw(st.lists(st.sampled_from(list(new)), unique=True, max_size=3)):
        out[k] = rec(k, q=draw(st.sampled_from(["A", "B"])))
    return out


def apply(
    base: list[dict[str, Any]], change: dict[int, dict[str, Any] | None]
) -> list[dict[str, Any]]:
    out = [change.get(r["id"], r) for r in base]
    kept = [r for r in out if r is not None]
    return kept + [
        r for k, r in change.items() if r is not None and k not in {b["id"] for b in base}
    ]


def by_key(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in rows}


PROPS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPS
@given(change=edits(KEYS, range(20, 24)))
def test_merging_with_itself_or_an_ancestor_changes_nothing(
    repo: Repository, change: dict[int, dict[str, Any] | None]
) -> None:
    base = [rec(k) for k in KEYS]
    side = apply(base, change)
    assert merge3(repo, base, side, side) == (side, [])
    assert merge3(repo, base, side, base) == (side, [])  # theirs is the ancestor
    assert merge3(repo, side, side, side) == (side, [])


@PROPS
@given(ours=edits(KEYS, range(20, 24)), theirs=edits(KEYS, range(22, 26)))
def test_merge_is_symmetric_in_datapoints_when_clean(
    repo: Repository,
    ours: dict[int, dict[str, Any] | None],
    theirs: dict[int, dict[str, Any] | None],
) -> None:
    base = [rec(k) for k in KEYS]
    a, b = apply(base, ours), apply(base, theirs)
    ab, conflicts_ab = merge3(repo, base, a, b)
    ba, conflicts_ba = merge3(repo, base, b, a)
    assert len(conflicts_ab) == len(conflicts_ba)
    if not conflicts_ab:
        assert by_key(ab) == by_key(ba)


@PROPS
@given(data=st.data())
def test_disjoint_keys_merge_clean_and_each_side_wins_its_keys(
    repo: Repository, data: st.DataObject
) -> None:
    base = [rec(k) for k in KEYS]
    split = data.draw(st.integers(0, len(KEYS)))
    ours = data.draw(edits(KEYS[:split], range(20, 23)))
    theirs = data.draw(edits(KEYS[split:], range(23, 26)))
    merged, conflicts = merge3(repo, base, apply(base, ours), apply(base, theirs))
    assert conflicts == []
    result = by_key(merged)
    for change in (ours, theirs):
        for k, row in change.items():
            assert result.get(k) == row  # restricted to a side's changed keys: that side
    untouched = set(KEYS) - set(ours) - set(theirs)
    assert all(result[k] == rec(k) for k in untouched)


@PROPS
@given(
    ours=st.lists(st.sampled_from("abcd"), max_size=8),
    theirs=st.lists(st.sampled_from("abcd"), max_size=8),
)
def test_multiset_merge_is_symmetric(repo: Repository, ours: list[str], theirs: list[str]) -> None:
    base = [{"t": t} for t in "abca"]
    a, b = [{"t": t} for t in ours], [{"t": t} for t in theirs]
    ab, _ = merge3(repo, base, a, b, key=())
    ba, _ = merge3(repo, base, b, a, key=())
    assert Counter(r["t"] for r in ab) == Counter(r["t"] for r in ba)


def test_merge_reads_only_what_changed(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    base = [rec(k) for k in range(3000)]
    ours = edited(base, 5, q="ours")
    theirs = edited(base, 2900, q="theirs")
    b, o, t = (store(repo, r) for r in (base, ours, theirs))
    read: list[int] = []
    real = repo.store.read_bulk

    def counting(oids: list[bytes], kind: Kind) -> list[bytes]:
        read.append(len(oids))
        return real(oids, kind)

    monkeypatch.setattr(repo.store, "read_bulk", counting)
    with repo.store.writer() as writer:
        merged = merge_datasets(repo, writer, "qa.jsonl", b, o, t)
    assert sum(read) <= 4
    assert by_key(records(repo, merged.dataset))[5]["q"] == "ours"


def test_large_merges_align_in_two_workers_to_the_same_result(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dsv.merge

    base = [rec(k) for k in range(40)]
    ours = [r for r in edited(edited(base, 3, q="o"), 7, q="o7") if r["id"] != 9] + [rec(50)]
    theirs = [*edited(edited(base, 3, a={"x": 0, "y": 9}), 7, q="t7")[:20], rec(60), *base[20:]]
    alone = merge3(repo, base, ours, theirs)
    monkeypatch.setattr(dsv.merge, "_FORK_AT", 0)
    forked: list[int] = []
    real = dsv.merge.fork_map

    def counting(*args: Any, **kwargs: Any) -> Any:
        forked.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(dsv.merge, "fork_map", counting)
    assert merge3(repo, base, ours, theirs) == alone
    assert forked == [1]
    assert [c.field for c in alone[1]] == ["q"]
