"""Parallel JSONL ingest: the same ids as one-at-a-time canonicalisation, errors with lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsv import ingest
from dsv.canonical import encode_canonical
from dsv.errors import BadInput
from dsv.objects import Kind, hash_object


def _expected(records: list[dict[str, object]]) -> bytes:
    return b"".join(hash_object(Kind.DATAPOINT, encode_canonical(r)) for r in records)


def test_lines_longer_than_a_read_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "_READ", 64)
    records = [{"id": i, "text": "x" * (10 + 50 * (i % 5))} for i in range(40)]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = ingest.ingest_jsonl(path, "long.jsonl", None, known=set(), cache={})
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
    result = ingest.ingest_jsonl(path, "qa.jsonl", None, known=set(), cache={})
    assert result.oids == _expected(records)
    # A bad line in the second worker's range is reported with its line in the whole file.
    lines[2500] = '{"id": 2500, "q": }'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInput, match=r"^qa.jsonl:2501:\d+: malformed JSON"):
        ingest.ingest_jsonl(path, "qa.jsonl", None, known=set(), cache={})


def test_the_raw_line_cache_skips_parsing_known_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [{"id": i} for i in range(100)]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    first = ingest.ingest_jsonl(path, "qa.jsonl", None, known=set(), cache={})
    cache = ingest.LineCache(b"", first.raw_hashes).mapping(first.oids)
    parsed: list[int] = []
    real = ingest.canonicalize_many

    def counting(raws: list[bytes]) -> list[bytes]:
        parsed.append(len(raws))
        return real(raws)

    monkeypatch.setattr(ingest, "canonicalize_many", counting)
    records[7] = {"id": 7, "edited": True}
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    second = ingest.ingest_jsonl(path, "qa.jsonl", None, known=set(), cache=cache)
    assert second.oids == _expected(records)
    assert sum(parsed) == 1
