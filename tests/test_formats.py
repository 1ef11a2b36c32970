"""Dataset file formats: what users see when dsv reads and writes their files."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsv import ingest
from dsv.canonical import encode_canonical
from dsv.errors import BadInput
from dsv.formats import Format, format_kind, read_dataset, write_dataset
from tests.conftest import Dsv

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def read(path: Path, name: str | None = None) -> tuple[Format, list[bytes]]:
    fmt, records = read_dataset(path, name=name or path.name)
    return fmt, list(records)


def records_of(path: Path) -> list[bytes]:
    return read(path)[1]


def error_of(path: Path, name: str | None = None) -> str:
    with pytest.raises(BadInput) as info:
        read(path, name)
    return info.value.message


def canon(*objs: dict[str, Any]) -> list[bytes]:
    return [encode_canonical(obj) for obj in objs]


def roundtrip(path: Path, out: Path) -> tuple[Format, list[bytes]]:
    """Read `path`, write it to `out` twice; check the bytes and records survive."""
    fmt, records = read(path)
    write_dataset(out, fmt, records)
    first = out.read_bytes()
    write_dataset(out, fmt, iter(records))
    assert out.read_bytes() == first, "writing the same records twice must give the same bytes"
    fmt2, again = read(out)
    assert fmt2 == fmt
    assert again == records
    return fmt, records


# --- kinds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("evals/qa.jsonl", "jsonl"),
        ("qa.ndjson", "jsonl"),
        ("qa.json", "json"),
        ("qa.csv", "csv"),
        ("qa.tsv", "csv"),
        ("qa.parquet", "parquet"),
        ("QA.JSONL", "jsonl"),
    ],
)
def test_kind_from_extension(name: str, kind: str) -> None:
    assert format_kind(name) == kind


@pytest.mark.parametrize(("name", "ext"), [("evals/qa.txt", ".txt"), ("evals/README", "")])
def test_unsupported_extension(name: str, ext: str) -> None:
    with pytest.raises(BadInput) as info:
        format_kind(name)
    assert info.value.message == (
        f"{name}: unsupported file type '{ext}' "
        "(expected .jsonl, .ndjson, .json, .csv, .tsv or .parquet)"
    )


def test_missing_file_names_the_display_path(tmp_path: Path) -> None:
    message = error_of(tmp_path / "qa.jsonl", "evals/qa.jsonl")
    assert message == "evals/qa.jsonl: cannot read (No such file or directory)"
    assert str(tmp_path) not in message


def test_format_is_deterministic(tmp_path: Path) -> None:
    for src in ("chat_qa.jsonl", "humanloop.csv", "metrics.parquet", "tool_calling.json"):
        a, _ = read(FIXTURES / src)
        b, _ = read(FIXTURES / src)
        assert a == b
        assert msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b)


# --- fixtures ------------------------------------------------------------------------------


FIXTURE_FILES = sorted(
    p.relative_to(FIXTURES).as_posix()
    for p in FIXTURES.rglob("*")
    if p.suffix in (".jsonl", ".json", ".csv", ".parquet")
)


def test_fixture_set_is_complete() -> None:
    assert FIXTURE_FILES == [
        "chat_qa.jsonl",
        "humanloop.csv",
        "metrics.parquet",
        "rag.jsonl",
        "tool_calling.json",
        "v2/chat_qa.jsonl",
        "v2/rag.jsonl",
    ]


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_reads_and_round_trips(name: str, tmp_path: Path) -> None:
    _, records = roundtrip(FIXTURES / name, tmp_path / Path(name).name)
    assert 10 <= len(records) <= 40
    assert len(set(records)) == len(records), "fixtures hold no duplicate datapoints"


@pytest.mark.parametrize("name", ["chat_qa.jsonl", "rag.jsonl"])
def test_fixture_v2_edits_removes_and_adds(name: str) -> None:
    old = {msgspec.json.decode(r)["id"]: r for r in records_of(FIXTURES / name)}
    new = {msgspec.json.decode(r)["id"]: r for r in records_of(FIXTURES / "v2" / name)}
    assert len(old.keys() - new.keys()) == 1
    assert len(new.keys() - old.keys()) == 1
    edited = [k for k in old.keys() & new.keys() if old[k] != new[k]]
    assert 1 <= len(edited) <= 5


def test_fixture_shapes() -> None:
    qa = msgspec.json.decode(records_of(FIXTURES / "chat_qa.jsonl")[0])
    assert set(qa) == {"id", "messages", "target", "tags"}
    rag = msgspec.json.decode(records_of(FIXTURES / "rag.jsonl")[0])
    assert set(rag["inputs"]) == {"question", "context"}
    calls = [
        call
        for r in records_of(FIXTURES / "tool_calling.json")
        for m in msgspec.json.decode(r)["messages"]
        for call in m.get("tool_calls", [])
    ]
    assert calls and all(call["type"] == "function" for call in calls)
    assert all(isinstance(json.loads(c["function"]["arguments"]), dict) for c in calls)
    fmt, rows = read(FIXTURES / "humanloop.csv")
    assert fmt.columns == ("question", "context", "messages", "target")
    cells = [msgspec.json.decode(r) for r in rows]
    assert any("\n" in c["context"] and '"' in c["context"] for c in cells)
    assert all(isinstance(json.loads(c["messages"]), list) for c in cells)
    schema = pq.read_schema(FIXTURES / "metrics.parquet")
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("tags").type == pa.list_(pa.string())


# --- JSONL ---------------------------------------------------------------------------------


def test_jsonl_reads_canonical_records_in_order(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b'{"b": 1, "a": "\xc3\xa9"}\n{"x": [1, 2.50, null]}\n')
    fmt, records = read(path)
    assert fmt == Format("jsonl")
    assert records == [b'{"a":"\xc3\xa9","b":1}', b'{"x":[1,2.5,null]}']


def test_jsonl_tolerates_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\r\n   \n\t\r\n{"a": 2}\r\n\n{"a": 3}')
    assert records_of(path) == canon({"a": 1}, {"a": 2}, {"a": 3})


def test_jsonl_empty_file_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b"")
    assert records_of(path) == []
    path.write_bytes(b"\n \n")
    assert records_of(path) == []


def test_jsonl_write_is_records_and_newlines(tmp_path: Path) -> None:
    records = canon({"id": "a", "q": "x\ny"}, {"id": "b"})
    path = tmp_path / "out.jsonl"
    write_dataset(path, Format("jsonl"), iter(records))
    assert path.read_bytes() == b'{"id":"a","q":"x\\ny"}\n{"id":"b"}\n'
    assert records_of(path) == records
    write_dataset(path, Format("jsonl"), [])
    assert path.read_bytes() == b""


def test_jsonl_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'\xef\xbb\xbf{"z": 1, "a": {"y": [true, false]}}\r\n\r\n{"id": "\xe2\x82\xac"}'
    )
    roundtrip(src, tmp_path / "out.jsonl")


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 16, 1 << 20])
def test_jsonl_streams_across_chunk_boundaries(
    chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [
        b'\xef\xbb\xbf{"a": 1}',
        b"",
        b'{"long": "' + b"\xc3\xa9" * 50 + b'"}',
        b"  ",
        b'{"b": [1, 2, 3]}\r',
        b'{"c": "\xf0\x9f\x98\x80"}',
    ]
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b"\n".join(lines))
    expected = canon({"a": 1}, {"long": "é" * 50}, {"b": [1, 2, 3]}, {"c": "😀"})
    monkeypatch.setattr(ingest, "_READ", chunk)
    assert records_of(path) == expected


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_jsonl_error_line_numbers_survive_chunking(
    chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": @}\n')
    monkeypatch.setattr(ingest, "_READ", chunk)
    assert error_of(path, "qa.jsonl") == "qa.jsonl:4:7: malformed JSON: invalid character"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(objs=st.lists(json_objects, max_size=6), chunk=st.integers(min_value=1, max_value=64))
def test_jsonl_round_trip_property(
    objs: list[dict[str, Any]], chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "_READ", chunk)
    records = [encode_canonical(obj) for obj in objs]
    path = tmp_path / "p.jsonl"
    write_dataset(path, Format("jsonl"), records)
    assert records_of(path) == records
    # A user's file formatted by another tool (spaces, unsorted keys) means the same records.
    path.write_text("\n".join(json.dumps(obj) for obj in objs), encoding="utf-8")
    assert records_of(path) == records


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a": 1}\n\n{"q": 1, "r": @}\n', "qa.jsonl:3:15: malformed JSON: invalid character"),
        # Columns count characters, not bytes.
        (b'{"\xc3\xa9\xc3\xa9": @}\n', "qa.jsonl:1:8: malformed JSON: invalid character"),
        (b'{"a": 1}\n[1, 2]\n', "qa.jsonl:2:1: record is a JSON array, not an object"),
        (b'"text"\n', "qa.jsonl:1:1: record is a JSON string, not an object"),
        (b'{"a": 1}\n{"id": 1, "id": 2}\n', "qa.jsonl:2:1: duplicate key 'id' in object"),
        (
            b'{"a": 1}\r\n{"id": 1\r\n',
            "qa.jsonl:2:9: malformed JSON: unexpected end of input or an invalid \\u escape",
        ),
        (
            b'{"a": 1}\n{"id": 1',
            "qa.jsonl:2:9: malformed JSON: unexpected end of input or an invalid \\u escape",
        ),
        (b'{"a": "ok"}\n{"a": "\xff"}\n', "qa.jsonl:2:8: invalid UTF-8"),
        (b'{"a": NaN}\n', "qa.jsonl:1:7: NaN is not a JSON number"),
        (b'\xef\xbb\xbf{"a" 1}\n', "qa.jsonl:1:6: malformed JSON: expected ':'"),
    ],
)
def test_jsonl_errors(data: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(data)
    assert error_of(path, "qa.jsonl") == message


# --- JSON ----------------------------------------------------------------------------------


def test_json_reads_array_of_objects(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_bytes(b'\xef\xbb\xbf[\n  {"b": 1, "a": [1.0, "x"]},\n  {"id": null}\n]')
    fmt, records = read(path)
    assert fmt == Format("json")
    assert records == [b'{"a":[1.0,"x"],"b":1}', b'{"id":null}']


def test_json_write_layout(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_dataset(path, Format("json"), iter(canon({"b": 1}, {"a": 2})))
    assert path.read_bytes() == b'[\n{"b":1},\n{"a":2}\n]\n'
    write_dataset(path, Format("json"), [])
    assert path.read_bytes() == b"[]\n"
    assert records_of(path) == []


def test_json_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "in.json"
    objs = [{"id": i, "x": {"y": [1.5, -0.0, 10**30, "é\u2028"]}} for i in range(5)]
    src.write_text(json.dumps(objs, indent=4, ensure_ascii=True), encoding="utf-8")
    _, records = roundtrip(src, tmp_path / "out.json")
    assert records == canon(*objs)


def test_json_and_jsonl_agree_on_identity(tmp_path: Path) -> None:
    objs = [{"n": 1.25e-7, "big": 2**70, "s": "\u00e9\U0001f600", "t": True}]
    (tmp_path / "a.json").write_text(json.dumps(objs), encoding="utf-8")
    (tmp_path / "a.jsonl").write_text(json.dumps(objs[0]), encoding="utf-8")
    assert records_of(tmp_path / "a.json") == records_of(tmp_path / "a.jsonl")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"a": 1},\n {"b": }]', "qa.json:2:8: malformed JSON: expecting value"),
        ("", "qa.json:1:1: malformed JSON: expecting value"),
        ('{"a": 1}', "qa.json: expected a JSON array of objects, found a JSON object"),
        ('"rows"', "qa.json: expected a JSON array of objects, found a JSON string"),
        ("42", "qa.json: expected a JSON array of objects, found a JSON number"),
        ("true", "qa.json: expected a JSON array of objects, found a JSON boolean"),
        ("null", "qa.json: expected a JSON array of objects, found a JSON null"),
        ('{"a": 1, "a": 2}', "qa.json: expected a JSON array of objects, found a JSON object"),
        ('[{"a": 1}, [1, 2]]', "qa.json: element 1 is a JSON array, not an object"),
        ('[{"a": 1}, {"b": 2}, "x"]', "qa.json: element 2 is a JSON string, not an object"),
        ('[{"a": 1}, {"id": {"k": 1, "k": 2}}]', "qa.json: element 1: duplicate key 'k' in object"),
        ('[{"a": 1, "a": 2}]', "qa.json: element 0: duplicate key 'a' in object"),
        ('[{"a": [NaN]}]', "qa.json: element 0: NaN is not a JSON number"),
        ('[{"a": 1}, {"a": -Infinity}]', "qa.json: element 1: -Infinity is not a JSON number"),
        ('[{"a": 1e999}]', "qa.json: element 0: number out of range: 1e999"),
        ('[{"a": "\\ud800"}]', "qa.json: element 0: string holds an unpaired surrogate"),
    ],
)
def test_json_errors(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(text, encoding="utf-8")
    assert error_of(path, "qa.json") == message


def test_json_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_bytes(b'[\n  {"a": "\xc3\xa9\xff"}\n]')
    assert error_of(path, "qa.json") == "qa.json:2:11: invalid UTF-8"


# --- CSV -----------------------------------------------------------------------------------


def test_csv_reads_rows_as_string_objects(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_bytes(b'\xef\xbb\xbfq,n\r\n"a, ""b""",1\r\n\r\n"multi\r\nline",\r\n')
    fmt, records = read(path)
    assert fmt == Format(
        "csv", columns=("q", "n"), options=(("delimiter", ","), ("lineterminator", "\r\n"))
    )
    assert records == canon({"q": 'a, "b"', "n": "1"}, {"q": "multi\r\nline", "n": ""})


