"""The CLI as users drive it: exit codes, exact messages, and what each command leaves behind."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dsv.cli import main
from dsv.notebook import Repository
from tests.conftest import FIXTURES, Dsv

QA = [{"id": i, "q": f"question {i}", "a": str(i * 2)} for i in range(1, 6)]


def _commit_qa(dsv: Dsv, records: list[dict[str, object]], message: str) -> str:
    dsv.write("qa.jsonl", records)
    dsv("add", "qa.jsonl", "--key", "id")
    dsv("commit", "-m", message)
    return str(
        dsv("log", "-n", "1", "--json").stdout
        and json.loads(dsv("log", "-n", "1", "--json").stdout)[0]["oid"]
    )


def test_outside_a_repository(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "status"])
    assert result.exit_code == 3
    assert result.stderr == (
        "error: not a dsv repository (or any parent)\nhint: run 'dsv init' to create one\n"
    )


def test_init_twice_is_refused(dsv: Dsv) -> None:
    result = dsv("init", code=3)
    assert "is a dsv repository already" in result.stderr


def test_first_commit_log_and_show(dsv: Dsv) -> None:
    oid = _commit_qa(dsv, QA, "first version")
    assert dsv("status", "--porcelain").stdout == ""
    log = json.loads(dsv("log", "--json").stdout)
    assert [(e["oid"], e["message"], e["author"]) for e in log] == [
        (oid, "first version\n", "Test User <test@example.com>")
    ]
    assert dsv("log", "--oneline").stdout == f"{oid[:12]} (HEAD -> main) first version\n"
    lines = dsv("show", "HEAD:qa.jsonl").stdout.splitlines()
    assert [json.loads(line) for line in lines] == QA
    shown = json.loads(dsv("show", "--json").stdout)
    assert shown["datasets"] == [
        {"path": "qa.jsonl", "status": "added", "count": 5, "added": 5, "removed": 0, "modified": 0}
    ]


def test_status_porcelain_and_counts(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    dsv.write("qa.jsonl", [*QA[:4], {"id": 9, "q": "new", "a": "18"}])
    dsv.write("other.jsonl", QA[:2])
    dsv("add", "other.jsonl")
    assert dsv("status", "--porcelain").stdout == "A other.jsonl\nM qa.jsonl\n"
    human = dsv("status").stdout
    assert "added:    other.jsonl (2 datapoints)" in human
    assert "modified: qa.jsonl (5 datapoints, +1 -1 ~0)" in human
    os.unlink(dsv.root / "qa.jsonl")
    assert dsv("status", "--porcelain").stdout == "A other.jsonl\nD qa.jsonl\n"


def test_status_uses_the_stat_cache(dsv: Dsv, monkeypatch: pytest.MonkeyPatch) -> None:
    _commit_qa(dsv, QA, "v1")
    old = os.stat(dsv.root / "qa.jsonl").st_mtime_ns - 10**10
    os.utime(dsv.root / "qa.jsonl", ns=(old, old))
    dsv("add", "qa.jsonl")
    from dsv import worktree

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("status read a file whose stat is unchanged")

    monkeypatch.setattr(worktree, "scan_file", no_reading)
    monkeypatch.setattr(worktree, "hash_file", no_reading)
    # Nor does it read a dataset (its manifest and pages sit in a pack): HEAD's commit and
    # tree say the staged dataset is committed.
    monkeypatch.setattr(Repository, "read_dataset", no_reading)
    assert dsv("status", "--porcelain").stdout == ""


def test_a_touched_file_is_read_once_then_trusted_again(
    dsv: Dsv, monkeypatch: pytest.MonkeyPatch
) -> None:
    _commit_qa(dsv, QA, "v1")
    path = dsv.root / "qa.jsonl"
    old = os.stat(path).st_mtime_ns - 10**10
    os.utime(path, ns=(old, old))
    from dsv import worktree

    reads: list[str] = []
    real = worktree.scan_file

    def counting(*args: object, **kwargs: object) -> object:
        reads.append("scan")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(worktree, "scan_file", counting)
    assert dsv("status", "--porcelain").stdout == ""
    assert reads == ["scan"]
    assert dsv("status", "--porcelain").stdout == ""
    assert reads == ["scan"]


def test_status_after_checkout_hashes_but_never_parses(
    dsv: Dsv, monkeypatch: pytest.MonkeyPatch
) -> None:
    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:2], "v2")
    dsv("checkout", "HEAD~1")
    from dsv import worktree

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("status parsed a file dsv itself just wrote")

    monkeypatch.setattr(worktree, "scan_file", no_parsing)
    assert dsv("status", "--porcelain").stdout == ""
    (dsv.root / "qa.jsonl").write_text((dsv.root / "qa.jsonl").read_text() + "\n")
    monkeypatch.undo()
    assert dsv("status", "--porcelain").stdout == ""


def test_a_checked_out_file_published_after_its_margin_is_clean_by_its_stat(
    dsv: Dsv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands for a large file, whose fsync puts the racy margin between its last write and
    # the rename that publishes it: the next status and checkout trust the stat, reading
    # nothing, and a later edit still shows.
    from dsv import index, worktree

    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:2], "v2")
    monkeypatch.setattr(index, "_RACY_NS", 0)
    dsv("checkout", "HEAD~1")

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("status read a file whose stat proves it clean")

    monkeypatch.setattr(worktree, "hash_file", no_reading)
    monkeypatch.setattr(worktree, "scan_file", no_reading)
    assert dsv("status", "--porcelain").stdout == ""
    dsv("checkout", "main")
    assert dsv("status", "--porcelain").stdout == ""
    monkeypatch.undo()
    dsv.write("qa.jsonl", QA[:1])
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"


def _after_publishing(
    monkeypatch: pytest.MonkeyPatch, path: Path, foreign: Callable[[], None]
) -> None:
    """Run `foreign`, another program's change, right after dsv renames a file to `path`."""
    real_replace = os.replace

    def replace_then(src: object, dst: object) -> None:
        real_replace(src, dst)  # type: ignore[arg-type]
        if Path(str(dst)) == path:
            foreign()

    monkeypatch.setattr(os, "replace", replace_then)


