"""dsv.lock: the format docs/lockfile.md states, byte-stable, every fault named."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsv.errors import BadInput
from dsv.lockfile import LockFile, Pin, decode_lock, encode_lock, read_lock, write_lock

A = bytes(range(32))
B = bytes(range(1, 33))
C = bytes(range(2, 34))


def pin(path: str, **over: object) -> Pin:
    fields: dict[str, object] = {
        "path": path,
        "remote": "http://127.0.0.1:8080/acme/evals",
        "rev": "production",
        "commit": A,
        "dataset": B,
        "content": C,
    }
    fields.update(over)
    return Pin(**fields)  # type: ignore[arg-type]


def test_written_sorted_and_read_back(tmp_path: Path) -> None:
    lock = LockFile({"z.jsonl": pin("z.jsonl", key_env="EVALS_KEY"), "a/b.csv": pin("a/b.csv")})
    path = tmp_path / "dsv.lock"
    assert write_lock(path, lock) is True
    text = path.read_text()
    assert text.index('path = "a/b.csv"') < text.index('path = "z.jsonl"')
    assert f'commit = "{A.hex()}"\n' in text and "version = 1\n" in text
    assert read_lock(path) == lock
    assert write_lock(path, lock) is False  # the same pins: the same bytes, no write
    assert read_lock(tmp_path / "absent.lock") == LockFile({})


def test_paths_with_quotes_and_unicode_round_trip() -> None:
    lock = LockFile({'q "x"/ü.jsonl': pin('q "x"/ü.jsonl')})
    assert decode_lock(encode_lock(lock)) == lock


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 2\n", "dsv.lock: lock file version 2 is not one this dsv reads (1)"),
        ("nonsense", "dsv.lock: not a valid lock file"),
        ("version = 1\n[[dataset]]\npath = 'a.jsonl'\n", "dsv.lock: dataset 'a.jsonl': missing"),
        ("version = 1\nother = 1\n", "dsv.lock: unknown key 'other'"),
    ],
)
def test_faults_are_named(text: str, message: str) -> None:
    with pytest.raises(BadInput) as caught:
        decode_lock(text.encode())
    assert caught.value.message.startswith(message)


def test_bad_fields_are_named() -> None:
    good = encode_lock(LockFile({"a.jsonl": pin("a.jsonl")})).decode()
    with pytest.raises(BadInput, match=r"^dsv\.lock: dataset 'a\.jsonl': field 'commit' must"):
        decode_lock(good.replace(A.hex(), "abc").encode())
    with pytest.raises(BadInput, match="remote URL holds credentials"):
        decode_lock(good.replace("http://", "http://me:secret@").encode())
    with pytest.raises(BadInput, match=r"dataset '\.\./a\.jsonl'"):
        decode_lock(good.replace('"a.jsonl"', '"../a.jsonl"').encode())
    with pytest.raises(BadInput, match="pinned twice"):
        decode_lock((good + good[good.index("[[dataset]]") :]).encode())
