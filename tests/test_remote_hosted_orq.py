"""orq.ai as a dsv remote (issue 24): push, fetch, pull and clone against the orq.ai dialect
of a real `dsv serve` on 127.0.0.1, the platform side driven by the official `orq-ai-sdk`."""

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

from benchmarks.push import Server
from dsv.notebook import Repository
from tests.conftest import Dsv, KeyMaker, head_of

# The lowest CI run has no orq-ai-sdk (it needs a newer httpx than dsv's lower bound).
Orq = pytest.importorskip("orq_ai_sdk", reason="needs orq-ai-sdk").Orq

KEY_ENV = "ORQ_TEST_KEY"


class Platform:
    """The running server, a write key for one repository, and the SDK pointed at it."""

    def __init__(self, running: Server, key: str) -> None:
        self.url = running.url
        self.key = key
        self.sdk = Orq(api_key=key, server_url=running.url)

    def find(self, name: str) -> Any:
        for ds in self.sdk.datasets.list(limit=50).data:
            if ds.display_name == name:
                return ds
        return None

    def points(self, name: str) -> list[dict[str, Any]]:
        ds = self.find(name)
        assert ds is not None, name
        out = []
        after = None
        while True:
            page = self.sdk.datasets.list_datapoints(
                dataset_id=ds.id, limit=50, **({"starting_after": after} if after else {})
            )
            for p in page.data:
                data = p.model_dump(exclude_none=True)
                out.append(
                    {k: data[k] for k in ("inputs", "messages", "expected_output") if k in data}
                )
            if not page.has_more or not page.data:
                return out
            after = page.data[-1].id


@pytest.fixture
def platform(hosted_server: tuple[Server, KeyMaker], request: pytest.FixtureRequest) -> Platform:
    """A repository of the platform's own for each test (the key is for it)."""
    running, keys = hosted_server
    name = "orq/" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")
    return Platform(running, keys("write", name))


