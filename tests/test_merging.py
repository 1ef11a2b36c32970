"""`dsv merge`, `conflicts`, `resolve`, `--continue`, `--abort`, `revert` and `cherry-pick`,
as a user runs them: exact text and exit codes."""

from __future__ import annotations

import json
from typing import Any

from conftest import Dsv, head_of

from dsv.repo import Repository


def rec(i: int, **fields: Any) -> dict[str, Any]:
    return {"id": i, "q": f"q{i}", "a": {"x": i, "y": i}, **fields}


BASE = [rec(i) for i in range(6)]


def edited(rows: list[dict[str, Any]], i: int, **fields: Any) -> list[dict[str, Any]]:
    return [({**r, **fields} if r["id"] == i else r) for r in rows]


def diverge(dsv: Dsv, ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """main at ours, branch other at theirs, both from BASE; HEAD on main."""
    dsv.write("qa.jsonl", BASE)
    dsv("add", "qa.jsonl", "--key", "id")
    dsv("commit", "-m", "base")
    dsv("branch", "other")
    dsv.write("qa.jsonl", ours)
    dsv("commit", "-a", "-m", "ours")
    dsv("switch", "other")
    dsv.write("qa.jsonl", theirs)
    dsv("commit", "-a", "-m", "theirs")
    dsv("switch", "main")


def rows(dsv: Dsv, name: str = "qa.jsonl") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (dsv.root / name).read_text().splitlines()]


def parents(dsv: Dsv, rev: str = "HEAD") -> list[str]:
    return list(json.loads(dsv("show", "--json", rev).stdout)["parents"])


CONFLICTED_OURS = [r for r in edited(edited(BASE, 1, q="ours"), 3, q="ours3") if r["id"] != 2]
CONFLICTED_OURS.append(rec(7, q="ours7"))
CONFLICTED_THEIRS = [
    r for r in edited(edited(BASE, 1, q="theirs"), 2, q="theirs2") if r["id"] != 3
] + [rec(7, q="theirs7"), rec(8)]


def test_a_clean_merge_commits_with_two_parents(dsv: Dsv) -> None:
    diverge(
        dsv,
        edited(BASE, 1, a={"x": 10, "y": 1}),
        [*edited(BASE, 1, a={"x": 1, "y": 11}), rec(9)],
    )
    ours, theirs = head_of(dsv, "main"), head_of(dsv, "other")
    out = dsv("merge", "other").stdout
    merged = head_of(dsv)
    assert out == f"[main {merged[:12]}] Merge other\n  merged qa.jsonl\n"
    assert parents(dsv) == [ours, theirs]
    assert rows(dsv) == [*edited(BASE, 1, a={"x": 10, "y": 11}), rec(9)]
    assert dsv("status").stdout == "On branch main\nnothing to commit, working tree clean\n"
    assert dsv("merge", "other").stdout == "Already up to date.\n"


def test_fast_forward_and_ff_only(dsv: Dsv) -> None:
    dsv.write("qa.jsonl", BASE)
    dsv("add", "qa.jsonl", "--key", "id")
    dsv("commit", "-m", "base")
    dsv("switch", "-c", "other")
    dsv.write("qa.jsonl", edited(BASE, 1, q="new"))
    dsv("commit", "-a", "-m", "new")
    dsv("switch", "main")
    tip = head_of(dsv, "other")
    assert dsv("merge", "--ff-only", "other").stdout == f"Fast-forward to {tip[:12]}\n"
    assert head_of(dsv, "main") == tip and rows(dsv) == edited(BASE, 1, q="new")


def test_ff_only_refuses_diverged_branches(dsv: Dsv) -> None:
    diverge(dsv, edited(BASE, 1, q="a"), edited(BASE, 2, q="b"))
    err = dsv("merge", "--ff-only", "other", code=3).stderr
    assert err == (
        "error: cannot fast-forward to other: the histories have diverged\n"
        "hint: merge them with 'dsv merge other'\n"
    )


