"""The dataset path rule (dsv/paths.py, docs/format.md §3) and everywhere it is enforced: `dsv add`,
checkout, fsck, a server receiving a push, and a client cloning, fetching or pulling from a
hostile server (a real `dsv serve` whose storage was filled by hand)."""

from __future__ import annotations

import json
import shutil
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from benchmarks.push import Server
from dsv.cli import main
from dsv.notebook import Repository
from dsv.objects import Commit, Kind, Tree, TreeEntry, encode_object
from dsv.paths import (
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    BadPath,
    check_dataset_path,
    check_tree_paths,
    shown_path,
)
from dsv.protocol import encode_pack
from dsv.refs import MISSING
from dsv.server.keys import create_key
from dsv.server.storage import RefChange
from dsv.server.storage.sqlite import SqliteMetaStore
from dsv.store import ObjectStore
from dsv.worktree import write_file

GOOD = [
    "qa.jsonl",
    "a/b/c.csv",
    "x",
    "..a.jsonl",  # only a whole segment '..' is special
    "a..b/c.jsonl",
    ".hidden/x.jsonl",
    ".dsvx/a.jsonl",  # not .dsv
    "dsv/a.jsonl",
    "a .jsonl",
    "ünïcødé/日本.jsonl",
    "n" * MAX_SEGMENT_BYTES,
    "/".join(["n" * 200] * 20)[: MAX_PATH_BYTES - 1],
]

# (path, why): every example of issue 20 and the rest of the rule.
BAD = [
    ("", "it is empty"),
    ("../../x.jsonl", "it has a '..' segment"),
    ("a/../../x.jsonl", "it has a '..' segment"),
    ("a/..", "it has a '..' segment"),
    ("/abs/path.jsonl", "it is absolute"),
    ("a/./b", "it has a '.' segment"),
    ("./a", "it has a '.' segment"),
    ("sub//x", "it has an empty segment"),
    ("sub/", "it has an empty segment"),
    (".dsv/HEAD", "its segment '.dsv' names .dsv, which dsv manages itself"),
    (".dsv", "its segment '.dsv' names .dsv, which dsv manages itself"),
    (".DSV/config", "its segment '.DSV' names .dsv, which dsv manages itself"),
    ("deep/er/.Dsv/x.jsonl", "its segment '.Dsv' names .dsv, which dsv manages itself"),
    (".dsv./x", "its segment '.dsv.' names .dsv, which dsv manages itself"),
    (".ds\u200cv/x", "its segment '.ds\\u200cv' names .dsv, which dsv manages itself"),
    (".d\u017fv/x", "its segment '.d\u017fv' names .dsv, which dsv manages itself"),
    ("a\\b.jsonl", "it contains '\\'"),
    ("..\\x.jsonl", "it contains '\\'"),
    ("nul\x00.jsonl", "it contains a control character"),
    ("line\nbreak.jsonl", "it contains a control character"),
    ("esc\x1b[31m.jsonl", "it contains a control character"),
    ("del\x7f.jsonl", "it contains a control character"),
    ("c1\x9b.jsonl", "it contains a control character"),
    ("n" * (MAX_SEGMENT_BYTES + 1), f"a segment is longer than {MAX_SEGMENT_BYTES} UTF-8 bytes"),
    ("é" * 128, f"a segment is longer than {MAX_SEGMENT_BYTES} UTF-8 bytes"),  # 256 bytes
    ("a/" * 2048 + "b", f"it is longer than {MAX_PATH_BYTES} UTF-8 bytes"),
    ("lone\udc80.jsonl", "it is not valid UTF-8"),
]


@pytest.mark.parametrize("path", GOOD)
def test_valid_dataset_paths_pass_unchanged(path: str) -> None:
    assert check_dataset_path(path) == path


@pytest.mark.parametrize(("path", "why"), BAD, ids=[repr(p)[:40] for p, _ in BAD])
def test_invalid_dataset_paths_are_refused_with_a_one_line_reason(path: str, why: str) -> None:
    with pytest.raises(BadPath) as caught:
        check_dataset_path(path)
    assert caught.value.reason == why
    assert caught.value.message == f"invalid dataset path {shown_path(path)}: {why}"
    assert "\n" not in caught.value.message and caught.value.exit_code == 2