def test_tsv_uses_tabs(tmp_path: Path) -> None:
    path = tmp_path / "qa.tsv"
    path.write_bytes(b"question\tanswer\nWhat, then?\t42\n")
    fmt, records = read(path)
    assert fmt.options == (("delimiter", "\t"), ("lineterminator", "\n"))
    assert records == canon({"question": "What, then?", "answer": "42"})
    roundtrip(path, tmp_path / "out.tsv")
    assert (tmp_path / "out.tsv").read_bytes() == b"question\tanswer\nWhat, then?\t42\n"


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_csv_round_trip_keeps_columns_and_line_ending(ending: bytes, tmp_path: Path) -> None:
    rows = [b"zeta,alpha,mid", b'1,"x, y","say ""hi"""', b'2,"two' + ending + b'lines",', b'3,"",z']
    src = tmp_path / "in.csv"
    src.write_bytes(ending.join(rows) + ending)
    fmt, _ = roundtrip(src, tmp_path / "out.csv")
    assert fmt.columns == ("zeta", "alpha", "mid")
    out = (tmp_path / "out.csv").read_bytes()
    assert out.startswith(b"zeta,alpha,mid" + ending)
    assert out.count(ending) == src.read_bytes().count(ending)


def test_csv_write_exact_bytes(tmp_path: Path) -> None:
    fmt = Format("csv", columns=("b", "a"), options=(("delimiter", ","), ("lineterminator", "\n")))
    path = tmp_path / "out.csv"
    records = canon(
        {"a": "1", "b": "x,y"}, {"b": "only b"}, {"a": ""}, {"a": 'q"uote', "b": "c\rr"}
    )
    write_dataset(path, fmt, records)
    assert path.read_bytes() == b'b,a\n"x,y",1\nonly b,\n,\n"c\rr","q""uote"\n'
    assert records_of(path)[0] == records[0]


