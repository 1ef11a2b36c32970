"""`dsv gc --root`: a server root's repositories compacted, nothing a push needs removed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from benchmarks.push import Server
from dsv.canonical import canonicalize
from dsv.cli import main
from dsv.objects import Kind, hash_object
from dsv.pack import PackWriter
from dsv.server.storage.local import LocalBlobStore
from dsv.server.storage.sqlite import SqliteMetaStore


def _dsv(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, (
        f"dsv {' '.join(args)} exited {result.exit_code}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    return result


def _in_flight(root: Path, repo: str, packs: int, tag: str) -> list[bytes]:
    """Packs of a push whose ref has not moved yet: stored, reached by no ref."""
    meta = SqliteMetaStore(root / "meta.sqlite3")
    blobs = LocalBlobStore(root)
    oids = []
    try:
        meta.create_repo(repo)
        for n in range(packs):
            staging = root / "staging"
            staging.mkdir(exist_ok=True)
            writer = PackWriter(staging)
            for i in range(20):
                body = canonicalize(f'{{"i": {i}, "pack": {n}, "t": "{tag}"}}'.encode())
                oids.append(hash_object(Kind.DATAPOINT, body))
                writer.add(Kind.DATAPOINT, oids[-1], body)
            prepared = writer.prepare()
            assert prepared is not None
            blobs.put_pack(repo, prepared)
    finally:
        blobs.close()
        meta.close()
    return oids


def _pack_count(root: Path, repo: str) -> int:
    return len(list((root / "repos" / repo / "objects" / "pack").glob("*.idx")))


def test_gc_root_merges_each_repository_into_one_pack_and_keeps_unreached_objects(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    evals = _in_flight(root, "acme/evals", 5, "evals")
    other = _in_flight(root, "acme/other", 2, "other")
    dry = _dsv("gc", "--root", str(root), "--dry-run").stdout
    assert re.fullmatch(
        r"acme/evals: would write 5 packs anew \(\d+ bytes now\)\n"
        r"acme/other: would write 2 packs anew \(\d+ bytes now\)\n",
        dry,
    )
    assert _pack_count(root, "acme/evals") == 5
    done = _dsv("gc", "--root", str(root)).stdout
    assert re.fullmatch(
        r"acme/evals: 5 packs -> 1; \d+ -> \d+ bytes\nacme/other: 2 packs -> 1; \d+ -> \d+ bytes\n",
        done,
    )
    assert (_pack_count(root, "acme/evals"), _pack_count(root, "acme/other")) == (1, 1)
    # Datapoints only: one pack. No ref reaches them (a push in flight): still there, every one.
    blobs = LocalBlobStore(root)
    try:
        assert blobs.missing("acme/evals", evals) == set()
        assert blobs.missing("acme/other", other) == set()
        assert len(blobs.read("acme/evals", Kind.DATAPOINT, evals)) == len(evals)
    finally:
        blobs.close()
    assert _dsv("gc", "--root", str(root), "-q").stdout == ""


def test_gc_root_refuses_what_is_not_a_server_root(tmp_path: Path) -> None:
    result = _dsv("gc", "--root", str(tmp_path), code=2)
    assert result.stderr == (
        f"error: {tmp_path} is not the root of a dsv server (it has no meta.sqlite3)\n"
        "hint: give the --root of 'dsv serve'; a server on S3 compacts its packs itself\n"
    )
    assert not (tmp_path / "meta.sqlite3").exists()
    missing = tmp_path / "nowhere"
    assert _dsv("gc", "--root", str(missing), code=2).stderr.startswith(
        f"error: {missing}: no such directory\n"
    )


def test_gc_root_while_the_server_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: tuple[Server, str]
) -> None:
    running, key = server
    monkeypatch.setenv("DSV_API_KEY", key)
    url = f"{running.url}/gc/served"
    work = tmp_path / "work"
    work.mkdir()
    _dsv("-C", str(work), "init")
    _dsv("-C", str(work), "remote", "add", "origin", url)
    for version in range(3):
        lines = "".join(f'{{"id":{i},"v":{version}}}\n' for i in range(200))
        (work / "qa.jsonl").write_text(lines)
        _dsv("-C", str(work), "add", "qa.jsonl")
        _dsv("-C", str(work), "commit", "-m", f"v{version}")
        _dsv("-C", str(work), "push", "origin", "main")
    in_flight = _in_flight(running.root, "gc/served", 2, "late")
    assert _pack_count(running.root, "gc/served") >= 3
    _dsv("gc", "--root", str(running.root))
    assert _pack_count(running.root, "gc/served") == 2  # datapoints, and the rest
    # The server reads through the merge it did not make; the push's packs are all there.
    _dsv("-C", str(tmp_path), "clone", url, "copy")
    assert (tmp_path / "copy" / "qa.jsonl").read_text() == (work / "qa.jsonl").read_text()
    assert _dsv("-C", str(tmp_path / "copy"), "fsck").stdout.endswith(": ok\n")
    blobs = LocalBlobStore(running.root)
    try:
        assert blobs.missing("gc/served", in_flight) == set()
    finally:
        blobs.close()
