"""Branches, tags and environments: names that clash, deployment history (dsv.labels)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.conftest import (
    QA,
    Dsv,
    assert_one_error_line,
    commit_records,
    datapoint_oid,
    head_of,
)


def test_ref_names_that_clash_with_existing_ones(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    err = dsv("branch", "main/sub", code=2).stderr
    assert_one_error_line(err)
    assert err.startswith("error: cannot create 'main/sub': 'main' exists\n")
    dsv("branch", "feature/x")
    err = dsv("branch", "feature", code=2).stderr
    assert_one_error_line(err)
    assert err.startswith("error: cannot create 'feature': 'feature/x' exists\n")
    dsv("tag", "v1")
    assert dsv("tag", "v1/rc", code=2).stderr.startswith("error: cannot create 'v1/rc'")
    # Logs outlive their refs, so the deleted name's history keeps blocking the shorter one.
    dsv("branch", "-d", "feature/x")
    err = dsv("branch", "feature", code=2).stderr
    assert_one_error_line(err)
    assert err.startswith(
        "error: cannot create 'feature': the history of the deleted 'feature/x' is kept under"
    )
    assert json.loads(dsv("branch", "--json").stdout)[0]["name"] == "main"
    assert dsv("fsck").stdout.endswith(": ok\n")


@pytest.fixture
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_env_list_shows_version_when_and_who(dsv: Dsv, india_time: None) -> None:
    first = commit_records(dsv, "qa.jsonl", QA, "v1")
    before = int(time.time())
    dsv("env", "deploy", "production")
    [line] = dsv("env", "list").stdout.splitlines()
    name, version, day, clock, zone, who = line.split(maxsplit=5)
    assert (name, version, zone, who) == (
        "production",
        first[:12],
        "+0530",
        "Test User <test@example.com>",
    )
    [row] = json.loads(dsv("env", "list", "--json").stdout)
    assert row["time"].endswith("+05:30") and row["oid"] == first
    from datetime import datetime

    assert abs(datetime.fromisoformat(row["time"]).timestamp() - before) < 5
    assert f"{day} {clock}" == datetime.fromisoformat(row["time"]).strftime("%Y-%m-%d %H:%M:%S")


def test_env_history_survives_rm_and_redeploy(dsv: Dsv) -> None:
    first = commit_records(dsv, "qa.jsonl", QA, "v1")
    dsv("env", "deploy", "staging")
    second = commit_records(dsv, "qa.jsonl", QA[:2], "v2")
    dsv("env", "rm", "staging")
    assert dsv("env", "list").stdout == ""
    dsv("env", "deploy", "staging", second[:8])
    history = json.loads(dsv("env", "log", "staging", "--json").stdout)
    assert [(h["old"], h["new"]) for h in history] == [
        (None, second),
        (first, None),
        (None, first),
    ]
    assert [h["reason"] for h in history] == [
        f"deploy: {second[:8]}",
        "deployment removed",
        "deploy: HEAD",
    ]


def test_diff_between_two_environments_from_the_cli(dsv: Dsv) -> None:
    v1 = [{"id": f"k{i}", "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(6)]
    dsv.write("qa.jsonl", v1)
    dsv("add", "qa.jsonl")  # no stored key: every record has a unique id, so id is used
    dsv("commit", "-m", "v1")
    dsv("env", "deploy", "production")
    v2 = json.loads(json.dumps(v1))
    v2[2]["messages"].append({"role": "assistant", "content": "a2"})
    v2 = [v2[1], v2[0], *v2[2:5]]  # reorder the first two, drop the last
    dsv.write("qa.jsonl", v2)
    dsv("commit", "-a", "-m", "v2")
    dsv("env", "deploy", "staging")
    prod, staging = head_of(dsv, "production"), head_of(dsv, "staging")
    stat = json.loads(dsv("diff", "production", "staging", "--stat", "--json").stdout)
    assert stat == {
        "from": prod,
        "to": staging,
        "datasets": [
            {
                "path": "qa.jsonl",
                "status": "modified",
                "added": 0,
                "removed": 1,
                "modified": 1,
                "unchanged": 4,
                "reordered": True,
            }
        ],
    }
    lines = [
        json.loads(x)
        for x in dsv("diff", "production", "staging", "--format", "jsonl").stdout.splitlines()
    ]
    assert sorted((x["status"], x["key"]["id"]) for x in lines) == [
        ("modified", "k2"),
        ("removed", "k5"),
    ]
    [modified] = [x for x in lines if x["status"] == "modified"]
    assert modified["old"] == datapoint_oid(v1[2]) and modified["new"] == datapoint_oid(v2[2])
    assert modified["fields"] == [
        {
            "path": "messages[1]",
            "old": None,
            "new": {"role": "assistant", "content": "a2"},
            "absent": "old",
        }
    ]
    assert "order changed: 1 moved" in dsv("diff", "production", "staging").stdout
    # --key on the command line wins: by message list, k2 is a removal plus an addition.
    by_messages = json.loads(
        dsv("diff", "production", "staging", "--stat", "--json", "--key", "messages").stdout
    )
    counts = by_messages["datasets"][0]
    assert (counts["added"], counts["removed"], counts["modified"]) == (1, 2, 0)