def test_csv_single_empty_column_survives(tmp_path: Path) -> None:
    fmt = Format("csv", columns=("a",), options=(("delimiter", ","), ("lineterminator", "\n")))
    path = tmp_path / "out.csv"
    records = canon({"a": ""}, {"a": "x"})
    write_dataset(path, fmt, records)
    assert records_of(path) == records


def test_csv_writes_non_strings_as_json(tmp_path: Path) -> None:
    fmt = Format("csv", columns=("messages", "n", "ok", "none"))
    path = tmp_path / "out.csv"
    obj = {"messages": [{"role": "user", "content": "hi"}], "n": 1.5, "ok": True, "none": None}
    write_dataset(path, fmt, canon(obj))
    assert records_of(path) == canon(
        {
            "messages": '[{"content":"hi","role":"user"}]',
            "n": "1.5",
            "ok": "true",
            "none": "null",
        }
    )


def test_csv_write_rejects_unknown_key_and_keeps_old_file(tmp_path: Path) -> None:
    fmt = Format("csv", columns=("a",))
    path = tmp_path / "out.csv"
    path.write_bytes(b"a\nold\n")
    with pytest.raises(BadInput) as info:
        write_dataset(path, fmt, canon({"a": "1"}, {"a": "2", "extra": "x"}))
    assert info.value.message == (
        "cannot write out.csv: datapoint 1 has key 'extra', which is not a column of the CSV file"
    )
    assert path.read_bytes() == b"a\nold\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


