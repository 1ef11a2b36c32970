"""Humanloop as a dsv remote (issue 24): push, fetch, pull and clone against the Humanloop
dialect of a real `dsv serve` on 127.0.0.1, the platform side driven by the official SDK."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from humanloop import Humanloop

from benchmarks.push import Server
from dsv.notebook import Repository
from tests.conftest import Dsv, KeyMaker, assert_one_error_line, head_of

KEY_ENV = "HL_TEST_KEY"


class Platform:
    """The running server, its write key and the SDK pointed at it."""

    def __init__(self, running: Server, key: str) -> None:
        self.url = f"{running.url}/v5"
        self.key = key
        self.sdk = Humanloop(api_key=key, base_url=self.url)

    def find(self, path: str) -> Any:
        for ds in self.sdk.datasets.list(size=100):
            if ds.path == path:
                return ds
        return None

    def points(self, path: str, version: str | None = None) -> list[dict[str, Any]]:
        ds = self.find(path)
        assert ds is not None, path
        pager = self.sdk.datasets.list_datapoints(ds.id, version_id=version, size=1000)
        out = []
        for p in pager:
            data = p.dict()
            out.append({k: v for k, v in data.items() if k != "id" and v is not None})
        return out

    def versions(self, path: str) -> list[Any]:
        ds = self.find(path)
        return list(self.sdk.datasets.list_versions(ds.id).records)


@pytest.fixture(scope="module")
def platform(hosted_server: tuple[Server, KeyMaker]) -> Platform:
    running, keys = hosted_server
    return Platform(running, keys("write"))


@pytest.fixture
def owner(request: pytest.FixtureRequest) -> str:
    """A repository of the platform's own for each test: `hl/TEST`."""
    return "hl/" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")


@pytest.fixture
def repo(dsv: Dsv, platform: Platform, owner: str, monkeypatch: pytest.MonkeyPatch) -> Dsv:
    """A dsv repository with remote `hl`, its datasets going in `owner` on the platform."""
    monkeypatch.setenv(KEY_ENV, platform.key)
    dsv("remote", "add", "hl", f"humanloop+{platform.url}", "--key-env", KEY_ENV, "--prefix", owner)
    return dsv


def qa(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"inputs": {"question": f"what is {i}+{i}?"}, "target": {"answer": str(2 * i)}}
        for i in range(start, start + n)
    ]


def commit(dsv: Dsv, name: str, records: list[dict[str, Any]], message: str) -> str:
    dsv.write(name, records)
    dsv("add", name)
    dsv("commit", "-m", message)
    return head_of(dsv)


def sent(output: str) -> int:
    """The bytes a push reports it sent (`Sent 1.2 KiB`)."""
    found = re.search(r"Sent ([\d.]+) (B|KiB|MiB)", output)
    assert found, output
    return int(float(found[1]) * {"B": 1, "KiB": 1024, "MiB": 1 << 20}[found[2]])


# -- push ----------------------------------------------------------------------------------------


def test_push_creates_the_dataset_then_sends_nothing_again(
    repo: Dsv, platform: Platform, owner: str
) -> None:
    records = qa(5)
    head = commit(repo, "qa.jsonl", records, "five questions")
    out = repo("push", "hl").stdout
    assert f"* create      qa.jsonl -> {owner}/qa  new dataset, 5 datapoints -> dsv_" in out
    assert platform.points(f"{owner}/qa") == records
    [version] = platform.versions(f"{owner}/qa")
    # The version's description is the commit's message.
    assert version.version_description == "five questions"
    # The mapping is in the repository's config; the link in the sync state.
    config = json.loads((repo.root / ".dsv" / "config").read_text())
    assert config["remotes"]["hl"]["datasets"] == {"qa.jsonl": f"{owner}/qa"}
    state = json.loads((repo.root / ".dsv" / "hosted" / "hl.json").read_text())
    link = state["datasets"]["qa.jsonl"]["versions"][version.version_id]
    assert link["commit"] == head
    assert head_of(repo, "hl/main") == head

    again = repo("push", "hl").stdout
    assert f"= up-to-date  qa.jsonl -> {owner}/qa  {version.version_id}" in again
    assert again.endswith("Everything up to date\n")
    assert len(platform.versions(f"{owner}/qa")) == 1