def test_every_kind_of_datapoint_conflict_is_listed(dsv: Dsv) -> None:
    diverge(dsv, CONFLICTED_OURS, CONFLICTED_THEIRS)
    result = dsv("merge", "other", code=1)
    assert result.stdout == (
        'CONFLICT (content) qa.jsonl id=1 q: base "q1", ours "ours", theirs "theirs"\n'
        "CONFLICT (delete/modify) qa.jsonl id=2: base "
        '{"a":{"x":2,"y":2},"id":2,"q":"q2"}, ours (none), theirs '
        '{"a":{"x":2,"y":2},"id":2,"q":"theirs2"}\n'
        "CONFLICT (modify/delete) qa.jsonl id=3: base "
        '{"a":{"x":3,"y":3},"id":3,"q":"q3"}, ours {"a":{"x":3,"y":3},"id":3,"q":"ours3"}, '
        "theirs (none)\n"
        'CONFLICT (add/add) qa.jsonl id=7: base (none), ours {"a":{"x":7,"y":7},"id":7,"q":'
        '"ours7"}, theirs {"a":{"x":7,"y":7},"id":7,"q":"theirs7"}\n'
        "merge stopped at 4 conflicts in 1 dataset: resolve them (edit and 'dsv add', or "
        "'dsv resolve --ours|--theirs'), then 'dsv merge --continue'; or 'dsv merge --abort'\n"
    )
    assert json.loads(dsv("conflicts", "--json").stdout)[:2] == [
        {"path": "qa.jsonl", "kind": "content", "key": {"id": 1}, "field": "q",
         "base": "q1", "ours": "ours", "theirs": "theirs"},
        {"path": "qa.jsonl", "kind": "delete/modify", "key": {"id": 2},
         "base": rec(2), "theirs": rec(2, q="theirs2")},
    ]  # fmt: skip
    assert dsv("conflicts").stdout == result.stdout.rsplit("merge stopped", 1)[0]
    status = dsv("status").stdout
    theirs = head_of(dsv, "other")[:12]
    assert status.startswith(
        f"On branch main\nMerging {theirs}: fix the conflicts, then 'dsv merge --continue' "
        "(or 'dsv merge --abort')\n"
        "Unresolved conflicts (dsv conflicts lists them; edit and dsv add, or dsv resolve):\n"
        "  both:     qa.jsonl (4 conflicts)\n"
    )
    assert dsv("status", "--porcelain").stdout.splitlines()[0] == "U qa.jsonl"
    # The clean part is merged; each conflict is a record in the file where it stands.
    got = rows(dsv)
    assert [r.get("id") for r in got] == [0, 1, 2, 3, 4, 5, 7, 8]
    assert got[1] == {
        "id": 1,
        "dsv-conflict": {"base": rec(1), "ours": rec(1, q="ours"), "theirs": rec(1, q="theirs")},
    }


def test_a_file_holding_a_conflict_cannot_be_added_or_committed(dsv: Dsv) -> None:
    diverge(dsv, CONFLICTED_OURS, CONFLICTED_THEIRS)
    dsv("merge", "other", code=1)
    err = dsv("commit", "-m", "too soon", code=3).stderr
    assert err == (
        "error: cannot commit: qa.jsonl holds 4 unresolved conflicts\n"
        "hint: edit it and 'dsv add qa.jsonl', or 'dsv resolve --ours|--theirs qa.jsonl'; "
        "'dsv conflicts' lists them\n"
    )
    err = dsv("add", "qa.jsonl", code=3).stderr
    assert err == (
        "error: qa.jsonl: datapoint id=1 is still a conflict record ('dsv-conflict')\n"
        "hint: edit it into the one datapoint you want, or run "
        "'dsv resolve --ours|--theirs qa.jsonl --key id=1'\n"
    )
    # Edited by hand, and an edited conflict record is still one.
    fixed = [r for r in rows(dsv) if "dsv-conflict" not in r or r["id"] != 1]
    fixed.insert(1, rec(1, q="by hand"))
    half = [r if r.get("id") != 2 else {**r, "note": "x"} for r in fixed]
    dsv.write("qa.jsonl", half)
    err = dsv("add", "qa.jsonl", code=3).stderr
    assert err.startswith("error: qa.jsonl: datapoint id=2 is still a conflict record")
    done = [r["dsv-conflict"]["theirs"] or r["dsv-conflict"]["ours"] if "dsv-conflict" in r else r
            for r in fixed]  # fmt: skip
    dsv.write("qa.jsonl", done)
    dsv("add", "qa.jsonl")
    assert dsv("conflicts").stdout == ""
    out = dsv("merge", "--continue").stdout
    assert out == f"[main {head_of(dsv)[:12]}] Merge other\n"
    assert len(parents(dsv)) == 2
    assert [r["q"] for r in rows(dsv)] == ["q0", "by hand", "theirs2", "ours3", "q4", "q5",
                                          "theirs7", "q8"]  # fmt: skip


