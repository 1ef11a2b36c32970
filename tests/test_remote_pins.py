"""dsv lock, sync and verify in a git project, against a real `dsv serve` on 127.0.0.1;
and dsv.load local, remote and locked, equal to `dsv show REV:PATH`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import dsv as dsv_api
from benchmarks.push import Server
from dsv.cli import main
from dsv.lockfile import read_lock
from dsv.remote.cache import fetch_version, open_cache
from dsv.remote.connection import Connection

RECORDS = [{"id": i, "q": f"question {i}", "a": "x" * (i % 7)} for i in range(200)]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("DSV_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def url(
    server: tuple[Server, str], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str:
    running, key = server
    monkeypatch.setenv("DSV_API_KEY", key)
    return f"{running.url}/pins/{re.sub(r'[^A-Za-z0-9]+', '-', request.node.name)[:80]}"


def dsv(root: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["-C", str(root), *args])
    assert result.exit_code == code, (
        f"dsv {' '.join(args)} exited {result.exit_code}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    return result


def write(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout


def upstream(tmp_path: Path, url: str) -> Path:
    """The data team's repository: evals/qa.jsonl deployed to production, pushed."""
    root = tmp_path / "data"
    dsv(tmp_path, "init", "data")
    write(root / "evals" / "qa.jsonl", RECORDS)
    dsv(root, "add", "evals/qa.jsonl", "--key", "id")
    dsv(root, "commit", "-m", "first")
    dsv(root, "env", "deploy", "production")
    dsv(root, "remote", "add", "origin", url)
    dsv(root, "push", "--envs")
    return root


def deploy_change(root: Path, records: list[dict[str, Any]]) -> None:
    write(root / "evals" / "qa.jsonl", records)
    dsv(root, "commit", "-a", "-m", "change")
    dsv(root, "env", "deploy", "production")
    dsv(root, "push", "--envs")


def show(root: Path, rev: str, path: str) -> list[dict[str, Any]]:
    out = dsv(root, "show", f"{rev}:{path}").stdout
    return [json.loads(line) for line in out.splitlines()]


def code_project(tmp_path: Path, url: str) -> Path:
    """The eval-code git project: dsv.lock pinning production, committed."""
    code = tmp_path / "code"
    code.mkdir()
    git(code, "init", "-q")
    (code / "eval.py").write_text("print('eval')\n")
    result = dsv(code, "lock", "evals/qa.jsonl@production", "--remote", url)
    assert re.fullmatch(r"added evals/qa\.jsonl: production at [0-9a-f]{12}\n", result.stdout)
    git(code, "add", "dsv.lock", "eval.py")
    git(code, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "pin")
    return code


def test_clone_sync_verify_then_fail_on_edit_and_on_deploy(tmp_path: Path, url: str) -> None:
    data = upstream(tmp_path, url)
    code = code_project(tmp_path, url)
    pin = read_lock(code / "dsv.lock").pins["evals/qa.jsonl"]
    assert pin.remote == url and pin.rev == "production"
    assert "DSV_API_KEY" not in (code / "dsv.lock").read_text()

    # A teammate: git clone, dsv sync. No .dsv of its own until sync makes one.
    clone = tmp_path / "teammate"
    subprocess.run(["git", "clone", "-q", str(code), str(clone)], check=True)
    assert not (clone / ".dsv").exists()
    out = dsv(clone, "sync").stdout
    assert out == f"written evals/qa.jsonl ({pin.commit.hex()[:12]})\n"
    assert show(data, "production", "evals/qa.jsonl") == [
        json.loads(line) for line in (clone / "evals" / "qa.jsonl").read_text().splitlines()
    ]
    assert "/.dsv/" in (clone / ".gitignore").read_text()
    assert dsv(clone, "sync").stdout == f"unchanged evals/qa.jsonl ({pin.commit.hex()[:12]})\n"
    assert dsv(clone, "verify").stdout == "ok: 1 pinned dataset(s) match dsv.lock\n"

    # An edit of the working file fails the gate, naming the dataset and the difference.
    write(clone / "evals" / "qa.jsonl", [*RECORDS, {"id": 999, "q": "new", "a": ""}])
    failed = dsv(clone, "verify", code=1).stdout
    assert failed.startswith("modified evals/qa.jsonl: the working file's records (content ")
    dsv(clone, "sync", code=3)
    dsv(clone, "sync", "--force")
    dsv(clone, "verify")

    # An upstream deploy of another version of the dataset fails it too; the pin stays.
    deploy_change(data, RECORDS[:-1])
    failed = dsv(clone, "verify", code=1).stdout
    assert failed.startswith(f"moved evals/qa.jsonl: production on {url} is now version ")
    assert "'dsv lock --update evals/qa.jsonl' moves the pin" in failed
    assert dsv(clone, "verify", "--offline").stdout.startswith("ok:")
    dsv(clone, "lock", "evals/qa.jsonl@production", "--remote", url)  # not moved
    assert read_lock(clone / "dsv.lock").pins["evals/qa.jsonl"] == pin

    # Moving it on purpose, then sync, and the gate passes again.
    out = dsv(clone, "lock", "--update").stdout
    assert out.startswith("updated evals/qa.jsonl: production ")
    dsv(clone, "verify", code=1)  # the working file is the old version still
    assert dsv(clone, "sync").stdout.startswith("written evals/qa.jsonl")
    dsv(clone, "verify")
    assert git(clone, "status", "--porcelain") == " M dsv.lock\n?? .gitignore\n?? evals/\n"


