"""History through the CLI: log, show and cat-object (dsv.ops.history, dsv.cli.history)."""

from __future__ import annotations

import json

from tests.conftest import (
    QA,
    Dsv,
    assert_one_error_line,
    commit_records,
    datapoint_oid,
    head_of,
)


def _colliding(prefix_len: int, oids: list[str]) -> str:
    seen: dict[str, str] = {}
    for oid in oids:
        if oid[:prefix_len] in seen:
            return oid[:prefix_len]
        seen[oid[:prefix_len]] = oid
    raise AssertionError("no collision")


def test_log_of_an_unborn_branch_is_empty(dsv: Dsv) -> None:
    assert dsv("log").stdout == ""
    assert json.loads(dsv("log", "--json").stdout) == []
    err = dsv("show", code=3).stderr
    assert err == "error: HEAD has no commits yet\nhint: commit something first\n"
    assert dsv("cat-object", "HEAD", code=3).stderr.startswith("error: HEAD has no commits")


def test_log_narrowed_to_a_directory_or_the_root(dsv: Dsv) -> None:
    commit_records(dsv, "evals/qa.jsonl", QA, "in evals")
    commit_records(dsv, "other.jsonl", QA, "elsewhere")
    assert [e["message"] for e in json.loads(dsv("log", "--json", "--", "evals").stdout)] == [
        "in evals\n"
    ]
    assert len(json.loads(dsv("log", "--json", "--", ".").stdout)) == 2


def test_cat_object_needs_a_unique_prefix_of_four_digits(dsv: Dsv) -> None:
    records = [{"n": i} for i in range(3000)]
    dsv.write("many.jsonl", records)
    dsv("add", "many.jsonl")
    dsv("commit", "-m", "many")
    prefix = _colliding(4, [datapoint_oid(r) for r in records])
    err = dsv("cat-object", prefix, code=2).stderr
    assert_one_error_line(err)
    assert err.startswith(f"error: ambiguous id '{prefix}': ")
    assert "(datapoint)" in err
    unique = datapoint_oid(records[0])[:10]
    assert json.loads(dsv("cat-object", unique.upper()).stdout) == records[0]
    assert dsv("cat-object", unique[:3], code=2).stderr == (
        f"error: unknown revision '{unique[:3]}'\n"
        "hint: an abbreviated id needs at least 4 hex digits\n"
    )
    head = head_of(dsv)
    assert dsv("cat-object", "-t", "HEAD").stdout == "commit\n"
    dsv.write("many.jsonl", records[:10])
    dsv("commit", "-a", "-m", "fewer")
    assert json.loads(dsv("cat-object", "HEAD~1").stdout)["message"] == "many\n"
    assert json.loads(dsv("cat-object", "HEAD^").stdout)["message"] == "many\n"
    assert head_of(dsv, head[:8].upper()) == head


def test_a_prefix_shared_by_a_commit_and_a_datapoint(dsv: Dsv) -> None:
    commit = commit_records(dsv, "qa.jsonl", QA, "v1")
    n = 0
    while not datapoint_oid({"n": n}).startswith(commit[:4]):
        n += 1
    dsv.write("clash.jsonl", [{"n": n}])
    dsv("add", "clash.jsonl")
    dsv("commit", "-m", "clash")
    # A revision means a commit, so the prefix names one; cat-object takes any kind: ambiguous.
    assert head_of(dsv, commit[:4]) == commit
    err = dsv("cat-object", commit[:4], code=2).stderr
    assert err.startswith(f"error: ambiguous id '{commit[:4]}': 2 objects start with it\n")
    assert "(commit)" in err and "(datapoint)" in err