def test_a_write_after_checkout_publishes_its_file_is_not_hidden_by_the_stat(
    dsv: Dsv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another program rewrites a byte just after the rename, and the checkout stats the file
    # only later: that stat must not vouch for the bytes the checkout wrote.
    import time

    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:2], "v2")
    path = dsv.root / "qa.jsonl"

    def edit() -> None:
        with open(path, "r+b") as handle:
            handle.seek(6)
            handle.write(b"9")
        time.sleep(0.05)

    _after_publishing(monkeypatch, path, edit)
    dsv("checkout", "HEAD~1")
    monkeypatch.undo()
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"


def _slow_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fsync takes as long as a large file's: the racy margin passes before a rename."""
    import time

    real = os.fsync

    def slow(fd: int) -> None:
        real(fd)
        time.sleep(0.05)

    monkeypatch.setattr(os, "fsync", slow)


def test_an_older_file_renamed_over_a_checkout_is_not_vouched_for(
    dsv: Dsv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As `rsync -t` or `mv` of an older copy would: another inode, an older mtime.
    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:2], "v2")
    path = dsv.root / "qa.jsonl"

    def rename_over() -> None:
        written = os.stat(path)
        data = path.read_bytes()
        other = path.with_name("other.jsonl")
        other.write_bytes(data[:6] + b"9" + data[7:])
        os.utime(other, ns=(written.st_atime_ns, written.st_mtime_ns - 10**9))
        os.rename(other, path)

    _slow_fsync(monkeypatch)
    _after_publishing(monkeypatch, path, rename_over)
    dsv("checkout", "HEAD~1")
    monkeypatch.undo()
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"


def test_a_move_keeps_an_edited_file_edited(dsv: Dsv, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:2], "v2")
    _slow_fsync(monkeypatch)
    dsv("checkout", "HEAD~1")  # a checked-out file whose stat the index keeps
    monkeypatch.undo()
    time.sleep(0.05)
    dsv.write("qa.jsonl", QA[:3])
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"
    dsv("mv", "qa.jsonl", "qb.jsonl")
    dsv("commit", "-a", "-m", "moved and edited")
    assert dsv("status", "--porcelain").stdout == ""
    assert dsv("show", "HEAD:qb.jsonl").stdout.count("\n") == 3


def test_commit_all_and_history(dsv: Dsv) -> None:
    first = _commit_qa(dsv, QA, "v1")
    dsv.write("qa.jsonl", QA[:3])
    assert dsv("commit", "-m", "nothing staged", code=3).stderr.startswith(
        "error: nothing to commit"
    )
    dsv("commit", "-a", "-m", "drop two")
    log = json.loads(dsv("log", "--json").stdout)
    assert [e["message"] for e in log] == ["drop two\n", "v1\n"]
    assert log[0]["parents"] == [first]
    assert dsv("log", "-n", "1", "--oneline").stdout.endswith("drop two\n")
    assert dsv("log", "--oneline", "--", "missing.jsonl").stdout == ""


def test_revisions(dsv: Dsv) -> None:
    first = _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:2], "v2")
    for rev in ("HEAD~1", "HEAD^", "main~", first[:4], first, "main~1"):
        shown = json.loads(dsv("show", "--json", rev).stdout)
        assert shown["oid"] == first, rev
    assert dsv("show", "HEAD~5", code=2).stderr == (
        "error: revision 'HEAD~5' goes past the first version of the history\n"
    )
    dsv("env", "deploy", "production", "HEAD~1")
    assert json.loads(dsv("show", "--json", "production").stdout)["oid"] == first
    err = dsv("show", "prodution", code=2).stderr
    assert err == "error: unknown revision 'prodution'\nhint: did you mean 'production'?\n"


def test_checkout_restores_every_record_and_is_byte_stable(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, [*reversed(QA), {"id": 7, "q": "x", "a": "y"}], "v2")
    dsv("checkout", "HEAD~1")
    got = [json.loads(line) for line in (dsv.root / "qa.jsonl").read_text().splitlines()]
    assert got == QA
    first_bytes = (dsv.root / "qa.jsonl").read_bytes()
    assert dsv("status", "--porcelain").stdout == ""
    dsv("checkout", "main")
    dsv("checkout", "main~1")
    assert (dsv.root / "qa.jsonl").read_bytes() == first_bytes
    assert "HEAD detached" in dsv("status").stdout


def test_checkout_refuses_to_overwrite_changes(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:2], "v2")
    dsv.write("qa.jsonl", QA[:1])
    err = dsv("checkout", "HEAD~1", code=3).stderr
    assert err == (
        "error: checkout would overwrite uncommitted changes in qa.jsonl\n"
        "hint: commit them first, or use --force to discard them\n"
    )
    assert [json.loads(x) for x in (dsv.root / "qa.jsonl").read_text().splitlines()] == QA[:1]
    dsv("checkout", "--force", "HEAD~1")
    assert [json.loads(x) for x in (dsv.root / "qa.jsonl").read_text().splitlines()] == QA
    assert dsv("status", "--porcelain").stdout == ""