def test_a_huge_path_is_quoted_cut_short() -> None:
    with pytest.raises(BadPath) as caught:
        check_dataset_path("x" * 100_000)
    assert caught.value.message == (
        f"invalid dataset path {'x' * 100!r}… (100000 characters): it is longer than 4096 "
        "UTF-8 bytes"
    )


def test_no_unicode_normalisation_nfc_and_nfd_are_two_valid_paths() -> None:
    nfc = unicodedata.normalize("NFC", "café.jsonl")
    nfd = unicodedata.normalize("NFD", "café.jsonl")
    assert nfc != nfd
    assert check_dataset_path(nfc) == nfc and check_dataset_path(nfd) == nfd
    check_tree_paths(sorted([nfc, nfd], key=str.encode))


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["a", "a/b"],
         "invalid dataset path 'a/b': 'a' is a dataset, so it cannot be a folder too"),
        (
            ["a.jsonl", "a.jsonl/x/y.jsonl", "b"],
            "invalid dataset path 'a.jsonl/x/y.jsonl': 'a.jsonl' is a dataset, so it cannot be "
            "a folder too",
        ),
        (["b", "a"], "invalid dataset path 'a': it comes after 'b' (a tree's paths are sorted "
         "by UTF-8 bytes)"),
        (["a", "a"], "invalid dataset path 'a': the tree lists it twice"),
        (["ok", "../x"], "invalid dataset path '../x': it has a '..' segment"),
    ],
)  # fmt: skip
def test_a_tree_refuses_clashes_disorder_and_any_bad_path(paths: list[str], message: str) -> None:
    with pytest.raises(BadPath) as caught:
        check_tree_paths(paths)
    assert caught.value.message == message


def test_a_tree_of_files_beside_folders_is_fine() -> None:
    check_tree_paths(["a/b", "a/c/d", "ab", "b.jsonl"])


# -- local: dsv add, checkout, fsck -----------------------------------------------------------


def run(root: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["-C", str(root), *args])
    assert result.exit_code == code, (
        f"dsv {' '.join(args)} exited {result.exit_code}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    return result


def files_under(top: Path) -> list[str]:
    return sorted(p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file())


def good_repo(root: Path) -> bytes:
    """A repository with `good.jsonl` committed on main; returns that commit."""
    run(root.parent, "init", root.name)
    (root / "good.jsonl").write_text('{"id":1}\n{"id":2}\n')
    run(root, "add", "good.jsonl")
    run(root, "commit", "-m", "good")
    with Repository.open(root) as repo:
        head = repo.head()
    assert head is not None
    return head


def hostile_commit(store: ObjectStore, parent: bytes, paths: list[str]) -> tuple[bytes, bytes]:
    """A tree naming `parent`'s dataset at each of `paths` (sorted, so that only the path rule
    can refuse it), and a commit of it on `parent`: (commit, tree)."""
    _, body = store.read(parent, Kind.COMMIT)
    from dsv.objects import decode_commit, decode_tree

    tree = decode_tree(store.read(decode_commit(body).tree, Kind.TREE)[1])
    dataset = tree.entries[0].dataset
    entries = tuple(TreeEntry(p, dataset) for p in sorted(set(paths), key=str.encode))
    with store.writer() as writer:
        tree_oid = writer.write(Kind.TREE, encode_object(Tree(entries)))
        commit = Commit(tree_oid, (parent,), "Mallory <m@example.com>", 1, 0, "evil\n")
        oid = writer.write(Kind.COMMIT, encode_object(commit))
    return oid, tree_oid


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a\\b.jsonl", "invalid dataset path 'a\\\\b.jsonl': it contains '\\'"),
        ("sub/.DSV/x.jsonl", "invalid dataset path 'sub/.DSV/x.jsonl': its segment '.DSV' names "
         ".dsv, which dsv manages itself"),
        ("c1\x85.jsonl", "invalid dataset path 'c1\\x85.jsonl': it contains a control character"),
    ],
)  # fmt: skip
def test_add_refuses_what_a_server_refuses(tmp_path: Path, name: str, message: str) -> None:
    good_repo(tmp_path / "r")
    target = tmp_path / "r" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text('{"id": 1}\n')
    assert run(tmp_path / "r", "add", name, code=2).stderr == f"error: {message}\n"
    # A directory holding such a file is refused too, not added without it.
    if "/" not in name:
        assert run(tmp_path / "r", "add", ".", code=2).stderr == f"error: {message}\n"
    # Nothing staged: status shows at most the file as untracked.
    staged = run(tmp_path / "r", "status", "--porcelain").stdout.splitlines()
    assert all(line.startswith("?? ") for line in staged), staged