cell_text = st.text(alphabet=st.sampled_from(list("ab ,;\"\t\r\n'éx€")), max_size=8)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(cell_text, cell_text), max_size=5),
    ending=st.sampled_from(["\n", "\r\n"]),
    delimiter=st.sampled_from([",", "\t"]),
)
def test_csv_round_trip_property(
    rows: list[tuple[str, str]], ending: str, delimiter: str, tmp_path: Path
) -> None:
    fmt = Format(
        "csv",
        columns=("q", "a"),
        options=(("delimiter", delimiter), ("lineterminator", ending)),
    )
    records = [encode_canonical({"q": q, "a": a}) for q, a in rows]
    path = tmp_path / ("p.tsv" if delimiter == "\t" else "p.csv")
    write_dataset(path, fmt, records)
    fmt2, again = read(path)
    assert again == records
    assert fmt2 == fmt


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "qa.csv: empty CSV file, expected a header row"),
        (b"\r\n\r\n", "qa.csv: empty CSV file, expected a header row"),
        (b"id,x,id\n1,2,3\n", "qa.csv:1: duplicate column name 'id'"),
        (b"id,,x\n", "qa.csv:1: empty column name (column 2)"),
        (b"a,b\n1,2\n1,2,3\n", "qa.csv:3: row has 3 fields, the header has 2"),
        # The row starts on line 3 even though its quoted cell ends on line 5.
        (b'a,b\n1,2\n"x\n\ny"\n4,5\n', "qa.csv:3: row has 1 fields, the header has 2"),
        (b'a,b\n"x\r\ny",2\n3\n', "qa.csv:4: row has 1 fields, the header has 2"),
        (b"a,b\n1,2\n\xff,3\n", "qa.csv:3: invalid UTF-8"),
        (b"a,\xc3\n", "qa.csv:1: invalid UTF-8"),
    ],
)
def test_csv_errors(data: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    assert error_of(path, "qa.csv") == message


# --- Parquet -------------------------------------------------------------------------------


def test_parquet_reads_json_values(tmp_path: Path) -> None:
    fmt, records = read(FIXTURES / "metrics.parquet")
    assert fmt.kind == "parquet"
    assert fmt.columns == ("id", "score", "passed", "latency_ms", "tags", "created_at")
    assert pa.ipc.read_schema(pa.py_buffer(fmt.schema)).equals(
        pq.read_schema(FIXTURES / "metrics.parquet")
    )
    assert msgspec.json.decode(records[0]) == {
        "id": "qa-001",
        "score": 1.0,
        "passed": True,
        "latency_ms": 412,
        "tags": ["geography", "easy"],
        "created_at": "2024-05-01T09:30:00.000000Z",
    }
    timeout = msgspec.json.decode(records[12])
    assert timeout["score"] is None and timeout["latency_ms"] is None


def test_parquet_fixture_round_trip_keeps_schema_and_values(tmp_path: Path) -> None:
    src = FIXTURES / "metrics.parquet"
    out = tmp_path / "metrics.parquet"
    roundtrip(src, out)
    assert pq.read_schema(out).equals(pq.read_schema(src), check_metadata=True)
    assert pq.read_table(out).equals(pq.read_table(src))


RICH_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        ("f32", pa.float32()),
        ("ts_ns", pa.timestamp("ns", tz="America/New_York")),
        ("ts_ms", pa.timestamp("ms")),
        ("d32", pa.date32()),
        ("t64", pa.time64("ns")),
        ("t32", pa.time32("ms")),
        ("dur", pa.duration("us")),
        ("dec", pa.decimal128(10, 3)),
        ("bin", pa.binary()),
        ("fbin", pa.binary(4)),
        ("lst", pa.list_(pa.timestamp("us", tz="UTC"))),
        ("llst", pa.large_list(pa.large_string())),
        ("st", pa.struct([("a", pa.int64()), ("b", pa.date32()), ("c", pa.list_(pa.float64()))])),
        ("mp", pa.map_(pa.string(), pa.int32())),
        ("dic", pa.dictionary(pa.int16(), pa.string())),
        ("u64", pa.uint64()),
        ("b", pa.bool_()),
    ],
    metadata={"origin": "unit-test"},
)
RICH_ROWS: list[dict[str, Any]] = [
    {
        "id": "r1",
        "f32": 0.5,
        "ts_ns": 1_700_000_000_123_456_789,
        "ts_ms": -1,
        "d32": -1,
        "t64": 86_399_999_999_999,
        "t32": 1,
        "dur": -5,
        "dec": decimal.Decimal("-1.500"),
        "bin": b"\x00\xff",
        "fbin": b"abcd",
        "lst": [0, None, 1],
        "llst": ["x", None],
        "st": {"a": 1, "b": 2, "c": [1.5, None]},
        "mp": [("k", 5), ("j", None)],
        "dic": "x",
        "u64": 2**64 - 1,
        "b": True,
    },
    {"id": "r2"},
]


