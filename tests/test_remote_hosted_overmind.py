"""Overmind Lab as a dsv remote (issue 24): push, fetch, pull and clone against the Overmind
Lab dialect of a real `dsv serve` on 127.0.0.1, the platform side driven over raw HTTP as the
seed page documents it (Overmind Lab's SDK is not on PyPI)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.push import Server
from dsv.notebook import Repository
from tests.conftest import Dsv, KeyMaker, head_of

KEY_ENV = "OVERMIND_TEST_KEY"


class Platform:
    """The running server and a write key for one repository."""

    def __init__(self, running: Server, key: str) -> None:
        self.url = running.url
        self.key = key
        self.agent = str(uuid.uuid4())

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = httpx.request(
            method,
            self.url + path,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
            **kwargs,
        )
        assert reply.status_code < 300, reply.text
        return reply.json() if reply.content else None

    def versions(self, agent: str) -> list[dict[str, Any]]:
        body = self.call("GET", "/api/datasets/", params={"agent": agent, "ordering": "version"})
        return list(body["results"])

    def points(self, version_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.call(
                "GET", f"/api/datasets/{version_id}/datapoints/", params={"page": page}
            )
            out += body["results"]
            if not body["next"]:
                return out
            page += 1


@pytest.fixture
def platform(hosted_server: tuple[Server, KeyMaker], request: pytest.FixtureRequest) -> Platform:
    running, keys = hosted_server
    name = "om/" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")
    return Platform(running, keys("write", name))


@pytest.fixture
def repo(dsv: Dsv, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Dsv:
    monkeypatch.setenv(KEY_ENV, platform.key)
    dsv("remote", "add", "om", f"overmind+{platform.url}", "--key-env", KEY_ENV)
    return dsv


def cases(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "inputs": {"question": f"what is {i}+{i}?"},
            "expected_output": {"answer": 2 * i},
            "persona": "student",
            "tags": {"topic": "sums"},
        }
        for i in range(start, start + n)
    ]


def commit(dsv: Dsv, name: str, records: list[dict[str, Any]], message: str) -> str:
    dsv.write(name, records)
    dsv("add", name)
    dsv("commit", "-m", message)
    return head_of(dsv)


def test_push_fetch_pull_round_trip(repo: Dsv, platform: Platform) -> None:
    agent = platform.agent
    records = cases(150)
    head = commit(repo, "qa.jsonl", records, "150 sums")
    result = repo("push", "om", code=2)
    assert result.stderr == (
        "error: qa.jsonl: name the Overmind Lab agent its dataset belongs to\n"
        "hint: --path qa.jsonl=AGENT_UUID\n"
    )
    out = repo("push", "om", "--path", f"qa.jsonl={agent}").stdout
    assert f"* create      qa.jsonl -> {agent}  new dataset, 150 datapoints -> " in out
    [version] = platform.versions(agent)
    assert version["version"] == 1 and version["name"] == "150 sums"
    shown = platform.points(version["id"])
    assert [p["order"] for p in shown] == list(range(150))
    assert [
        {"inputs": p["input"], **{k: p[k] for k in ("expected_output", "persona", "tags")}}
        for p in shown
    ] == records
    assert repo("push", "om").stdout.endswith("Everything up to date\n")
    assert repo("fetch", "om").stdout == ""
    assert head_of(repo, "om/main") == head

    # A version posted on the platform comes back as a commit.
    extra = {"input": {"question": "asked on Overmind"}, "expected_output": "yes"}
    posted = [
        {"input": r["inputs"], **{k: r[k] for k in ("expected_output", "persona", "tags")}}
        for r in records
    ] + [extra]
    platform.call(
        "POST", "/api/datasets/", json={"agent": agent, "datapoints": posted, "name": "theirs"}
    )
    out = repo("fetch", "om").stdout
    assert "updated     main -> om/main" in out and "Received 1 version" in out
    assert json.loads(repo("show", "--json", "om/main").stdout)["message"].strip() == "theirs"
    assert "Fast-forward main" in repo("pull", "om").stdout
    lines = [json.loads(x) for x in (repo.root / "qa.jsonl").read_text().splitlines()]
    assert lines == [*records, {"inputs": extra["input"], "expected_output": "yes"}]

    # A local change becomes version 3, refused first if the platform moved meanwhile.
    platform.call("POST", "/api/datasets/", json={"agent": agent, "datapoints": posted[:3]})
    commit(repo, "qa.jsonl", lines[:-1], "drop theirs")
    result = repo("push", "om", code=5)
    assert "has changed since the last sync" in result.stderr
    assert len(platform.versions(agent)) == 3


def test_clone_brings_every_version(
    tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = platform.agent
    for n in (1, 2, 3):
        body = [{"input": {"n": str(i)}, "order": i} for i in range(n)]
        platform.call(
            "POST", "/api/datasets/", json={"agent": agent, "datapoints": body, "name": f"v{n}"}
        )
    monkeypatch.setenv(KEY_ENV, platform.key)
    out = Dsv(tmp_path)(
        "clone",
        f"overmind+{platform.url}",
        "--path",
        f"golden.jsonl={agent}",
        "--key-env",
        KEY_ENV,
    )
    assert "Received 3 versions" in out.stdout
    with Repository.open(tmp_path / "golden") as opened:
        log = [e.commit.message for e in opened.log()]
        assert log == ["v3", "v2", "v1"]
        assert list(opened.records("HEAD", "golden.jsonl")) == [
            {"inputs": {"n": str(i)}} for i in range(3)
        ]
    assert Dsv(tmp_path / "golden")("push", "origin").stdout.endswith("Everything up to date\n")


def test_push_envs_activates_the_production_version(repo: Dsv, platform: Platform) -> None:
    agent = platform.agent
    commit(repo, "qa.jsonl", cases(2), "two")
    repo("push", "om", "--path", f"qa.jsonl={agent}")
    repo("env", "deploy", "production")
    out = repo("push", "om", "--envs").stdout
    [version] = platform.versions(agent)
    assert f"* deployed    env production: qa.jsonl {version['id']}" in out
    assert platform.versions(agent)[0]["is_active"] is True
    assert "= up-to-date  env production" in repo("push", "om", "--envs").stdout


def test_records_overmind_cannot_hold_are_refused(repo: Dsv, platform: Platform) -> None:
    commit(repo, "qa.jsonl", [{"inputs": {"q": "x"}, "messages": []}], "messages")
    result = repo("push", "om", "--path", f"qa.jsonl={platform.agent}", code=2)
    assert result.stderr.startswith(
        "error: qa.jsonl line 1: field 'messages' has no place in an Overmind Lab datapoint"
    )
    assert platform.versions(platform.agent) == []


def test_kill_9_mid_push_then_push_again_leaves_no_duplicates(
    repo: Dsv, platform: Platform
) -> None:
    # Files named by their agent need no --path.
    files = {f"{uuid.uuid4()}.jsonl": cases(150, start=1000 * i) for i in range(6)}
    for name, records in files.items():
        repo.write(name, records)
    repo("add", *files)
    repo("commit", "-m", "six agents")
    state = repo.root / ".dsv" / "hosted" / "om.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsv", "-C", str(repo.root), "push", "om", "--quiet"],
        env={**os.environ, KEY_ENV: platform.key},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def linked() -> int:
        try:
            return len(json.loads(state.read_text())["datasets"])
        except (OSError, ValueError, KeyError):
            return 0

    deadline = time.monotonic() + 60
    while not linked() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert 1 <= linked() < len(files)
    repo("push", "om")
    for name, records in files.items():
        [version] = platform.versions(name.removesuffix(".jsonl"))
        shown = platform.points(version["id"])
        assert [p["input"] for p in shown] == [r["inputs"] for r in records]
    assert repo("push", "om").stdout.endswith("Everything up to date\n")