def test_lock_refuses_to_move_a_pin_and_a_url_with_credentials(tmp_path: Path, url: str) -> None:
    upstream(tmp_path, url)
    code = code_project(tmp_path, url)
    result = dsv(code, "lock", "evals/qa.jsonl@v3", "--remote", url, code=3)
    assert result.stderr == (
        f"error: evals/qa.jsonl is pinned already (production from {url})\n"
        "hint: 'dsv lock --update evals/qa.jsonl@v3' moves the pin on purpose\n"
    )
    secret = url.replace("http://", "http://user:pw@")
    result = dsv(code, "lock", "other.jsonl@main", "--remote", secret, code=2)
    assert result.stderr.startswith("error: --remote: remote URL holds credentials")


def test_load_local_remote_and_locked_equal_show(tmp_path: Path, url: str, _cache: Path) -> None:
    data = upstream(tmp_path, url)
    expected = show(data, "production", "evals/qa.jsonl")
    local = dsv_api.load("evals/qa.jsonl@production", cwd=data)
    remote_table = dsv_api.load(f"{url}/evals/qa.jsonl@production")
    code = code_project(tmp_path, url)
    locked = dsv_api.load("evals/qa.jsonl", cwd=code, locked=True)
    for table in (local, remote_table, locked):
        assert table.to_pylist() == expected
    pin = read_lock(code / "dsv.lock").pins["evals/qa.jsonl"]
    meta = locked.schema.metadata
    assert meta[b"dsv.commit"] == pin.commit.hex().encode()
    assert meta[b"dsv.dataset"] == pin.dataset.hex().encode()
    assert meta[b"dsv.content"] == pin.content.hex().encode()
    assert meta[b"dsv.remote"] == url.encode()
    assert local.schema.metadata[b"dsv.commit"] == pin.commit.hex().encode()
    assert list(dsv_api.iter_records("evals/qa.jsonl", cwd=code, locked=True)) == expected
    frame = dsv_api.load("evals/qa.jsonl", cwd=code, locked=True, into="pandas")
    assert frame.to_dict("records") == expected
    assert frame.attrs["dsv"]["dsv.commit"] == pin.commit.hex()
    polars_frame = dsv_api.load("evals/qa.jsonl", cwd=code, locked=True, into="polars")
    assert polars_frame.to_dicts() == expected


def test_locked_load_works_offline_once_cached(tmp_path: Path, url: str) -> None:
    upstream(tmp_path, url)
    code = code_project(tmp_path, url)
    lock_text = (code / "dsv.lock").read_text()
    # Pointing the pin at a port nothing listens on: the cache alone must answer.
    (code / "dsv.lock").write_text(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:9", lock_text))
    table = dsv_api.load("evals/qa.jsonl", cwd=code, locked=True)
    assert table.num_rows == len(RECORDS)


def test_cache_skips_held_objects(tmp_path: Path, url: str, server: tuple[Server, str]) -> None:
    data = upstream(tmp_path, url)
    store = open_cache()
    _, key = server
    with Connection(url, key=key, key_source="DSV_API_KEY", name="t") as conn:
        first_commit = bytes.fromhex(json.loads(dsv(data, "show", "--json").stdout)["oid"])
        first = fetch_version(conn, store, first_commit, "evals/qa.jsonl")
        # commit, tree, dataset, one page, every distinct datapoint
        assert first.objects_received == 4 + len(RECORDS)
        again = fetch_version(conn, store, first_commit, "evals/qa.jsonl")
        assert (again.objects_received, again.bytes_received) == (0, 0)
    changed = [*RECORDS[:-1], {"id": 500, "q": "new", "a": ""}]
    deploy_change(data, changed)
    with Connection(url, key=key, key_source="DSV_API_KEY", name="t") as conn:
        second_commit = bytes.fromhex(json.loads(dsv(data, "show", "--json").stdout)["oid"])
        second = fetch_version(conn, store, second_commit, "evals/qa.jsonl")
    # Only the one new datapoint among the datapoints: the others are held already.
    assert second.objects_received == 4 + 1
    assert second.bytes_received < first.bytes_received / 5


def test_sync_without_lock_and_unpinned_locked_load(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / ".git").mkdir()
    result = dsv(project, "sync", code=3)
    assert result.stderr == (
        "error: no dsv.lock here or above\nhint: pin a dataset first: dsv lock PATH@REV\n"
    )
    (project / "dsv.lock").write_text("version = 1\n")
    with pytest.raises(dsv_api.BadInput, match=r"^qa\.jsonl: not pinned in "):
        dsv_api.load("qa.jsonl", cwd=project, locked=True)
    shutil.rmtree(project / ".git")