def test_resolve_takes_a_side_for_one_datapoint_a_file_or_all(dsv: Dsv) -> None:
    diverge(dsv, CONFLICTED_OURS, CONFLICTED_THEIRS)
    dsv("merge", "other", code=1)
    out = dsv("resolve", "--theirs", "qa.jsonl", "--key", "id=1").stdout
    assert out == "resolved qa.jsonl id=1 (theirs)\n3 conflicts left\n"
    assert rows(dsv)[1] == rec(1, q="theirs")
    out = dsv("resolve", "--ours", "qa.jsonl", "--key", "2").stdout
    assert out == "resolved qa.jsonl id=2 (ours)\n2 conflicts left\n"
    err = dsv("resolve", "--ours", "qa.jsonl", "--key", "id=2", code=2).stderr
    assert err == "error: --key id=2: no unresolved conflict of that datapoint\n"
    out = dsv("resolve", "--theirs").stdout
    assert out == (
        "resolved qa.jsonl id=3 (theirs)\nresolved qa.jsonl id=7 (theirs)\n"
        "all conflicts resolved: dsv merge --continue\n"
    )
    assert [r["q"] for r in rows(dsv)] == ["q0", "theirs", "q4", "q5", "theirs7", "q8"]
    dsv("merge", "--continue")
    assert dsv("status").stdout == "On branch main\nnothing to commit, working tree clean\n"


def test_resolve_keeps_the_fields_that_merged(dsv: Dsv) -> None:
    ours = edited(BASE, 1, q="ours", a={"x": 10, "y": 1})
    theirs = edited(BASE, 1, q="theirs", a={"x": 1, "y": 11})
    diverge(dsv, ours, theirs)
    out = dsv("merge", "other", code=1).stdout
    assert out.splitlines()[0] == (
        'CONFLICT (content) qa.jsonl id=1 q: base "q1", ours "ours", theirs "theirs"'
    )
    dsv("resolve", "--ours")
    assert rows(dsv)[1] == rec(1, q="ours", a={"x": 10, "y": 11})


def test_abort_restores_exactly_the_state_before(dsv: Dsv) -> None:
    diverge(dsv, CONFLICTED_OURS, CONFLICTED_THEIRS)
    dsv.write("untracked.jsonl", [{"x": 1}])
    before = {
        p: p.read_bytes()
        for p in (dsv.root / "qa.jsonl", dsv.root / ".dsv/index", dsv.root / ".dsv/HEAD")
    }
    head = head_of(dsv)
    dsv("merge", "other", code=1)
    dsv("resolve", "--theirs", "qa.jsonl", "--key", "id=1")
    assert dsv("merge", "--abort").stdout == f"merge aborted: back at {head[:12]}\n"
    assert head_of(dsv) == head
    assert (dsv.root / "qa.jsonl").read_bytes() == before[dsv.root / "qa.jsonl"]
    assert (dsv.root / ".dsv/HEAD").read_bytes() == before[dsv.root / ".dsv/HEAD"]
    assert not (dsv.root / ".dsv/MERGE").exists()
    assert dsv("status", "--porcelain").stdout == "?? untracked.jsonl\n"
    err = dsv("merge", "--abort", code=3).stderr
    assert err == "error: no merge in progress\n"


def test_a_merge_refuses_uncommitted_changes_and_a_second_merge(dsv: Dsv) -> None:
    diverge(dsv, CONFLICTED_OURS, CONFLICTED_THEIRS)
    dsv.write("qa.jsonl", BASE)
    err = dsv("merge", "other", code=3).stderr
    assert err == (
        "error: cannot merge: uncommitted changes in qa.jsonl\n"
        "hint: commit them first, or discard them with 'dsv restore'\n"
    )
    dsv("restore", "qa.jsonl", "--force")
    dsv("merge", "other", code=1)
    err = dsv("merge", "other", code=3).stderr
    assert err == (
        "error: a merge is in progress\nhint: finish it with 'dsv merge --continue' or --abort\n"
    )
    err = dsv("switch", "other", code=3).stderr
    assert err == (
        "error: a merge is in progress: it would be left behind\n"
        "hint: finish it with 'dsv merge --continue' or 'dsv merge --abort' first\n"
    )
    assert dsv("merge", code=2).stderr == (
        "error: give REV, or --continue, or --abort\nhint: see 'dsv merge --help'\n"
    )


