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


# -- per-dataset deployments (issue 30) --------------------------------------------------------


def _two_datasets(dsv: Dsv) -> dict[str, str]:
    """qa.jsonl at versions 1-3 and rag.jsonl at versions 1-2 in one repository, each commit
    changing one of them; the ids by name (`qa1`..., `rag2`)."""
    ids = {"qa1": commit_records(dsv, "qa.jsonl", QA[:1], "qa 1")}
    ids["rag1"] = commit_records(dsv, "rag.jsonl", QA[3:4], "rag 1")
    ids["qa2"] = commit_records(dsv, "qa.jsonl", QA[:2], "qa 2")
    ids["qa3"] = commit_records(dsv, "qa.jsonl", QA[:3], "qa 3")
    ids["rag2"] = commit_records(dsv, "rag.jsonl", QA[3:5], "rag 2")
    return ids


def _shown(dsv: Dsv, rev: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in dsv("show", rev).stdout.splitlines()]


def test_deploying_one_dataset_leaves_the_others_where_they_were(dsv: Dsv) -> None:
    ids = _two_datasets(dsv)
    out = dsv("env", "deploy", "production", "main", "--", "rag.jsonl").stdout
    assert out.startswith("Deployed rag.jsonl of main to production: now ")
    # The rollback of issue 30: qa goes back to an older commit, rag stays at its newest.
    dsv("env", "deploy", "production", ids["qa1"][:12], "--", "qa.jsonl")
    assert _shown(dsv, "production:rag.jsonl") == QA[3:5]
    assert _shown(dsv, "production:qa.jsonl") == QA[:1]
    # The environment is a revision like any other: diff, checkout and fsck read it.
    diff = json.loads(dsv("diff", "--stat", "--json", "production", "main").stdout)
    assert [d["path"] for d in diff["datasets"]] == ["qa.jsonl"]
    dsv("checkout", "production")
    assert [json.loads(x) for x in (dsv.root / "rag.jsonl").read_text().splitlines()] == QA[3:5]
    assert [json.loads(x) for x in (dsv.root / "qa.jsonl").read_text().splitlines()] == QA[:1]
    dsv("switch", "main")
    assert dsv("fsck").stdout.endswith(": ok\n")
    # Each dataset's history: which version, replacing which.
    qa = json.loads(dsv("env", "log", "production", "--json", "--", "qa.jsonl").stdout)
    assert [(h["version"], h["previous"]) for h in qa] == [(ids["qa1"], None)]
    rag = json.loads(dsv("env", "log", "production", "--json", "--", "rag.jsonl").stdout)
    assert [(h["version"], h["previous"]) for h in rag] == [(ids["rag2"], None)]
    # Deploying qa again, at its newest: rag is untouched still, and the log says what qa was.
    dsv("env", "deploy", "production", "main", "--", "qa.jsonl")
    assert _shown(dsv, "production:rag.jsonl") == QA[3:5]
    [line, _] = dsv("env", "log", "production", "--", "qa.jsonl").stdout.splitlines()
    assert line.startswith(ids["rag2"][:12] + "  ")
    assert line.endswith(f"deploy: qa.jsonl from main  (was {ids['qa1'][:12]})")
    again = dsv("env", "deploy", "production", "main", "--", "qa.jsonl").stdout
    assert again == "production already holds qa.jsonl of main\n"


def test_a_whole_deploy_still_moves_every_dataset(dsv: Dsv) -> None:
    ids = _two_datasets(dsv)
    dsv("env", "deploy", "production", "main", "--", "rag.jsonl")
    dsv("env", "deploy", "production", ids["qa2"][:12])
    [row] = json.loads(dsv("env", "list", "--json").stdout)
    assert row["oid"] == ids["qa2"]
    assert _shown(dsv, "production:rag.jsonl") == QA[3:4]
    # On top of a whole deploy, one dataset moves alone again.
    dsv("env", "deploy", "production", "main", "--", "qa.jsonl")
    assert _shown(dsv, "production:rag.jsonl") == QA[3:4]
    assert _shown(dsv, "production:qa.jsonl") == QA[:3]
    rag = json.loads(dsv("env", "log", "production", "--json", "--", "rag.jsonl").stdout)
    assert [(h["version"], h["previous"]) for h in rag] == [
        (ids["qa2"], ids["rag2"]),
        (ids["rag2"], None),
    ]


