"""Dataset diffs: matching modes, reorders, field paths, schema changes and the JSON contracts.

Expected results are computed here from the records the tests write (plain dicts, blake3 over
a canonical encoding done with the json module), never with dsv's own diff code.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import dsv
import dsv.diff as diff_module
from dsv import diffview, labels, ops
from dsv.canonical import encode_canonical
from dsv.diff import Change, DatasetDiff, FieldChange, diff, summarize
from dsv.errors import BadInput
from tests.conftest import Dsv, commit_records

Record = dict[str, Any]


# -- ground truth, computed without dsv ------------------------------------------------------


def oid_of(record: Record) -> str:
    """Datapoint id per docs/format.md §1-2, for records without floats."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return blake3.blake3(b"datapoint\x00" + canonical.encode()).hexdigest()


def lis(seq: list[int]) -> int:
    """Longest increasing subsequence, the quadratic textbook way."""
    best = [1] * len(seq)
    for i in range(len(seq)):
        for j in range(i):
            if seq[j] < seq[i]:
                best[i] = max(best[i], best[j] + 1)
    return max(best, default=0)


def keyed_truth(old: list[Record], new: list[Record], key: str) -> dict[str, set[Any]]:
    """Keys added, removed, modified and unchanged between two lists with unique keys."""
    a = {r[key]: r for r in old}
    b = {r[key]: r for r in new}
    return {
        "added": set(b) - set(a),
        "removed": set(a) - set(b),
        "modified": {k for k in set(a) & set(b) if a[k] != b[k]},
        "unchanged": {k for k in set(a) & set(b) if a[k] == b[k]},
    }


# -- building repositories -------------------------------------------------------------------


def write_jsonl(path: Path, records: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def commit(
    repo: dsv.Repository,
    name: str,
    records: list[Record],
    message: str,
    key: tuple[str, ...] | None = None,
) -> bytes:
    write_jsonl(repo.root / name, records)
    ops.add(repo, [str(repo.root / name)], key=key)
    return ops.commit(repo, message)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dsv.Repository]:
    monkeypatch.chdir(tmp_path)
    with dsv.Repository.init(tmp_path) as opened:
        yield opened


def qa(n: int, *, start: int = 0) -> list[Record]:
    return [
        {
            "id": f"q{i:04d}",
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"question {i}"},
            ],
            "target": {"answer": str(i)},
            "tags": {"split": "test"},
        }
        for i in range(start, start + n)
    ]