def test_checkout_paths_and_environments(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    dsv("env", "deploy", "production")
    _commit_qa(dsv, QA[:1], "v2")
    dsv("checkout", "production", "--", "qa.jsonl")
    assert len((dsv.root / "qa.jsonl").read_text().splitlines()) == 5
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"
    assert dsv("status").stdout.startswith("On branch main")


def test_csv_and_parquet_round_trip(dsv: Dsv) -> None:
    for name in ("humanloop.csv", "metrics.parquet", "tool_calling.json", "rag.jsonl"):
        shutil.copy(FIXTURES / name, dsv.root / name)
    dsv("add", ".")
    dsv("commit", "-m", "fixtures")
    originals = {n: (dsv.root / n).read_bytes() for n in ("humanloop.csv", "metrics.parquet")}
    for name in originals:
        os.unlink(dsv.root / name)
    dsv("checkout", "--force", "HEAD")
    import pyarrow.parquet as pq

    assert pq.read_table(dsv.root / "metrics.parquet").equals(
        pq.read_table(FIXTURES / "metrics.parquet")
    )
    assert (dsv.root / "humanloop.csv").read_text().splitlines()[0] == (
        FIXTURES / "humanloop.csv"
    ).read_text().splitlines()[0]
    assert dsv("status", "--porcelain").stdout == ""


def test_branches_tags_and_switch(dsv: Dsv) -> None:
    first = _commit_qa(dsv, QA, "v1")
    dsv("branch", "relabel")
    dsv("tag", "v1.0")
    assert dsv("branch", "relabel", code=2).stderr == (
        "error: a branch named 'relabel' already exists\n"
    )
    assert dsv("branch", "bad name", code=2).stderr.startswith(
        "error: invalid branch name 'bad name'"
    )
    dsv("switch", "relabel")
    _commit_qa(dsv, QA[:3], "relabel work")
    assert json.loads(dsv("branch", "--json").stdout)[1] == {
        "name": "relabel",
        "oid": json.loads(dsv("log", "--json", "-n", "1").stdout)[0]["oid"],
        "current": True,
        "remote": None,
    }
    assert dsv("branch", "-d", "relabel", code=3).stderr.startswith(
        "error: cannot delete branch 'relabel': it is the current branch"
    )
    dsv("switch", "main")
    assert len((dsv.root / "qa.jsonl").read_text().splitlines()) == 5
    assert dsv("tag").stdout == f"v1.0  {first[:12]}\n"
    dsv("switch", "-c", "other")
    assert dsv("status").stdout.startswith("On branch other")


def test_environments(dsv: Dsv) -> None:
    first = _commit_qa(dsv, QA, "v1")
    dsv("env", "deploy", "production")
    second = _commit_qa(dsv, QA[:2], "v2")
    dsv("env", "deploy", "staging")
    dsv("env", "deploy", "production", "staging")
    envs = json.loads(dsv("env", "list", "--json").stdout)
    assert [(e["name"], e["oid"], e["user"]) for e in envs] == [
        ("production", second, "Test User <test@example.com>"),
        ("staging", second, "Test User <test@example.com>"),
    ]
    dsv("env", "rm", "production")
    history = json.loads(dsv("env", "log", "production", "--json").stdout)
    assert [(h["old"], h["new"]) for h in history] == [
        (second, None),
        (first, second),
        (None, first),
    ]
    assert dsv("env", "rm", "production", code=2).stderr == (
        "error: no environment named 'production'\n"
    )
    dsv("checkout", "staging")
    assert len((dsv.root / "qa.jsonl").read_text().splitlines()) == 2


def test_rm_and_mv(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    dsv("mv", "qa.jsonl", "evals/qa.jsonl")
    assert (dsv.root / "evals/qa.jsonl").exists() and not (dsv.root / "qa.jsonl").exists()
    assert dsv("status", "--porcelain").stdout == "A evals/qa.jsonl\nD qa.jsonl\n"
    dsv("commit", "-m", "move")
    dsv.write("evals/qa.jsonl", QA[:1])
    assert "has changes that are not committed" in dsv("rm", "evals/qa.jsonl", code=3).stderr
    dsv("rm", "--cached", "evals/qa.jsonl")
    assert (dsv.root / "evals/qa.jsonl").exists()
    assert dsv("status", "--porcelain").stdout == "D evals/qa.jsonl\n?? evals/qa.jsonl\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"id": 1}\n{"id": 2,, }\n',
            "error: bad.jsonl:2:10: malformed JSON: object keys must be strings\n",
        ),
        ('{"id": 1}\n[1, 2]\n', "error: bad.jsonl:2:1: record is a JSON array, not an object\n"),
        ('{"id": 1, "id": 2}\n', "error: bad.jsonl:1:1: duplicate key 'id' in object\n"),
        ('{"x": NaN}\n', "error: bad.jsonl:1:7: NaN is not a JSON number\n"),
    ],
)
def test_bad_input_names_file_line_and_column(dsv: Dsv, content: str, message: str) -> None:
    (dsv.root / "bad.jsonl").write_text(content)
    result = dsv("add", "bad.jsonl", code=2)
    assert result.stderr == message
    assert result.stdout == ""
    assert dsv("status", "--porcelain").stdout == "?? bad.jsonl\n"  # nothing staged


def test_invalid_utf8_and_paths_outside(dsv: Dsv, tmp_path_factory: pytest.TempPathFactory) -> None:
    (dsv.root / "bad.jsonl").write_bytes(b'{"a": "ok"}\n{"a": "\xff"}\n')
    assert dsv("add", "bad.jsonl", code=2).stderr == "error: bad.jsonl:2:8: invalid UTF-8\n"
    outside = tmp_path_factory.mktemp("elsewhere") / "x.jsonl"
    outside.write_text('{"a": 1}\n')
    err = dsv("add", str(outside), code=2).stderr
    assert err.startswith(f"error: path '{outside}' is outside the repository")
    assert dsv("add", ".dsv/config", code=2).stderr.startswith(
        "error: invalid dataset path '.dsv/config': its segment '.dsv' names .dsv"
    )
    (dsv.root / "notes.txt").write_text("x")
    assert dsv("add", "notes.txt", code=2).stderr.startswith(
        "error: notes.txt: unsupported file type"
    )