def write_rich(path: Path) -> None:
    columns = {
        name: pa.array([row.get(name) for row in RICH_ROWS], type=RICH_SCHEMA.field(name).type)
        for name in RICH_SCHEMA.names
    }
    pq.write_table(pa.Table.from_pydict(columns, schema=RICH_SCHEMA), path)


def test_parquet_types_become_json(tmp_path: Path) -> None:
    path = tmp_path / "rich.parquet"
    write_rich(path)
    first = msgspec.json.decode(records_of(path)[0])
    assert first == {
        "id": "r1",
        "f32": 0.5,
        "ts_ns": "2023-11-14T22:13:20.123456789Z",
        "ts_ms": "1969-12-31T23:59:59.999",
        "d32": "1969-12-31",
        "t64": "23:59:59.999999999",
        "t32": "00:00:00.001",
        "dur": -5,
        "dec": "-1.500",
        "bin": base64.b64encode(b"\x00\xff").decode(),
        "fbin": "YWJjZA==",
        "lst": ["1970-01-01T00:00:00.000000Z", None, "1970-01-01T00:00:00.000001Z"],
        "llst": ["x", None],
        "st": {"a": 1, "b": "1970-01-03", "c": [1.5, None]},
        "mp": [["k", 5], ["j", None]],
        "dic": "x",
        "u64": 2**64 - 1,
        "b": True,
    }
    second = msgspec.json.decode(records_of(path)[1])
    assert second == {name: None for name in RICH_SCHEMA.names} | {"id": "r2"}


