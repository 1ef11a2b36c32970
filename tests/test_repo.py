"""The Python API: Repository, dsv.load, and the guarantees behind every command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dsv
from dsv import ingest, labels, maintenance, ops
from dsv.errors import BadInput, NotARepository
from dsv.notebook import Repository
from dsv.store import PACKS_MOST

RECORDS = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"q {i}"}]} for i in range(20)]


def _write(path: Path, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_python_api_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = dsv.Repository.init(tmp_path)
    _write(tmp_path / "qa.jsonl", RECORDS)
    assert repo.add(["qa.jsonl"], key=("id",)) == ["qa.jsonl"]
    first = repo.commit("first")
    _write(tmp_path / "qa.jsonl", RECORDS[:5])
    second = repo.commit("second", all=True)
    assert [e.oid for e in repo.log()] == [second, first]
    assert [e.oid for e in repo.log(max_count=1)] == [second]
    labels.deploy(repo, "production", first.hex()[:8])
    assert repo.read("production", "qa.jsonl").to_pylist() == RECORDS
    assert list(repo.records("HEAD", "qa.jsonl")) == RECORDS[:5]
    nested = tmp_path / "sub" / "dir"
    nested.mkdir(parents=True)
    assert dsv.Repository.open(nested).root == tmp_path
    monkeypatch.chdir(tmp_path)
    assert dsv.load("qa.jsonl@production").num_rows == 20
    assert dsv.load("qa.jsonl").num_rows == 5
    with pytest.raises(BadInput, match="unknown revision 'nope'"):
        dsv.load("qa.jsonl@nope")


def test_open_outside_a_repository(tmp_path: Path) -> None:
    with pytest.raises(NotARepository, match=r"not a dsv repository \(or any parent\)"):
        dsv.Repository.open(tmp_path)


@pytest.mark.parametrize("older_format", [1, 2])
def test_an_older_format_repository_is_used_as_it_is_until_a_pack_is_written(
    tmp_path: Path, older_format: int
) -> None:
    """Format 1 has no version-2 packs, format 2 no version-3 indexes: a pack this dsv
    writes marks the repository as of format 3, so that an older dsv refuses it whole."""
    from dsv.remote import add_remote

    repo = dsv.Repository.init(tmp_path)
    _write(tmp_path / "qa.jsonl", RECORDS)
    repo.add(["qa.jsonl"], key=("id",))
    first = repo.commit("first")
    config = tmp_path / ".dsv" / "config"
    config.write_text(config.read_text().replace('"format": 3', f'"format": {older_format}'))

    def stored_format() -> int:
        return int(json.loads(config.read_text())["format"])

    older, other = dsv.Repository.open(tmp_path), dsv.Repository.open(tmp_path)
    assert [e.oid for e in older.log()] == [first]
    assert older.read("HEAD", "qa.jsonl").to_pylist() == RECORDS
    # Commands that take the lock without writing a pack leave the format as it is: a
    # status refreshing the index, a dry-run gc, a small commit (loose objects only).
    os.utime(tmp_path / "qa.jsonl")
    assert ops.status(older) == []
    maintenance.gc(older, dry_run=True)
    _write(tmp_path / "qa.jsonl", RECORDS[:3])
    older.commit("second", all=True)
    assert stored_format() == older_format
    # Hundreds of datapoints make a pack, of a version the older format does not have.
    many = [{"id": f"p{i}", "text": "x" * (i % 90)} for i in range(500)]
    _write(tmp_path / "qa.jsonl", many)
    older.commit("third", all=True)
    assert stored_format() == 3 and older.config.format == 3
    assert list(older.records("HEAD", "qa.jsonl")) == many
    # A config read before the upgrade does not undo it when saved.
    assert other.config.format == older_format
    add_remote(other, "origin", "http://127.0.0.1:9/team/qa")
    assert stored_format() == 3
    assert "origin" in json.loads(config.read_text())["remotes"]


def test_a_hundred_thousand_datapoints_make_a_few_files(tmp_path: Path) -> None:
    repo = dsv.Repository.init(tmp_path)
    with open(tmp_path / "big.jsonl", "w") as handle:
        for i in range(100_000):
            handle.write(f'{{"id":{i},"input":"question {i}","target":"{i % 7}"}}\n')
    repo.add(["big.jsonl"])
    repo.commit("big")
    files = [f for _, _, fs in os.walk(tmp_path / ".dsv") for f in fs]
    assert len(files) <= 24, files
    assert maintenance.fsck(repo).checked > 100_000


def _dsv(
    root: Path, *args: str, lock_timeout: str = "0.5", **kwargs: object
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DSV_LOCK_TIMEOUT": lock_timeout}
    return subprocess.Popen(
        [sys.executable, "-m", "dsv", "-C", str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kwargs,  # type: ignore[arg-type]
    )


_IDLE_HOLDER = """
import sys, time
from pathlib import Path
from dsv.fsutil import RepoLock
lock = RepoLock(Path(sys.argv[1]) / ".dsv" / "lock")
lock.acquire()
print("held", flush=True)
sys.stdin.read()  # idle until told
lock.release()
"""


def test_a_second_writer_gives_up_on_an_idle_holder_naming_it(tmp_path: Path) -> None:
    # The holder is a process of its own: the waiter counts a holder's children's CPU time as
    # its work, and this test run's own children (servers of other tests) never idle.
    repo = dsv.Repository.init(tmp_path)
    _write(tmp_path / "qa.jsonl", RECORDS)
    holder = subprocess.Popen(
        [sys.executable, "-c", _IDLE_HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    try:
        proc = _dsv(tmp_path, "add", "qa.jsonl")
        _, err = proc.communicate(timeout=30)
    finally:
        holder.communicate(b"", timeout=30)
    assert proc.returncode == 3
    pid = holder.pid
    assert err.decode() == (
        f"waiting for pid {pid}…\n"
        f"error: repository is locked by pid {pid}, which has done nothing for 0.5 s\n"
        f"hint: if it is hung, end it (kill {pid}), then run the command again\n"
    )
    assert ops.status(repo) == []


def test_kill_9_during_commits_never_breaks_the_repository(tmp_path: Path) -> None:
    """Kill writers at moments spread over their run; fsck must stay clean every time."""
    dsv.Repository.init(tmp_path)
    data = tmp_path / "data.jsonl"
    committed: list[bytes] = []
    killed = 0
    for trial in range(6):
        with open(data, "w") as handle:
            for i in range(30_000):
                handle.write(f'{{"id":{i},"trial":{trial},"text":"{"x" * (i % 40)}"}}\n')
        proc = _dsv(tmp_path, "add", "data.jsonl")
        proc.wait(timeout=60)
        proc = _dsv(tmp_path, "commit", "-m", f"trial {trial}")
        time.sleep(0.02 * trial)
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait(timeout=60) == -signal.SIGKILL
        report = maintenance.fsck(dsv.Repository.open(tmp_path))
        assert report.ok, (trial, report)
        head = dsv.Repository.open(tmp_path).head()
        if head is not None:
            committed.append(head)
    reopened = dsv.Repository.open(tmp_path)
    for oid in committed:
        reopened.read_commit(oid)
    # Kills that land after the commit finished prove nothing: most must land inside it.
    assert killed >= 4, killed


def test_packs_stay_few_over_many_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each commit of an edit adds a pack; lookups try the packs in turn, so a store left
    # alone slowed down with its history (500 packs after 300 commits: diffs took 2x as long).
    monkeypatch.setattr(ingest, "_PARALLEL_MIN", 0)  # two workers: up to two packs a commit
    repo = Repository.init(tmp_path)
    records: list[dict[str, object]] = [{"id": i, "t": "x" * (i % 9)} for i in range(400)]
    _write(tmp_path / "qa.jsonl", records)
    repo.add(["qa.jsonl"])
    repo.commit("v0")
    most = 0
    for n in range(1, 31):
        records[n * 13] = {"id": n * 13, "edited": n}
        records[399 - n] = {"id": 399 - n, "edited": n}
        _write(tmp_path / "qa.jsonl", records)
        repo.commit(f"v{n}", all=True)
        most = max(most, len(list((repo.dsv_dir / "objects" / "pack").glob("*.idx"))))
    assert most <= PACKS_MOST + 2
    assert maintenance.fsck(repo).ok
    for n in (0, 7, 30):
        expected = ops.dataset_at(repo, f"HEAD~{30 - n}", "qa.jsonl")
        assert len(repo.read_oid_list(expected)) == 400 * 32
    ops.checkout(repo, "HEAD~29")
    assert len((tmp_path / "qa.jsonl").read_text().splitlines()) == 400


_BUSY_HOLDER = """
import sys, time
from pathlib import Path
from dsv.fsutil import RepoLock
lock = RepoLock(Path(sys.argv[1]) / ".dsv" / "lock")
lock.purpose = "dsv gc"
lock.acquire()
print("held", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:  # working: CPU time moves
    pass
lock.release()
"""


def test_a_second_writer_waits_for_a_working_holder_however_long(tmp_path: Path) -> None:
    dsv.Repository.init(tmp_path).close()
    _write(tmp_path / "qa.jsonl", RECORDS)
    holder = subprocess.Popen(
        [sys.executable, "-c", _BUSY_HOLDER, str(tmp_path), "4"], stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    started = time.monotonic()
    # Idle for a second is stuck, yet it waits out a holder that works four times as long.
    proc = _dsv(tmp_path, "add", "qa.jsonl", lock_timeout="1")
    _, err = proc.communicate(timeout=60)
    holder.wait()
    assert proc.returncode == 0, err
    assert time.monotonic() - started >= 2.5
    assert err.decode() == f"waiting for dsv gc (pid {holder.pid})…\n"
    assert [s.path for s in ops.status(dsv.Repository.open(tmp_path))] == ["qa.jsonl"]


def test_a_stopped_holder_is_named_at_once(tmp_path: Path) -> None:
    dsv.Repository.init(tmp_path).close()
    _write(tmp_path / "qa.jsonl", RECORDS)
    holder = subprocess.Popen(
        [sys.executable, "-c", _BUSY_HOLDER, str(tmp_path), "60"], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        os.kill(holder.pid, signal.SIGSTOP)
        proc = _dsv(tmp_path, "add", "qa.jsonl")
        _, err = proc.communicate(timeout=30)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 3
    assert err.decode() == (
        f"error: repository is locked by dsv gc (pid {holder.pid}), which is stopped\n"
        f"hint: resume it (fg, or kill -CONT {holder.pid}) or end it, then run the command "
        "again\n"
    )