def test_remote_show_lists_the_mapping(repo: Dsv, platform: Platform, owner: str) -> None:
    commit(repo, "qa.jsonl", qa(2), "two")
    before = repo("remote", "show", "hl").stdout
    assert f"URL: humanloop+{platform.url}" in before
    assert f"key: ${KEY_ENV}" in before and "kind: humanloop" in before
    assert "datasets: none mapped yet" in before
    repo("push", "hl", "--path", "qa.jsonl=" + owner + "/evals/qa")
    shown = repo("remote", "show", "hl").stdout
    ds = platform.find(f"{owner}/evals/qa")
    assert (
        f"  qa.jsonl -> {owner}/evals/qa ({ds.id}, synced at {ds.version_id}, 1 version known)"
        in (shown)
    )
    assert "synced branch: main" in shown
    # Removing the remote forgets its sync state and tracking branch too.
    assert repo("remote", "remove", "hl").stdout == "Removed remote hl (1 remote-tracking ref)\n"
    assert not (repo.root / ".dsv" / "hosted" / "hl.json").exists()


def test_a_push_sends_only_the_change_where_humanloop_allows_it(
    repo: Dsv, platform: Platform, owner: str
) -> None:
    path = f"{owner}/qa"
    records = qa(400)
    commit(repo, "qa.jsonl", records, "400")
    first = sent(repo("push", "hl").stdout)
    # 1% appended: an `add` of those only.
    records += qa(4, start=400)
    commit(repo, "qa.jsonl", records, "+4")
    out = repo("push", "hl").stdout
    assert f"  add         qa.jsonl -> {path}  +4 datapoints -> dsv_" in out
    assert sent(out) * 20 < first
    assert platform.points(path) == records
    # 1% removed: a `remove` of those only.
    del records[10:14]
    commit(repo, "qa.jsonl", records, "-4")
    out = repo("push", "hl").stdout
    assert f"  remove      qa.jsonl -> {path}  -4 datapoints -> dsv_" in out
    assert sent(out) * 20 < first
    assert platform.points(path) == records
    # Records changed in place: Humanloop has no action that both adds and removes, so the
    # whole version goes.
    records[0] = {"inputs": {"question": "changed"}}
    commit(repo, "qa.jsonl", records, "edit")
    out = repo("push", "hl").stdout
    assert "  set         qa.jsonl" in out and "(+1 -1)" in out
    assert platform.points(path) == records
    assert len(platform.versions(path)) == 4


def test_a_record_humanloop_cannot_hold_is_refused_naming_it(
    repo: Dsv, platform: Platform, owner: str
) -> None:
    commit(
        repo, "qa.jsonl", [{"id": 1, "inputs": {"q": "a"}}, {"id": 2, "inputs": {"q": "b"}}], "ids"
    )
    result = repo("push", "hl", code=2)
    assert result.stderr == (
        "error: qa.jsonl line 1: field 'id' has no place in a Humanloop datapoint (it holds "
        "inputs, messages and target)\nhint: leave it out with --drop id, or move it into "
        "inputs or target\n"
    )
    assert platform.find(f"{owner}/qa") is None
    # Leaving it out is the user's explicit choice.
    repo("push", "hl", "--drop", "id")
    assert platform.points(f"{owner}/qa") == [{"inputs": {"q": "a"}}, {"inputs": {"q": "b"}}]

    commit(repo, "n.jsonl", [{"inputs": {"n": 1}}], "a number")
    result = repo("push", "hl", "--drop", "id", code=2)
    assert result.stderr.startswith(
        "error: n.jsonl line 1: field 'inputs.n' is a number: Humanloop inputs are strings\n"
    )
    assert_one_error_line(result.stderr)
    assert platform.find(f"{owner}/n") is None  # nothing of the push was written

    commit(
        repo, "n.jsonl", [{"messages": [{"role": "user", "content": "x", "name": None}]}], "null"
    )
    result = repo("push", "hl", "--drop", "id", code=2)
    assert result.stderr.startswith(
        "error: n.jsonl line 1: field 'messages[0].name' is null: Humanloop does not tell a "
        "null message field from an absent one\n"
    )