@pytest.fixture
def repo(dsv: Dsv, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Dsv:
    monkeypatch.setenv(KEY_ENV, platform.key)
    dsv("remote", "add", "orq", f"orq+{platform.url}", "--key-env", KEY_ENV)
    return dsv


def qa(n: int, start: int = 0, context: str = "") -> list[dict[str, Any]]:
    return [
        {
            "inputs": {
                "question": f"what is {i}+{i}?",
                **({"context": context} if context else {}),
            },
            "expected_output": str(2 * i),
        }
        for i in range(start, start + n)
    ]


def commit(dsv: Dsv, name: str, records: list[dict[str, Any]], message: str) -> str:
    dsv.write(name, records)
    dsv("add", name)
    dsv("commit", "-m", message)
    return head_of(dsv)


def sent(output: str) -> int:
    found = re.search(r"Sent ([\d.]+) (B|KiB|MiB)", output)
    assert found, output
    return int(float(found[1]) * {"B": 1, "KiB": 1024, "MiB": 1 << 20}[found[2]])


def test_push_fetch_and_pull_round_trip(repo: Dsv, platform: Platform) -> None:
    # Records of some size, as eval sets have: what is sent then is the data, not headers.
    records = qa(200, context="c" * 400)
    head = commit(repo, "qa.jsonl", records, "200")
    out = repo("push", "orq").stdout
    assert "* create      qa.jsonl -> qa  new dataset, 200 datapoints -> snap_" in out
    first = sent(out)
    assert platform.points("qa") == records
    assert repo("push", "orq").stdout.endswith("Everything up to date\n")
    assert repo("fetch", "orq").stdout == ""
    assert head_of(repo, "orq/main") == head

    # 1% appended: only those are sent.
    records += qa(2, start=200, context="c" * 400)
    commit(repo, "qa.jsonl", records, "+2")
    out = repo("push", "orq").stdout
    assert "  add         qa.jsonl -> qa  +2 datapoints -> snap_" in out
    assert sent(out) * 20 < first
    assert platform.points("qa") == records

    # An edit on the platform comes back as a commit, kept in the branch's order.
    ds = platform.find("qa")
    extra = {"inputs": {"question": "asked on orq"}, "expected_output": "yes"}
    platform.sdk.datasets.create_datapoint(dataset_id=ds.id, request_body=[extra])
    out = repo("fetch", "orq").stdout
    assert "updated     main -> orq/main" in out and "Received 1 version" in out
    assert "Fast-forward main" in repo("pull", "orq").stdout
    lines = [json.loads(x) for x in (repo.root / "qa.jsonl").read_text().splitlines()]
    assert lines == [*records, extra]
    assert repo("push", "orq").stdout.endswith("Everything up to date\n")

    # Removals and edits: the datapoints that differ are deleted and inserted.
    del lines[5]
    lines[0] = {"inputs": {"question": "changed"}, "expected_output": "0"}
    commit(repo, "qa.jsonl", lines, "edit")
    out = repo("push", "orq").stdout
    assert "  set         qa.jsonl -> qa  whole version: 202 datapoints (+1 -2)" in out

    def canonical(r: dict[str, Any]) -> str:
        return json.dumps(r, sort_keys=True)

    assert sorted(map(canonical, platform.points("qa"))) == sorted(map(canonical, lines))


def test_a_push_over_a_platform_change_is_refused(repo: Dsv, platform: Platform) -> None:
    commit(repo, "qa.jsonl", qa(3), "three")
    repo("push", "orq")
    ds = platform.find("qa")
    platform.sdk.datasets.create_datapoint(
        dataset_id=ds.id, request_body=[{"inputs": {"question": "theirs"}}]
    )
    commit(repo, "qa.jsonl", qa(4), "mine")
    result = repo("push", "orq", code=5)
    assert result.stderr.startswith(
        "error: rejected: qa.jsonl: qa on orq has changed since the last sync (version snap_"
    )
    assert "nothing was pushed (non-fast-forward)\nhint: 'dsv fetch orq'" in result.stderr
    assert len(platform.points("qa")) == 4  # three and theirs, not mine


def test_clone_takes_the_dataset_as_it_is(
    tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = platform.sdk.datasets.create(display_name="golden")
    platform.sdk.datasets.create_datapoint(dataset_id=ds.id, request_body=qa(3))
    monkeypatch.setenv(KEY_ENV, platform.key)
    out = Dsv(tmp_path)("clone", f"orq+{platform.url}", "--path", "golden", "--key-env", KEY_ENV)
    assert out.stdout.endswith(f"Checked out branch main in {tmp_path / 'golden'}\n")
    lines = [json.loads(x) for x in (tmp_path / "golden" / "golden.jsonl").read_text().splitlines()]
    assert lines == qa(3)
    clone = Dsv(tmp_path / "golden")
    assert clone("push", "origin").stdout.endswith("Everything up to date\n")
    with Repository.open(tmp_path / "golden") as opened:
        assert len(list(opened.log())) == 1  # orq.ai lists no versions: the dataset as it is


def test_kill_9_mid_push_then_push_again_leaves_no_duplicates(
    repo: Dsv, platform: Platform
) -> None:
    files = {f"d{i}.jsonl": qa(150, start=1000 * i) for i in range(6)}
    for name, records in files.items():
        repo.write(name, records)
    repo("add", *files)
    repo("commit", "-m", "six datasets")
    state = repo.root / ".dsv" / "hosted" / "orq.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsv", "-C", str(repo.root), "push", "orq", "--quiet"],
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
    repo("push", "orq")
    for name, records in files.items():
        assert platform.points(name.removesuffix(".jsonl")) == records, name
    assert len(platform.sdk.datasets.list(limit=50).data) == len(files)
    assert repo("push", "orq").stdout.endswith("Everything up to date\n")
