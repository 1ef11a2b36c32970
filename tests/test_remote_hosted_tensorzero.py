"""TensorZero as a dsv remote (issue 24): push, fetch, pull and clone against the TensorZero
dialect of a real `dsv serve` on 127.0.0.1, the platform side driven over HTTP as the
`tensorzero` client sends it."""

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

import httpx
import pytest

from benchmarks.push import Server
from dsv.notebook import Repository
from tests.conftest import Dsv, KeyMaker, head_of

KEY_ENV = "TZ_TEST_KEY"


class Platform:
    """The running server and a write key for one repository."""

    def __init__(self, running: Server, key: str) -> None:
        self.url = running.url
        self.key = key

    def call(self, method: str, path: str, body: Any = None) -> Any:
        reply = httpx.request(
            method,
            self.url + path,
            headers={"Authorization": f"Bearer {self.key}"},
            json=body,
            timeout=30,
        )
        assert reply.status_code < 300, reply.text
        return reply.json() if reply.content else None

    def points(self, name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.call(
                "POST",
                f"/v1/datasets/{name}/list_datapoints",
                {"limit": 100, "offset": len(out)},
            )["datapoints"]
            if not page:
                return out
            out += page


@pytest.fixture
def platform(hosted_server: tuple[Server, KeyMaker], request: pytest.FixtureRequest) -> Platform:
    running, keys = hosted_server
    name = "tz/" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")
    return Platform(running, keys("write", name))


@pytest.fixture
def repo(dsv: Dsv, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Dsv:
    monkeypatch.setenv(KEY_ENV, platform.key)
    dsv("remote", "add", "tz", f"tensorzero+{platform.url}", "--key-env", KEY_ENV)
    return dsv


def chats(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "function_name": "answer",
            "system": "be brief",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": f"what is {i}+{i}?"}]}
            ],
            "output": [{"type": "text", "text": str(2 * i)}],
            "tags": {"set": "sums"},
        }
        for i in range(start, start + n)
    ]


def commit(dsv: Dsv, name: str, records: list[dict[str, Any]], message: str) -> str:
    dsv.write(name, records)
    dsv("add", name)
    dsv("commit", "-m", message)
    return head_of(dsv)


def mine(point: dict[str, Any]) -> dict[str, Any]:
    """The record a listed chat datapoint stands for."""
    out = {"function_name": point["function_name"], "system": point["input"]["system"]}
    out["messages"] = point["input"]["messages"]
    out["output"] = point["output"]
    out["tags"] = point["tags"]
    return out


def test_push_fetch_pull_round_trip(repo: Dsv, platform: Platform) -> None:
    records = chats(120)
    head = commit(repo, "qa.jsonl", records, "120")
    out = repo("push", "tz").stdout
    assert "* create      qa.jsonl -> qa  new dataset, 120 datapoints -> snap_" in out
    assert [mine(p) for p in platform.points("qa")] == records
    assert repo("push", "tz").stdout.endswith("Everything up to date\n")
    assert repo("fetch", "tz").stdout == ""
    assert head_of(repo, "tz/main") == head

    # A json datapoint made with the client comes back as a commit, after the branch's order.
    made = {
        "type": "json",
        "function_name": "extract",
        "input": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Ada"}]}]},
        "output": {"raw": '{"name": "Ada"}'},
        "output_schema": {"type": "object"},
    }
    platform.call("POST", "/v1/datasets/qa/datapoints", {"datapoints": [made]})
    assert "Received 1 version" in repo("fetch", "tz").stdout
    assert "Fast-forward main" in repo("pull", "tz").stdout
    lines = [json.loads(x) for x in (repo.root / "qa.jsonl").read_text().splitlines()]
    assert lines == [
        *records,
        {
            "function_name": "extract",
            "messages": made["input"]["messages"],
            "output": {"raw": '{"name": "Ada"}', "parsed": {"name": "Ada"}},
            "output_schema": {"type": "object"},
        },
    ]
    assert repo("push", "tz").stdout.endswith("Everything up to date\n")

    # Removing one: only its deletion is sent.
    del lines[3]
    commit(repo, "qa.jsonl", lines, "-1")
    assert "  remove      qa.jsonl -> qa  -1 datapoint -> snap_" in repo("push", "tz").stdout
    assert len(platform.points("qa")) == 120


def test_a_push_over_a_platform_change_is_refused(repo: Dsv, platform: Platform) -> None:
    commit(repo, "qa.jsonl", chats(2), "two")
    repo("push", "tz")
    theirs = {"type": "chat", "function_name": "answer", "input": {"messages": []}}
    platform.call("POST", "/v1/datasets/qa/datapoints", {"datapoints": [theirs]})
    commit(repo, "qa.jsonl", chats(3), "mine")
    result = repo("push", "tz", code=5)
    assert "qa on tz has changed since the last sync" in result.stderr
    assert len(platform.points("qa")) == 3


def test_clone_takes_the_dataset_as_it_is(
    tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = [
        {"type": "chat", "function_name": "answer", "input": r["input"], "output": r["output"]}
        for r in ({"input": {"messages": m["messages"]}, "output": m["output"]} for m in chats(3))
    ]
    platform.call("POST", "/v1/datasets/golden/datapoints", {"datapoints": points})
    monkeypatch.setenv(KEY_ENV, platform.key)
    Dsv(tmp_path)("clone", f"tensorzero+{platform.url}", "--path", "golden", "--key-env", KEY_ENV)
    with Repository.open(tmp_path / "golden") as opened:
        assert list(opened.records("HEAD", "golden.jsonl")) == [
            {"function_name": "answer", "messages": c["messages"], "output": c["output"]}
            for c in chats(3)
        ]
    assert Dsv(tmp_path / "golden")("push", "origin").stdout.endswith("Everything up to date\n")


def test_kill_9_mid_push_then_push_again_leaves_no_duplicates(
    repo: Dsv, platform: Platform
) -> None:
    files = {f"d{i}.jsonl": chats(120, start=1000 * i) for i in range(6)}
    for name, records in files.items():
        repo.write(name, records)
    repo("add", *files)
    repo("commit", "-m", "six datasets")
    state = repo.root / ".dsv" / "hosted" / "tz.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsv", "-C", str(repo.root), "push", "tz", "--quiet"],
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
    repo("push", "tz")
    for name, records in files.items():
        assert [mine(p) for p in platform.points(name.removesuffix(".jsonl"))] == records
    assert repo("push", "tz").stdout.endswith("Everything up to date\n")