def test_checkout_of_a_hostile_version_writes_nothing_and_fsck_reports_it(tmp_path: Path) -> None:
    root = tmp_path / "box" / "r"
    root.parent.mkdir()
    head = good_repo(root)
    escape = str(tmp_path / "abs.jsonl")
    with Repository.open(root) as repo:
        evil, tree = hostile_commit(repo.store, head, ["../escape.jsonl", escape, "ok.jsonl"])
        repo.refs.update("refs/heads/evil", evil, expected=MISSING, user="t", reason="test")
    before = files_under(tmp_path)
    hint = "hint: no correct dsv writes such a version; 'dsv fsck' lists every one\n"
    expected = (
        "error: evil cannot be checked out: invalid dataset path '../escape.jsonl': it has a "
        "'..' segment\n" + hint
    )
    assert run(root, "checkout", "evil", code=4).stderr == expected
    assert run(root, "checkout", "--force", "evil", code=4).stderr == expected
    assert run(root, "checkout", "evil", "--", "ok.jsonl", code=4).stderr == expected
    assert files_under(tmp_path) == before
    # Still usable, still on main.
    assert run(root, "status", "--porcelain").stdout == ""
    assert run(root, "branch").stdout == f"  evil  {evil.hex()[:12]}\n* main  {head.hex()[:12]}\n"
    fsck = run(root, "fsck", code=1).stdout
    assert f"corrupt tree {tree.hex()}: invalid dataset path '../escape.jsonl'" in fsck
    assert fsck.endswith("PROBLEMS FOUND\n")
    # Defence in depth: the one function that writes a working file checks on its own too.
    with Repository.open(root) as repo, pytest.raises(BadPath):
        write_file(repo, "../escape.jsonl", repo.tree_of(head)["good.jsonl"])
    assert files_under(tmp_path) == before


def test_fsck_reports_a_file_folder_clash(tmp_path: Path) -> None:
    root = tmp_path / "r"
    head = good_repo(root)
    with Repository.open(root) as repo:
        evil, tree = hostile_commit(repo.store, head, ["a.jsonl", "a.jsonl/b.jsonl"])
        repo.refs.update("refs/heads/evil", evil, expected=MISSING, user="t", reason="test")
    assert run(root, "fsck", code=1).stdout.splitlines()[0] == (
        f"corrupt tree {tree.hex()}: invalid dataset path 'a.jsonl/b.jsonl': 'a.jsonl' is a "
        "dataset, so it cannot be a folder too"
    )
    assert "'a.jsonl' is a dataset" in run(root, "checkout", "evil", code=4).stderr


def test_mv_renames_a_name_an_earlier_dsv_let_in(tmp_path: Path) -> None:
    """An index may hold a name from before the rule was complete: commit refuses it, and
    `dsv mv` (which takes a tracked name as it is) is the way out."""
    root = tmp_path / "r"
    good_repo(root)
    from dsv.index import Entry, read_index

    with Repository.open(root) as repo:
        index = read_index(repo.index_path)
        index["a\\b.jsonl"] = Entry("a\\b.jsonl", index["good.jsonl"].dataset)
        repo.write_index(index)
    (root / "a\\b.jsonl").write_text('{"id":1}\n{"id":2}\n')
    err = run(root, "commit", "-m", "x", code=2).stderr
    assert err == (
        "error: invalid dataset path 'a\\\\b.jsonl': it contains '\\'\n"
        "hint: rename it with 'dsv mv', or untrack it with 'dsv rm'\n"
    )
    assert run(root, "mv", "a\\b.jsonl", "a_b.jsonl").stdout == "mv a\\b.jsonl -> a_b.jsonl\n"
    run(root, "commit", "-m", "renamed")
    run(root, "fsck")


