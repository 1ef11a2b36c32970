"""Progress of long steps: the library's reports (dsv.progress) and how the CLI shows them
(dsv.cli.common.ProgressLine: on a terminal only, after a moment, never with -q)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from benchmarks.push import Server
from dsv import ingest, maintenance, materialize, ops, parallel
from dsv.cli import common as cli_common
from dsv.cli import main
from dsv.notebook import Repository
from dsv.progress import Progress, Step

RECORDS = [{"id": i, "q": f"question {i}", "a": "x" * (i % 50)} for i in range(30_000)]


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _dsv(root: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["-C", str(root), *args])
    assert result.exit_code == code, (
        f"dsv {' '.join(args)} exited {result.exit_code}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    return result


def _phases(reports: list[Progress]) -> list[str]:
    """The phases in order, each checked: from 0, never backwards, never past a known total,
    ending at its total."""
    phases: list[str] = []
    for p in reports:
        if not phases or phases[-1] != p.phase:
            assert p.phase not in phases, f"{p.phase} came back"
            phases.append(p.phase)
            assert p.done == 0, p
            last = p
            continue
        assert p.done >= last.done, (last, p)
        assert p.total == last.total or not last.total, (last, p)
        last = p
        if p.total:
            assert p.done <= p.total, p
    ends: dict[str, Progress] = {p.phase: p for p in reports}
    for phase, p in ends.items():
        assert p.done == p.total, f"{phase} ended at {p}"
    return phases


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Big-file code paths for a small file: two workers, small pieces, frequent polls."""
    monkeypatch.setattr(ingest, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(ingest, "_workers", lambda: 2)
    monkeypatch.setattr(ingest, "_READ", 16 << 10)
    monkeypatch.setattr(materialize, "PARALLEL_MIN", 10)
    monkeypatch.setattr(materialize, "_WRITE_EVERY", 64)
    monkeypatch.setattr(parallel, "WAIT_EVERY", 0.001)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    with Repository.init(tmp_path / "r") as opened:
        yield opened


# -- the library ---------------------------------------------------------------------------


def test_add_reports_bytes_read_inside_one_big_file(repo: Repository, workers: None) -> None:
    _write(repo.root / "qa.jsonl", RECORDS)
    _write(repo.root / "small.jsonl", RECORDS[:10])
    size = (repo.root / "qa.jsonl").stat().st_size + (repo.root / "small.jsonl").stat().st_size
    reports: list[Progress] = []
    ops.add(repo, ["qa.jsonl", "small.jsonl"], progress=reports.append)
    assert _phases(reports) == ["adding"]
    assert {(p.total, p.unit) for p in reports} == {(size, "bytes")}
    # The workers' shared counters were read while they worked, not only at the file's end.
    assert any(0 < p.done < (repo.root / "qa.jsonl").stat().st_size for p in reports)


def test_commit_all_reports_what_it_stages(repo: Repository, workers: None) -> None:
    _write(repo.root / "qa.jsonl", RECORDS[:1000])
    ops.add(repo, ["qa.jsonl"])
    ops.commit(repo, "first")
    _write(repo.root / "qa.jsonl", RECORDS)
    reports: list[Progress] = []
    ops.commit(repo, "second", all=True, progress=reports.append)
    assert _phases(reports) == ["staging"]
    assert reports[-1].total == (repo.root / "qa.jsonl").stat().st_size


def test_checkout_switch_and_restore_report_datapoints_written(
    repo: Repository, workers: None
) -> None:
    _write(repo.root / "qa.jsonl", RECORDS[:5000])
    _write(repo.root / "b/other.jsonl", RECORDS[:300])
    ops.add(repo, ["qa.jsonl", "b"])
    ops.commit(repo, "first")
    first = repo.head()
    assert first is not None
    _write(repo.root / "qa.jsonl", RECORDS[:6000])
    _write(repo.root / "b/other.jsonl", RECORDS[:200])
    ops.commit(repo, "second", all=True)
    reports: list[Progress] = []
    ops.checkout(repo, first.hex(), progress=reports.append)
    assert _phases(reports) == ["writing files"]
    assert (reports[-1].total, reports[-1].unit) == (5300, "datapoints")
    assert any(0 < p.done < 5000 for p in reports)  # inside qa.jsonl, from its workers
    reports.clear()
    ops.switch(repo, "main", progress=reports.append)
    assert _phases(reports) == ["writing files"] and reports[-1].total == 6200
    (repo.root / "qa.jsonl").unlink()
    reports.clear()
    ops.restore(repo, ["qa.jsonl"], progress=reports.append)
    assert _phases(reports) == ["writing files"] and reports[-1].total == 6000
    assert len((repo.root / "qa.jsonl").read_text().splitlines()) == 6000


def test_gc_and_fsck_report_their_phases(repo: Repository) -> None:
    _write(repo.root / "qa.jsonl", RECORDS[:9000])
    ops.add(repo, ["qa.jsonl"])
    ops.commit(repo, "first")
    reports: list[Progress] = []
    report = maintenance.gc(repo, progress=reports.append)
    assert _phases(reports) == ["counting objects", "writing objects"]
    counted = [p for p in reports if p.phase == "counting objects"]
    assert any(0 < p.done < counted[-1].done for p in counted)  # every 4096 objects
    assert reports[-1].total == report.kept
    reports.clear()
    assert maintenance.fsck(repo, progress=reports.append).ok
    assert _phases(reports) == ["checking packs", "checking objects"]
    assert (reports[0].total, reports[0].unit) == (1, "packs")
    assert reports[-1].total == report.kept


def test_no_progress_callback_is_the_default(repo: Repository) -> None:
    _write(repo.root / "qa.jsonl", RECORDS[:100])
    assert ops.add(repo, ["qa.jsonl"]) == ["qa.jsonl"]
    assert maintenance.fsck(repo).ok


def test_a_step_never_goes_back_nor_past_its_total() -> None:
    reports: list[Progress] = []
    step = Step(reports.append, "writing", 10, "files")
    step.to(4)
    step.to(3)
    step.within(8)(5)
    step.finish()
    assert [p.done for p in reports] == [0, 4, 10]
    unknown = Step(reports.append, "counting", 0)
    unknown.to(7)
    unknown.finish()
    assert reports[-1] == Progress("counting", 7, 7)


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr is a terminal, and every step is slow enough to show."""
    monkeypatch.setattr(cli_common, "_on_terminal", lambda: True)
    monkeypatch.setattr(cli_common, "SHOW_AFTER", 0.0)
    monkeypatch.setattr(cli_common, "_REDRAW", 0.0)


def _last_lines(stderr: str) -> list[str]:
    """What a terminal shows: each line as its last carriage return left it."""
    return [line.rsplit("\r", 1)[-1].rstrip() for line in stderr.split("\n")[:-1]]


def _committed(root: Path, records: list[dict[str, Any]]) -> None:
    _dsv(root.parent, "init", root.name)
    _write(root / "qa.jsonl", records)
    _dsv(root, "add", "qa.jsonl")
    _dsv(root, "commit", "-m", "first")


def test_add_shows_progress_on_a_terminal(tmp_path: Path, terminal: None) -> None:
    _dsv(tmp_path, "init", "r")
    _write(tmp_path / "r/qa.jsonl", RECORDS[:100])
    size = (tmp_path / "r/qa.jsonl").stat().st_size
    result = _dsv(tmp_path / "r", "add", "qa.jsonl")
    assert result.stdout == "add qa.jsonl\n"
    shown = f"{size / 1024:.1f} KiB"
    assert result.stderr == (
        f"\rAdding:   0% (0 B/{shown})"
        f"\rAdding: 100% ({shown}/{shown})"
        f"\rAdding: 100% ({shown}/{shown}), done.\n"
    )


def test_gc_fsck_and_checkout_show_each_phase_finished(tmp_path: Path, terminal: None) -> None:
    root = tmp_path / "r"
    _committed(root, RECORDS[:50])
    gc = _dsv(root, "gc")
    assert _last_lines(gc.stderr) == [
        "Counting objects: 100% (54/54 objects), done.",
        "Writing objects: 100% (54/54 objects), done.",
    ]
    assert gc.stdout.startswith("removed 0 unreachable objects, kept 54; ")
    fsck = _dsv(root, "fsck")
    assert _last_lines(fsck.stderr) == [
        "Checking packs: 100% (1/1 packs), done.",
        "Checking objects: 100% (54/54 objects), done.",
    ]
    assert fsck.stdout == "checked 54 objects: ok\n"
    (root / "qa.jsonl").unlink()
    checkout = _dsv(root, "checkout", "HEAD", "--", "qa.jsonl")
    assert _last_lines(checkout.stderr) == ["Writing files: 100% (50/50 datapoints), done."]
    assert checkout.stdout.startswith("Updated 1 path from ")
    _dsv(root, "switch", "-q", "-c", "other")
    _write(root / "qa.jsonl", RECORDS[:70])
    _dsv(root, "commit", "-q", "-a", "-m", "more")
    switch = _dsv(root, "switch", "main")
    assert _last_lines(switch.stderr) == ["Writing files: 100% (50/50 datapoints), done."]
    assert switch.stdout == "Switched to branch 'main'\n"


def test_nothing_is_drawn_off_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_common, "SHOW_AFTER", 0.0)
    root = tmp_path / "r"
    _dsv(tmp_path, "init", "r")
    _write(root / "qa.jsonl", RECORDS[:50])
    assert _dsv(root, "add", "qa.jsonl").stderr == ""
    assert _dsv(root, "commit", "-m", "first").stderr == ""
    for args in (["gc"], ["fsck"], ["checkout", "-f", "HEAD"]):
        assert _dsv(root, *args).stderr == "", args


def test_quiet_silences_progress_and_chatter(tmp_path: Path, terminal: None) -> None:
    root = tmp_path / "r"
    _dsv(tmp_path, "init", "r")
    _write(root / "qa.jsonl", RECORDS[:50])
    for args in (
        ["init", "-q", str(tmp_path / "second")],
        ["add", "-q", "qa.jsonl"],
        ["-q", "commit", "-m", "first"],
        ["gc", "--quiet"],
        ["-q", "fsck"],
        ["checkout", "-q", "-f", "HEAD"],
        ["switch", "-q", "-c", "other"],
        ["restore", "-q", "qa.jsonl"],
        ["-q", "add", "qa.jsonl"],
        ["commit", "-q", "-a", "-m", "again", "--author", "A <a@b.c>"],
    ):
        code = 3 if args[-1] == "A <a@b.c>" else 0  # nothing changed: still an error
        result = _dsv(root, *args, code=code)
        if code:
            assert result.stdout == ""
            assert result.stderr.startswith("error: nothing to commit")
        else:
            assert (result.stdout, result.stderr) == ("", ""), args
    # A dry run's report is what was asked for, quiet or not.
    assert _dsv(root, "-q", "gc", "-n").stdout.startswith("would remove 0 unreachable objects")


def test_fsck_quiet_still_reports_problems(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _committed(root, RECORDS[:20])
    pack = next((root / ".dsv/objects/pack").glob("*.pack"))
    data = bytearray(pack.read_bytes())
    data[-40] ^= 0xFF
    pack.write_bytes(bytes(data))
    result = _dsv(root, "fsck", "-q", code=1)
    assert result.stdout.startswith(f"corrupt pack {pack.stem}: pack checksum mismatch\n")
    assert result.stdout.endswith("objects: PROBLEMS FOUND\n")


_HOLDER = """
import sys, time
from pathlib import Path
from dsv.fsutil import RepoLock
lock = RepoLock(Path(sys.argv[1]) / ".dsv" / "lock")
lock.purpose = "dsv gc"
lock.acquire()
print("held", flush=True)
end = time.monotonic() + 1.0
while time.monotonic() < end:  # working: CPU time moves
    pass
lock.release()
"""


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_silences_the_waiting_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    monkeypatch.setenv("DSV_LOCK_TIMEOUT", "5")
    root = tmp_path / "r"
    _dsv(tmp_path, "init", "r")
    _write(root / "qa.jsonl", RECORDS[:20])
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(root)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        result = _dsv(root, *(["-q"] if quiet else []), "add", "qa.jsonl")
    finally:
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    if quiet:
        assert (result.stdout, result.stderr) == ("", "")
    else:
        assert result.stderr == f"waiting for dsv gc (pid {holder.pid})…\n"


def test_push_and_clone_show_progress_and_quiet_silences_them(
    tmp_path: Path, server: tuple[Server, str], terminal: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, key = server
    monkeypatch.setenv("DSV_API_KEY", key)
    url = f"{running.url}/tests/progress"
    root = tmp_path / "r"
    _committed(root, RECORDS[:500])
    _dsv(root, "remote", "add", "origin", url)
    push = _dsv(root, "push")
    negotiating, sending = _last_lines(push.stderr)
    assert negotiating == "Negotiating: 0 objects, done."
    assert re.fullmatch(
        r"Sending: 100% \(504/504 objects\), \d+\.\d KiB, \d+(\.\d)? [KM]?i?B/s, done\.", sending
    ), sending
    clone = _dsv(tmp_path, "clone", url, "copy")
    shown = _last_lines(clone.stderr)
    assert shown[0] == "Cloning into 'copy'..."
    assert shown[-1] == "Writing files: 100% (500/500 datapoints), done."
    assert any(line.startswith("Receiving datapoints: 100% (500/500 objects), ") for line in shown)
    assert clone.stdout.endswith(f"Checked out branch main in {tmp_path / 'copy'}\n")
    quiet = _dsv(tmp_path, "clone", "-q", url, "quiet")
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert len((tmp_path / "quiet/qa.jsonl").read_text().splitlines()) == 500
    _write(root / "qa.jsonl", RECORDS[:600])
    _dsv(root, "commit", "-a", "-m", "more")
    for args in (["push", "-q"], ["-q", "fetch"], ["pull", "-q"]):
        where = root if args != ["pull", "-q"] else tmp_path / "quiet"
        result = _dsv(where, *args)
        assert (result.stdout, result.stderr) == ("", ""), args
    assert len((tmp_path / "quiet/qa.jsonl").read_text().splitlines()) == 600