def test_repeated_records_are_refused(repo: Dsv, platform: Platform, owner: str) -> None:
    commit(repo, "qa.jsonl", [*qa(3), qa(1, start=1)[0]], "repeat")
    result = repo("push", "hl", code=2)
    assert result.stderr.startswith(
        "error: qa.jsonl line 4 is the same Humanloop datapoint as line 2: Humanloop stores "
        "identical datapoints once\n"
    )
    assert platform.find(f"{owner}/qa") is None


def test_dry_run_shows_the_plan_and_sends_nothing(
    repo: Dsv, platform: Platform, owner: str
) -> None:
    commit(repo, "qa.jsonl", qa(3), "three")
    out = repo("push", "hl", "--dry-run").stdout
    assert out.startswith(f"Would push to humanloop+{platform.url} (dry run: nothing sent)\n")
    assert f"* create      qa.jsonl -> {owner}/qa  new dataset, 3 datapoints\n" in out
    assert platform.find(f"{owner}/qa") is None
    config = json.loads((repo.root / ".dsv" / "config").read_text())
    assert config["remotes"]["hl"]["datasets"] == {}
    assert not (repo.root / ".dsv" / "hosted" / "hl.json").exists()
    repo("push", "hl")
    commit(repo, "qa.jsonl", qa(5), "five")
    out = repo("push", "hl", "--dry-run").stdout
    assert f"  add         qa.jsonl -> {owner}/qa  +2 datapoints\n" in out
    assert len(platform.versions(f"{owner}/qa")) == 1


# -- fetch and pull ------------------------------------------------------------------------------


def test_fetch_does_not_bring_back_what_push_sent(repo: Dsv, platform: Platform) -> None:
    head = commit(repo, "qa.jsonl", qa(3), "three")
    repo("push", "hl")
    assert repo("fetch", "hl").stdout == ""
    assert head_of(repo, "hl/main") == head
    assert repo("pull", "hl").stdout == "Already up to date.\n"


def test_platform_edits_come_back_as_commits(repo: Dsv, platform: Platform, owner: str) -> None:
    path = f"{owner}/qa"
    head = commit(repo, "qa.jsonl", qa(3), "three")
    repo("push", "hl")
    ds = platform.find(path)
    extra = {"messages": [{"role": "user", "content": "hi"}], "target": {"answer": "hello"}}
    platform.sdk.datasets.upsert(
        id=ds.id, datapoints=[extra], action="add", version_description="added on the platform"
    )
    out = repo("fetch", "hl").stdout
    tracking = head_of(repo, "hl/main")
    assert out == (
        f"From humanloop+{platform.url}\n   updated     main -> hl/main  "
        f"{head[:12]}..{tracking[:12]}\nReceived 1 version, {out.rsplit(', ', 1)[1]}"
    )
    shown = json.loads(repo("show", "--json", "hl/main").stdout)
    assert shown["message"].strip() == "added on the platform"
    assert shown["parents"] == [head]
    # Fetching again brings nothing; pull fast-forwards and writes the file.
    assert repo("fetch", "hl").stdout == ""
    assert "Fast-forward main" in repo("pull", "hl").stdout
    assert head_of(repo) == tracking
    lines = [json.loads(x) for x in (repo.root / "qa.jsonl").read_text().splitlines()]
    assert lines == [*qa(3), extra]
    # And the next push knows the platform has it.
    assert repo("push", "hl").stdout.endswith("Everything up to date\n")


def test_a_push_over_a_platform_change_is_refused(
    repo: Dsv, platform: Platform, owner: str
) -> None:
    path = f"{owner}/qa"
    commit(repo, "qa.jsonl", qa(3), "three")
    repo("push", "hl")
    ds = platform.find(path)
    platform.sdk.datasets.upsert(id=ds.id, datapoints=[{"inputs": {"q": "theirs"}}], action="add")
    latest = platform.find(path).version_id
    commit(repo, "qa.jsonl", qa(4), "mine")
    result = repo("push", "hl", code=5)
    assert result.stderr == (
        f"error: rejected: qa.jsonl: {path} on hl has changed since the last sync (version "
        f"{latest}); nothing was pushed (non-fast-forward)\nhint: 'dsv fetch hl' brings it in "
        "as a commit on hl/main; 'dsv pull hl' takes it, then push again\n"
    )
    assert len(platform.versions(path)) == 2
    # After a fetch the platform's version is known, but the branch does not hold it.
    repo("fetch", "hl")
    result = repo("push", "hl", code=5)
    assert "which your branch does not; nothing was pushed" in result.stderr
    assert "hint: 'dsv pull hl' takes it (then push again)" in result.stderr
    assert len(platform.versions(path)) == 2


