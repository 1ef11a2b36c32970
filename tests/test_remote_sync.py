"""push, clone, fetch and pull against a real `dsv serve` process on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from benchmarks.push import Server, dsv_command
from dsv import maintenance
from dsv.cli import main
from dsv.notebook import Repository


@pytest.fixture
def url(
    server: tuple[Server, str], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A fresh repository on the shared server, named after the test; the key in DSV_API_KEY."""
    running, key = server
    monkeypatch.setenv("DSV_API_KEY", key)
    return f"{running.url}/tests/{re.sub(r'[^A-Za-z0-9]+', '-', request.node.name)[:80]}"


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


def new_repo(tmp_path: Path, name: str, url: str, count: int = 1500) -> Path:
    root = tmp_path / name
    dsv(tmp_path, "init", name)
    write(
        root / "qa.jsonl",
        [{"id": i, "q": f"question {i}", "a": "x" * (i % 40)} for i in range(count)],
    )
    dsv(root, "add", "qa.jsonl", "--key", "id")
    dsv(root, "commit", "-m", "first")
    dsv(root, "remote", "add", "origin", url)
    return root


def edit(root: Path, message: str, extra: int = 3) -> None:
    path = root / "qa.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = json.dumps({"id": 1, "q": f"edited: {message}"})
    lines += [json.dumps({"id": f"{message}-{k}"}) for k in range(extra)]
    path.write_text("\n".join(lines) + "\n")
    dsv(root, "commit", "-a", "-m", message)