# -- remote: a server refuses a hostile push; a client refuses a hostile server -----------------


HOSTILE = {
    "dotdot": ["../../x.jsonl"],
    "absolute": ["{sandbox}/abs.jsonl"],
    "dsv-head": [".dsv/HEAD"],
    "empty": [""],
    "dot": ["a/./b.jsonl"],
    "double-slash": ["sub//x.jsonl"],
    "control": ["ctl\x1b.jsonl"],
    "nul": ["nul\x00.jsonl"],
    "dsv-case": ["deep/.DSV/config"],
    "clash": ["a.jsonl", "a.jsonl/b.jsonl"],
}


class Hostile:
    """A real `dsv serve` whose storage holds, besides `evil/good`, one repository per case
    of HOSTILE: main is a commit on good's whose tree names that path."""

    def __init__(self, server: Server, read_key: str, write_key: str, sandbox: Path) -> None:
        self.server = server
        self.read_key = read_key
        self.write_key = write_key
        self.sandbox = sandbox
        self.commits: dict[str, bytes] = {}
        self.trees: dict[str, bytes] = {}

    def url(self, name: str) -> str:
        return f"{self.server.url}/evil/{name}"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("hostile") / "root"
    sandbox = tmp_path_factory.mktemp("sandbox")
    work = tmp_path_factory.mktemp("source")
    good = good_repo(work / "good")
    root.mkdir()
    meta = SqliteMetaStore(root / "meta.sqlite3")
    _, read_key = create_key(meta, "read")
    _, write_key = create_key(meta, "write")
    found = Hostile(Server(root), read_key, write_key, sandbox)
    for name in ["good", *HOSTILE]:
        objects = root / "repos" / "evil" / name / "objects"
        # The server's blob layout is a repository's object store (format.md §4).
        shutil.copytree(work / "good" / ".dsv" / "objects", objects)
        tip = good
        if name != "good":
            store = ObjectStore(objects)
            paths = [p.format(sandbox=sandbox) for p in HOSTILE[name]]
            tip, found.trees[name] = hostile_commit(store, good, paths)
            store.close()
        found.commits[name] = tip
        meta.create_repo(f"evil/{name}")
        change = RefChange("refs/heads/main", None, tip)
        meta.update_refs(f"evil/{name}", [change], user="m", reason="prefill", head=change.name)
    meta.close()
    with found.server:
        yield found


