"""The bad-input corpus: each hostile file or argument gets its one-line error, a documented
exit code, no traceback, and leaves nothing staged or written."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import QA, Dsv, assert_one_error_line, commit_records

BIG_LINE = 100 * 2**20


def _parquet_cut_in_half(root: Path) -> bytes:
    pq.write_table(pa.table({"a": list(range(1000))}), root / "whole.parquet")
    data = (root / "whole.parquet").read_bytes()
    os.unlink(root / "whole.parquet")
    return data[: len(data) // 2]


# (file name, content, expected first stderr line)
FILES: list[tuple[str, bytes | None, str]] = [
    (
        "malformed.jsonl",
        b'{"id": 1}\n{"id": 2 "x": 1}\n',
        "malformed.jsonl:2:10: malformed JSON: expected ',' or '}'",
    ),
    (
        "truncated.jsonl",
        b'{"id": 1}\n{"id": 2, "text": "cut he',
        "truncated.jsonl:2:26: malformed JSON: unexpected end of input or an invalid \\u escape",
    ),
    ("utf8.jsonl", b'{"id": "caf\xe9"}\n', "utf8.jsonl:1:12: invalid UTF-8"),
    ("array.jsonl", b"[1, 2]\n", "array.jsonl:1:1: record is a JSON array, not an object"),
    ("string.jsonl", b'"just text"\n', "string.jsonl:1:1: record is a JSON string, not an object"),
    ("number.jsonl", b"42\n", "number.jsonl:1:1: record is a JSON number, not an object"),
    ("dup.jsonl", b'{"id": 1, "id": 2}\n', "dup.jsonl:1:1: duplicate key 'id' in object"),
    (
        "nested-dup.jsonl",
        b'{"a": {"k": 1, "k": 1}}\n',
        "nested-dup.jsonl:1:1: duplicate key 'k' in object",
    ),
    ("nan.jsonl", b'{"score": NaN}\n', "nan.jsonl:1:11: NaN is not a JSON number"),
    ("inf.jsonl", b'{"score": -Infinity}\n', "inf.jsonl:1:11: -Infinity is not a JSON number"),
    (
        "overflow.jsonl",
        b'{"score": 1e999}\n',
        "overflow.jsonl:1:11: invalid JSON: number out of range",
    ),
    (
        "deep-overflow.jsonl",
        '{"id": 1}\n{"s": "1e999", "é": [1, -2E+999]}\n'.encode(),
        "deep-overflow.jsonl:2:25: invalid JSON: number out of range",
    ),
    (
        "surrogate.jsonl",
        b'{"t": "\\ud800"}\n',
        "surrogate.jsonl:1:16: malformed JSON: unexpected end of input or an invalid \\u escape",
    ),
    (
        "bigline.jsonl",
        None,
        f"bigline.jsonl:1:{BIG_LINE + 13}: malformed JSON: expected ',' or '}}'",
    ),
    ("ragged.csv", b"a,b\n1,2\n3\n", "ragged.csv:3: row has 1 fields, the header has 2"),
    ("empty.csv", b"", "empty.csv: empty CSV file, expected a header row"),
    ("duphead.csv", b"a,a\n1,2\n", "duphead.csv:1: duplicate column name 'a'"),
    (
        "fake.parquet",
        b"PAR1 not really",
        "fake.parquet: not a Parquet file (Parquet magic bytes not found in footer)",
    ),
    (
        "cut.parquet",
        b"",
        "cut.parquet: not a Parquet file (Parquet magic bytes not found in footer)",
    ),
    (
        "object.json",
        b'{"id": 1}',
        "object.json: expected a JSON array of objects, found a JSON object",
    ),
    ("element.json", b'[{"id": 1}, 2]', "element.json: element 1 is a JSON number, not an object"),
    ("broken.json", b'[{"id": 1},, ]', "broken.json:1:12: malformed JSON: expecting value"),
    (
        "notes.txt",
        b"x",
        "notes.txt: unsupported file type '.txt' "
        "(expected .jsonl, .ndjson, .json, .csv, .tsv or .parquet)",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), FILES, ids=[f[0] for f in FILES])
def test_bad_files(dsv: Dsv, name: str, content: bytes | None, message: str) -> None:
    path = dsv.root / name
    if name == "bigline.jsonl":
        with open(path, "wb") as handle:
            handle.write(b'{"text": "' + b"x" * BIG_LINE + b'" "tail": 1}\n')
    elif name == "cut.parquet":
        path.write_bytes(_parquet_cut_in_half(dsv.root))
    else:
        assert content is not None
        path.write_bytes(content)
    result = dsv("add", name, code=2)
    assert result.stderr == f"error: {message}\n"
    assert "Traceback" not in result.output
    # The bad file stays as it was, untracked (notes.txt is no dataset file: not even that).
    _nothing_written(dsv, None if name.endswith(".txt") else name)


def _nothing_written(dsv: Dsv, name: str | None = None) -> None:
    assert dsv("status", "--porcelain").stdout == (f"?? {name}\n" if name else "")
    objects = dsv.root / ".dsv" / "objects"
    assert [p for p in objects.rglob("*") if p.is_file()] == []


NAME_HINT = (
    "hint: names may not contain spaces, control characters, '..', '~^:?*[\\' "
    "or start with '-' or '.'\n"
)

# (arguments, exit code, expected stderr)
ARGUMENTS: list[tuple[list[str], int, str]] = [
    (["add", "missing.jsonl"], 2, "error: missing.jsonl: no such file or directory\n"),
    (
        ["add", "../escape.jsonl"],
        2,
        "error: path '{parent}/escape.jsonl' is outside the repository {root}\n",
    ),
    (["add", "/etc/passwd"], 2, "error: path '/etc/passwd' is outside the repository {root}\n"),
    (
        ["add", ".dsv/config"],
        2,
        "error: invalid dataset path '.dsv/config': its segment '.dsv' names .dsv, which dsv "
        "manages itself\n",
    ),
    (
        ["add", "a\x01b.jsonl"],
        2,
        "error: invalid dataset path 'a\\x01b.jsonl': it contains a control character\n",
    ),
    (["add", "ok.jsonl", "--key", ""], 2, "error: --key: empty field name\n"),
    (["commit", "-m", "  "], 2, "error: empty commit message\nhint: pass one with -m\n"),
    (["show", "nope"], 2, "error: unknown revision 'nope'\n"),
    (
        ["show", "HEAD~99"],
        2,
        "error: revision 'HEAD~99' goes past the first version of the history\n",
    ),
    (
        ["show", "abc"],
        2,
        "error: unknown revision 'abc'\nhint: an abbreviated id needs at least 4 hex digits\n",
    ),
    (
        ["branch", "bad\x01name"],
        2,
        "error: invalid branch name 'bad\\x01name'\n" + NAME_HINT,
    ),
    (
        ["branch", "a..b"],
        2,
        "error: invalid branch name 'a..b'\n" + NAME_HINT,
    ),
    (
        ["env", "deploy", "prod/eu"],
        2,
        "error: invalid environment name 'prod/eu': '/' is not allowed\n",
    ),
    (["env", "deploy", "staging", "nope"], 2, "error: unknown revision 'nope'\n"),
    (["tag", "-x-"], 2, "error: no such option '-x'\nhint: see 'dsv tag --help'\n"),
    (
        ["log", "-n", "x"],
        2,
        "error: invalid value for '-n' / '--max-count': 'x' is not a valid integer range\n"
        "hint: see 'dsv log --help'\n",
    ),
    (
        ["diff", "HEAD", "HEAD", "extra"],
        2,
        "error: give at most two revisions; put paths after --\nhint: see 'dsv diff --help'\n",
    ),
    (["nosuchcommand"], 2, "error: no such command 'nosuchcommand'\nhint: see 'dsv --help'\n"),
]


@pytest.mark.parametrize(
    ("args", "code", "expected"), ARGUMENTS, ids=[" ".join(a[0]) for a in ARGUMENTS]
)
def test_bad_arguments(dsv: Dsv, args: list[str], code: int, expected: str) -> None:
    (dsv.root / "ok.jsonl").write_text('{"id": 1}\n')
    dsv("add", "ok.jsonl")
    dsv("commit", "-m", "one")
    before = sorted(p.relative_to(dsv.root) for p in (dsv.root / ".dsv").rglob("*"))
    result = dsv(*args, code=code)
    assert result.stderr == expected.format(root=dsv.root, parent=dsv.root.parent)
    assert "Traceback" not in result.output
    after = sorted(p.relative_to(dsv.root) for p in (dsv.root / ".dsv").rglob("*"))
    assert after == before


# -- a key is a contract (issue 21) ------------------------------------------------------------

MISSING_HINT = "hint: every record needs the key fields; dsv add --key chooses them\n"
DUPLICATE_HINT = "hint: a key identifies one record; make it unique or choose another --key\n"

# (file name, content, --key, expected stderr)
KEYED: list[tuple[str, bytes, str, str]] = [
    (
        "none.jsonl",
        b'{"prompt": "a"}\n{"prompt": "b"}\n',
        "task_id",
        "error: none.jsonl:1: record has no key field 'task_id'\n" + MISSING_HINT,
    ),
    (
        "one.jsonl",
        b'{"task_id": "HumanEval/0"}\n\n{"prompt": "b"}\n',
        "task_id",
        "error: one.jsonl:3: record has no key field 'task_id'\n" + MISSING_HINT,
    ),
    (
        "second.jsonl",
        b'{"id": 1, "lang": "en"}\n{"id": 2}\n',
        "id,lang",
        "error: second.jsonl:2: record has no key field 'lang'\n" + MISSING_HINT,
    ),
    (
        "dup.jsonl",
        b'{"task_id": "HumanEval/3", "v": 1}\n{"task_id": "HumanEval/4"}\n'
        b'{"task_id": "HumanEval\\/3", "v": 2}\n',
        "task_id",
        "error: dup.jsonl:3: duplicate key task_id=HumanEval/3 (first at line 1)\n"
        + DUPLICATE_HINT,
    ),
    (
        "numbers.jsonl",
        b'{"id": 7, "lang": "en", "v": 1}\n{"id": 7, "lang": "fr"}\n{"id": 7, "lang": "en"}\n',
        "id,lang",
        "error: numbers.jsonl:3: duplicate key id=7, lang=en (first at line 1)\n" + DUPLICATE_HINT,
    ),
    (
        "dup.csv",
        b"id,answer\n1,a\n2,b\n1,c\n",
        "id",
        'error: dup.csv:4: duplicate key id="1" (first at line 2)\n' + DUPLICATE_HINT,
    ),
    (
        "column.tsv",
        b"id\tanswer\n1\ta\n",
        "task_id",
        "error: column.tsv:2: record has no key field 'task_id'\n" + MISSING_HINT,
    ),
    (
        "dup.json",
        b'[{"id": "a"}, {"id": "b"}, {"id": "a", "x": 1}]',
        "id",
        "error: dup.json: element 2: duplicate key id=a (first at element 0)\n" + DUPLICATE_HINT,
    ),
]


@pytest.mark.parametrize(("name", "content", "key", "expected"), KEYED, ids=[k[0] for k in KEYED])
def test_a_key_must_be_present_and_unique(
    dsv: Dsv, name: str, content: bytes, key: str, expected: str
) -> None:
    (dsv.root / name).write_bytes(content)
    result = dsv("add", name, "--key", key, code=2)
    assert result.stderr == expected
    _nothing_written(dsv, name)


def test_parquet_keys_are_checked_by_row(dsv: Dsv) -> None:
    pq.write_table(pa.table({"id": [1, 2, 2]}), dsv.root / "m.parquet")
    assert dsv("add", "m.parquet", "--key", "id", code=2).stderr == (
        "error: m.parquet: row 2: duplicate key id=2 (first at row 1)\n" + DUPLICATE_HINT
    )


def test_a_stored_key_is_checked_again_on_every_add_and_commit_a(dsv: Dsv) -> None:
    dsv.write("qa.jsonl", [{"id": 1}, {"id": 2}])
    dsv("add", "qa.jsonl", "--key", "id")
    dsv("commit", "-m", "v1")
    dsv.write("qa.jsonl", [{"id": 1}, {"id": 2}, {"id": 1, "x": 1}])
    expected = "error: qa.jsonl:3: duplicate key id=1 (first at line 1)\n" + DUPLICATE_HINT
    assert dsv("commit", "-a", "-m", "v2", code=2).stderr == expected
    assert dsv("add", "qa.jsonl", code=2).stderr == expected
    dsv.write("qa.jsonl", [{"id": 1}, {"q": "no id"}])
    assert dsv("add", "qa.jsonl", code=2).stderr == (
        "error: qa.jsonl:2: record has no key field 'id'\n" + MISSING_HINT
    )
    assert dsv("log", "--oneline").stdout.count("\n") == 1
    assert dsv("status", "--porcelain").stdout == "M qa.jsonl\n"
    assert dsv("diff", "--staged", "--stat").stdout == ""


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["show", "HEAD~x"], 2, "error: unknown revision 'HEAD~x'"),
        (["show", "main^^^^^^"], 2, "goes past the first version"),
        (["show", "@"], 2, "error: unknown revision '@'"),
        (["show", ""], 2, "error: empty revision"),
        (["show", "HEAD:"], 2, "error: no dataset path given for HEAD"),
        (["show", "HEAD:missing.jsonl"], 2, "error: missing.jsonl: no such dataset in HEAD"),
        (["show", "HEAD:qa.jsonll"], 2, "hint: did you mean 'qa.jsonl'?"),
        (["checkout", "HEAD", "--", "nothere.jsonl"], 2, "nothere.jsonl: no such dataset"),
        (["cat-object", "abc"], 2, "hint: an abbreviated id needs at least 4 hex digits"),
        (["cat-object", ""], 2, "error: empty object id"),
        (["cat-object", "0000"], 2, "error: unknown revision '0000'"),
        (["env", "deploy", "a b"], 2, "error: invalid environment name 'a b'"),
        (["env", "deploy", "a/b"], 2, "'/' is not allowed"),
        (["env", "deploy", "HEAD"], 2, "error: invalid environment name 'HEAD': it is reserved"),
        (["env", "deploy", "@"], 2, "error: invalid environment name '@': it is reserved"),
        (["branch", "HEAD"], 2, "error: invalid branch name 'HEAD': it is reserved"),
        (["branch", "-d", "nope"], 2, "error: no branch named 'nope'"),
        (["tag", "-d", "nope"], 2, "error: no tag named 'nope'"),
        (["rm", "untracked.jsonl"], 2, "error: untracked.jsonl: not tracked by dsv"),
        (["add", "sub"], 2, "error: sub: no such file or directory"),
        (["commit", "-m", "  "], 2, "error: empty commit message"),
        (["diff", "HEAD", "HEAD", "--key", ""], 2, "empty field name"),
        (["diff", "HEAD", "HEAD", "--key", "id,"], 2, "empty field name"),
        (["env", "log", "nope"], 2, "no environment named 'nope'"),
        (["branch", "-d"], 2, "error: -d takes exactly one branch name"),
        (["tag", "-d"], 2, "error: -d takes exactly one tag name"),
    ],
)
def test_hostile_input_is_one_error_line(
    dsv: Dsv, args: list[str], code: int, message: str
) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    (dsv.root / "untracked.jsonl").write_text('{"id": 1}\n')
    result = dsv(*args, code=code)
    assert_one_error_line(result.stderr)
    assert message in result.stderr
    assert result.stdout == ""


def test_deeply_nested_jsonl_is_a_one_line_error(dsv: Dsv) -> None:
    (dsv.root / "deep.jsonl").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    result = dsv("add", "deep.jsonl", code=2)
    assert result.stderr.startswith("error: deep.jsonl:1:")
    assert dsv("status", "--porcelain").stdout == "?? deep.jsonl\n"


def test_no_half_written_state_after_refused_commands(dsv: Dsv) -> None:
    commit_records(dsv, "qa.jsonl", QA, "v1")
    before = {p: p.read_bytes() for p in (dsv.root / ".dsv").rglob("*") if p.is_file()}
    for args in (
        ["branch", "main/sub"],
        ["env", "deploy", "HEAD"],
        ["tag", "x", "nope"],
        ["checkout", "nope"],
        ["mv", "qa.jsonl", "qa.tsv"],
    ):
        dsv(*args, code=2)
    after = {p: p.read_bytes() for p in (dsv.root / ".dsv").rglob("*") if p.is_file()}
    assert after == before
    assert sorted(os.listdir(dsv.root)) == [".dsv", "qa.jsonl"]


@pytest.mark.parametrize("value", ["abc", "nan", "-1"])
def test_a_bad_lock_timeout_is_one_error_line(
    dsv: Dsv, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DSV_LOCK_TIMEOUT", value)
    assert dsv("status", code=2).stderr == (
        f"error: DSV_LOCK_TIMEOUT='{value}' is not a number of seconds\n"
        "hint: e.g. DSV_LOCK_TIMEOUT=10\n"
    )