def test_parquet_round_trip_keeps_schema_and_every_value(tmp_path: Path) -> None:
    src = tmp_path / "rich.parquet"
    write_rich(src)
    out = tmp_path / "out.parquet"
    roundtrip(src, out)
    assert pq.read_schema(out).equals(pq.read_schema(src), check_metadata=True)
    assert pq.read_table(out).equals(pq.read_table(src))


def test_parquet_write_accepts_other_iso_spellings(tmp_path: Path) -> None:
    schema = pa.schema([("t", pa.timestamp("us", tz="UTC")), ("d", pa.date32())])
    fmt = Format("parquet", columns=("t", "d"), schema=schema.serialize().to_pybytes())
    path = tmp_path / "out.parquet"
    write_dataset(path, fmt, canon({"t": "2024-05-01T11:30:00+02:00", "d": "2024-05-01"}))
    assert pq.read_table(path).to_pylist() == [
        {"t": dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC), "d": dt.date(2024, 5, 1)}
    ]


def test_parquet_empty_dataset(tmp_path: Path) -> None:
    fmt, _ = read(FIXTURES / "metrics.parquet")
    path = tmp_path / "empty.parquet"
    write_dataset(path, fmt, [])
    assert records_of(path) == []
    assert pq.read_schema(path).equals(pq.read_schema(FIXTURES / "metrics.parquet"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_parquet_rejects_non_finite_floats(bad: float, tmp_path: Path) -> None:
    path = tmp_path / "scores.parquet"
    table = pa.table({"id": ["a", "b"], "scores": pa.array([[1.0], [0.5, bad]])})
    pq.write_table(table, path)
    assert error_of(path, "evals/scores.parquet") == (
        "evals/scores.parquet: row 1, column 'scores': NaN/Infinity is not allowed in a datapoint"
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "Parquet file size is 0 bytes"),
        (b"id,score\n1,2\n" * 4, "Parquet magic bytes not found in footer"),
    ],
)
def test_not_a_parquet_file(data: bytes, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "metrics.parquet"
    path.write_bytes(data)
    message = error_of(path, "evals/metrics.parquet")
    assert message == f"evals/metrics.parquet: not a Parquet file ({reason})"


def test_parquet_write_rejects_unknown_key(tmp_path: Path) -> None:
    fmt, _ = read(FIXTURES / "metrics.parquet")
    with pytest.raises(BadInput) as info:
        write_dataset(tmp_path / "m.parquet", fmt, canon({"id": "x", "grade": "A"}))
    assert info.value.message == (
        "cannot write m.parquet: datapoint 0 has key 'grade', which is not a column of the "
        "Parquet file"
    )
    assert list(tmp_path.iterdir()) == []


def test_parquet_write_rejects_bad_timestamp(tmp_path: Path) -> None:
    fmt, _ = read(FIXTURES / "metrics.parquet")
    with pytest.raises(BadInput) as info:
        write_dataset(tmp_path / "m.parquet", fmt, canon({"id": "x", "created_at": "yesterday"}))
    assert info.value.message == (
        "cannot write m.parquet: datapoint 0, column 'created_at': "
        "'yesterday' is not an ISO-8601 timestamp"
    )


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"id": "x", "tags": "math"},
            "datapoint 0, column 'tags': expected a JSON array, found a JSON string",
        ),
        ({"id": "x", "latency_ms": "fast"}, "column 'latency_ms': "),
        ({"score": 1.0}, "Column 'id' is declared non-nullable but contains nulls"),
    ],
)
def test_parquet_write_rejects_values_that_do_not_fit(
    obj: dict[str, Any], message: str, tmp_path: Path
) -> None:
    fmt, _ = read(FIXTURES / "metrics.parquet")
    with pytest.raises(BadInput) as info:
        write_dataset(tmp_path / "m.parquet", fmt, canon(obj))
    assert info.value.message.startswith(f"cannot write m.parquet: {message}")
    assert list(tmp_path.iterdir()) == []


