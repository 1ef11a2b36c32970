"""Writing versions into the work tree: checkout, switch and detached HEAD (dsv.ops.checkout)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import (
    QA,
    Dsv,
    commit_records,
    head_of,
)


def test_checkout_head_keeps_the_current_branch(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    dsv("checkout", "HEAD")
    assert dsv("status").stdout.startswith("On branch main")
    # What the corrupt-index hint tells users to run must not detach HEAD either.
    (dsv.root / "qa.jsonl").unlink()
    dsv("checkout", "--force", "HEAD")
    assert dsv("status").stdout == "On branch main\nnothing to commit, working tree clean\n"
    commit_records(dsv, "qa.jsonl", QA[:2], "v2")
    dsv("checkout", "HEAD~1")
    dsv("checkout", "HEAD")
    assert dsv("status").stdout.startswith("HEAD detached at")


def test_detached_commit_then_switch_back(dsv: Dsv) -> None:
    first = commit_records(dsv, "qa.jsonl", QA, "v1")
    dsv("tag", "v1")
    dsv("env", "deploy", "production")
    second = commit_records(dsv, "qa.jsonl", QA[:3], "v2")
    for rev in ("production", "v1", first[:6]):
        dsv("checkout", rev)
        assert dsv("status", "--porcelain").stdout == ""
        assert dsv("status").stdout.startswith(f"HEAD detached at {first[:12]}")
    dsv.write("qa.jsonl", [*QA, {"id": 9, "q": "detached", "a": "x"}])
    out = dsv("commit", "-a", "-m", "on a detached HEAD").stdout
    assert out.startswith("[detached HEAD ")
    detached = head_of(dsv)
    assert json.loads(dsv("show", "--json").stdout)["parents"] == [first]
    dsv("switch", "main")
    assert head_of(dsv) == second and dsv("status", "--porcelain").stdout == ""
    assert len((dsv.root / "qa.jsonl").read_text().splitlines()) == 3
    # Only HEAD's log reaches the detached commit now; gc keeps it.
    dsv("gc")
    assert dsv("fsck").stdout.endswith(": ok\n")
    assert len(dsv("show", f"{detached}:qa.jsonl").stdout.splitlines()) == 6


def test_checkout_refuses_to_overwrite_untracked_files(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    commit_records(dsv, "new.jsonl", QA[:2], "v2")
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
    commit_records(dsv, "evals/a.jsonl", QA, "a")
    commit_records(dsv, "evals/deep/b.jsonl", QA, "b")
    commit_records(dsv, "top.jsonl", QA, "top")
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


def test_diff_after_checkout_never_parses_the_written_files(
    dsv: Dsv, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    commit_records(dsv, "qa.jsonl", QA[:2], "v2")
    dsv("checkout", "HEAD~1")
    import dsv.diff as diff_module
    import dsv.formats as formats_module

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("diff parsed a file dsv itself just wrote")

    monkeypatch.setattr(diff_module, "scan_against", no_parsing)  # how JSONL is read
    monkeypatch.setattr(formats_module, "read_dataset", no_parsing)  # how the rest is
    assert dsv("diff").stdout == ""
    assert dsv("diff", "main", "--stat").stdout.splitlines()[0] == " qa.jsonl | +3 -0 ~0"


def test_checkout_leaves_a_file_unstaged_with_rm_cached_alone(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    dsv("branch", "other")
    commit_records(dsv, "b.jsonl", QA[:1], "b")
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