def test_removing_one_datasets_deployment_keeps_the_others(dsv: Dsv) -> None:
    ids = _two_datasets(dsv)
    dsv("env", "deploy", "staging", ids["qa2"][:12])
    out = dsv("env", "rm", "staging", "--", "qa.jsonl").stdout
    assert out.startswith("Removed 1 dataset(s) from staging (now ")
    assert _shown(dsv, "staging:rag.jsonl") == QA[3:4]
    err = dsv("show", "staging:qa.jsonl", code=2).stderr
    assert "qa.jsonl" in err
    err = dsv("env", "rm", "staging", "--", "qa.jsonl", code=2).stderr
    assert err == "error: environment staging holds no dataset qa.jsonl\n"
    # The last one gone, the environment is gone; its history stays.
    assert "nothing left deployed" in dsv("env", "rm", "staging", "--", "rag.jsonl").stdout
    assert dsv("env", "list").stdout == ""
    log = json.loads(dsv("env", "log", "staging", "--json", "--", "qa.jsonl").stdout)
    assert [(h["version"], h["previous"]) for h in log] == [(None, ids["qa2"]), (ids["qa2"], None)]


def test_deploying_a_dataset_the_version_lacks_is_refused(dsv: Dsv) -> None:
    ids = _two_datasets(dsv)
    err = dsv("env", "deploy", "production", ids["qa1"][:12], "--", "rag.jsonl", code=2).stderr
    assert_one_error_line(err)
    assert err.startswith(f"error: {ids['qa1'][:12]} has no dataset rag.jsonl\n")
    assert dsv("env", "list").stdout == ""


def test_deployments_replay_on_anothers_when_they_touch_other_datasets(dsv: Dsv) -> None:
    # What `dsv push --envs` does when someone deployed to the environment meanwhile.
    from dsv.errors import BadState
    from dsv.labels import rebase_deployments
    from dsv.repo import Repository

    ids = _two_datasets(dsv)
    for env in ("production", "staging", "canary"):
        dsv("env", "deploy", env, ids["qa2"][:12])
    # Theirs (staging): rag at its newest. Ours (production): qa twice, then as it was.
    dsv("env", "deploy", "staging", "main", "--", "rag.jsonl")
    dsv("env", "deploy", "production", ids["qa3"][:12], "--", "qa.jsonl")
    dsv("env", "deploy", "production", ids["qa1"][:12], "--", "qa.jsonl")
    with Repository.open(dsv.root) as repo:
        theirs = repo.resolve("staging")
        new = rebase_deployments(repo, "production", theirs)
        assert repo.resolve("production") == new
        assert repo.read_commit(repo.read_commit(new).parents[0]).parents[0] == theirs
    assert _shown(dsv, "production:rag.jsonl") == QA[3:5]
    assert _shown(dsv, "production:qa.jsonl") == QA[:1]
    qa = json.loads(dsv("env", "log", "production", "--json", "--", "qa.jsonl").stdout)
    assert qa[0]["version"] == ids["qa1"]
    assert dsv("fsck").stdout.endswith(": ok\n")
    # Both sides deploying rag, or ours a whole version: refused, nothing moved.
    dsv("env", "deploy", "canary", ids["rag1"][:12], "--", "rag.jsonl")
    commit_records(dsv, "qa.jsonl", QA[:4], "qa 4")  # a version staging does not hold
    dsv("env", "deploy", "whole", "main")
    with Repository.open(dsv.root) as repo:
        canary, whole = repo.resolve("canary"), repo.resolve("whole")
        with pytest.raises(BadState) as refused:
            rebase_deployments(repo, "canary", theirs)
        assert refused.value.message == (
            "environment canary: cannot replay its deployments on the remote's: "
            "both sides changed rag.jsonl"
        )
        with pytest.raises(BadState, match=r"deploys a whole version, not some datasets$"):
            rebase_deployments(repo, "whole", theirs)
        assert (repo.resolve("canary"), repo.resolve("whole")) == (canary, whole)