def test_cat_object_and_fsck(dsv: Dsv) -> None:
    oid = _commit_qa(dsv, QA, "v1")
    commit = json.loads(dsv("cat-object", oid[:8]).stdout)
    assert commit["message"] == "v1\n" and dsv("cat-object", "-t", oid).stdout == "commit\n"
    tree = json.loads(dsv("cat-object", commit["tree"]).stdout)
    dataset = json.loads(dsv("cat-object", tree["entries"][0]["dataset"]).stdout)
    assert dataset["count"] == 5 and dataset["key"] == ["id"]
    page = json.loads(dsv("cat-object", dataset["slices"][0][0]).stdout)
    assert json.loads(dsv("cat-object", page[0]).stdout) == QA[0]
    assert dsv("fsck").stdout.endswith(": ok\n")


def test_fsck_finds_a_corrupt_pack(dsv: Dsv) -> None:
    dsv.write("big.jsonl", [{"id": i, "text": "x" * 40} for i in range(500)])
    dsv("add", "big.jsonl")
    dsv("commit", "-m", "big")
    pack = next((dsv.root / ".dsv/objects/pack").glob("*.pack"))
    data = bytearray(pack.read_bytes())
    os.chmod(pack, 0o644)
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    result = dsv("fsck", code=1)
    assert "PROBLEMS FOUND" in result.stdout and "corrupt" in result.stdout