def test_parquet_write_rejects_unknown_struct_field(tmp_path: Path) -> None:
    schema = pa.schema([("target", pa.struct([("answer", pa.string())]))])
    fmt = Format("parquet", columns=("target",), schema=schema.serialize().to_pybytes())
    with pytest.raises(BadInput) as info:
        write_dataset(tmp_path / "t.parquet", fmt, canon({"target": {"answer": "a", "why": "b"}}))
    assert info.value.message == (
        "cannot write t.parquet: datapoint 0, column 'target': "
        "key 'why' is not a field of the struct"
    )


def test_formats_import_does_not_load_pyarrow() -> None:
    code = "import sys, dsv.formats; sys.exit('pyarrow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_every_format_is_written_byte_stably(dsv: Dsv) -> None:
    names = ("chat_qa.jsonl", "rag.jsonl", "tool_calling.json", "humanloop.csv", "metrics.parquet")
    for name in names:
        shutil.copy(FIXTURES / name, dsv.root / name)
    dsv("add", *names)
    dsv("commit", "-m", "fixtures")
    dsv("checkout", "--force", "HEAD")
    first = {name: (dsv.root / name).read_bytes() for name in names}
    for name in names:
        (dsv.root / name).unlink()
    dsv("checkout", "--force", "HEAD")
    assert {name: (dsv.root / name).read_bytes() for name in names} == first
    assert dsv("status", "--porcelain").stdout == ""
    assert dsv("status").stdout.startswith("On branch main\n")