@pytest.fixture
def reader(hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> Hostile:
    monkeypatch.setenv("DSV_API_KEY", hostile.read_key)
    return hostile


@pytest.mark.parametrize("case", list(HOSTILE))
def test_clone_refuses_a_hostile_tree_and_writes_nothing(
    reader: Hostile, tmp_path: Path, case: str
) -> None:
    outer = tmp_path / "outer"
    (outer / "inner").mkdir(parents=True)
    before = files_under(tmp_path), files_under(reader.sandbox)
    result = run(outer / "inner", "clone", reader.url(case), "copy", code=5)
    tree = reader.trees[case].hex()
    with pytest.raises(BadPath) as why:  # its message is pinned by the table tests above
        check_tree_paths(
            sorted((p.format(sandbox=reader.sandbox) for p in HOSTILE[case]), key=str.encode)
        )
    assert result.stderr == (
        f"Cloning into 'copy'...\n"
        f"error: origin sent a tree that dsv refuses: corrupt object {tree}: {why.value.message}\n"
        "hint: the remote holds a version no correct dsv writes; nothing was written here\n"
    )
    assert "Traceback" not in result.output
    assert (files_under(tmp_path), files_under(reader.sandbox)) == before
    assert not (outer / "inner" / "copy").exists()
    # The next clone, into the very same place, is unharmed.
    run(outer / "inner", "clone", reader.url("good"), "copy")
    copy = outer / "inner" / "copy"
    assert (copy / "good.jsonl").read_text() == '{"id":1}\n{"id":2}\n'
    assert run(copy, "status", "--porcelain").stdout == ""
    run(copy, "fsck")


def test_fetch_and_pull_refuse_a_hostile_tree_and_leave_the_repository_as_it_was(
    reader: Hostile, tmp_path: Path
) -> None:
    run(tmp_path, "clone", reader.url("good"), "copy")
    copy = tmp_path / "copy"
    run(copy, "remote", "add", "evil", reader.url("dotdot"))
    before = files_under(tmp_path), json.loads(run(copy, "log", "--json").stdout)
    tree = reader.trees["dotdot"].hex()
    expected = (
        f"error: evil sent a tree that dsv refuses: corrupt object {tree}: invalid dataset "
        "path '../../x.jsonl': it has a '..' segment\n"
        "hint: the remote holds a version no correct dsv writes; nothing was written here\n"
    )
    assert run(copy, "fetch", "evil", code=5).stderr == expected
    assert run(copy, "pull", "evil", code=5).stderr == expected
    # No object stored, no ref moved, no file written anywhere.
    assert (files_under(tmp_path), json.loads(run(copy, "log", "--json").stdout)) == before
    with Repository.open(copy) as repo:
        assert [n for n, _ in repo.refs.list_refs("refs/remotes/evil/")] == []
    assert run(copy, "status", "--porcelain").stdout == ""
    run(copy, "fsck")
    run(copy, "fetch")  # the honest remote still works


def test_a_server_refuses_a_hostile_pack_with_422_and_stores_nothing(
    hostile: Hostile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSV_API_KEY", hostile.write_key)
    root = tmp_path / "r"
    head = good_repo(root)
    run(root, "remote", "add", "origin", hostile.url("pushed"))
    run(root, "push")
    stored = hostile.server.root / "repos" / "evil" / "pushed"
    before = files_under(stored)
    with Repository.open(root) as repo:
        evil, tree = hostile_commit(repo.store, head, [".dsv/HEAD", "good.jsonl"])
        repo.refs.update("refs/heads/main", evil, expected=head, user="t", reason="test")
        bodies = [
            (k, repo.store.read(o, k)[1]) for k, o in ((Kind.TREE, tree), (Kind.COMMIT, evil))
        ]
    result = run(root, "push", code=5)
    assert f"corrupt object {tree.hex()}: invalid dataset path '.dsv/HEAD'" in result.stderr
    assert files_under(stored) == before
    # The same pack by hand: 422 with the dsv error body; then the ref cannot move to it.
    auth = {"Authorization": f"Bearer {hostile.write_key}"}
    base = f"{hostile.server.url}/v1/evil/pushed"
    reply = httpx.post(
        f"{base}/packs",
        content=b"".join(encode_pack(bodies)),
        headers={**auth, "Content-Type": "application/x-dsv-pack"},
    )
    assert reply.status_code == 422
    assert reply.json()["error"]["code"] == "corrupt"
    assert reply.json()["error"]["message"] == (
        f"corrupt object {tree.hex()}: invalid dataset path '.dsv/HEAD': its segment '.dsv' "
        "names .dsv, which dsv manages itself"
    )
    update = {"name": "refs/heads/main", "old": head.hex(), "new": evil.hex()}
    reply = httpx.post(f"{base}/refs", json={"updates": [update]}, headers=auth)
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "missing_objects")
    assert files_under(stored) == before
    run(tmp_path, "clone", hostile.url("pushed"), "again")
    # Still the good version only: main did not move.
    with Repository.open(tmp_path / "again") as clone:
        assert clone.head() == head and [e.oid for e in clone.log()] == [head]


def test_a_server_moves_no_ref_to_a_hostile_tree_it_already_holds(hostile: Hostile) -> None:
    """A store may hold a tree from before the rule: the ref still cannot move to it."""
    auth = {"Authorization": f"Bearer {hostile.write_key}"}
    update = {"name": "refs/heads/evil", "old": None, "new": hostile.commits["dsv-case"].hex()}
    reply = httpx.post(
        f"{hostile.server.url}/v1/evil/dsv-case/refs", json={"updates": [update]}, headers=auth
    )
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["message"] == (
        f"version {hostile.commits['dsv-case'].hex()[:12]} cannot be pushed: invalid dataset "
        "path 'deep/.DSV/config': its segment '.DSV' names .dsv, which dsv manages itself"
    )
    info = httpx.get(f"{hostile.server.url}/v1/evil/dsv-case/info", headers=auth).json()
    assert info["refs"] == {"refs/heads/main": hostile.commits["dsv-case"].hex()}