def test_gc_keeps_what_refs_and_logs_reach(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    dsv("env", "deploy", "production")
    _commit_qa(dsv, QA[:2], "v2")
    dsv.write("scratch.jsonl", [{"id": i} for i in range(200)])
    dsv("add", "scratch.jsonl")
    dsv("rm", "--cached", "scratch.jsonl")
    dry = dsv("gc", "--dry-run").stdout
    assert dry.startswith("would remove 202 unreachable objects")
    dsv("gc")
    assert dsv("fsck").stdout.endswith(": ok\n")
    files = [f for _, _, fs in os.walk(dsv.root / ".dsv/objects") for f in fs]
    assert len(files) == 2
    dsv("checkout", "production")
    assert len((dsv.root / "qa.jsonl").read_text().splitlines()) == 5


def test_unknown_repository_format_is_refused(dsv: Dsv) -> None:
    config = dsv.root / ".dsv/config"
    config.write_text(config.read_text().replace('"format": 3', '"format": 99'))
    assert dsv("status", code=3).stderr == (
        "error: repository format 99 is not supported (this dsv reads formats 1, 2 and 3)\n"
        "hint: use a dsv release that supports it\n"
    )


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    names = main.list_commands(click.Context(main))
    assert len(names) > 30  # every command, each loaded as it is asked for
    commands = [[c] for c in names if c != "env"] + [
        ["env", c] for c in ("deploy", "list", "rm", "log")
    ]
    for command in commands:
        result = runner.invoke(main, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Example" in result.stdout, command


def test_ragged_csv_and_fake_parquet_stage_nothing(dsv: Dsv) -> None:
    (dsv.root / "rows.csv").write_text("id,question\n1,a\n2,b,extra\n")
    assert dsv("add", "rows.csv", code=2).stderr == (
        "error: rows.csv:3: row has 3 fields, the header has 2\n"
    )
    (dsv.root / "fake.parquet").write_text("id,question\n1,a\n")
    assert dsv("add", "fake.parquet", code=2).stderr.startswith(
        "error: fake.parquet: not a Parquet file ("
    )
    (dsv.root / "ok.jsonl").write_text('{"id": 1}\n')
    # One bad file among several stages none of them.
    dsv("add", "ok.jsonl", "rows.csv", code=2)
    assert dsv("status", "--porcelain").stdout == "?? fake.parquet\n?? ok.jsonl\n?? rows.csv\n"
    assert not list((dsv.root / ".dsv/objects").glob("??/*"))


def test_diff_command_outputs(dsv: Dsv) -> None:
    v1 = [{"id": i, "a": f"answer {i}", "tags": ["x"]} for i in range(1, 6)]
    _commit_qa(dsv, v1, "v1")
    dsv("env", "deploy", "production")
    v2 = [dict(r) for r in v1]
    v2[1]["a"] = "changed"
    del v2[4]
    v2.append({"id": 9, "a": "new", "tags": []})
    _commit_qa(dsv, v2, "v2")
    head, prod = (
        json.loads(dsv("show", "--json", r).stdout)["oid"] for r in ("HEAD", "production")
    )
    stat = json.loads(dsv("diff", "production", "HEAD", "--stat", "--json").stdout)
    assert stat == {
        "from": prod,
        "to": head,
        "datasets": [
            {
                "path": "qa.jsonl",
                "status": "modified",
                "added": 1,
                "removed": 1,
                "modified": 1,
                "unchanged": 3,
                "reordered": False,
            }
        ],
    }
    lines = [
        json.loads(x)
        for x in dsv("diff", "production", "HEAD", "--format", "jsonl").stdout.splitlines()
    ]
    by_status = {line["status"]: line for line in lines}
    assert by_status["modified"]["key"] == {"id": 2}
    assert by_status["modified"]["fields"] == [{"path": "a", "old": "answer 2", "new": "changed"}]
    assert by_status["added"]["key"] == {"id": 9} and by_status["added"]["old"] is None
    assert by_status["removed"]["key"] == {"id": 5} and by_status["removed"]["new"] is None
    assert dsv("diff", "production", "HEAD", "--name-status").stdout == "M\tqa.jsonl\n"
    human = dsv("diff", "production", "HEAD").stdout
    assert '~ id=2\n    a: "answer 2" → "changed"\n' in human
    assert "\x1b[" not in human  # no colour when piped
    assert dsv("diff").stdout == ""  # working tree equals HEAD
    dsv.write("qa.jsonl", v1)
    assert dsv("diff", "--name-status").stdout == "M\tqa.jsonl\n"
    assert dsv("diff", "--staged", "--name-status").stdout == ""
    assert dsv("diff", "a", "b", "c", code=2).stderr == (
        "error: give at most two revisions; put paths after --\nhint: see 'dsv diff --help'\n"
    )
    assert "unknown revision 'prod'" in dsv("diff", "prod", "HEAD", code=2).stderr
    shown = json.loads(dsv("show", "--json").stdout)["datasets"][0]
    assert (shown["added"], shown["removed"], shown["modified"]) == (1, 1, 1)
    log = json.loads(dsv("log", "--stat", "--json", "-n", "1").stdout)
    assert log[0]["datasets"][0]["path"] == "qa.jsonl"
    assert " qa.jsonl | +1 -1 ~1" in dsv("log", "--stat", "-n", "1").stdout


def test_version_is_the_installed_packages() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"dsv, version {version('dsv')}\n"


def test_gc_removes_and_reports_temp_files_of_killed_commands(dsv: Dsv) -> None:
    import subprocess
    import sys

    dsv.write("sub/qa.jsonl", QA)
    dsv("add", "sub/qa.jsonl")
    dsv("commit", "-m", "v1")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    # What killed commands of a dsv without the temp-file journal left behind.
    left = [
        f"sub/.qa.jsonl.{gone.pid}.tmp",
        f"sub/.qa.jsonl.{gone.pid}.part",
        f".dsv/objects/pack/.tmp-{gone.pid}-00ff.pack",
        f".dsv/refs/heads/.main.{gone.pid}.tmp",
    ]
    live = f"sub/.qa.jsonl.{os.getpid()}.tmp"  # a live process may still be writing it
    for name in [*left, live]:
        (dsv.root / name).write_text('{"partial": ')
    assert dsv("status", "--porcelain").stdout == ""  # not datasets, not changes
    dry = dsv("gc", "--dry-run").stdout.splitlines()
    assert dry[:4] == [
        f"would remove {name} (a temporary file of an interrupted command)" for name in sorted(left)
    ]
    assert all((dsv.root / name).exists() for name in left)
    out = dsv("gc").stdout.splitlines()
    assert out[:4] == [
        f"removed {name} (a temporary file of an interrupted command)" for name in sorted(left)
    ]
    assert not any((dsv.root / name).exists() for name in left)
    assert (dsv.root / live).exists()
    assert dsv("fsck").stdout.endswith(": ok\n")


def test_gc_dry_run_states_the_size_now_and_predicts_none(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:2], "v2")
    dsv("tag", "keep")
    size = sum(f.stat().st_size for f in (dsv.root / ".dsv/objects").rglob("*") if f.is_file())
    assert dsv("gc", "--dry-run").stdout == (
        f"would remove 0 unreachable objects, keep 12 (the store takes {size} bytes now)\n"
    )
    out = dsv("gc").stdout
    assert out.startswith(f"removed 0 unreachable objects, kept 12; {size} -> ")


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        (["rebase"], "error: no such command 'rebase'\nhint: see 'dsv --help'\n"),
        (
            ["stats"],
            "error: no such command 'stats'. Did you mean 'status'?\nhint: see 'dsv --help'\n",
        ),
        (
            ["comit"],
            "error: no such command 'comit'. Did you mean 'commit'?\nhint: see 'dsv --help'\n",
        ),
        (
            ["env", "deplo"],
            "error: no such command 'deplo'. Did you mean 'deploy'?\nhint: see 'dsv env --help'\n",
        ),
        (["remote", "rename"], "error: no such command 'rename'\nhint: see 'dsv remote --help'\n"),
    ],
)
def test_an_unknown_command_suggests_only_a_close_one(
    dsv: Dsv, typed: list[str], said: str
) -> None:
    assert dsv(*typed, code=2).stderr == said


# -- issue 21: restore, remote names, where you are ---------------------------------------


def _track_remote(dsv: Dsv, full: str, rev: str = "HEAD") -> str:
    """Record a remote-tracking ref as `dsv fetch` does; return its version's id."""
    with Repository.open(dsv.root) as repo:
        oid = repo.resolve(rev)
        with repo.lock():
            repo.refs.update(full, oid, user="t", reason="fetch: test")
    return oid.hex()