def test_dataset_level_conflicts(dsv: Dsv) -> None:
    dsv.write("qa.jsonl", BASE)
    dsv.write("gone.jsonl", BASE[:3])
    dsv("add", "qa.jsonl", "gone.jsonl", "--key", "id")
    dsv("commit", "-m", "base")
    dsv("branch", "other")
    dsv("mv", "qa.jsonl", "ours.jsonl")
    dsv("rm", "gone.jsonl")
    dsv("commit", "-m", "ours")
    dsv("switch", "other")
    dsv("mv", "qa.jsonl", "theirs.jsonl")
    dsv.write("gone.jsonl", edited(BASE[:3], 1, q="kept"))
    dsv("commit", "-a", "-m", "theirs")
    dsv("switch", "main")
    out = dsv("merge", "other", code=1).stdout
    assert out.splitlines()[:2] == [
        "CONFLICT (delete/modify) gone.jsonl: base (dataset), ours (deleted), theirs (dataset)",
        "CONFLICT (rename) ours.jsonl: base qa.jsonl, ours ours.jsonl, theirs theirs.jsonl",
    ]
    assert rows(dsv, "gone.jsonl") == edited(BASE[:3], 1, q="kept")
    out = dsv("resolve", "--ours", "gone.jsonl").stdout
    assert out == "resolved gone.jsonl (ours)\n1 conflict left\n"
    assert not (dsv.root / "gone.jsonl").exists()
    dsv("resolve", "--theirs", "ours.jsonl")
    assert rows(dsv, "theirs.jsonl") == BASE and not (dsv.root / "ours.jsonl").exists()
    dsv("merge", "--continue")
    shown = json.loads(dsv("show", "--json").stdout)["datasets"]
    assert [d["path"] for d in shown] == ["ours.jsonl", "theirs.jsonl"]  # against ours
    assert sorted(Repository.open(dsv.root).tree_of(bytes.fromhex(head_of(dsv)))) == [
        "theirs.jsonl"
    ]


def test_revert_and_cherry_pick_are_three_way(dsv: Dsv) -> None:
    dsv.write("qa.jsonl", BASE)
    dsv("add", "qa.jsonl", "--key", "id")
    dsv("commit", "-m", "base")
    dsv.write("qa.jsonl", edited(BASE, 1, q="one"))
    dsv("commit", "-a", "-m", "edit one")
    dsv.write("qa.jsonl", edited(edited(BASE, 1, q="one"), 4, q="four"))
    dsv("commit", "-a", "-m", "edit four")
    out = dsv("revert", "HEAD~1").stdout
    assert out == f'[main {head_of(dsv)[:12]}] Revert "edit one"\n  merged qa.jsonl\n'
    assert rows(dsv) == edited(BASE, 4, q="four")
    assert parents(dsv) == [head_of(dsv, "HEAD~1")]
    dsv("branch", "side", "HEAD~3")
    dsv("switch", "side")
    out = dsv("cherry-pick", "main~1").stdout
    assert out.startswith(f"[side {head_of(dsv)[:12]}] edit four\n")
    assert rows(dsv) == edited(BASE, 4, q="four")
    message = json.loads(dsv("show", "--json").stdout)["message"]
    assert message == f"edit four\n\n(cherry picked from commit {head_of(dsv, 'main~1')})\n"


def test_log_graph_and_merges_against_each_parent(dsv: Dsv) -> None:
    diverge(dsv, edited(BASE, 1, q="ours"), [*BASE, rec(9)])
    dsv("merge", "other")
    ids = {name: head_of(dsv, name)[:12] for name in ("HEAD", "HEAD^1", "HEAD^2", "HEAD~2")}
    out = dsv("log", "--graph", "--oneline", "--no-decorate").stdout
    assert out == (
        f"* {ids['HEAD']} Merge other\n"
        "|\\\n"
        f"* | {ids['HEAD^1']} ours\n"
        f"| * {ids['HEAD^2']} theirs\n"
        "|/\n"
        f"* {ids['HEAD~2']} base\n"
    )
    # show, diff and log --stat: against the first parent, -m against each.
    assert dsv("show").stdout.endswith("\n M qa.jsonl  7 datapoints (+1 -0 ~0)\n")
    assert dsv("show", "-m").stdout.endswith(
        f"\nagainst parent 1 ({ids['HEAD^1']}):\n M qa.jsonl  7 datapoints (+1 -0 ~0)\n"
        f"\nagainst parent 2 ({ids['HEAD^2']}):\n M qa.jsonl  7 datapoints (+0 -0 ~1)\n"
    )
    assert dsv("diff", "--change", "HEAD", "--name-status").stdout == "M\tqa.jsonl\n"
    out = dsv("diff", "--change", "HEAD", "-m", "--stat").stdout
    assert out == (
        f"against parent 1 ({ids['HEAD^1']}):\n qa.jsonl | +1 -0 ~0\n"
        " 1 dataset changed, 1 added, 0 removed, 0 modified\n"
        f"against parent 2 ({ids['HEAD^2']}):\n qa.jsonl | +0 -0 ~1\n"
        " 1 dataset changed, 0 added, 0 removed, 1 modified\n"
    )
    lines = dsv("diff", "--change", "HEAD", "-m", "--format", "jsonl", code=2).stderr
    assert "-m goes with --change, in human, --stat or --name-status output" in lines
    out = dsv("log", "-n", "1", "--oneline", "--stat", "-m", "--no-decorate").stdout
    assert out == (
        f"{ids['HEAD']} Merge other\n"
        f"against parent 1 ({ids['HEAD^1']}):\n qa.jsonl | +1 -0 ~0\n"
        " 1 dataset changed, 1 added, 0 removed, 0 modified\n"
        f"against parent 2 ({ids['HEAD^2']}):\n qa.jsonl | +0 -0 ~1\n"
        " 1 dataset changed, 0 added, 0 removed, 1 modified\n"
    )


