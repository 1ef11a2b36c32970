"""dsv inside a git project: `dsv init` keeps `.dsv` out of git."""

from __future__ import annotations

import subprocess
from pathlib import Path

from click.testing import CliRunner

from dsv.cli import main


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout


def _init(root: Path, *args: str) -> list[str]:
    result = CliRunner().invoke(main, ["-C", str(root), "init", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_init_in_a_git_project_keeps_dsv_out_of_git(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "qa.jsonl").write_text('{"id": 1}\n')
    out = _init(tmp_path / "evals")
    assert out == [
        f"Initialized empty dsv repository in {tmp_path / 'evals' / '.dsv'}",
        f"Added /.dsv/ to {tmp_path / 'evals' / '.gitignore'} (--no-gitignore to skip)",
    ]
    # What git itself sees: the dataset and the .gitignore, nothing of .dsv.
    assert _git(tmp_path, "status", "--porcelain", "--untracked-files=all").splitlines() == [
        "?? evals/.gitignore",
        "?? evals/qa.jsonl",
    ]


def test_init_appends_to_an_existing_gitignore_once(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("*.pyc")  # no final newline
    _init(tmp_path)
    assert (tmp_path / ".gitignore").read_text() == (
        "*.pyc\n# dsv's store: git tracks the dataset files, dsv their history\n/.dsv/\n"
    )
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / ".gitignore").write_text(".dsv/\n")
    assert len(_init(tmp_path / "again")) == 1  # already ignored: nothing added, nothing said
    assert (tmp_path / "again" / ".gitignore").read_text() == ".dsv/\n"


def test_init_leaves_gitignore_alone_when_asked_or_outside_git(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    assert len(_init(tmp_path / "plain")) == 1
    assert not (tmp_path / "plain" / ".gitignore").exists()
    _git(tmp_path / "plain", "init", "-q")
    (tmp_path / "plain" / "sub").mkdir()
    assert len(_init(tmp_path / "plain" / "sub", "--no-gitignore")) == 1
    assert not (tmp_path / "plain" / "sub" / ".gitignore").exists()