def test_a_deleted_file_is_restored_without_force(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    (dsv.root / "qa.jsonl").unlink()
    assert dsv("checkout", "HEAD", "--", "qa.jsonl").stdout.startswith("Updated 1 path from ")
    assert dsv("status", "--porcelain").stdout == ""
    (dsv.root / "qa.jsonl").unlink()
    assert dsv("restore", "qa.jsonl").stdout == "restored qa.jsonl from the index\n"
    assert dsv("status", "--porcelain").stdout == ""
    # A modified file is still protected, by both.
    dsv.write("qa.jsonl", QA[:2])
    assert dsv("checkout", "HEAD", "--", "qa.jsonl", code=3).stderr == (
        "error: checkout would overwrite uncommitted changes in qa.jsonl\n"
        "hint: commit them first, or use --force to discard them\n"
    )
    assert dsv("restore", "qa.jsonl", code=3).stderr == (
        "error: restore would discard uncommitted changes in qa.jsonl\n"
        "hint: commit them first (or copy the file away), or use --force to discard them\n"
    )
    assert dsv("restore", "--force", "qa.jsonl").stdout == "restored qa.jsonl from the index\n"
    assert dsv("status", "--porcelain").stdout == ""


def test_restore_staged_and_from_a_source(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:3], "v2")
    dsv.write("qa.jsonl", QA[:1])
    dsv("add", "qa.jsonl")
    # Unstaging keeps the working file: the staged version is still there, nothing is lost.
    assert dsv("restore", "--staged", "qa.jsonl").stdout == (
        "unstaged qa.jsonl (index as in HEAD)\n"
    )
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"
    # The working file's records are in no version and not staged: refused.
    assert dsv("restore", "--source", "HEAD~1", "qa.jsonl", code=3).stderr.startswith(
        "error: restore would discard uncommitted changes in qa.jsonl\n"
    )
    dsv.write("qa.jsonl", QA[:3])  # HEAD's records again: nothing to lose
    assert dsv("restore", "--source", "HEAD~1", "qa.jsonl").stdout == (
        "restored qa.jsonl from HEAD~1\n"
    )
    assert len((dsv.root / "qa.jsonl").read_text().splitlines()) == 5
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"  # the index is HEAD's
    assert dsv("restore", "-S", "-W", "--source", "HEAD~1", "qa.jsonl").stdout == (
        "restored qa.jsonl and the index from HEAD~1\n"
    )
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"  # staged now
    assert dsv("restore", "nope.jsonl", code=2).stderr.startswith(
        "error: nope.jsonl: no such dataset in the index\n"
    )


def test_a_name_only_a_remote_has_resolves_to_it(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:3], "v2")
    old = _track_remote(dsv, "refs/remotes/origin/envs/production", "HEAD~1")
    assert dsv("checkout", "production").stdout == (
        f"HEAD is now at {old[:12]} (production: origin/production)\n"
    )
    assert dsv("log", "-n", "1", "--json").stdout.count(old) == 1
    assert dsv("show", "origin/production", "--json").stdout.count(old) == 1
    dsv("switch", "main")
    # A local name always wins, as in git.
    dsv("env", "deploy", "production")
    head = json.loads(dsv("log", "-n", "1", "--json").stdout)[0]["oid"]
    assert json.loads(dsv("show", "production", "--json").stdout)["oid"] == head
    dsv("env", "rm", "production")
    # On two remotes at different versions: an error naming both.
    _track_remote(dsv, "refs/remotes/upstream/envs/production")
    assert dsv("checkout", "production", code=2).stderr == (
        "error: ambiguous revision 'production': it names origin/production and "
        "upstream/production\nhint: say which one: 'origin/production' or 'upstream/production'\n"
    )


