"""Parallel JSONL ingest: the same ids as one-at-a-time canonicalisation, errors with lines."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsv import ingest, ops
from dsv.canonical import encode_canonical
from dsv.errors import BadInput
from dsv.notebook import Repository
from dsv.objects import Kind, hash_object, split_oids


def _expected(records: list[dict[str, object]]) -> bytes:
    return b"".join(hash_object(Kind.DATAPOINT, encode_canonical(r)) for r in records)


def test_lines_longer_than_a_read_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "_READ", 64)
    records = [{"id": i, "text": "x" * (10 + 50 * (i % 5))} for i in range(40)]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = ingest.ingest_jsonl(path, "long.jsonl", None)
    assert result.oids == _expected(records)


def test_parallel_workers_agree_and_number_lines_across_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(ingest, "_workers", lambda: 2)
    records = [{"id": i, "q": f"question {i}"} for i in range(3000)]
    path = tmp_path / "qa.jsonl"
    lines = [json.dumps(r) for r in records]
    path.write_text("\r\n".join(lines) + "\r\n\n")
    result = ingest.ingest_jsonl(path, "qa.jsonl", None)
    assert result.oids == _expected(records)
    # A bad line in the second worker's range is reported with its line in the whole file.
    lines[2500] = '{"id": 2500, "q": }'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInput, match=r"^qa.jsonl:2501:\d+: malformed JSON"):
        ingest.ingest_jsonl(path, "qa.jsonl", None)


def _again(path: Path, before: ingest.IngestResult) -> ingest.IngestResult:
    return ingest.ingest_jsonl(path, path.name, None, cache=before.groups, base=before.oids)


def _write(path: Path, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_recommit_names_as_fresh_only_the_edited_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    # Edits at the file's start and on both sides of the workers' cut: every other id must
    # come from the base's runs, whichever worker found (or parsed) its group.
    monkeypatch.setattr(ingest, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(ingest, "_workers", lambda: workers)
    records: list[dict[str, object]] = [
        {"id": i, "q": "question " + "x" * (i % 9)} for i in range(3000)
    ]
    path = tmp_path / "qa.jsonl"
    _write(path, records)
    first = ingest.ingest_jsonl(path, "qa.jsonl", None)
    cut = ingest._ranges(path, 2)[1][0]
    at_cut = path.read_bytes()[:cut].count(b"\n")
    edited = [0, 1, at_cut - 2, at_cut - 1, at_cut, at_cut + 1, 2999]
    for i in edited:
        records[i] = {"id": i, "edited": "y" * (i % 4)}
    _write(path, records)
    again = _again(path, first)
    assert again.oids == _expected(records)
    assert again.runs is not None
    spans, fresh = again.runs
    assert sorted(split_oids(fresh)) == sorted(split_oids(_expected([records[i] for i in edited])))
    assert sum(length for from_base, _, length in spans if from_base) == 3000 - len(edited)


def test_the_group_cache_parses_only_the_changed_lines(
    tmp_path: Path, parsed_lines: list[int]
) -> None:
    records: list[dict[str, object]] = [{"id": i, "text": "x" * (i % 7)} for i in range(2000)]
    path = tmp_path / "qa.jsonl"
    _write(path, records)
    first = ingest.ingest_jsonl(path, "qa.jsonl", None)
    parsed_lines.clear()
    records[700] = {"id": 700, "edited": True}
    del records[1500]
    records.insert(0, {"id": -1})
    _write(path, records)
    second = _again(path, first)
    assert second.oids == _expected(records)
    # Of the lines in the groups around the three changes, only the two new ones are parsed:
    # the others are known by their line keys.
    assert sum(parsed_lines) == 2
    assert second.runs is not None
    runs, fresh = second.runs
    assert sum(length for _, _, length in runs) == 2000
    assert len(fresh) // 32 < 2 * ingest.GROUP_MAX
    parsed_lines.clear()
    assert _again(path, second).oids == second.oids
    assert sum(parsed_lines) == 0


def test_only_new_datapoints_are_stored_with_or_without_a_cache(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo")
    records: list[dict[str, object]] = [{"id": i, "text": "x" * (i % 7)} for i in range(3000)]
    path = tmp_path / "qa.jsonl"
    _write(path, records)
    with repo.store.writer() as writer:
        first = ingest.ingest_jsonl(path, "qa.jsonl", writer)
    assert first.stored == 3000
    records[10] = {"id": 10, "edited": True}
    records[2000] = {"id": 2000, "edited": True}
    _write(path, records)
    with repo.store.writer() as writer:
        cached = ingest.ingest_jsonl(path, "qa.jsonl", writer, cache=first.groups, base=first.oids)
        assert cached.stored == 2
    records[20] = {"id": 20, "edited": True}
    _write(path, records)
    with repo.store.writer() as writer:
        # No cache (lost, or of an older layout): every line is parsed, none stored twice.
        uncached = ingest.ingest_jsonl(path, "qa.jsonl", writer, base=cached.oids)
        assert uncached.stored == 1
    assert uncached.oids == _expected(records)


def test_groups_longer_than_a_read_are_not_read_again_and_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No line ends a group by its length, so groups of 32 long lines span many reads.
    monkeypatch.setattr(ingest, "_READ", 4096)
    records = [{"id": f"{i:04d}", "doc": "x" * 2001} for i in range(200)]
    assert all(len(json.dumps(r)) % ingest.GROUP_MODULUS for r in records)
    path = tmp_path / "long.jsonl"
    _write(path, records)
    first = ingest.ingest_jsonl(path, "long.jsonl", None)
    real = os.pread
    read: list[int] = []

    def counting(fd: int, n: int, offset: int) -> bytes:
        data = real(fd, n, offset)
        read.append(len(data))
        return data

    monkeypatch.setattr(os, "pread", counting)
    again = ingest.ingest_jsonl(path, "long.jsonl", None, cache=first.groups, base=first.oids)
    assert again.oids == first.oids
    assert sum(read) < 4 * path.stat().st_size


def test_a_recommit_without_a_cache_still_reuses_the_base_pages(tmp_path: Path) -> None:
    # As after a checkout, a clone or a lost cache: the manifest finds the shared runs itself.
    repo = Repository.init(tmp_path)
    records: list[dict[str, object]] = [{"id": i, "t": "x" * (i % 5)} for i in range(5000)]
    _write(tmp_path / "qa.jsonl", records)
    repo.add(["qa.jsonl"])
    repo.commit("v1")
    shutil.rmtree(repo.dsv_dir / "cache")
    records[2500] = {"id": 2500, "edited": True}
    _write(tmp_path / "qa.jsonl", records)
    repo.commit("v2", all=True)
    old, new = (
        repo.read_dataset(repo.tree_of(repo.resolve(r))["qa.jsonl"]) for r in ("HEAD~1", "HEAD")
    )
    old_pages = {s.page for s in old.slices}
    fresh = sum(s.stop - s.start for s in new.slices if s.page not in old_pages)
    assert fresh < 1000  # about one page around the edit, not the whole list
    assert repo.read_oid_list(new) == _expected(records)


def test_a_checked_out_file_is_recommitted_without_parsing_its_unchanged_lines(
    tmp_path: Path, parsed_lines: list[int]
) -> None:
    repo = Repository.init(tmp_path)
    records: list[dict[str, object]] = [{"id": i, "q": f"question {i}"} for i in range(300)]
    _write(tmp_path / "qa.jsonl", records)
    repo.add(["qa.jsonl"])
    repo.commit("v1")
    records[5] = {"id": 5, "q": "edited"}
    _write(tmp_path / "qa.jsonl", records)
    repo.commit("v2", all=True)
    ops.checkout(repo, "HEAD~1")  # writes canonical lines; the cache is v2's
    path = tmp_path / "qa.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[7] = encode_canonical({"id": 7, "q": "changed"}) + b"\n"
    path.write_bytes(b"".join(lines))
    parsed_lines.clear()
    repo.commit("v3", all=True)
    assert sum(parsed_lines) == 1
    expected = [dict(r) for r in records]
    expected[5] = {"id": 5, "q": "question 5"}
    expected[7] = {"id": 7, "q": "changed"}
    assert repo.read_oid_list(repo.read_dataset(repo.tree_of(repo.head())["qa.jsonl"])) == (
        _expected(expected)
    )


def test_a_cache_of_another_file_only_costs_time(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    _write(path, [{"id": i} for i in range(50)])
    first = ingest.ingest_jsonl(path, "qa.jsonl", None)
    # The cache promises more datapoints than the base has: it is not used.
    wrong = ingest.ingest_jsonl(path, "qa.jsonl", None, cache=first.groups, base=first.oids[32:])
    assert wrong.oids == first.oids


@pytest.mark.parametrize("edit", ["same length", "ends a group"])
def test_lines_of_fixed_length_still_form_groups(
    tmp_path: Path, parsed_lines: list[int], edit: str
) -> None:
    # No line ends a group by its length: their content (CRC-32) cuts them.
    records = [{"id": f"{i:05d}", "t": "ab"} for i in range(1000)]
    path = tmp_path / "fixed.jsonl"
    _write(path, records)
    assert all(len(json.dumps(r)) % ingest.GROUP_MODULUS for r in records)
    first = ingest.ingest_jsonl(path, "fixed.jsonl", None)
    assert 1000 // ingest.GROUP_CRC // 2 < len(first.groups.counts) < 1000 // ingest.GROUP_CRC * 2
    parsed_lines.clear()
    # An edited line that now ends a group by its length once made every later group of the
    # reading start elsewhere than the cached ones: none was found again.
    records[500] = {"id": "00500", "t": "cd" if edit == "same length" else "cdefg"}
    _write(path, records)
    assert _again(path, first).oids == _expected(records)
    assert sum(parsed_lines) == 1


def test_a_second_worker_finds_the_cached_groups_of_fixed_length_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second worker's range begins where a group ends whatever reading came before. Cut
    # by length alone, a file of fixed-length lines had no such place: after an edit ahead of
    # it, the second worker matched no cached group, parsed its whole range and stored it all
    # again, at every commit.
    monkeypatch.setattr(ingest, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(ingest, "_workers", lambda: 2)
    repo = Repository.init(tmp_path / "repo")
    records: list[dict[str, object]] = [{"id": f"{i:05d}", "t": "ab"} for i in range(4000)]
    path = tmp_path / "fixed.jsonl"
    _write(path, records)
    with repo.store.writer() as writer:
        first = ingest.ingest_jsonl(path, "fixed.jsonl", writer)
    for n, at in enumerate([100, 1500, 3900]):
        records[at] = {"id": f"{at:05d}", "t": "x" * (3 + n)}  # other lengths
        _write(path, records)
        with repo.store.writer() as writer:
            again = ingest.ingest_jsonl(
                path, "fixed.jsonl", writer, cache=first.groups, base=first.oids
            )
        assert again.oids == _expected(records)
        assert again.stored == 1
        runs = again.runs
        assert runs is not None
        assert sum(length for _, _, length in runs[0]) >= 4000 - 2 * ingest.GROUP_MAX
        first = again


def test_a_reading_stores_few_datapoints_the_base_already_holds(
    tmp_path: Path, parsed_lines: list[int]
) -> None:
    # Lines moved far away are parsed again; past a bound, their ids are looked up among all
    # of the base's rather than stored a second time.
    repo = Repository.init(tmp_path / "repo")
    records: list[dict[str, object]] = [{"id": i, "text": "x" * (i % 7)} for i in range(3000)]
    path = tmp_path / "qa.jsonl"
    _write(path, records)
    with repo.store.writer() as writer:
        first = ingest.ingest_jsonl(path, "qa.jsonl", writer)
    records.reverse()
    _write(path, records)
    parsed_lines.clear()
    with repo.store.writer() as writer:
        again = ingest.ingest_jsonl(path, "qa.jsonl", writer, cache=first.groups, base=first.oids)
    assert again.oids == _expected(records)
    assert sum(parsed_lines) > 1000  # only groups of one line recur reversed
    assert again.stored <= 256


_line = st.one_of(
    st.builds(lambda i, t: json.dumps({"id": i, "t": t}), st.integers(0, 30), st.text(max_size=9)),
    st.sampled_from(["", "  ", '{"a": 1}\r', '{"b": [1, 2]}']),
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(_line, max_size=60),
    st.lists(_line, max_size=60),
    st.booleans(),
    st.integers(1, 300),
    st.booleans(),
)
def test_reading_with_a_cache_gives_what_reading_afresh_gives(
    old: list[str], new: list[str], bom: bool, piece: int, parallel: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(ingest, "_READ", piece)
        if parallel:
            mp.setattr(ingest, "_PARALLEL_MIN", 0)
            mp.setattr(ingest, "_workers", lambda: 2)
        path = Path(tmp) / "d.jsonl"
        head = "\ufeff" if bom else ""
        path.write_text(head + "\n".join(old))
        first = ingest.ingest_jsonl(path, "d.jsonl", None)
        # The new file shares stretches with the old one, as an edit would.
        mixed = old[: len(old) // 2] + new + old[len(old) // 2 :]
        path.write_text(head + "\n".join(mixed) + ("\n" if bom else ""))
        afresh = ingest.ingest_jsonl(path, "d.jsonl", None)
        cached = _again(path, first)
        assert cached.oids == afresh.oids
        assert cached.groups == afresh.groups
        # The runs the manifest is built from give exactly the new ids (else it would fall
        # back to finding them itself: correct, but the cache's work lost).
        assert (cached.runs is None) == (not first.groups.lengths)
        spans, fresh = cached.runs or ([(False, 0, len(cached.oids) // 32)], cached.oids)
        rebuilt = b"".join(
            (first.oids if from_base else fresh)[start * 32 : (start + length) * 32]
            for from_base, start, length in spans
        )
        assert rebuilt == cached.oids
        texts = [t.removesuffix("\r") for t in mixed]
        assert len(afresh.oids) // 32 == sum(1 for t in texts if t.strip())


def test_the_cache_layout_is_the_documented_one(tmp_path: Path) -> None:
    # docs/format.md §6: groups end after a line whose length is a multiple of 4 or whose
    # CRC-32 is a multiple of 32, after 128 lines, or at the end; keys are SHA-256 prefixes of
    # the group's and the line's bytes.
    assert zlib.crc32(b"x") % 32 and zlib.crc32(b"xx") % 32 and zlib.crc32(b"xxxxx") % 32
    assert ingest.group_ends([b"x", b"xx", b"xxxx", b"xxxxx", b"x" * 8]) == [3, 5]
    assert zlib.crc32(b'{"n":109}') % 32 == 0
    assert ingest.group_ends([b"x", b'{"n":109}', b"x"]) == [2]
    assert ingest.group_ends([b"x"] * 300) == [128, 256]
    path = tmp_path / "g.jsonl"
    lines = [b'{"a":10}', b'{"b":2}', b'{"c":3}\r']  # 8 bytes ends a group; CR is dropped
    path.write_bytes(b"\n".join(lines) + b"\n")
    groups = ingest.ingest_jsonl(path, "g.jsonl", None).groups
    first, rest = lines[0] + b"\n", b"\n".join(lines[1:]) + b"\n"
    assert groups.keys == hashlib.sha256(first).digest()[:16] + hashlib.sha256(rest).digest()[:16]
    assert groups.lengths == struct.pack("<II", len(first), len(rest))
    assert groups.counts == bytes([1, 2])
    assert groups.lines == b"".join(
        hashlib.sha256(t).digest()[:16] for t in (b'{"a":10}', b'{"b":2}', b'{"c":3}')
    )


def test_the_cache_file_is_named_by_its_layout_and_replaces_the_old_one(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path)
    _write(tmp_path / "qa.jsonl", [{"id": i} for i in range(10)])
    cache_dir = repo.dsv_dir / "cache"
    cache_dir.mkdir()
    # Version 2's cache (groups cut by length alone), named by the path only.
    old = cache_dir / hashlib.sha256(b"qa.jsonl").hexdigest()[:32]
    old.write_bytes(b"groups of another layout")
    repo.add(["qa.jsonl"])
    name = hashlib.sha256(b"groups-3\0qa.jsonl").hexdigest()[:32]
    assert [p.name for p in cache_dir.iterdir()] == [name]
    assert ingest.read_group_cache(repo.dsv_dir, "qa.jsonl") is not None
