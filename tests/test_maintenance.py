"""fsck and gc over a real repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsv import maintenance
from dsv.notebook import Repository


def _packed_repo(tmp_path: Path, *, key: tuple[str, ...] | None = None) -> Repository:
    """A repository of one commit of 300 datapoints: one pack."""
    repo = Repository.init(tmp_path)
    lines = "".join(json.dumps({"id": i, "q": "x" * i}) + "\n" for i in range(300))
    (tmp_path / "qa.jsonl").write_text(lines)
    repo.add(["qa.jsonl"], key=key)
    repo.commit("v1")
    return repo


def test_gc_drops_a_pack_file_whose_index_is_gone(tmp_path: Path) -> None:
    repo = _packed_repo(tmp_path, key=("id",))
    pack_dir = repo.store.pack_dir
    [kept] = [p for p in pack_dir.glob("pack-*.pack")]
    # What a removal killed between its two unlinks leaves: data without an index.
    orphan = pack_dir / f"pack-{'ab' * 32}.pack"
    orphan.write_bytes(kept.read_bytes())
    maintenance.gc(repo)
    assert not orphan.exists()
    assert maintenance.fsck(repo).ok
    assert [r["id"] for r in repo.records("HEAD", "qa.jsonl")] == list(range(300))


def test_fsck_checks_the_checksums_of_packs_and_their_indexes(tmp_path: Path) -> None:
    import os

    repo = _packed_repo(tmp_path)
    assert maintenance.fsck(repo).ok
    [pack] = repo.store.packs
    name = pack.name
    repo.close()
    for path, at, problem in [
        # The header's reserved field: no object read ever looks at it.
        (pack.pack_path, 12, "pack checksum mismatch"),
        # A byte of the index's fanout table: only its checksum tells.
        (pack.idx_path, 30, "index checksum mismatch"),
    ]:
        good = path.read_bytes()
        os.chmod(path, 0o644)
        path.write_bytes(good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :])
        damaged = Repository.open(tmp_path)
        report = maintenance.fsck(damaged)
        damaged.close()
        assert report.corrupt[:1] == [f"pack {name}: {problem}"]
        path.write_bytes(good)
    assert maintenance.fsck(Repository.open(tmp_path)).ok


def test_fsck_reports_an_index_it_cannot_open(tmp_path: Path) -> None:
    import os

    repo = _packed_repo(tmp_path)
    [pack] = repo.store.packs
    repo.close()
    os.chmod(pack.idx_path, 0o644)
    pack.idx_path.write_bytes(pack.idx_path.read_bytes()[:-1])
    report = maintenance.fsck(Repository.open(tmp_path))
    assert report.corrupt == [f"pack index {pack.name}.idx has the wrong size"]
    assert not report.ok


def test_gc_recompresses_denser_with_a_dictionary_of_the_datapoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from dsv import pack as pack_module

    # Small blocks, so that 3,000 datapoints fill the 8 a dictionary needs.
    monkeypatch.setattr(pack_module, "BLOCK_SIZE", 64 << 10)
    monkeypatch.setattr(pack_module, "DICTIONARY_SIZE", 16 << 10)
    monkeypatch.setattr(pack_module, "FRAME_SIZE", 4096)
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "river", "city", "model", "answer", "token"]
    records = [
        {"id": i, "q": " ".join(rng.choices(words, k=40)), "a": " ".join(rng.choices(words, k=20))}
        for i in range(3000)
    ]
    repo = Repository.init(tmp_path)
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    repo.add(["qa.jsonl"], key=("id",))
    repo.commit("v1")
    monkeypatch.setattr(maintenance, "GC_LEVEL", 3)
    as_added = maintenance.gc(repo).bytes_after
    monkeypatch.setattr(maintenance, "GC_LEVEL", 15)
    report = maintenance.gc(repo)
    assert report.bytes_after is not None and as_added is not None
    assert report.bytes_after < as_added
    # The pages come first in gc's pack, so its dictionary is learnt from samples of the
    # datapoints, not from its first block.
    [pack] = repo.store.packs
    assert pack.dictionaries == 1
    assert maintenance.fsck(repo).ok
    assert list(repo.records("HEAD", "qa.jsonl")) == records


def test_fsck_finds_a_pack_whose_index_gives_an_id_another_objects_body(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dsv.cli import main
    from dsv.objects import Kind
    from dsv.pack import PackWriter

    repo = _packed_repo(tmp_path)
    [pack] = repo.store.packs
    entries = [(pack.oid_at(i), *pack.read_at(i)) for i in range(pack.count)]
    a, b = [n for n, (_, kind, _) in enumerate(entries) if kind == Kind.DATAPOINT][:2]
    # The same objects, but the entries of ids a and b hold each other's body: every
    # checksum (frames, pack, index) is computed over the lie, so each one holds.
    writer = PackWriter(repo.store.pack_dir)
    for n, (oid, kind, _) in enumerate(entries):
        writer.add(kind, oid, entries[{a: b, b: a}.get(n, n)][2])
    writer.finish()
    repo.store.remove_pack(pack.name)
    repo.close()
    repo = Repository.open(tmp_path)
    [lying] = repo.store.packs
    assert lying.verify() is None
    # A bulk read trusts the pack (docs/format.md §4, trust): the records come back swapped.
    ids = [r["id"] for r in repo.records("HEAD", "qa.jsonl")]
    assert sorted(ids) == list(range(300)) and ids != list(range(300))
    report = maintenance.fsck(repo)
    repo.close()
    bad = sorted(f"datapoint {entries[n][0].hex()}" for n in (a, b))
    assert sorted(report.corrupt) == bad and not report.missing
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "fsck"])
    assert result.exit_code == 1
    assert sorted(result.stdout.splitlines()[:2]) == [f"corrupt {line}" for line in bad]
    assert result.stdout.splitlines()[2].endswith(": PROBLEMS FOUND")
    # One object read alone is always re-hashed.
    oid = entries[a][0].hex()
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "cat-object", oid])
    assert result.exit_code == 4
    assert result.stderr.startswith(f"error: corrupt object {oid}: content does not match its id")