def test_env_list_and_branch_show_the_remotes(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    oid = _track_remote(dsv, "refs/remotes/origin/envs/production")[:12]
    _track_remote(dsv, "refs/remotes/origin/main")
    dsv("env", "deploy", "staging")
    lines = dsv("env", "list").stdout.splitlines()
    assert lines[0].startswith(f"staging{' ' * 12}{oid}  ")
    assert lines[1:] == [f"origin/production  {oid}  (remote)"]
    assert json.loads(dsv("env", "list", "--json").stdout)[1] == {
        "name": "origin/production",
        "oid": json.loads(dsv("log", "--json").stdout)[0]["oid"],
        "time": None,
        "user": None,
        "remote": "origin",
    }
    assert dsv("branch").stdout == f"* main  {oid}\n"
    assert dsv("branch", "-r").stdout == f"  origin/main  {oid}\n"
    assert dsv("branch", "-a").stdout == f"* main  {oid}\n  remotes/origin/main  {oid}\n"
    assert [b["remote"] for b in json.loads(dsv("branch", "-a", "--json").stdout)] == [
        None,
        "origin",
    ]
    assert dsv("branch", "-r", "x", code=2).stderr.startswith(
        "error: -r and -a only list branches\n"
    )


def test_log_decorates_with_every_name(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    _commit_qa(dsv, QA[:3], "v2")
    dsv("tag", "v1", "HEAD~1")
    dsv("env", "deploy", "production", "HEAD~1")
    first = _track_remote(dsv, "refs/remotes/origin/main", "HEAD~1")[:12]
    head = _track_remote(dsv, "refs/remotes/origin/envs/staging")[:12]
    assert dsv("log", "--oneline").stdout == (
        f"{head} (HEAD -> main, env: origin/staging) v2\n"
        f"{first} (tag: v1, env: production, origin/main) v1\n"
    )
    assert dsv("log", "--oneline", "--no-decorate").stdout == f"{head} v2\n{first} v1\n"
    assert (
        dsv("log", "-n", "1")
        .stdout.splitlines()[0]
        .endswith(" (HEAD -> main, env: origin/staging)")
    )
    assert json.loads(dsv("log", "--json").stdout)[1]["refs"] == [
        "tag: v1",
        "env: production",
        "origin/main",
    ]


def test_status_lists_untracked_dataset_files(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    for name in (
        "new.jsonl",
        "sub/b.csv",
        "sub/a.PARQUET",
        "notes.txt",
        ".git/x.json",
        ".venv/lib/y.json",
        "node_modules/p/package.json",
        "__pycache__/z.json",
        "venv/w.json",
        "nested/.dsv/config",
        "nested/inner.jsonl",
        ".qa.jsonl.123.tmp",
    ):
        (dsv.root / name).parent.mkdir(parents=True, exist_ok=True)
        (dsv.root / name).write_text("{}\n")
    assert dsv("status").stdout == (
        "On branch main\n"
        'Untracked files (use "dsv add <file>" to track):\n'
        "  new.jsonl\n"
        "  sub/a.PARQUET\n"
        "  sub/b.csv\n"
        'nothing added to commit but untracked files present (use "dsv add" to track)\n'
    )
    assert dsv("status", "--porcelain").stdout == "?? new.jsonl\n?? sub/a.PARQUET\n?? sub/b.csv\n"
    assert json.loads(dsv("status", "--json").stdout)[0] == {
        "path": "new.jsonl",
        "staged": None,
        "unstaged": "untracked",
    }
    assert dsv("status", "-u", "no").stdout == (
        "On branch main\nnothing to commit, working tree clean\n"
    )
    dsv.write("qa.jsonl", QA[:1])
    assert dsv("status", "--porcelain").stdout == (
        "M qa.jsonl\n?? new.jsonl\n?? sub/a.PARQUET\n?? sub/b.csv\n"
    )
    assert dsv("status").stdout.endswith("track):\n  new.jsonl\n  sub/a.PARQUET\n  sub/b.csv\n")
    # `dsv add .` takes what status lists, not node_modules' or venv's files.
    (dsv.root / "sub/a.PARQUET").unlink()
    dsv.write("sub/a.jsonl", QA[:1])
    (dsv.root / "sub/b.csv").write_text("id\n1\n")
    (dsv.root / "new.jsonl").write_text('{"id": 1}\n')
    assert dsv("add", ".").stdout == "add new.jsonl\nadd qa.jsonl\nadd sub/a.jsonl\nadd sub/b.csv\n"


# -- one count everywhere (issue 21) -------------------------------------------------------------


def _counts_everywhere(dsv: Dsv, name: str) -> list[str]:
    """The change of `name` as status (text and JSON), diff --stat, then log --stat and show
    after `commit -a`, each reduced to its `+A -R ~M`."""
    status = dsv("status").stdout
    [line] = [x for x in status.splitlines() if f" {name} (" in x]
    entry = next(e for e in json.loads(dsv("status", "--json").stdout) if e["path"] == name)
    [stat] = [x for x in dsv("diff", "--stat").stdout.splitlines() if x.startswith(f" {name} ")]
    dsv("commit", "-a", "-m", "change")
    [logged] = [
        x for x in dsv("log", "-n", "1", "--stat").stdout.splitlines() if x.startswith(f" {name} ")
    ]
    [shown] = [x for x in dsv("show").stdout.splitlines() if f" {name}  " in x]
    as_json = f"+{entry['added']} -{entry['removed']} ~{entry['modified']}"
    return [line.split(", ")[-1].rstrip(")"), as_json, stat.split("| ")[1], logged.split("| ")[1],
            shown.split("(")[-1].rstrip(")")]  # fmt: skip


def test_one_edit_one_delete_one_add_count_the_same_everywhere(dsv: Dsv) -> None:
    problems = [{"task_id": f"HumanEval/{i}", "prompt": f"p{i}"} for i in range(6)]
    dsv.write("n.jsonl", problems)
    dsv("add", "n.jsonl", "--key", "task_id")
    dsv("commit", "-m", "v1")
    edited = [dict(p) for p in problems]
    edited[1]["prompt"] = "edited"
    del edited[3]
    edited.append({"task_id": "HumanEval/6", "prompt": "p6"})
    dsv.write("n.jsonl", edited)
    assert dsv("status").stdout == (
        "On branch main\n"
        "Changes not staged for commit (dsv add, or dsv commit -a):\n"
        "  modified: n.jsonl (6 datapoints, +1 -1 ~1)\n"
    )
    assert _counts_everywhere(dsv, "n.jsonl") == ["+1 -1 ~1"] * 5


def test_staged_and_unstaged_counts_are_keyed_too(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    first = [dict(r) for r in QA]
    first[0]["a"] = "changed"
    dsv.write("qa.jsonl", first)
    dsv("add", "qa.jsonl")
    second = [dict(r) for r in first[:4]]
    second[1]["a"] = "changed too"
    dsv.write("qa.jsonl", second)
    assert dsv("status").stdout == (
        "On branch main\n"
        "Changes to be committed:\n"
        "  modified: qa.jsonl (5 datapoints, +0 -0 ~1)\n"
        "Changes not staged for commit (dsv add, or dsv commit -a):\n"
        "  modified: qa.jsonl (4 datapoints, +0 -1 ~1)\n"
    )
    [entry] = json.loads(dsv("status", "--json").stdout)
    assert (entry["added"], entry["removed"], entry["modified"]) == (0, 1, 2)
    assert (entry["staged_modified"], entry["unstaged_modified"]) == (1, 1)
    assert dsv("diff", "--stat").stdout.splitlines()[0] == " qa.jsonl | +0 -1 ~2"
    assert dsv("diff", "--stat", "--staged").stdout.splitlines()[0] == " qa.jsonl | +0 -0 ~1"


def test_without_key_or_id_every_command_matches_by_content(dsv: Dsv) -> None:
    rows = [{"q": f"q{i}", "a": str(i)} for i in range(4)]
    dsv.write("plain.jsonl", rows)
    dsv("add", "plain.jsonl")
    dsv("commit", "-m", "v1")
    dsv.write("plain.jsonl", [rows[0], {"q": "q1", "a": "edited"}, rows[2], rows[3], {"q": "n"}])
    assert _counts_everywhere(dsv, "plain.jsonl") == ["+2 -1 ~0"] * 5


def test_csv_working_file_counts_are_keyed(dsv: Dsv) -> None:
    (dsv.root / "t.csv").write_text("id,answer\n1,a\n2,b\n3,c\n")
    dsv("add", "t.csv", "--key", "id")
    dsv("commit", "-m", "v1")
    (dsv.root / "t.csv").write_text("id,answer\n1,a\n2,B\n4,d\n")
    assert _counts_everywhere(dsv, "t.csv") == ["+1 -1 ~1"] * 5


def test_walkthrough_counts_agree(dsv: Dsv) -> None:
    for name in ("chat_qa.jsonl", "rag.jsonl"):
        shutil.copy(FIXTURES / name, dsv.root / name)
    dsv("add", "chat_qa.jsonl", "rag.jsonl", "--key", "id")
    dsv("commit", "-m", "v1")
    for name in ("chat_qa.jsonl", "rag.jsonl"):
        shutil.copy(FIXTURES / "v2" / name, dsv.root / name)
    assert dsv("status").stdout == (
        "On branch main\n"
        "Changes not staged for commit (dsv add, or dsv commit -a):\n"
        "  modified: chat_qa.jsonl (20 datapoints, +1 -1 ~3)\n"
        "  modified: rag.jsonl (15 datapoints, +1 -1 ~2)\n"
    )
    assert _counts_everywhere(dsv, "chat_qa.jsonl") == ["+1 -1 ~3"] * 5
    assert dsv("log", "-n", "1", "--stat", "--oneline").stdout.splitlines()[1:] == [
        " chat_qa.jsonl | +1 -1 ~3",
        " rag.jsonl     | +1 -1 ~2",
        " 2 datasets changed, 2 added, 2 removed, 5 modified",
    ]


def test_checkout_head_brings_back_a_deleted_file_and_keeps_an_edited_one(dsv: Dsv) -> None:
    _commit_qa(dsv, QA, "v1")
    dsv.write("other.jsonl", QA[:2])
    dsv("add", "other.jsonl")
    dsv("commit", "-m", "v2")
    (dsv.root / "qa.jsonl").unlink()
    dsv.write("other.jsonl", QA[:1])  # an edit: content found nowhere else
    assert dsv("checkout", "HEAD").stdout.startswith("Restored the files of HEAD (")
    assert [json.loads(line) for line in (dsv.root / "qa.jsonl").read_text().splitlines()] == QA
    assert dsv("status", "--porcelain").stdout == "M other.jsonl\n"  # the edit is kept


def test_every_command_is_in_the_family_the_top_level_group_loads_it_from() -> None:
    """`dsv.cli.FAMILIES` names each command's module: it must list every command of every
    family, and nothing else."""
    import importlib

    from dsv.cli import FAMILIES

    found = {
        command.name: family
        for family in set(FAMILIES.values())
        for command in importlib.import_module(f"dsv.cli.{family}").COMMANDS
    }
    assert found == FAMILIES
    assert sorted(main.list_commands(click.Context(main))) == sorted(FAMILIES)


def test_a_command_loads_its_own_family_only(tmp_path: Path) -> None:
    """Each process runs one command: loading every family was a fifth of a diff's time."""
    import subprocess
    import sys

    probe = (
        "import sys, click, dsv.cli\n"
        "dsv.cli.main.get_command(click.Context(dsv.cli.main), 'diff')\n"
        "print(sorted(m for m in sys.modules if m.startswith('dsv.cli.')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert loaded.strip() == "['dsv.cli.common', 'dsv.cli.history']"


def test_a_checkout_loads_no_merging_reading_or_network_code(dsv: Dsv) -> None:
    """A checkout's start-up is part of its time (against git's): it needs no merge machinery
    (`dsv.ops.stage`, `dsv.merge` unless a merge is in progress), file reading (`dsv.ingest`,
    hashlib), other formats (`dsv.formats` for a large JSONL file) or sockets (the reflog's
    user, when one is configured)."""
    import subprocess
    import sys
    import time

    first = _commit_qa(dsv, [{"id": 1}], "one")
    _commit_qa(dsv, [{"id": 2}], "two")
    time.sleep(0.05)  # past the racy margin: a status records the file's stat as proof
    dsv("status")
    probe = (
        "import atexit, sys, dsv.materialize as m, dsv.quick\n"
        "m.PARALLEL_MIN = 1  # as for a large file: the forked writer must run\n"
        "write, wrote = m.write_jsonl, []\n"
        "m.write_jsonl = lambda *a, **k: wrote.append(write(*a, **k)) or wrote[-1]\n"
        "heavy = ['dsv.ops.stage', 'dsv.merge', 'dsv.ingest', 'dsv.formats', 'socket', 'getpass']\n"
        "atexit.register(lambda: print([r is not None for r in wrote],"
        " [n for n in heavy if n in sys.modules]))\n"
        "sys.argv = ['dsv', 'checkout', 'HEAD~1']\n"
        "dsv.quick.main()\n"
    )
    env = {**os.environ, "DSV_AUTHOR_NAME": "A", "DSV_AUTHOR_EMAIL": "a@example.com"}
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=dsv.root,
        env=env,
    ).stdout
    assert loaded.splitlines() == [f"HEAD is now at {first[:12]} (HEAD~1)", "[True] []"]


def test_ops_names_each_come_from_their_module() -> None:
    """`dsv.ops` imports each name on first use: every name it exports must resolve, to the
    same object its module holds."""
    import importlib

    from dsv import ops

    importlib.import_module("dsv.ops.checkout")  # binds the module's name in the package
    for name in ops.__all__:
        value = getattr(ops, name)
        assert any(
            getattr(importlib.import_module(f"dsv.ops.{m}"), name, None) is value
            for m in ("checkout", "history", "stage")
        ), name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ops.nothing  # noqa: B018
