"""Review of issues 2 and 3: hostile input through the CLI, detached HEAD, environments, status
counts, ref names, object prefixes and the Python API's tables. Each test fails on the bug it
was written for."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

import dsv
from dsv import labels
from dsv.errors import BadInput
from tests.conftest import FIXTURES, Dsv

QA = [{"id": i, "q": f"question {i}", "a": str(i * 2)} for i in range(1, 6)]
_ONE_ERROR = re.compile(r"error: [^\n]+\n(hint: [^\n]+\n)?\Z")


def _head(dsv: Dsv, rev: str = "HEAD") -> str:
    return str(json.loads(dsv("show", "--json", rev).stdout)["oid"])


def _commit(dsv: Dsv, name: str, records: list[dict[str, object]], message: str) -> str:
    dsv.write(name, records)
    dsv("add", name, "--key", "id")
    dsv("commit", "-m", message)
    return _head(dsv)


def _oid_of(record: dict[str, object]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return blake3.blake3(b"datapoint\x00" + canonical.encode()).hexdigest()


def _one_error(stderr: str) -> None:
    assert _ONE_ERROR.match(stderr), stderr
    assert "Traceback" not in stderr


# -- hostile revisions and paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["show", "HEAD~x"], 2, "error: unknown revision 'HEAD~x'"),
        (["show", "main^^^^^^"], 2, "goes past the first version"),
        (["show", "@"], 2, "error: unknown revision '@'"),
        (["show", ""], 2, "error: empty revision"),
        (["show", "HEAD:"], 2, "error: no dataset path given for HEAD"),
        (["show", "HEAD:missing.jsonl"], 2, "error: missing.jsonl: no such dataset in HEAD"),
        (["show", "HEAD:qa.jsonll"], 2, "hint: did you mean 'qa.jsonl'?"),
        (["checkout", "HEAD", "--", "nothere.jsonl"], 2, "nothere.jsonl: no such dataset"),
        (["cat-object", "abc"], 2, "hint: an abbreviated id needs at least 4 hex digits"),
        (["cat-object", ""], 2, "error: empty object id"),
        (["cat-object", "0000"], 2, "error: unknown revision '0000'"),
        (["env", "deploy", "a b"], 2, "error: invalid environment name 'a b'"),
        (["env", "deploy", "a/b"], 2, "'/' is not allowed"),
        (["env", "deploy", "HEAD"], 2, "error: invalid environment name 'HEAD': it is reserved"),
        (["env", "deploy", "@"], 2, "error: invalid environment name '@': it is reserved"),
        (["branch", "HEAD"], 2, "error: invalid branch name 'HEAD': it is reserved"),
        (["branch", "-d", "nope"], 2, "error: no branch named 'nope'"),
        (["tag", "-d", "nope"], 2, "error: no tag named 'nope'"),
        (["rm", "untracked.jsonl"], 2, "error: untracked.jsonl: not tracked by dsv"),
        (["add", "sub"], 2, "error: sub: no such file or directory"),
        (["commit", "-m", "  "], 2, "error: empty commit message"),
        (["diff", "HEAD", "HEAD", "--key", ""], 2, "empty field name"),
        (["diff", "HEAD", "HEAD", "--key", "id,"], 2, "empty field name"),
        (["env", "log", "nope"], 2, "no environment named 'nope'"),
        (["branch", "-d"], 2, "error: -d takes exactly one branch name"),
        (["tag", "-d"], 2, "error: -d takes exactly one tag name"),
    ],
)
def test_hostile_input_is_one_error_line(
    dsv: Dsv, args: list[str], code: int, message: str
) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    (dsv.root / "untracked.jsonl").write_text('{"id": 1}\n')
    result = dsv(*args, code=code)
    _one_error(result.stderr)
    assert message in result.stderr
    assert result.stdout == ""


def test_log_of_an_unborn_branch_is_empty(dsv: Dsv) -> None:
    assert dsv("log").stdout == ""
    assert json.loads(dsv("log", "--json").stdout) == []
    err = dsv("show", code=3).stderr
    assert err == "error: HEAD has no commits yet\nhint: commit something first\n"
    assert dsv("cat-object", "HEAD", code=3).stderr.startswith("error: HEAD has no commits")


def test_log_narrowed_to_a_directory_or_the_root(dsv: Dsv) -> None:
    _commit(dsv, "evals/qa.jsonl", QA, "in evals")
    _commit(dsv, "other.jsonl", QA, "elsewhere")
    assert [e["message"] for e in json.loads(dsv("log", "--json", "--", "evals").stdout)] == [
        "in evals\n"
    ]
    assert len(json.loads(dsv("log", "--json", "--", ".").stdout)) == 2


# -- checkout and detached HEAD ----------------------------------------------------------------


def test_checkout_head_keeps_the_current_branch(dsv: Dsv) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    dsv("checkout", "HEAD")
    assert dsv("status").stdout.startswith("On branch main")
    # What the corrupt-index hint tells users to run must not detach HEAD either.
    (dsv.root / "qa.jsonl").unlink()
    dsv("checkout", "--force", "HEAD")
    assert dsv("status").stdout == "On branch main\nnothing to commit, working tree clean\n"
    _commit(dsv, "qa.jsonl", QA[:2], "v2")
    dsv("checkout", "HEAD~1")
    dsv("checkout", "HEAD")
    assert dsv("status").stdout.startswith("HEAD detached at")


def test_detached_commit_then_switch_back(dsv: Dsv) -> None:
    first = _commit(dsv, "qa.jsonl", QA, "v1")
    dsv("tag", "v1")
    dsv("env", "deploy", "production")
    second = _commit(dsv, "qa.jsonl", QA[:3], "v2")
    for rev in ("production", "v1", first[:6]):
        dsv("checkout", rev)
        assert dsv("status", "--porcelain").stdout == ""
        assert dsv("status").stdout.startswith(f"HEAD detached at {first[:12]}")
    dsv.write("qa.jsonl", [*QA, {"id": 9, "q": "detached", "a": "x"}])
    out = dsv("commit", "-a", "-m", "on a detached HEAD").stdout
    assert out.startswith("[detached HEAD ")
    detached = _head(dsv)
    assert json.loads(dsv("show", "--json").stdout)["parents"] == [first]
    dsv("switch", "main")
    assert _head(dsv) == second and dsv("status", "--porcelain").stdout == ""
    assert len((dsv.root / "qa.jsonl").read_text().splitlines()) == 3
    # Only HEAD's log reaches the detached commit now; gc keeps it.
    dsv("gc")
    assert dsv("fsck").stdout.endswith(": ok\n")
    assert len(dsv("show", f"{detached}:qa.jsonl").stdout.splitlines()) == 6


def test_checkout_refuses_to_overwrite_untracked_files(dsv: Dsv) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    _commit(dsv, "new.jsonl", QA[:2], "v2")
    dsv("checkout", "HEAD~1")
    assert not (dsv.root / "new.jsonl").exists()
    precious = '{"precious": true}\n'
    (dsv.root / "new.jsonl").write_text(precious)
    for args in (["checkout", "main"], ["switch", "main"], ["checkout", "main", "--", "new.jsonl"]):
        err = dsv(*args, code=3).stderr
        assert err.startswith("error: checkout would overwrite untracked files: new.jsonl\n"), args
        assert (dsv.root / "new.jsonl").read_text() == precious
    assert dsv("status").stdout.startswith("HEAD detached")
    # The same content as the version is no loss: checkout goes ahead.
    (dsv.root / "new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA[:2]))
    dsv("checkout", "main")
    assert dsv("status").stdout == "On branch main\nnothing to commit, working tree clean\n"
    dsv("checkout", "HEAD~1")
    (dsv.root / "new.jsonl").write_text(precious)
    dsv("checkout", "--force", "main")
    assert len((dsv.root / "new.jsonl").read_text().splitlines()) == 2


def test_checkout_paths_take_directories(dsv: Dsv) -> None:
    _commit(dsv, "evals/a.jsonl", QA, "a")
    _commit(dsv, "evals/deep/b.jsonl", QA, "b")
    _commit(dsv, "top.jsonl", QA, "top")
    for name in ("evals/a.jsonl", "evals/deep/b.jsonl", "top.jsonl"):
        dsv.write(name, QA[:1])
    dsv("commit", "-a", "-m", "shrink")
    dsv("checkout", "HEAD~1", "--", "evals")
    lengths = {
        name: len((dsv.root / name).read_text().splitlines())
        for name in ("evals/a.jsonl", "evals/deep/b.jsonl", "top.jsonl")
    }
    assert lengths == {"evals/a.jsonl": 5, "evals/deep/b.jsonl": 5, "top.jsonl": 1}
    assert dsv("status", "--porcelain").stdout == "M evals/a.jsonl\nM evals/deep/b.jsonl\n"
    err = dsv("checkout", "HEAD", "--", "nowhere", code=2).stderr
    assert err.startswith("error: nowhere: no such dataset in HEAD\n")
    dsv("checkout", "--force", "HEAD", "--", ".")
    assert dsv("status", "--porcelain").stdout == ""


# -- rm and mv ---------------------------------------------------------------------------------


def test_rm_keeps_a_file_whose_version_is_only_staged(dsv: Dsv) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    dsv.write("new.jsonl", QA)
    dsv("add", "new.jsonl")
    err = dsv("rm", "new.jsonl", code=3).stderr
    assert err == (
        "error: new.jsonl has staged changes that are not committed\n"
        "hint: use --cached to keep the file, or --force to delete it anyway\n"
    )
    assert (dsv.root / "new.jsonl").exists()
    dsv.write("qa.jsonl", QA[:1])
    dsv("add", "qa.jsonl")
    dsv("rm", "qa.jsonl", code=3)
    assert (dsv.root / "qa.jsonl").exists()
    dsv("rm", "--force", "new.jsonl")
    assert not (dsv.root / "new.jsonl").exists()


def test_mv_errors_change_nothing(dsv: Dsv) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    (dsv.root / "a.csv").write_text("id,q\n1,x\n")
    dsv("add", "a.csv")
    dsv("commit", "-m", "csv")
    dsv.write("other.jsonl", QA[:1])
    cases = [
        (["qa.jsonl", "other.jsonl"], "error: other.jsonl: already exists\n"),
        (["a.csv", "a.tsv"], "error: a.tsv: a move cannot change the file type\n"),
        (["qa.jsonl", "qa.csv"], "error: qa.csv: a move cannot change the file type\n"),
        (["nope.jsonl", "x.jsonl"], "error: nope.jsonl: not tracked by dsv\n"),
    ]
    for args, message in cases:
        assert dsv("mv", *args, code=2).stderr == message
    (dsv.root / "qa.jsonl").unlink()
    assert dsv("mv", "qa.jsonl", "moved.jsonl", code=2).stderr == (
        "error: qa.jsonl: no such file\nhint: use 'dsv rm --cached qa.jsonl' to stop tracking it\n"
    )
    assert dsv("status", "--porcelain").stdout == "D qa.jsonl\n?? other.jsonl\n"
    assert (dsv.root / "a.csv").exists() and not (dsv.root / "a.tsv").exists()


# -- status ------------------------------------------------------------------------------------


def test_status_counts_staged_and_unstaged_changes_separately(dsv: Dsv) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    extra = [{"id": 10 + i, "q": "new", "a": "x"} for i in range(3)]
    dsv.write("qa.jsonl", [*QA, extra[0]])
    dsv("add", "qa.jsonl")
    dsv.write("qa.jsonl", [*QA[1:], *extra])
    human = dsv("status").stdout
    assert human == (
        "On branch main\n"
        "Changes to be committed:\n"
        "  modified: qa.jsonl (6 datapoints, +1 -0 ~0)\n"
        "Changes not staged for commit (dsv add, or dsv commit -a):\n"
        "  modified: qa.jsonl (7 datapoints, +2 -1 ~0)\n"
    )
    [entry] = json.loads(dsv("status", "--json").stdout)
    assert entry == {
        "path": "qa.jsonl",
        "staged": "modified",
        "unstaged": "modified",
        "count": 7,
        "added": 3,
        "removed": 1,
        "modified": 0,
        "staged_count": 6,
        "staged_added": 1,
        "staged_removed": 0,
        "staged_modified": 0,
        "unstaged_added": 2,
        "unstaged_removed": 1,
        "unstaged_modified": 0,
    }
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"
    dsv("commit", "-a", "-m", "all")
    assert dsv("status", "--porcelain").stdout == ""


def test_status_of_a_staged_file_deleted_from_disk(dsv: Dsv) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    dsv.write("b.jsonl", QA[:4])
    dsv("add", "b.jsonl")
    (dsv.root / "b.jsonl").unlink()
    (dsv.root / "qa.jsonl").unlink()
    human = dsv("status").stdout
    assert "  added:    b.jsonl (4 datapoints)\n" in human
    assert "  deleted:  b.jsonl (4 datapoints)\n" in human
    assert "  deleted:  qa.jsonl (5 datapoints)\n" in human
    assert dsv("status", "--porcelain").stdout == "A b.jsonl\nD qa.jsonl\n"


# -- refs --------------------------------------------------------------------------------------


def test_ref_names_that_clash_with_existing_ones(dsv: Dsv) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    err = dsv("branch", "main/sub", code=2).stderr
    _one_error(err)
    assert err.startswith("error: cannot create 'main/sub': 'main' exists\n")
    dsv("branch", "feature/x")
    err = dsv("branch", "feature", code=2).stderr
    _one_error(err)
    assert err.startswith("error: cannot create 'feature': 'feature/x' exists\n")
    dsv("tag", "v1")
    assert dsv("tag", "v1/rc", code=2).stderr.startswith("error: cannot create 'v1/rc'")
    # Logs outlive their refs, so the deleted name's history keeps blocking the shorter one.
    dsv("branch", "-d", "feature/x")
    err = dsv("branch", "feature", code=2).stderr
    _one_error(err)
    assert err.startswith(
        "error: cannot create 'feature': the history of the deleted 'feature/x' is kept under"
    )
    assert json.loads(dsv("branch", "--json").stdout)[0]["name"] == "main"
    assert dsv("fsck").stdout.endswith(": ok\n")


# -- objects by prefix -------------------------------------------------------------------------


def _colliding(prefix_len: int, oids: list[str]) -> str:
    seen: dict[str, str] = {}
    for oid in oids:
        if oid[:prefix_len] in seen:
            return oid[:prefix_len]
        seen[oid[:prefix_len]] = oid
    raise AssertionError("no collision")


def test_cat_object_needs_a_unique_prefix_of_four_digits(dsv: Dsv) -> None:
    records = [{"n": i} for i in range(3000)]
    dsv.write("many.jsonl", records)
    dsv("add", "many.jsonl")
    dsv("commit", "-m", "many")
    prefix = _colliding(4, [_oid_of(r) for r in records])
    err = dsv("cat-object", prefix, code=2).stderr
    _one_error(err)
    assert err.startswith(f"error: ambiguous id '{prefix}': ")
    assert "(datapoint)" in err
    unique = _oid_of(records[0])[:10]
    assert json.loads(dsv("cat-object", unique.upper()).stdout) == records[0]
    assert dsv("cat-object", unique[:3], code=2).stderr == (
        f"error: unknown revision '{unique[:3]}'\n"
        "hint: an abbreviated id needs at least 4 hex digits\n"
    )
    head = _head(dsv)
    assert dsv("cat-object", "-t", "HEAD").stdout == "commit\n"
    dsv.write("many.jsonl", records[:10])
    dsv("commit", "-a", "-m", "fewer")
    assert json.loads(dsv("cat-object", "HEAD~1").stdout)["message"] == "many\n"
    assert json.loads(dsv("cat-object", "HEAD^").stdout)["message"] == "many\n"
    assert _head(dsv, head[:8].upper()) == head


def test_a_prefix_shared_by_a_commit_and_a_datapoint(dsv: Dsv) -> None:
    commit = _commit(dsv, "qa.jsonl", QA, "v1")
    n = 0
    while not _oid_of({"n": n}).startswith(commit[:4]):
        n += 1
    dsv.write("clash.jsonl", [{"n": n}])
    dsv("add", "clash.jsonl")
    dsv("commit", "-m", "clash")
    # A revision means a commit, so the prefix names one; cat-object takes any kind: ambiguous.
    assert _head(dsv, commit[:4]) == commit
    err = dsv("cat-object", commit[:4], code=2).stderr
    assert err.startswith(f"error: ambiguous id '{commit[:4]}': 2 objects start with it\n")
    assert "(commit)" in err and "(datapoint)" in err


# -- environments ------------------------------------------------------------------------------


@pytest.fixture
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_env_list_shows_version_when_and_who(dsv: Dsv, india_time: None) -> None:
    first = _commit(dsv, "qa.jsonl", QA, "v1")
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
    first = _commit(dsv, "qa.jsonl", QA, "v1")
    dsv("env", "deploy", "staging")
    second = _commit(dsv, "qa.jsonl", QA[:2], "v2")
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


# -- diff --------------------------------------------------------------------------------------


def test_stat_reports_duplicate_keys(dsv: Dsv) -> None:
    dsv.write("dup.jsonl", [{"id": "a", "v": 1}, {"id": "a", "v": 2}])
    dsv("add", "dup.jsonl")
    dsv("commit", "-m", "v1")
    dsv.write("dup.jsonl", [{"id": "a", "v": 3}, {"id": "a", "v": 4}])
    assert dsv("diff", "--stat", "--key", "id").stdout.splitlines()[0] == (
        " dup.jsonl | +0 -0 ~2 (1 duplicate key)"
    )


def test_jsonl_fields_always_carry_path_old_and_new(dsv: Dsv) -> None:
    _commit(dsv, "qa.jsonl", [{"id": 1, "a": "x", "gone": 1}], "v1")
    dsv.write("qa.jsonl", [{"id": 1, "a": "y", "came": None}])
    [line] = dsv("diff", "--format", "jsonl").stdout.splitlines()
    assert json.loads(line)["fields"] == [
        {"path": "a", "old": "x", "new": "y"},
        {"path": "came", "old": None, "new": None, "absent": "old"},
        {"path": "gone", "old": 1, "new": None, "absent": "new"},
    ]


# -- the Python API ----------------------------------------------------------------------------


def test_read_keeps_the_stored_parquet_schema_and_csv_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = dsv.Repository.init(tmp_path)
    for name in ("metrics.parquet", "humanloop.csv"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    repo.add(["metrics.parquet", "humanloop.csv"])
    repo.commit("fixtures")
    original = pq.read_table(FIXTURES / "metrics.parquet")
    table = repo.read("HEAD", "metrics.parquet")
    assert table.schema.equals(original.schema, check_metadata=True)
    assert table.equals(original)
    header = (FIXTURES / "humanloop.csv").read_text().splitlines()[0]
    csv_table = repo.read("HEAD", "humanloop.csv")
    assert csv_table.column_names == header.split(",")
    assert all(t == pa.string() for t in csv_table.schema.types)


def test_read_keeps_every_field_of_every_record(tmp_path: Path) -> None:
    repo = dsv.Repository.init(tmp_path)
    records = [{"id": 1, "q": "a"}, {"id": 2, "q": "b", "extra": {"x": 1}}, {"id": 3}]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    repo.add(["qa.jsonl"])
    repo.commit("v1")
    table = repo.read("HEAD", "qa.jsonl")
    assert table.column_names == ["id", "q", "extra"]
    assert table.to_pylist() == [{"q": None, "extra": None, **r} for r in records]
    (tmp_path / "mixed.jsonl").write_text('{"v": 1}\n{"v": "one"}\n')
    repo.add(["mixed.jsonl"])
    repo.commit("v2")
    with pytest.raises(BadInput, match=r"mixed\.jsonl: field 'v' cannot be one Arrow column"):
        repo.read("HEAD", "mixed.jsonl")
    assert list(repo.records("HEAD", "mixed.jsonl")) == [{"v": 1}, {"v": "one"}]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    repo.add(["empty.jsonl"])
    repo.commit("v3")
    assert repo.read("HEAD", "empty.jsonl").num_rows == 0


def test_load_reads_paths_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = dsv.Repository.init(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "qa.jsonl").write_text('{"id": "root"}\n')
    (tmp_path / "sub" / "qa.jsonl").write_text('{"id": "sub"}\n')
    repo.add(["qa.jsonl", "sub/qa.jsonl"])
    repo.commit("v1")
    monkeypatch.chdir(tmp_path / "sub")
    assert dsv.load("qa.jsonl@HEAD").to_pylist() == [{"id": "sub"}]
    assert dsv.load("../qa.jsonl@HEAD").to_pylist() == [{"id": "root"}]


def test_python_api_diff_and_errors(tmp_path: Path) -> None:
    repo = dsv.Repository.init(tmp_path)
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA))
    repo.add(["qa.jsonl"], key=("id",))
    first = repo.commit("v1")
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA[1:]))
    second = repo.commit("v2", all=True)
    labels.deploy(repo, "production", first.hex())
    result = repo.diff("production", "HEAD", paths=["qa.jsonl"], key="id")
    assert (result.from_oid, result.to_oid) == (first, second)
    assert [(c.status, c.key) for c in result.changes()] == [("removed", {"id": 1})]
    with pytest.raises(BadInput, match="empty field name"):
        repo.diff("HEAD~1", "HEAD", key=("id", ""))


# -- bugs in files this review may not edit ----------------------------------------------------


def test_deeply_nested_jsonl_is_a_one_line_error(dsv: Dsv) -> None:
    (dsv.root / "deep.jsonl").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    result = dsv("add", "deep.jsonl", code=2)
    assert result.stderr.startswith("error: deep.jsonl:1:")
    assert dsv("status", "--porcelain").stdout == "?? deep.jsonl\n"


def test_no_half_written_state_after_refused_commands(dsv: Dsv) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    before = {p: p.read_bytes() for p in (dsv.root / ".dsv").rglob("*") if p.is_file()}
    for args in (
        ["branch", "main/sub"],
        ["env", "deploy", "HEAD"],
        ["tag", "x", "nope"],
        ["checkout", "nope"],
        ["mv", "qa.jsonl", "qa.tsv"],
    ):
        dsv(*args, code=2)
    after = {p: p.read_bytes() for p in (dsv.root / ".dsv").rglob("*") if p.is_file()}
    assert after == before
    assert sorted(os.listdir(dsv.root)) == [".dsv", "qa.jsonl"]


@pytest.mark.parametrize("value", ["abc", "nan", "-1"])
def test_a_bad_lock_timeout_is_one_error_line(
    dsv: Dsv, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DSV_LOCK_TIMEOUT", value)
    assert dsv("status", code=2).stderr == (
        f"error: DSV_LOCK_TIMEOUT='{value}' is not a number of seconds\n"
        "hint: e.g. DSV_LOCK_TIMEOUT=10\n"
    )


def test_diff_after_checkout_never_parses_the_written_files(
    dsv: Dsv, monkeypatch: pytest.MonkeyPatch
) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    _commit(dsv, "qa.jsonl", QA[:2], "v2")
    dsv("checkout", "HEAD~1")
    import dsv.diff as diff_module
    import dsv.formats as formats_module

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("diff parsed a file dsv itself just wrote")

    monkeypatch.setattr(diff_module, "scan_file", no_parsing)  # how JSONL is read
    monkeypatch.setattr(formats_module, "read_dataset", no_parsing)  # how the rest is
    assert dsv("diff").stdout == ""
    assert dsv("diff", "main", "--stat").stdout.splitlines()[0] == " qa.jsonl | +3 -0 ~0"


def test_every_format_is_written_byte_stably(dsv: Dsv) -> None:
    names = ("chat_qa.jsonl", "rag.jsonl", "tool_calling.json", "humanloop.csv", "metrics.parquet")
    for name in names:
        shutil.copy(FIXTURES / name, dsv.root / name)
    dsv("add", *names)
    dsv("commit", "-m", "fixtures")
    dsv("checkout", "--force", "HEAD")
    first = {name: (dsv.root / name).read_bytes() for name in names}
    for name in names:
        (dsv.root / name).unlink()
    dsv("checkout", "--force", "HEAD")
    assert {name: (dsv.root / name).read_bytes() for name in names} == first
    assert dsv("status", "--porcelain").stdout == ""
    assert dsv("status").stdout.startswith("On branch main\n")


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
    prod, staging = _head(dsv, "production"), _head(dsv, "staging")
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
    assert modified["old"] == _oid_of(v1[2]) and modified["new"] == _oid_of(v2[2])
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


def test_checkout_leaves_a_file_unstaged_with_rm_cached_alone(dsv: Dsv) -> None:
    _commit(dsv, "qa.jsonl", QA, "v1")
    dsv("branch", "other")
    _commit(dsv, "b.jsonl", QA[:1], "b")
    dsv("rm", "--cached", "qa.jsonl")
    mine = '{"id": 1, "mine": true}\n'
    (dsv.root / "qa.jsonl").write_text(mine)
    dsv("switch", "other")
    assert (dsv.root / "qa.jsonl").read_text() == mine
    assert dsv("status", "--porcelain").stdout == "D qa.jsonl\n?? qa.jsonl\n"
    dsv("switch", "main")
    assert (dsv.root / "qa.jsonl").read_text() == mine
    dsv("checkout", "--force", "main")
    assert len((dsv.root / "qa.jsonl").read_text().splitlines()) == 5
    assert dsv("status", "--porcelain").stdout == ""