def edit(records: list[Record], rng: random.Random) -> list[Record]:
    """Modify, delete and insert about 5% of the records each."""
    out: list[Record] = json.loads(json.dumps(records))
    for i in rng.sample(range(len(out)), len(out) // 20):
        out[i]["target"]["answer"] = f"changed {rng.random()}"
    for i in sorted(rng.sample(range(len(out)), len(out) // 20), reverse=True):
        del out[i]
    for _ in range(len(records) // 20):
        out.insert(rng.randrange(len(out) + 1), qa(1, start=rng.randrange(10**5, 10**9))[0])
    return out


def changed(result: diff_module.DiffResult) -> dict[tuple[str, str], Change]:
    """Changes by (status, key as JSON)."""
    return {(c.status, json.dumps(c.key, sort_keys=True)): c for c in result.changes()}


def keys_of(result: diff_module.DiffResult, status: str, field: str = "id") -> set[Any]:
    return {c.key[field] for c in result.changes() if c.status == status and c.key}


# -- matching modes --------------------------------------------------------------------------


def test_stored_key_matches_against_ground_truth(repo: dsv.Repository) -> None:
    old = qa(3000)
    new = edit(old, random.Random(1))
    first = commit(repo, "qa.jsonl", old, "v1", key=("id",))
    second = commit(repo, "qa.jsonl", new, "v2")
    truth = keyed_truth(old, new, "id")
    result = diff(repo, first.hex(), "HEAD")
    assert (result.from_oid, result.to_oid) == (first, second)
    [d] = result.datasets
    assert (d.path, d.status, d.key) == ("qa.jsonl", "modified", ("id",))
    assert (d.added, d.removed, d.modified, d.unchanged) == (
        len(truth["added"]),
        len(truth["removed"]),
        len(truth["modified"]),
        len(truth["unchanged"]),
    )
    assert (d.old_count, d.new_count, d.duplicate_keys, d.reordered) == (3000, 3000, 0, False)
    for status in ("added", "removed", "modified"):
        assert keys_of(result, status) == truth[status]
    for c in result.changes():
        if c.status == "modified":
            assert [f.path for f in c.fields] == ["target.answer"]


def test_key_option_overrides_and_composite_keys(repo: dsv.Repository) -> None:
    old = [{"task": t, "lang": lang, "text": f"{t}-{lang}"} for t in "abc" for lang in ("en", "fr")]
    new = json.loads(json.dumps(old))
    new[1]["text"] = "changed"  # (a, fr)
    new.append({"task": "d", "lang": "en", "text": "new"})
    del new[4]  # (c, en)
    commit(repo, "tasks.jsonl", old, "v1")
    commit(repo, "tasks.jsonl", new, "v2")
    by_content = diff(repo, "HEAD~1", "HEAD")
    assert by_content.datasets[0].key == ()
    assert (by_content.datasets[0].added, by_content.datasets[0].modified) == (2, 0)
    result = diff(repo, "HEAD~1", "HEAD", key=("task", "lang"))
    [d] = result.datasets
    assert (d.key, d.added, d.removed, d.modified, d.unchanged) == (("task", "lang"), 1, 1, 1, 4)
    got = {(c.status, c.key["task"], c.key["lang"]) for c in result.changes() if c.key}
    assert got == {("modified", "a", "fr"), ("added", "d", "en"), ("removed", "c", "en")}
    # An explicit key wins over the stored one; an empty one forces content matching.
    commit(repo, "tasks.jsonl", old, "v3", key=("text",))
    assert diff(repo, "HEAD~1", "HEAD").datasets[0].key == ("text",)
    assert diff(repo, "HEAD~1", "HEAD", key=()).datasets[0].modified == 0


def test_implicit_id_and_content_only(repo: dsv.Repository) -> None:
    old = qa(50)
    new = json.loads(json.dumps(old))
    new[7]["tags"]["split"] = "dev"
    commit(repo, "qa.jsonl", old, "v1")
    commit(repo, "qa.jsonl", new, "v2")
    [d] = diff(repo, "HEAD~1", "HEAD").datasets
    assert (d.key, d.modified, d.added, d.removed) == (("id",), 1, 0, 0)
    # Records without `id`: content only, so a modification is a removal plus an addition.
    plain = [{"text": f"t{i}"} for i in range(10)]
    commit(repo, "plain.jsonl", plain, "v3")
    commit(repo, "plain.jsonl", [*plain[:3], {"text": "new"}, *plain[4:]], "v4")
    result = diff(repo, "HEAD~1", "HEAD")
    [d] = result.datasets
    assert (d.key, d.added, d.removed, d.modified, d.unchanged) == ((), 1, 1, 0, 9)
    assert {(c.status, c.key) for c in result.changes()} == {("added", None), ("removed", None)}
    assert {c.old or c.new for c in result.changes()} == {
        bytes.fromhex(oid_of({"text": "new"})),
        bytes.fromhex(oid_of({"text": "t3"})),
    }


def test_implicit_id_needs_an_id_on_every_changed_record(repo: dsv.Repository) -> None:
    old = qa(5)
    new = json.loads(json.dumps(old))
    new[0]["target"]["answer"] = "x"
    new.append({"no_id": True})
    commit(repo, "qa.jsonl", old, "v1")
    commit(repo, "qa.jsonl", new, "v2")
    [d] = diff(repo, "HEAD~1", "HEAD").datasets
    assert (d.key, d.added, d.removed, d.modified) == ((), 2, 1, 0)


def test_records_without_a_key_field_are_not_matched(repo: dsv.Repository) -> None:
    # A stored key cannot miss (dsv add refuses it); a --key given to diff can.
    commit(repo, "qa.jsonl", [{"id": 1, "v": 1}, {"v": 2}], "v1")
    commit(repo, "qa.jsonl", [{"id": 1, "v": 3}, {"v": 4}], "v2")
    result = diff(repo, "HEAD~1", "HEAD", key="id")
    [d] = result.datasets
    assert (d.added, d.removed, d.modified) == (1, 1, 1)
    assert {(c.status, json.dumps(c.key)) for c in result.changes()} == {
        ("modified", '{"id": 1}'),
        ("added", "null"),
        ("removed", "null"),
    }


# -- order and duplicates --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pure_reorder_is_reported_as_moves(repo: dsv.Repository, seed: int) -> None:
    rng = random.Random(seed)
    old = qa(40)
    new = list(old)
    for _ in range(3):
        item = new.pop(rng.randrange(len(new)))
        new.insert(rng.randrange(len(new) + 1), item)
    new[0], new[-1] = new[-1], new[0]
    commit(repo, "qa.jsonl", old, "v1", key=("id",))
    commit(repo, "qa.jsonl", new, "v2")
    result = diff(repo, "HEAD~1", "HEAD")
    [d] = result.datasets
    position = {r["id"]: i for i, r in enumerate(old)}
    moved = len(old) - lis([position[r["id"]] for r in new])
    assert (d.added, d.removed, d.modified, d.unchanged) == (0, 0, 0, 40)
    assert (d.reordered, d.moved) == (True, moved)
    assert list(result.changes()) == []
    assert f"order changed: {moved} moved" in list(diffview.render_human(result, color=False))


def test_reorder_inside_a_modified_multi_page_dataset(repo: dsv.Repository) -> None:
    old = qa(3000)
    new = old[1500:] + old[:1500]
    new[10] = {**new[10], "tags": {"split": "dev"}}
    commit(repo, "qa.jsonl", old, "v1", key=("id",))
    commit(repo, "qa.jsonl", new, "v2")
    [d] = diff(repo, "HEAD~1", "HEAD").datasets
    assert (d.modified, d.reordered, d.moved) == (1, True, 1500)


def test_duplicate_keys_are_counted_and_matched_in_order(repo: dsv.Repository) -> None:
    old = [{"id": "a", "v": 1}, {"id": "a", "v": 2}, {"id": "b", "v": 1}, {"id": "c", "v": 0}]
    new = [{"id": "a", "v": 10}, {"id": "a", "v": 20}, {"id": "b", "v": 1}, {"id": "c", "v": 5}]
    new.append({"id": "c", "v": 6})
    # A stored key is unique (dsv add refuses duplicates); a --key given to diff need not be.
    commit(repo, "dup.jsonl", old, "v1")
    commit(repo, "dup.jsonl", new, "v2")
    result = diff(repo, "HEAD~1", "HEAD", key="id")
    [d] = result.datasets
    assert (d.duplicate_keys, d.modified, d.added, d.removed, d.unchanged) == (2, 3, 1, 0, 1)
    pairs = [
        (c.key, [(f.path, f.old, f.new) for f in c.fields])
        for c in result.changes()
        if c.status == "modified"
    ]
    assert pairs == [
        ({"id": "a"}, [("v", 1, 10)]),
        ({"id": "a"}, [("v", 2, 20)]),
        ({"id": "c"}, [("v", 0, 5)]),
    ]
    text = list(diffview.render_human(result, color=False))
    assert "warning: 2 duplicate keys among the changed datapoints (paired in order)" in text


def test_duplicate_keys_pair_identical_copies_first(repo: dsv.Repository) -> None:
    # Old a:v1, a:v2; new a:v2. The identical copy pairs first, leaving v1 removed: not
    # "a modified (v 1 -> 2) plus a removed", which k-th-with-k-th by key alone would give.
    old = [{"id": "a", "v": 1}, {"id": "a", "v": 2}, {"id": "b", "v": 0}]
    new = [{"id": "a", "v": 2}, {"id": "b", "v": 0}]
    commit(repo, "dup.jsonl", old, "v1")
    commit(repo, "dup.jsonl", new, "v2")
    result = diff(repo, "HEAD~1", "HEAD", key="id")
    [d] = result.datasets
    assert (d.added, d.removed, d.modified, d.unchanged, d.duplicate_keys) == (0, 1, 0, 2, 0)
    [change] = result.changes(records=True)
    assert (change.status, change.key, change.record) == ("removed", {"id": "a"}, old[0])
    # With copies, as many pair as both sides hold: two identical copies against one.
    commit(repo, "dup.jsonl", [new[0], new[0], new[1]], "v3")
    [d] = diff(repo, "HEAD~1", "HEAD", key="id").datasets
    assert (d.added, d.removed, d.modified, d.unchanged) == (1, 0, 0, 2)


def test_the_duplicate_key_warning_counts_keys_among_changed_datapoints(
    repo: dsv.Repository,
) -> None:
    # 12 records share 6 keys and none changes: unread, so not counted (README "Diffs").
    same = [{"id": i // 2, "copy": i % 2} for i in range(12)]
    old = [*same, {"id": "x", "v": 1}, {"id": "y", "v": 1}, {"id": "y", "v": 2}]
    new = [*same, {"id": "x", "v": 2}, {"id": "y", "v": 10}, {"id": "y", "v": 20}]
    commit(repo, "dup.jsonl", old, "v1")
    commit(repo, "dup.jsonl", new, "v2")
    result = diff(repo, "HEAD~1", "HEAD", key="id")
    [d] = result.datasets
    assert (d.modified, d.unchanged, d.duplicate_keys) == (3, 12, 1)
    text = list(diffview.render_human(result, color=False))
    assert "warning: 1 duplicate key among the changed datapoints (paired in order)" in text
    assert list(diffview.render_stat(result)) == [
        " dup.jsonl | +0 -0 ~3 (1 duplicate key)",
        " 1 dataset changed, 0 added, 0 removed, 3 modified",
    ]


def test_a_string_key_that_reads_as_a_number_is_shown_quoted(repo: dsv.Repository) -> None:
    old = [{"id": "2", "v": 1}, {"id": 2, "v": 1}, {"id": "two", "v": 1}, {"id": "true", "v": 1}]
    new = [{**r, "v": 2} for r in old]
    commit(repo, "ids.jsonl", old, "v1")
    commit(repo, "ids.jsonl", new, "v2")
    result = diff(repo, "HEAD~1", "HEAD")
    [d] = result.datasets
    assert (d.key, d.modified) == (("id",), 4)
    heads = [line for line in diffview.render_human(result, color=False) if line[:2] == "~ "]
    assert heads == ['~ id="2"', "~ id=2", "~ id=two", '~ id="true"']


# -- field paths -----------------------------------------------------------------------------


def test_nested_field_paths() -> None:
    old = {
        "id": 1,
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        "target": {"answer": "4", "why": None},
        "tags": {"split": "test"},
        "weird key": 1,
        "flag": True,
        "gone": [1],
    }
    new = {
        "id": 1,
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": "more"},
        ],
        "target": {"answer": "5", "why": None, "score": None},
        "tags": {"split": "dev", "lang": "en"},
        "weird key": 2,
        "flag": 1,
    }
    got = [(f.path, f.old, f.new) for f in diff_module.field_changes(old, new)]
    unset = msgspec.UNSET
    assert got == [
        ("flag", True, 1),
        ("gone", [1], unset),
        ("messages[1].content", "b", "c"),
        ("messages[2]", unset, {"role": "user", "content": "more"}),
        ("tags.lang", unset, "en"),
        ("tags.split", "test", "dev"),
        ("target.answer", "4", "5"),
        ("target.score", unset, None),
        ('["weird key"]', 1, 2),
    ]
    assert diff_module.json_path("a", "b c") == 'a["b c"]'
    assert list(diff_module.field_changes([1, 2], [1])) == [FieldChange("[1]", old=2)]


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([1.0, 0.5, 0.0, -0.0])
    | st.text("ab", max_size=2),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b c", "d"]), inner, max_size=3)
    ),
    max_leaves=12,
)


_records = st.dictionaries(st.sampled_from(["id", "x", "y z"]), _json_values, max_size=3)


@given(_records, st.data())
@example({"x": 1, "y z": [1, {"a": True}]}, None)
def test_body_changes_are_field_changes_of_the_decoded_bodies(
    old: dict[str, Any], data: st.DataObject | None
) -> None:
    # The new record is the old one with some members replaced, dropped or added, so that
    # equal and nearly equal subtrees are common: 1 against 1.0 and true, [] against {}.
    if data is None:
        new = {"x": 1.0, "y z": [True, {"a": 1}], "id": None}
    else:
        new = dict(old)
        for name in data.draw(st.lists(st.sampled_from(["id", "x", "y z"]), max_size=2)):
            if data.draw(st.booleans()):
                new[name] = data.draw(_json_values)
            else:
                new.pop(name, None)
    old_body, new_body = encode_canonical(old), encode_canonical(new)
    got = list(diff_module.body_changes(old_body, new_body))
    assert got == list(diff_module.field_changes(old, new))
    # Two bodies (two ids) differ exactly when some path differs: no modify without a field.
    assert bool(got) == (old_body != new_body)


@pytest.mark.parametrize(("old", "new"), [(0.0, -0.0), (-0.0, 0.0), ([0.0], [-0.0])])
def test_zero_and_negative_zero_are_a_field_change(
    repo: dsv.Repository, old: Any, new: Any
) -> None:
    # Canonical JSON keeps -0.0 (docs/format.md §2), so the datapoint's id changes with it.
    commit(repo, "z.jsonl", [{"id": 1, "x": old}], "v1")
    commit(repo, "z.jsonl", [{"id": 1, "x": new}], "v2")
    result = diff(repo, "HEAD~1", "HEAD")
    [d] = result.datasets
    assert (d.added, d.removed, d.modified) == (0, 0, 1)
    [change] = result.changes()
    path = "x" if isinstance(old, float) else "x[0]"
    old_value, new_value = (old, new) if isinstance(old, float) else (old[0], new[0])
    [field] = change.fields
    assert field.path == path
    assert repr(field.old) == repr(old_value) and repr(field.new) == repr(new_value)
    [line] = diffview.render_jsonl(result)
    assert json.loads(line)["fields"] == [{"path": path, "old": old_value, "new": new_value}]
    assert f"    {path}: {json.dumps(old_value)} → {json.dumps(new_value)}" in list(
        diffview.render_human(result, color=False)
    )


def test_field_changes_in_a_diff(repo: dsv.Repository) -> None:
    old = qa(3)
    new = json.loads(json.dumps(old))
    new[1]["messages"].append({"role": "assistant", "content": "B"})
    new[1]["messages"][1]["content"] = "question one"
    new[2]["tags"]["lang"] = "en"
    del new[2]["tags"]["split"]
    commit(repo, "qa.jsonl", old, "v1", key=("id",))
    commit(repo, "qa.jsonl", new, "v2")
    got = {
        c.key["id"]: [(f.path, f.old, f.new) for f in c.fields]
        for c in diff(repo, "HEAD~1", "HEAD").changes()
        if c.key
    }
    unset = msgspec.UNSET
    assert got == {
        "q0001": [
            ("messages[1].content", "question 1", "question one"),
            ("messages[2]", unset, {"role": "assistant", "content": "B"}),
        ],
        "q0002": [("tags.lang", unset, "en"), ("tags.split", "test", unset)],
    }


# -- schema changes --------------------------------------------------------------------------


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_csv_column_changes(repo: dsv.Repository) -> None:
    path = repo.root / "runs.csv"
    rows = [{"id": str(i), "q": f"q{i}", "a": str(i)} for i in range(5)]
    write_csv(path, ["id", "q", "a"], rows)
    ops.add(repo, [str(path)], key=("id",))
    ops.commit(repo, "v1")
    write_csv(path, ["id", "a", "q"], rows)
    [d] = diff(repo).datasets
    assert d.schema == ("column order changed: id, q, a → id, a, q",)
    assert (d.added, d.removed, d.modified, d.unchanged) == (0, 0, 0, 5)
    rows = [{"id": r["id"], "q": r["q"], "score": "0.5"} for r in rows]
    write_csv(path, ["id", "q", "score"], rows)
    result = diff(repo)
    [d] = result.datasets
    assert d.schema == ("column added: score", "column removed: a")
    assert (d.modified, d.added, d.removed) == (5, 0, 0)
    first = next(iter(result.changes()))
    assert [(f.path, f.old, f.new) for f in first.fields] == [
        ("a", "0", msgspec.UNSET),
        ("score", msgspec.UNSET, "0.5"),
    ]
    text = list(diffview.render_human(result, color=False, limit=1))
    assert text[:3] == [
        "diff runs.csv (keyed by id)",
        "schema: column added: score",
        "schema: column removed: a",
    ]
    assert text[-1] == "… and 4 more"
    assert '    a: "0" → (absent)' in text


def test_parquet_column_changes(repo: dsv.Repository) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = repo.root / "metrics.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "score": pa.array([1, 2], pa.int64())}), path)
    ops.add(repo, [str(path)], key=("id",))
    ops.commit(repo, "v1")
    table = pa.table(
        {
            "id": ["a", "b"],
            "score": pa.array([1.0, 2.5], pa.float64()),
            "passed": [True, False],
        }
    )
    pq.write_table(table, path)
    [d] = diff(repo).datasets
    assert d.schema == ("column added: passed", "column type changed: score: int64 → double")
    assert (d.modified, d.key) == (2, ("id",))


# -- sides: revisions, environments, index, working tree -------------------------------------


def test_environments_as_revisions(repo: dsv.Repository) -> None:
    old, new = qa(20), qa(20)
    new[3]["target"]["answer"] = "changed"
    first = commit(repo, "qa.jsonl", old, "v1", key=("id",))
    second = commit(repo, "qa.jsonl", new, "v2")
    labels.deploy(repo, "production", first.hex())
    labels.deploy(repo, "staging", "HEAD")
    result = diff(repo, "production", "staging")
    assert (result.from_oid, result.to_oid) == (first, second)
    assert [(d.path, d.modified) for d in result.datasets] == [("qa.jsonl", 1)]
    assert diff(repo, "staging", "HEAD").datasets == []
    with pytest.raises(BadInput, match="unknown revision"):
        diff(repo, "nowhere", "HEAD")


def test_working_tree_index_and_revision_sides(repo: dsv.Repository) -> None:
    # An unborn HEAD is empty: everything staged is added.
    write_jsonl(repo.root / "a.jsonl", qa(4))
    ops.add(repo, ["a.jsonl"], key=("id",))
    [d] = diff(repo, staged=True).datasets
    assert (d.status, d.added, d.new_count) == ("added", 4, 4)
    first = ops.commit(repo, "v1")
    assert diff(repo).datasets == [] and diff(repo, staged=True).datasets == []
    changed_records = qa(4)
    changed_records[0]["tags"]["split"] = "dev"
    write_jsonl(repo.root / "a.jsonl", changed_records)
    write_jsonl(repo.root / "b.jsonl", qa(2))
    ops.add(repo, ["b.jsonl"])
    # The working file differs from HEAD, the index does not (for a.jsonl).
    work = diff(repo)
    assert [(d.path, d.status, d.modified, d.added) for d in work.datasets] == [
        ("a.jsonl", "modified", 1, 0),
        ("b.jsonl", "added", 0, 2),
    ]
    assert (work.from_oid, work.to_oid) == (first, None)
    assert [(d.path, d.status) for d in diff(repo, staged=True).datasets] == [("b.jsonl", "added")]
    assert [d.path for d in diff(repo, paths=["a.jsonl"]).datasets] == ["a.jsonl"]
    ops.add(repo, ["a.jsonl"])
    second = ops.commit(repo, "v2")
    # REV against the working tree; a tracked file deleted from disk is a removed dataset.
    (repo.root / "b.jsonl").unlink()
    result = diff(repo, first.hex())
    assert [(d.path, d.status) for d in result.datasets] == [("a.jsonl", "modified")]
    result = diff(repo, second.hex())
    assert [(d.path, d.status, d.removed) for d in result.datasets] == [("b.jsonl", "removed", 2)]
    assert [c.status for c in result.changes()] == ["removed", "removed"]
    with pytest.raises(BadInput):
        diff(repo, None, "HEAD")


def test_summarize(repo: dsv.Repository) -> None:
    commit(repo, "qa.jsonl", qa(10), "v1", key=("id",))
    commit(repo, "qa.jsonl", qa(12), "v2")
    old = repo.tree_of(repo.resolve("HEAD~1"))["qa.jsonl"]
    new = repo.tree_of(repo.resolve("HEAD"))["qa.jsonl"]
    assert summarize(repo, old, old, path="qa.jsonl") is None
    got = summarize(repo, old, new, path="qa.jsonl")
    assert isinstance(got, DatasetDiff)
    assert (got.added, got.unchanged, got.status) == (2, 10, "modified")
    gone = summarize(repo, old, None, path="qa.jsonl")
    assert gone is not None and (gone.status, gone.removed) == ("removed", 10)


# -- cost: unchanged datapoints are never read -----------------------------------------------


@pytest.mark.parametrize("working_tree", [False, True])
def test_unchanged_datapoints_are_never_decoded(
    repo: dsv.Repository, monkeypatch: pytest.MonkeyPatch, working_tree: bool
) -> None:
    old = qa(5000)
    new = edit(old, random.Random(5))
    commit(repo, "qa.jsonl", old, "v1", key=("id",))
    if working_tree:
        write_jsonl(repo.root / "qa.jsonl", new)
    else:
        commit(repo, "qa.jsonl", new, "v2")
    changed_ids = {oid_of(r) for r in old} ^ {oid_of(r) for r in new}
    seen: list[str] = []
    read_bodies = diff_module._read_bodies
    decode, key_of = diff_module._decode, diff_module._key_of

    def reading(store: Any, oids: Any) -> list[bytes]:
        seen.extend(o.hex() for o in oids)
        return read_bodies(store, oids)

    def decoding(body: bytes) -> dict[str, Any]:
        seen.append(oid_of(json.loads(body)))
        return decode(body)

    def keying(body: bytes, fields: tuple[str, ...]) -> Any:
        seen.append(oid_of(json.loads(body)))
        return key_of(body, fields)

    monkeypatch.setattr(diff_module, "_read_bodies", reading)
    monkeypatch.setattr(diff_module, "_decode", decoding)
    monkeypatch.setattr(diff_module, "_key_of", keying)
    result = diff(repo, "HEAD~1" if not working_tree else None)
    list(result.changes())
    assert set(seen) == changed_ids
    [d] = result.datasets
    truth = keyed_truth(old, new, "id")
    assert (d.added, d.removed, d.modified) == tuple(
        len(truth[s]) for s in ("added", "removed", "modified")
    )


def test_a_working_file_is_read_like_a_recommit_parsing_only_changed_lines(
    repo: dsv.Repository, parsed_lines: list[int]
) -> None:
    old = qa(3000)
    new = edit(old, random.Random(11))
    commit(repo, "qa.jsonl", old, "v1", key=("id",))
    write_jsonl(repo.root / "qa.jsonl", new)
    parsed_lines.clear()
    [d] = diff(repo).datasets
    truth = keyed_truth(old, new, "id")
    assert (d.added, d.removed, d.modified) == tuple(
        len(truth[s]) for s in ("added", "removed", "modified")
    )
    old_lines = {json.dumps(r) for r in old}
    fresh = sum(json.dumps(r) not in old_lines for r in new)
    # A few unchanged lines near many edits are not found by their keys and are parsed too.
    assert fresh <= sum(parsed_lines) <= fresh + len(new) // 100


def test_page_alignment_agrees_with_an_id_level_diff(repo: dsv.Repository) -> None:
    rng = random.Random(11)
    versions = [qa(4000)]
    for _ in range(3):
        versions.append(edit(versions[-1], rng))
    versions.append(versions[-1][2000:] + versions[-1][:2000])
    for i, records in enumerate(versions):
        commit(repo, "qa.jsonl", records, f"v{i}", key=("id",) if i == 0 else None)
    for a, b in [(0, 1), (1, 3), (0, 4), (3, 4)]:
        got = diff(repo, f"HEAD~{4 - a}", f"HEAD~{4 - b}" if b < 4 else "HEAD")
        [d] = got.datasets
        truth = keyed_truth(versions[a], versions[b], "id")
        assert (d.added, d.removed, d.modified, d.unchanged) == tuple(
            len(truth[s]) for s in ("added", "removed", "modified", "unchanged")
        )
        position = {r["id"]: i for i, r in enumerate(versions[a])}
        kept = [position[r["id"]] for r in versions[b] if r["id"] in position]
        increasing = all(x < y for x, y in itertools.pairwise(kept))
        assert d.reordered == (not increasing)


def test_a_page_read_once_on_the_old_side_aligns_as_the_general_sweep_does() -> None:
    def pairs(pieces: list[tuple[int, int, int]]) -> set[tuple[int, int]]:
        return {(o + k, n + k) for o, n, length in pieces for k in range(length)}

    def rest(ranges: list[tuple[int, int]]) -> list[int]:
        return sorted(p + k for p, n in ranges for k in range(n))

    rng = random.Random(5)
    for _ in range(500):
        start = rng.randrange(0, 40)
        old = (start, start + rng.randrange(0, 60), rng.randrange(0, 100))
        cuts = sorted(rng.sample(range(0, 120), rng.randrange(0, 12)))
        runs = [(a, b) for a, b in itertools.pairwise(cuts) if rng.random() < 0.7]
        position = 0
        news = []
        for a, b in rng.sample(runs, len(runs)):  # a new order, so positions differ
            news.append((a, b, position))
            position += b - a + rng.randrange(0, 3)
        fast: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        assert diff_module._sweep_one(old, news, *fast)
        general: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        diff_module._sweep_stretches([old], news, *general)
        assert pairs(fast[0]) == pairs(general[0])
        assert rest(fast[1]) == rest(general[1])
        assert rest(fast[2]) == rest(general[2])
    # New readers that overlap each other are the general sweep's.
    assert not diff_module._sweep_one((0, 10, 0), [(0, 5, 0), (3, 8, 5)], [], [], [])


# -- output contracts ------------------------------------------------------------------------


def test_stat_json_contract(repo: dsv.Repository) -> None:
    old = qa(30)
    new = edit(old, random.Random(3))
    first = commit(repo, "qa.jsonl", old, "v1", key=("id",))
    write_jsonl(repo.root / "extra.jsonl", qa(2))
    ops.add(repo, ["extra.jsonl"])
    second = commit(repo, "qa.jsonl", new, "v2")
    truth = keyed_truth(old, new, "id")
    got = json.loads(diffview.stat_json(diff(repo, first.hex(), second.hex())))
    assert got == {
        "from": first.hex(),
        "to": second.hex(),
        "datasets": [
            {
                "path": "extra.jsonl",
                "status": "added",
                "added": 2,
                "removed": 0,
                "modified": 0,
                "unchanged": 0,
                "reordered": False,
            },
            {
                "path": "qa.jsonl",
                "status": "modified",
                "added": len(truth["added"]),
                "removed": len(truth["removed"]),
                "modified": len(truth["modified"]),
                "unchanged": len(truth["unchanged"]),
                "reordered": False,
            },
        ],
    }
    assert json.loads(diffview.stat_json(diff(repo)))["to"] is None


def test_jsonl_contract(repo: dsv.Repository) -> None:
    old = qa(30)
    new = edit(old, random.Random(4))
    new[0]["target"]["note"] = None
    commit(repo, "qa.jsonl", old, "v1", key=("id",))
    commit(repo, "qa.jsonl", new, "v2")
    a = {r["id"]: r for r in old}
    b = {r["id"]: r for r in new}
    truth = keyed_truth(old, new, "id")
    expected: list[tuple[str, str, str | None, str | None, list[dict[str, Any]]]] = []
    for k in truth["added"]:
        expected.append(("added", k, None, oid_of(b[k]), []))
    for k in truth["removed"]:
        expected.append(("removed", k, oid_of(a[k]), None, []))
    for k in truth["modified"]:
        fields = []
        for name in sorted(a[k]["target"].keys() | b[k]["target"].keys()):
            before, after = a[k]["target"], b[k]["target"]
            entry: dict[str, Any] = {
                "path": f"target.{name}",
                "old": before.get(name),
                "new": after.get(name),
            }
            if name not in before:
                entry["absent"] = "old"
            elif name not in after:
                entry["absent"] = "new"
            if entry["old"] != entry["new"] or "absent" in entry:
                fields.append(entry)
        expected.append(("modified", k, oid_of(a[k]), oid_of(b[k]), fields))
    lines = list(diffview.render_jsonl(diff(repo, "HEAD~1", "HEAD")))
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    parsed = [json.loads(line) for line in lines]
    assert all(
        list(p) == ["path", "status", "key", "old", "new", "fields"] and p["path"] == "qa.jsonl"
        for p in parsed
    )
    got = [(p["status"], p["key"]["id"], p["old"], p["new"], p["fields"]) for p in parsed]
    assert sorted(got, key=str) == sorted(expected, key=str)
    # Every field has "path", "old" and "new"; an added member whose value is null is told
    # from a null-to-null non-change by "absent".
    assert all(list(f)[:3] == ["path", "old", "new"] for p in parsed for f in p["fields"])
    note = [p for p in parsed if p["key"] == {"id": "q0000"}]
    if note:
        assert {"path": "target.note", "old": None, "new": None, "absent": "old"} in note[0][
            "fields"
        ]


# -- text views ------------------------------------------------------------------------------


def test_human_stat_and_name_status(repo: dsv.Repository) -> None:
    old = qa(5)
    new = json.loads(json.dumps(old))
    long_old = "The quick brown fox jumps over the lazy dog near the quiet river bank today."
    old[1]["messages"][1]["content"] = long_old
    new[1]["messages"][1]["content"] = long_old.replace("lazy", "sleepy")
    new[2]["target"]["answer"] = "x"
    del new[3]
    new.append({"id": "new one", "target": {}})
    commit(repo, "qa.jsonl", old, "v1", key=("id",))
    commit(repo, "b.jsonl", qa(1), "v2")
    commit(repo, "qa.jsonl", new, "v3")
    result = diff(repo, "HEAD~2", "HEAD")
    text = list(diffview.render_human(result, color=False))
    assert text[0] == "diff b.jsonl (new dataset, 1 datapoint)"
    assert "diff qa.jsonl (keyed by id)" in text
    assert "~ id=q0001" in text
    assert (
        '    messages[1].content: "The quick brown fox jumps over the [-lazy-]{+sleepy+} dog'
        ' near the quiet river bank today."'
    ) in text
    assert '    target.answer: "2" → "x"' in text
    assert "- id=q0003" in text and '+ id="new one"' in text
    assert not any("\x1b[" in line for line in text)
    colored = list(diffview.render_human(result, color=True))
    assert any("\x1b[" in line for line in colored)
    assert list(diffview.render_stat(result)) == [
        " b.jsonl  | +1 -0 ~0",
        " qa.jsonl | +1 -1 ~2",
        " 2 datasets changed, 2 added, 1 removed, 2 modified",
    ]
    assert list(diffview.render_name_status(result)) == ["A\tb.jsonl", "M\tqa.jsonl"]


def test_diff_commit_for_show_and_log(repo: dsv.Repository) -> None:
    first = commit(repo, "qa.jsonl", qa(5), "v1", key=("id",))
    records = qa(5)
    records[2]["target"]["answer"] = "x"
    second = commit(repo, "qa.jsonl", records, "v2")
    root = list(diffview.render_stat(diff_module.diff_commit(repo, first)))
    assert root == [" qa.jsonl | +5 -0 ~0", " 1 dataset changed, 5 added, 0 removed, 0 modified"]
    assert list(diffview.render_stat(diff_module.diff_commit(repo, second))) == [
        " qa.jsonl | +0 -0 ~1",
        " 1 dataset changed, 0 added, 0 removed, 1 modified",
    ]
    assert list(diffview.render_stat(diff(repo, "HEAD", "HEAD"))) == []
    # Keys given as text, as the CLI's --key and Python callers may.
    assert diff(repo, "HEAD~1", "HEAD", key="id , target").datasets[0].key == ("id", "target")


def test_stat_reports_duplicate_keys(dsv: Dsv) -> None:
    dsv.write("dup.jsonl", [{"id": "a", "v": 1}, {"id": "a", "v": 2}])
    dsv("add", "dup.jsonl")
    dsv("commit", "-m", "v1")
    dsv.write("dup.jsonl", [{"id": "a", "v": 3}, {"id": "a", "v": 4}])
    assert dsv("diff", "--stat", "--key", "id").stdout.splitlines()[0] == (
        " dup.jsonl | +0 -0 ~2 (1 duplicate key)"
    )


def test_jsonl_fields_always_carry_path_old_and_new(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", [{"id": 1, "a": "x", "gone": 1}], "v1")
    dsv.write("qa.jsonl", [{"id": 1, "a": "y", "came": None}])
    [line] = dsv("diff", "--format", "jsonl").stdout.splitlines()
    assert json.loads(line)["fields"] == [
        {"path": "a", "old": "x", "new": "y"},
        {"path": "came", "old": None, "new": None, "absent": "old"},
        {"path": "gone", "old": 1, "new": None, "absent": "new"},
    ]