# -- clone ---------------------------------------------------------------------------------------


def test_clone_brings_every_version_as_a_commit(
    tmp_path: Path, platform: Platform, owner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = f"{owner}/evals/qa"
    made = platform.sdk.datasets.upsert(path=path, datapoints=qa(2), version_description="v1")
    platform.sdk.datasets.upsert(id=made.id, datapoints=qa(1, 5), action="add")
    platform.sdk.datasets.upsert(id=made.id, datapoints=qa(1), action="remove")
    monkeypatch.setenv(KEY_ENV, platform.key)
    outer = Dsv(tmp_path)
    out = outer("clone", f"humanloop+{platform.url}", "--path", path, "--key-env", KEY_ENV)
    assert out.stdout.endswith(f"Checked out branch main in {tmp_path / 'qa'}\n")
    assert "Received 3 versions" in out.stdout
    clone = Dsv(tmp_path / "qa")
    log = json.loads(clone("log", "--json").stdout)
    assert len(log) == 3 and log[-1]["message"].strip() == "v1"
    lines = [json.loads(x) for x in (tmp_path / "qa" / "qa.jsonl").read_text().splitlines()]
    assert lines == [qa(2)[1], qa(1, 5)[0]]
    for entry, version in zip(log, platform.versions(path), strict=True):  # newest first both
        with Repository.open(tmp_path / "qa") as opened:
            held = list(opened.records(entry["oid"], "qa.jsonl"))
        assert held == platform.points(path, version.version_id)
    # The clone is synced: nothing to fetch, nothing to push.
    assert clone("fetch", "origin").stdout == ""
    assert clone("push", "origin").stdout.endswith("Everything up to date\n")
    assert "qa.jsonl -> " + path in clone("remote", "show", "origin").stdout


def test_clone_of_an_unknown_dataset_fails_and_leaves_nothing(
    tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, platform.key)
    result = Dsv(tmp_path)(
        "clone",
        f"humanloop+{platform.url}",
        "--path",
        "no/such/thing",
        "--key-env",
        KEY_ENV,
        code=2,
    )
    assert "error: origin: no dataset 'no/such/thing' on the platform" in result.stderr
    assert not (tmp_path / "thing").exists()


# -- environments ----------------------------------------------------------------------------------


def test_push_envs_deploys_the_version_each_environment_holds(
    repo: Dsv, platform: Platform, owner: str
) -> None:
    path = f"{owner}/qa"
    commit(repo, "qa.jsonl", qa(2), "v1")
    repo("env", "deploy", "production")
    commit(repo, "qa.jsonl", qa(3), "v2")
    repo("push", "hl")
    # production holds v1, which was never pushed: the platform has no version to deploy.
    refused = repo("push", "hl", "--envs", code=5)
    assert "! rejected    env production: qa.jsonl   (this version of it is not on the " in (
        refused.stdout
    )
    assert refused.stderr.startswith("error: not deployed on hl: production\n")
    repo("env", "deploy", "production")
    out = repo("push", "hl", "--envs").stdout
    ds = platform.find(path)
    assert f"* deployed    env production: qa.jsonl {ds.version_id}" in out
    envs = {e.name: e.file for e in platform.sdk.datasets.list_environments(ds.id)}
    assert envs["production"] is not None and envs["production"].version_id == ds.version_id
    assert "= up-to-date  env production" in repo("push", "hl", "--envs").stdout


# -- interrupted pushes ----------------------------------------------------------------------------


def test_a_push_cut_short_after_the_platform_took_it_makes_no_second_version(
    repo: Dsv, platform: Platform, owner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dsv.remote.hosted import engine

    commit(repo, "qa.jsonl", qa(3), "three")
    real = engine.write_state

    calls: list[int] = []

    def crash(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:  # the push notes what it is about to create
            return real(*args)
        raise KeyboardInterrupt  # the process dies between the platform's write and the link

    monkeypatch.setattr(engine, "write_state", crash)
    with pytest.raises(KeyboardInterrupt), Repository.open(repo.root) as opened:
        engine.push(opened, "hl")
    monkeypatch.setattr(engine, "write_state", real)
    out = repo("push", "hl").stdout
    assert "= adopted     qa.jsonl" in out and "(the platform had it already)" in out
    assert len(platform.versions(f"{owner}/qa")) == 1
    assert platform.points(f"{owner}/qa") == qa(3)
    assert repo("push", "hl").stdout.endswith("Everything up to date\n")


def test_kill_9_mid_push_then_push_again_leaves_no_duplicates(
    repo: Dsv, platform: Platform, owner: str
) -> None:
    files = {f"d{i}.jsonl": qa(300, start=1000 * i) for i in range(6)}
    for name, records in files.items():
        repo.write(name, records)
    repo("add", *files)
    repo("commit", "-m", "six datasets")
    env = {**os.environ, KEY_ENV: platform.key}
    state = repo.root / ".dsv" / "hosted" / "hl.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsv", "-C", str(repo.root), "push", "hl", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Killed once the first dataset is on the platform and linked, the others not yet.
    deadline = time.monotonic() + 60

    def linked() -> int:
        try:
            return len(json.loads(state.read_text())["datasets"])
        except (OSError, ValueError, KeyError):
            return 0

    while not linked() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert 1 <= linked() < len(files)
    repo("push", "hl")
    for name, records in files.items():
        path = f"{owner}/{name.removesuffix('.jsonl')}"
        assert len(platform.versions(path)) == 1, path
        assert platform.points(path) == records
    assert repo("push", "hl").stdout.endswith("Everything up to date\n")


def test_a_first_push_onto_a_dataset_made_elsewhere_is_refused(
    repo: Dsv, platform: Platform, owner: str
) -> None:
    path = f"{owner}/qa"
    platform.sdk.datasets.upsert(path=path, datapoints=[{"inputs": {"q": "theirs"}}])
    commit(repo, "qa.jsonl", qa(2), "mine")
    result = repo("push", "hl", code=5)
    assert result.stderr == (
        f"error: rejected: qa.jsonl: hl has a dataset {path} already, never synced with this "
        f"repository; nothing was pushed\nhint: clone it ('dsv clone humanloop+{platform.url} "
        f"--path {path}'), or map qa.jsonl to another dataset: 'dsv push hl --path "
        "qa.jsonl=OTHER/PATH'\n"
    )
    assert len(platform.versions(path)) == 1
    repo("push", "hl", "--path", f"qa.jsonl={owner}/mine")
    assert platform.points(f"{owner}/mine") == qa(2)


def test_push_reports_progress(repo: Dsv, platform: Platform) -> None:
    from dsv.progress import Progress
    from dsv.remote.hosted import engine

    commit(repo, "a.jsonl", qa(2), "a")
    commit(repo, "b.jsonl", qa(3), "b")
    seen: list[Progress] = []
    with Repository.open(repo.root) as opened:
        engine.push(opened, "hl", progress=seen.append)
    phases = [(p.phase, p.done, p.total) for p in seen]
    assert phases[0] == ("comparing datasets", 0, 2)
    assert ("comparing datasets", 2, 2) in phases
    assert phases[-1] == ("writing versions", 2, 2)
    assert all(p.unit == "datasets" for p in seen)


def test_options_that_do_not_fit_the_remote_are_refused(
    repo: Dsv, tmp_path: Path, platform: Platform
) -> None:
    commit(repo, "qa.jsonl", qa(1), "one")
    result = repo("push", "hl", "main", code=2)
    assert result.stderr == (
        "error: remote hl is a hosted platform: it takes the current branch only (no REF, "
        "--force or --tags)\n"
    )
    repo("remote", "add", "origin", "http://127.0.0.1:9/acme/evals")
    result = repo("push", "origin", "--dry-run", code=2)
    assert result.stderr == (
        "error: --path, --drop and --dry-run are for hosted platforms' remotes only\n"
    )
    result = repo("remote", "add", "x", "humanloop+ftp://h/v5", code=2)
    assert result.stderr.startswith("error: invalid remote URL 'humanloop+ftp://h/v5'\nhint: a ")
    result = Dsv(tmp_path)("clone", f"humanloop+{platform.url}", code=2)
    assert result.stderr.startswith(
        "error: name the platform datasets to clone: --path PLATFORM_PATH (repeatable)\n"
    )
