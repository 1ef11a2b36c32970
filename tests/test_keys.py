"""A key is checked at the cost of what changed: keys from the records parsed and from the
cache of the last staged version; the file is re-read only to name the lines of a problem."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
import zstandard

from dsv import formats, ingest, keys
from dsv.canonical import canonicalize
from dsv.objects import OID_SIZE
from tests.conftest import Dsv

MISSING_HINT = "hint: every record needs the key fields; dsv add --key chooses them\n"
DUPLICATE_HINT = "hint: a key identifies one record; make it unique or choose another --key\n"


@pytest.fixture
def slow_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files whose keys were checked by re-reading them (formats.check_keys)."""
    checked: list[str] = []
    real = formats.check_keys

    def spy(path: Path, name: str, key: tuple[str, ...]) -> list[tuple[bytes, ...]]:
        checked.append(name)
        return real(path, name, key)

    monkeypatch.setattr(formats, "check_keys", spy)
    return checked


def _records(n: int = 300) -> list[dict[str, object]]:
    return [{"id": f"q{i}", "text": f"question {i} " + "x" * (i % 7)} for i in range(n)]


def _committed(dsv: Dsv, records: list[dict[str, object]], key: str = "id") -> None:
    dsv.write("qa.jsonl", records)
    dsv("add", "qa.jsonl", "--key", key)
    dsv("commit", "-m", "v1")


def _cache_file(dsv: Dsv) -> Path:
    return keys._cache_path(dsv.root / ".dsv", "qa.jsonl")


def test_a_first_add_takes_the_keys_from_its_own_parse(
    dsv: Dsv, parsed_lines: list[int], slow_checks: list[str]
) -> None:
    _committed(dsv, _records())
    assert sum(parsed_lines) == 300  # each line once: no second reading for the keys
    assert slow_checks == []
    assert _cache_file(dsv).is_file()


def test_a_recommit_checks_keys_from_the_cache(
    dsv: Dsv, parsed_lines: list[int], slow_checks: list[str]
) -> None:
    records = _records()
    _committed(dsv, records)
    records[150] = {"id": "q150", "text": "edited"}
    records.insert(40, {"id": "new", "text": "inserted"})
    del records[250]
    dsv.write("qa.jsonl", records)
    parsed_lines.clear()
    dsv("commit", "-a", "-m", "v2")
    assert 2 <= sum(parsed_lines) <= 20  # the edited groups only
    assert slow_checks == []
    assert dsv("status", "--porcelain").stdout == ""


def test_a_duplicate_of_an_unchanged_line_is_named_with_both_lines(
    dsv: Dsv, parsed_lines: list[int], slow_checks: list[str]
) -> None:
    records = _records()
    _committed(dsv, records)
    lines = [json.dumps(r) for r in records]
    # The same key spelt otherwise: keys compare canonically, from the cache as from the file.
    lines[200] = '{"id": "q\\u0033", "text": "a copy of line 4"}'
    (dsv.root / "qa.jsonl").write_text("\n".join(lines) + "\n")
    parsed_lines.clear()
    expected = "error: qa.jsonl:201: duplicate key id=q3 (first at line 4)\n" + DUPLICATE_HINT
    assert dsv("commit", "-a", "-m", "v2", code=2).stderr == expected
    assert slow_checks == ["qa.jsonl"]  # only to name the lines
    assert dsv("log", "--oneline").stdout.count("\n") == 1
    # The refused reading left the cache of v1 in place: fixed, the file commits without
    # a second reading.
    lines[200] = '{"id": "q200", "text": "fixed"}'
    (dsv.root / "qa.jsonl").write_text("\n".join(lines) + "\n")
    slow_checks.clear()
    dsv("commit", "-a", "-m", "v2")
    assert slow_checks == []


def test_a_missing_key_in_an_edited_line_is_named(dsv: Dsv, slow_checks: list[str]) -> None:
    records = _records()
    _committed(dsv, records)
    records[150] = {"text": "no id"}
    dsv.write("qa.jsonl", records)
    assert dsv("commit", "-a", "-m", "v2", code=2).stderr == (
        "error: qa.jsonl:151: record has no key field 'id'\n" + MISSING_HINT
    )
    assert slow_checks == ["qa.jsonl"]