def history(root: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads(dsv(root, "log", "--json").stdout)
    for doc in docs:
        doc.pop("refs")
    return docs


def every_version(root: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    with Repository.open(root) as repo:
        out = {}
        for entry in repo.log():
            for path in repo.tree_of(entry.oid):
                out[(entry.oid.hex(), path)] = list(repo.records(entry.oid.hex(), path))
        return out


def test_push_then_clone_gives_identical_records_and_history(tmp_path: Path, url: str) -> None:
    a = new_repo(tmp_path, "a", url)
    with open(a / "rows.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label"])
        writer.writerows([[i, f"l{i}"] for i in range(300)])
    dsv(a, "add", "rows.csv")
    dsv(a, "commit", "-m", "csv too")
    edit(a, "third")
    out = dsv(a, "push").stdout
    assert f"To {url}" in out and "new" in out and "Sent" in out
    assert dsv(a, "push").stdout.endswith("Everything up to date\n")
    assert "Checked out branch main" in dsv(tmp_path, "clone", url, "b").stdout
    b = tmp_path / "b"
    assert history(b) == history(a)
    assert every_version(b) == every_version(a)
    assert dsv(b, "status", "--porcelain").stdout == ""
    assert "ok" in dsv(b, "fsck").stdout
    assert (b / "qa.jsonl").read_bytes() == dsv(a, "show", "HEAD:qa.jsonl").stdout_bytes
    with Repository.open(b) as repo:
        assert repo.config.remotes["origin"].url == url
        assert repo.refs.read("refs/remotes/origin/main") == repo.head()


def _blocks(root: Path) -> set[bytes]:
    """The blocks of datapoints of a repository's packs, as stored (compressed)."""
    from dsv.objects import Kind
    from dsv.pack import Pack

    found = set()
    for idx in (root / ".dsv" / "objects" / "pack").glob("pack-*.idx"):
        pack = Pack(idx.parent, idx.stem)
        blocks = {
            pack.location(i)[0] for i in range(pack.count) if pack.kind_at(i) == Kind.DATAPOINT
        }
        found |= {pack.read_block_data(b)[3] for b in blocks}
        pack.close()
    return found


def test_a_version_travels_in_the_blocks_add_made(tmp_path: Path, url: str) -> None:
    """Protocol version 2: push and clone copy stored blocks; nothing is recompressed."""
    a = new_repo(tmp_path, "a", url, count=10)
    words = ["the", "model", "answer", "question", "context", "user", "assistant", "retrieval"]
    write(
        a / "long.jsonl",
        [{"id": i, "text": " ".join(words[(i * k) % 8] for k in range(90))} for i in range(20000)],
    )
    dsv(a, "add", "long.jsonl", "--key", "id")
    dsv(a, "commit", "-m", "long")
    dsv(a, "gc")  # one pack of the blocks (and dictionary) made here
    made = _blocks(a)
    assert len(made) > 8
    dsv(a, "push")
    dsv(tmp_path, "clone", url, "b")
    # Only a block at the edge of a file (holding other objects too) is packed again.
    assert len(made - _blocks(tmp_path / "b")) <= 3, (
        len(made),
        len(made - _blocks(tmp_path / "b")),
    )
    assert "ok" in dsv(tmp_path / "b", "fsck").stdout


def test_a_client_of_protocol_version_1_still_pushes_and_clones(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dsv.remote import connection

    monkeypatch.setattr(connection, "SUPPORTED_VERSIONS", (1,))
    a = new_repo(tmp_path, "a", url)
    edit(a, "second")
    dsv(a, "push")
    dsv(tmp_path, "clone", url, "b")
    assert every_version(tmp_path / "b") == every_version(a)
    assert "ok" in dsv(tmp_path / "b", "fsck").stdout


def test_fetch_and_pull_fast_forward(tmp_path: Path, url: str) -> None:
    a = new_repo(tmp_path, "a", url)
    dsv(a, "push")
    dsv(tmp_path, "clone", url, "b")
    b = tmp_path / "b"
    edit(a, "second")
    edit(a, "third")
    dsv(a, "push")
    before = history(b)
    out = dsv(b, "fetch").stdout
    assert "main -> origin/main" in out and "Received" in out
    assert history(b) == before  # fetch moves only the remote-tracking ref
    assert dsv(b, "log", "--oneline", "origin/main").stdout.count("\n") == 3
    dsv(b, "checkout", "origin/main")  # origin/main resolves like a branch
    dsv(b, "switch", "main")
    out = dsv(b, "pull").stdout
    assert "Fast-forward main" in out
    assert history(b) == history(a)
    assert dsv(b, "status", "--porcelain").stdout == ""
    assert list(Repository.open(b).records("HEAD", "qa.jsonl"))[1]["q"] == "edited: third"
    assert "Already up to date." in dsv(b, "pull").stdout
    edit(b, "local")
    assert "ahead of origin/main" in dsv(b, "pull").stdout


def test_pull_refuses_to_overwrite_uncommitted_changes(tmp_path: Path, url: str) -> None:
    a = new_repo(tmp_path, "a", url)
    dsv(a, "push")
    dsv(tmp_path, "clone", url, "b")
    b = tmp_path / "b"
    edit(a, "second")
    dsv(a, "push")
    (b / "qa.jsonl").write_text('{"id": "mine"}\n')
    err = dsv(b, "pull", code=3).stderr
    assert "would overwrite uncommitted changes in qa.jsonl" in err
    assert (b / "qa.jsonl").read_text() == '{"id": "mine"}\n'
    with Repository.open(b) as repo:
        assert repo.current_branch() == "main"
        assert repo.head() != repo.refs.read("refs/remotes/origin/main")


def test_diverged_pushes_to_one_branch_one_wins_nothing_lost(tmp_path: Path, url: str) -> None:
    a = new_repo(tmp_path, "a", url)
    dsv(a, "push")
    dsv(tmp_path, "clone", url, "b")
    b = tmp_path / "b"
    edit(a, "from-a")
    edit(b, "from-b")
    tips = {root: Repository.open(root).head() for root in (a, b)}
    env = {**os.environ, "DSV_LOCK_TIMEOUT": "10"}
    procs = {
        root: subprocess.Popen(
            [*dsv_command(), "-C", str(root), "push"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for root in (a, b)
    }
    results = {root: (p.wait(60), p.stderr.read().decode()) for root, p in procs.items()}  # type: ignore[union-attr]
    winners = [root for root, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    winner = winners[0]
    loser = b if winner == a else a
    code, err = results[loser]
    assert code == 5 and "non-fast-forward" in err, err
    assert "hint: the remote has versions you do not: 'dsv pull' takes them (merging them" in err
    dsv(tmp_path, "clone", url, "check")
    assert Repository.open(tmp_path / "check").head() == tips[winner]
    assert Repository.open(loser).head() == tips[loser]  # the loser keeps its version
    # Trying again now is refused on the client before anything is sent.
    assert "non-fast-forward" in dsv(loser, "push", code=5).stderr
    err = dsv(loser, "pull", "--ff-only", code=3).stderr
    assert "have diverged: 1 version here not on origin, and 1 there not here" in err
    assert "hint: merge them with 'dsv pull' (without --ff-only) or 'dsv merge origin/main'" in err
    assert Repository.open(loser).head() == tips[loser]
    # Both edited datapoint 1: pull merges and stops at that conflict; abort takes it back.
    mine, theirs = ("from-a", "from-b") if loser == a else ("from-b", "from-a")
    out = dsv(loser, "pull", code=1).stdout
    assert (
        f'CONFLICT (content) qa.jsonl id=1 q: base "question 1", ours "edited: {mine}", '
        f'theirs "edited: {theirs}"\n'
    ) in out
    dsv(loser, "merge", "--abort")
    assert Repository.open(loser).head() == tips[loser]
    # --force overwrites, and the winner's version stays readable on its side.
    dsv(loser, "push", "--force")
    dsv(tmp_path, "clone", url, "after")
    assert Repository.open(tmp_path / "after").head() == tips[loser]


def test_environments_and_tags_are_pushed_and_fetched(tmp_path: Path, url: str) -> None:
    a = new_repo(tmp_path, "a", url)
    first = Repository.open(a).head()
    edit(a, "second")
    dsv(a, "env", "deploy", "production", "HEAD~1")
    dsv(a, "env", "deploy", "staging")
    dsv(a, "tag", "v1", "HEAD~1")
    out = dsv(a, "push", "--tags", "--envs").stdout
    assert "env production" in out and "v1" in out
    dsv(tmp_path, "clone", url, "b")
    b = tmp_path / "b"
    with Repository.open(b) as repo:
        assert repo.refs.read("refs/remotes/origin/envs/production") == first
        assert repo.refs.read("refs/remotes/origin/envs/staging") == repo.head()
        assert repo.refs.read("refs/tags/v1") == first
    dsv(b, "checkout", "origin/envs/production")
    assert list(Repository.open(b).records("HEAD", "qa.jsonl"))[1]["q"] == "question 1"
    # The clone knows the remote's environments by their names (issue 21).
    assert dsv(b, "env", "list").stdout == (
        f"origin/production  {first.hex()[:12]}  (remote)\n"
        f"origin/staging     {Repository.open(a).head().hex()[:12]}  (remote)\n"
    )
    assert dsv(b, "checkout", "production").stdout == (
        f"HEAD is now at {first.hex()[:12]} (production: origin/production)\n"
    )
    assert "(HEAD, tag: v1, env: origin/production)" in dsv(b, "log", "--oneline").stdout
    # An environment may move back (a rollback is a deploy); fetch follows it.
    dsv(a, "env", "deploy", "staging", "HEAD~1")
    err = dsv(a, "push", "staging", code=2).stderr
    assert "hint: the remote comes first: dsv push origin staging" in err
    assert "updated" in dsv(a, "push", "origin", "staging").stdout
    assert "envs/staging" in dsv(b, "fetch").stdout
    assert Repository.open(b).refs.read("refs/remotes/origin/envs/staging") == first
    # A tag does not move unless forced.
    dsv(a, "tag", "-d", "v1")
    dsv(a, "tag", "v1", "HEAD")
    err = dsv(a, "push", "--tags", code=5).stderr
    assert "v1 (the remote has this tag at another version)" in err
    dsv(a, "push", "--tags", "--force")
    assert "would clobber existing tag" in dsv(b, "fetch").stdout


def test_remote_commands(tmp_path: Path, url: str) -> None:
    a = new_repo(tmp_path, "a", url)
    assert dsv(a, "remote", "list").stdout == f"origin\t{url}\t(key from $DSV_API_KEY)\n"
    err = dsv(a, "remote", "add", "origin", url, code=2).stderr
    assert "remote 'origin' exists already" in err
    err = dsv(a, "remote", "add", "x", "ftp://host/a/b", code=2).stderr
    assert "invalid remote URL 'ftp://host/a/b'" in err and "hint: use http://HOST:PORT" in err
    dsv(a, "remote", "add", "backup", url, "--key-env", "BACKUP_KEY")
    assert "(key from $BACKUP_KEY)" in dsv(a, "remote", "list").stdout
    dsv(a, "push")
    assert (
        "Removed remote origin (1 remote-tracking ref)"
        in dsv(a, "remote", "remove", "origin").stdout
    )
    assert Repository.open(a).refs.list_refs("refs/remotes/") == []
    err = dsv(a, "push", code=2).stderr
    assert "no remote named 'origin'" in err and "dsv remote add origin" in err
    err = dsv(a, "push", "backup", code=5).stderr
    assert "set BACKUP_KEY to an API key" in err
    assert dsv(a, "push", "backup", "nosuch", code=2).stderr.startswith(
        "error: no branch, tag or environment named 'nosuch'"
    )


def test_clone_of_a_missing_repository_leaves_nothing(tmp_path: Path, url: str) -> None:
    err = dsv(tmp_path, "clone", url, "b", code=5).stderr
    assert "does not exist" in err
    assert not (tmp_path / "b").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    err = dsv(tmp_path, "clone", url, "full", code=2).stderr
    assert "exists and is not an empty directory" in err
    err = dsv(tmp_path, "clone", "http://127.0.0.1:9/a/b", "c", code=5).stderr
    assert "cannot reach" in err and "hint: is 'dsv serve' running there?" in err
    assert not (tmp_path / "c").exists()


def test_library_api_returns_data(tmp_path: Path, url: str) -> None:
    from dsv.remote.client import clone, fetch, push

    a = new_repo(tmp_path, "a", url)
    seen: list[str] = []
    with Repository.open(a) as repo:
        result = push(repo, progress=lambda p: seen.append(p.phase))
    assert [r.status for r in result.refs] == ["new"] and result.packs == 1
    assert result.objects > 1500 and result.bytes_sent > result.objects * 10
    assert "sending" in seen
    cloned = clone(url, tmp_path / "b")
    assert cloned.branch == "main" and cloned.fetch.objects == result.objects
    with Repository.open(tmp_path / "b") as repo:
        again = fetch(repo)
        assert again.objects == 0 and {r.status for r in again.refs} == {"up-to-date"}
        assert maintenance.fsck(repo).ok


def test_a_teammate_joins_from_a_git_project_whose_files_differ(tmp_path: Path, url: str) -> None:
    """README, "dsv in your project repo": init, remote add, pull (--force where git's copy of
    a file differs from dsv's version); a clone inside a git project keeps .dsv out of git."""
    a = new_repo(tmp_path, "a", url, count=20)
    dsv(a, "push")
    mate = tmp_path / "mate"
    mate.mkdir()
    subprocess.run(["git", "-C", str(mate), "init", "-q"], check=True)
    write(mate / "qa.jsonl", [{"id": 0, "q": "an older copy from git"}])
    assert dsv(mate, "init").stdout.endswith("(--no-gitignore to skip)\n")
    dsv(mate, "remote", "add", "origin", url)
    refused = dsv(mate, "pull", code=3).stderr
    assert refused == (
        "error: checkout would overwrite untracked files: qa.jsonl\n"
        "hint: move them away or add and commit them first, or use --force to overwrite them\n"
    )
    dsv(mate, "pull", "--force")
    records = [json.loads(line) for line in (mate / "qa.jsonl").read_text().splitlines()]
    assert records == [json.loads(line) for line in (a / "qa.jsonl").read_text().splitlines()]
    assert dsv(mate, "status", "--porcelain").stdout == ""
    # A clone into a directory of a git project: git sees the datasets, never .dsv.
    out = dsv(mate, "clone", url, "evals").stdout
    assert f"Added /.dsv/ to {mate / 'evals' / '.gitignore'} (--no-gitignore to skip)\n" in out
    seen = subprocess.run(
        ["git", "-C", str(mate), "status", "--porcelain", "--untracked-files=all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert sorted(seen) == [
        "?? .gitignore",
        "?? evals/.gitignore",
        "?? evals/qa.jsonl",
        "?? qa.jsonl",
    ]


def test_a_url_where_a_remote_name_goes_gets_a_hint_that_names_it(tmp_path: Path, url: str) -> None:
    a = new_repo(tmp_path, "a", url, count=3)
    assert dsv(a, "push", url, code=2).stderr == (
        f"error: no remote named {url!r}\n"
        f"hint: name it first: 'dsv remote add NAME {url}', then use NAME\n"
    )


def test_pull_merges_diverged_branches_and_the_push_then_goes_through(
    tmp_path: Path, url: str
) -> None:
    a = new_repo(tmp_path, "a", url, count=50)
    dsv(a, "push")
    dsv(tmp_path, "clone", url, "b")
    b = tmp_path / "b"

    def change(root: Path, i: int, text: str) -> None:
        path = root / "qa.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        rows[i]["q"] = text
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        dsv(root, "commit", "-a", "-m", text)

    change(a, 5, "from a")
    dsv(a, "push")
    change(b, 7, "from b")
    assert "non-fast-forward" in dsv(b, "push", code=5).stderr
    out = dsv(b, "pull").stdout
    merged = Repository.open(b).head()
    assert merged is not None
    assert out.endswith(f"Merged origin/main into main: {merged.hex()[:12]}\n")
    assert len(Repository.open(b).read_commit(merged).parents) == 2
    dsv(b, "push")
    dsv(a, "pull")
    rows = [json.loads(line) for line in (a / "qa.jsonl").read_text().splitlines()]
    assert (rows[5]["q"], rows[7]["q"]) == ("from a", "from b")