def test_a_format_conflict_takes_a_whole_side(dsv: Dsv) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(columns: dict[str, list[Any]]) -> None:
        pq.write_table(pa.table(columns), dsv.root / "t.parquet")

    write({"id": [1, 2], "q": ["a", "b"]})
    dsv("add", "t.parquet", "--key", "id")
    dsv("commit", "-m", "base")
    dsv("branch", "other")
    write({"id": [1, 2], "q": ["a", "b"], "x": ["1", "2"]})
    dsv("commit", "-a", "-m", "ours")
    dsv("switch", "other")
    write({"id": [1, 2], "q": ["a", "b"], "y": [1.5, 2.5]})
    dsv("commit", "-a", "-m", "theirs")
    dsv("switch", "main")
    out = dsv("merge", "other", code=1).stdout
    assert out.splitlines()[0] == (
        "CONFLICT (format) t.parquet: base parquet columns id,q, ours parquet columns id,q,x, "
        "theirs parquet columns id,q,y"
    )
    assert dsv("resolve", "--theirs").stdout == (
        "resolved t.parquet (theirs)\nall conflicts resolved: dsv merge --continue\n"
    )
    assert pq.read_table(dsv.root / "t.parquet").column_names == ["id", "q", "y"]
    dsv("merge", "--continue")
    assert len(parents(dsv)) == 2


def test_a_merge_killed_after_its_record_is_finished_or_taken_back(
    dsv: Dsv, monkeypatch: Any
) -> None:
    from dsv.ops import merging

    diverge(dsv, edited(BASE, 1, q="ours"), edited(BASE, 2, q="theirs"))
    before, head = (dsv.root / "qa.jsonl").read_bytes(), head_of(dsv)
    real = merging._apply

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # as a kill between the record and the first file

    for finish in ("--abort", "--continue"):
        monkeypatch.setattr(merging, "_apply", killed)
        dsv("merge", "other", code=130)
        monkeypatch.setattr(merging, "_apply", real)
        assert (dsv.root / ".dsv/MERGE").exists()
        assert head_of(dsv) == head and (dsv.root / "qa.jsonl").read_bytes() == before
        assert dsv("status").stdout.splitlines()[1] == (
            f"Merging {head_of(dsv, 'other')[:12]}: all conflicts resolved: "
            "'dsv merge --continue' (or 'dsv merge --abort')"
        )
        dsv("merge", finish)
        assert not (dsv.root / ".dsv/MERGE").exists()
    assert parents(dsv) == [head, head_of(dsv, "other")]
    assert rows(dsv) == edited(edited(BASE, 1, q="ours"), 2, q="theirs")
    assert dsv("status").stdout == "On branch main\nnothing to commit, working tree clean\n"


def test_csv_columns_added_on_one_side_fill_the_other_sides_new_rows(dsv: Dsv) -> None:
    (dsv.root / "t.csv").write_text("id,q\n1,x\n2,y\n")
    dsv("add", "t.csv", "--key", "id")
    dsv("commit", "-m", "base")
    dsv("branch", "other")
    (dsv.root / "t.csv").write_text("id,q,a\n1,x,A\n2,y,\n")
    dsv("commit", "-a", "-m", "ours")
    dsv("switch", "other")
    (dsv.root / "t.csv").write_text("id,q\n1,x\n2,y\n3,z\n")
    dsv("commit", "-a", "-m", "theirs")
    dsv("switch", "main")
    dsv("merge", "other")
    assert (dsv.root / "t.csv").read_text() == "id,q,a\n1,x,A\n2,y,\n3,z,\n"
    assert dsv("show", "HEAD:t.csv").stdout.splitlines()[2] == '{"a":"","id":"3","q":"z"}'
    # The file reads back as the version stored: adding it again changes nothing.
    (dsv.root / "t.csv").write_text("id,q,a\n1,x,A\n2,y,\n3,z,\n")
    dsv("add", "t.csv")
    assert dsv("status", "--porcelain").stdout == ""