def test_a_duplicate_of_two_fields_from_the_cache(dsv: Dsv) -> None:
    records: list[dict[str, object]] = [
        {"id": i // 2, "lang": ["en", "fr"][i % 2], "text": f"t{i}"} for i in range(200)
    ]
    _committed(dsv, records, key="id,lang")
    records[120] = {"id": 7, "lang": "fr", "text": "again"}
    dsv.write("qa.jsonl", records)
    assert dsv("commit", "-a", "-m", "v2", code=2).stderr == (
        "error: qa.jsonl:121: duplicate key id=7, lang=fr (first at line 16)\n" + DUPLICATE_HINT
    )


@pytest.mark.parametrize("damage", ["corrupt", "stale", "other key", "short"])
def test_a_bad_key_cache_is_ignored(
    dsv: Dsv, slow_checks: list[str], damage: str, parsed_lines: list[int]
) -> None:
    records = _records()
    _committed(dsv, records)
    v1_cache = _cache_file(dsv).read_bytes()
    records[10] = {"id": "v2", "text": "v2"}
    dsv.write("qa.jsonl", records)
    dsv("commit", "-a", "-m", "v2")
    cache = keys._cache_decoder.decode(_cache_file(dsv).read_bytes())
    if damage == "corrupt":
        _cache_file(dsv).write_bytes(b"\x93not a key cache")
    elif damage == "stale":
        # v1's keys, all distinct: a check that trusted them would miss the duplicate below,
        # which is a line of v2.
        _cache_file(dsv).write_bytes(v1_cache)
    elif damage == "other key":
        cache.fields = ["text"]
        _cache_file(dsv).write_bytes(msgspec.msgpack.encode(cache))
    else:
        joined = zstandard.ZstdDecompressor().decompress(cache.keys)
        cache.keys = zstandard.ZstdCompressor().compress(joined.rsplit(b"\n", 1)[0])
        _cache_file(dsv).write_bytes(msgspec.msgpack.encode(cache))
    records[200] = {"id": "v2", "text": "a copy of the v2 line"}
    dsv.write("qa.jsonl", records)
    slow_checks.clear()
    assert dsv("commit", "-a", "-m", "v3", code=2).stderr == (
        "error: qa.jsonl:201: duplicate key id=v2 (first at line 11)\n" + DUPLICATE_HINT
    )
    assert slow_checks == ["qa.jsonl"]
    # Without the duplicate the file is read again once, and that reading renews the cache.
    records[200] = {"id": "q200", "text": "v3"}
    dsv.write("qa.jsonl", records)
    dsv("commit", "-a", "-m", "v3")
    assert slow_checks == ["qa.jsonl", "qa.jsonl"]
    records[201] = {"id": "q201", "text": "v4"}
    dsv.write("qa.jsonl", records)
    parsed_lines.clear()
    dsv("commit", "-a", "-m", "v4")
    assert slow_checks == ["qa.jsonl", "qa.jsonl"]
    assert sum(parsed_lines) < 20


def test_the_keys_read_from_bodies_are_those_read_from_lines(tmp_path: Path) -> None:
    """The workers' keys (from canonical bodies) and check_keys' (from the lines) are one
    representation: a cache written from either serves the other."""
    lines = [
        '{"k": 1.0, "n": {"b": 1, "a": [1.50, "x"]}, "s": "A"}',
        '{"k": 1e2, "n": null, "s": "\\u00e9\\/"}',
        '{"s": "\\n\\u0000", "k": -0.0, "n": true, "other": "ignored"}',
        '{"k": "\\u2028", "n": {"": {}}, "s": []}',
    ]
    path = tmp_path / "k.jsonl"
    path.write_text("\n".join(lines) + "\n")
    key = ("k", "n", "s")
    from_lines = [b"\0".join(v) for v in formats.check_keys(path, "k.jsonl", key)]
    bodies = [canonicalize(line.encode()) for line in lines]
    assert keys.key_reader(key)(bodies).split(b"\n") == from_lines
    assert keys.key_reader(("k",))(bodies).split(b"\n") == [v.split(b"\0")[0] for v in from_lines]


def test_key_reader_marks_a_missing_field_and_takes_any_field_name() -> None:
    bodies = [b'{"a\\"b":1,"id":2}', b'{"id":3}', b'{"a\\"b":4}']
    assert keys.key_reader(('a"b', "id"))(bodies) == b"1\x002\n\n"
    assert keys.key_reader(('a"b',))(bodies) == b"1\n\n4"
    assert keys.key_reader(("id",))(bodies) == b"2\n3\n"
    assert keys.key_reader(("id", "id"))(bodies) == b"2\x002\n3\x003\n"


def test_parallel_workers_return_every_parsed_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(ingest, "_workers", lambda: 2)
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"id": i, "q": f"q {i}"}) + "\n" for i in range(3000)))
    result = ingest.ingest_jsonl(path, "qa.jsonl", None, key=("id",))
    assert result.keys is not None
    parsed_oids, parsed_keys = result.keys
    assert parsed_oids == result.oids
    assert parsed_keys.split(b"\n") == [str(i).encode() for i in range(3000)]
    assert len(result.oids) == 3000 * OID_SIZE
    assert ingest.ingest_jsonl(path, "qa.jsonl", None).keys is None
