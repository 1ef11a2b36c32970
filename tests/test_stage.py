"""Staging through the CLI: rm, mv and status (dsv.ops.stage, dsv.cli.files)."""

from __future__ import annotations

import json

from tests.conftest import (
    QA,
    Dsv,
    commit_records,
)


def test_rm_keeps_a_file_whose_version_is_only_staged(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    dsv.write("new.jsonl", QA)
    dsv("add", "new.jsonl")
    err = dsv("rm", "new.jsonl", code=3).stderr
    assert err == (
        "error: new.jsonl has staged changes that are not committed\n"
        "hint: use --cached to keep the file, or --force to delete it anyway\n"
    )
    assert (dsv.root / "new.jsonl").exists()
    dsv.write("qa.jsonl", QA[:1])
    dsv("add", "qa.jsonl")
    dsv("rm", "qa.jsonl", code=3)
    assert (dsv.root / "qa.jsonl").exists()
    dsv("rm", "--force", "new.jsonl")
    assert not (dsv.root / "new.jsonl").exists()


def test_mv_errors_change_nothing(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    (dsv.root / "a.csv").write_text("id,q\n1,x\n")
    dsv("add", "a.csv")
    dsv("commit", "-m", "csv")
    dsv.write("other.jsonl", QA[:1])
    cases = [
        (["qa.jsonl", "other.jsonl"], "error: other.jsonl: already exists\n"),
        (["a.csv", "a.tsv"], "error: a.tsv: a move cannot change the file type\n"),
        (["qa.jsonl", "qa.csv"], "error: qa.csv: a move cannot change the file type\n"),
        (["nope.jsonl", "x.jsonl"], "error: nope.jsonl: not tracked by dsv\n"),
    ]
    for args, message in cases:
        assert dsv("mv", *args, code=2).stderr == message
    (dsv.root / "qa.jsonl").unlink()
    assert dsv("mv", "qa.jsonl", "moved.jsonl", code=2).stderr == (
        "error: qa.jsonl: no such file\nhint: use 'dsv rm --cached qa.jsonl' to stop tracking it\n"
    )
    assert dsv("status", "--porcelain").stdout == "D qa.jsonl\n?? other.jsonl\n"
    assert (dsv.root / "a.csv").exists() and not (dsv.root / "a.tsv").exists()


def test_status_counts_staged_and_unstaged_changes_separately(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    extra = [{"id": 10 + i, "q": "new", "a": "x"} for i in range(3)]
    dsv.write("qa.jsonl", [*QA, extra[0]])
    dsv("add", "qa.jsonl")
    dsv.write("qa.jsonl", [*QA[1:], *extra])
    human = dsv("status").stdout
    assert human == (
        "On branch main\n"
        "Changes to be committed:\n"
        "  modified: qa.jsonl (6 datapoints, +1 -0 ~0)\n"
        "Changes not staged for commit (dsv add, or dsv commit -a):\n"
        "  modified: qa.jsonl (7 datapoints, +2 -1 ~0)\n"
    )
    [entry] = json.loads(dsv("status", "--json").stdout)
    assert entry == {
        "path": "qa.jsonl",
        "staged": "modified",
        "unstaged": "modified",
        "count": 7,
        "added": 3,
        "removed": 1,
        "modified": 0,
        "staged_count": 6,
        "staged_added": 1,
        "staged_removed": 0,
        "staged_modified": 0,
        "unstaged_added": 2,
        "unstaged_removed": 1,
        "unstaged_modified": 0,
    }
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"
    dsv("commit", "-a", "-m", "all")
    assert dsv("status", "--porcelain").stdout == ""


def test_status_of_a_staged_file_deleted_from_disk(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    dsv.write("b.jsonl", QA[:4])
    dsv("add", "b.jsonl")
    (dsv.root / "b.jsonl").unlink()
    (dsv.root / "qa.jsonl").unlink()
    human = dsv("status").stdout
    assert "  added:    b.jsonl (4 datapoints)\n" in human
    assert "  deleted:  b.jsonl (4 datapoints)\n" in human
    assert "  deleted:  qa.jsonl (5 datapoints)\n" in human
    assert dsv("status", "--porcelain").stdout == "A b.jsonl\nD qa.jsonl\n"


def test_restoring_a_path_nothing_staged_says_how_to_stage_it(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    assert dsv("restore", "other/z.csv", code=2).stderr == (
        "error: other/z.csv: no such dataset in the index\n"
        "hint: it is not staged: 'dsv add other/z.csv' stages it\n"
    )
