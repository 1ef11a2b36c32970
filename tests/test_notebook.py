"""The Python face: dsv.Repository's reads and diffs, dsv.load (dsv.notebook)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import dsv
from dsv import labels
from dsv.errors import BadInput
from tests.conftest import (
    FIXTURES,
    QA,
)


def test_read_keeps_the_stored_parquet_schema_and_csv_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = dsv.Repository.init(tmp_path)
    for name in ("metrics.parquet", "humanloop.csv"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    repo.add(["metrics.parquet", "humanloop.csv"])
    repo.commit("fixtures")
    original = pq.read_table(FIXTURES / "metrics.parquet")
    table = repo.read("HEAD", "metrics.parquet")
    assert table.schema.equals(original.schema, check_metadata=True)
    assert table.equals(original)
    header = (FIXTURES / "humanloop.csv").read_text().splitlines()[0]
    csv_table = repo.read("HEAD", "humanloop.csv")
    assert csv_table.column_names == header.split(",")
    assert all(t == pa.string() for t in csv_table.schema.types)


def test_read_keeps_every_field_of_every_record(tmp_path: Path) -> None:
    repo = dsv.Repository.init(tmp_path)
    records = [{"id": 1, "q": "a"}, {"id": 2, "q": "b", "extra": {"x": 1}}, {"id": 3}]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    repo.add(["qa.jsonl"])
    repo.commit("v1")
    table = repo.read("HEAD", "qa.jsonl")
    assert table.column_names == ["id", "q", "extra"]
    assert table.to_pylist() == [{"q": None, "extra": None, **r} for r in records]
    (tmp_path / "mixed.jsonl").write_text('{"v": 1}\n{"v": "one"}\n')
    repo.add(["mixed.jsonl"])
    repo.commit("v2")
    with pytest.raises(BadInput, match=r"mixed\.jsonl: field 'v' cannot be one Arrow column"):
        repo.read("HEAD", "mixed.jsonl")
    assert list(repo.records("HEAD", "mixed.jsonl")) == [{"v": 1}, {"v": "one"}]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    repo.add(["empty.jsonl"])
    repo.commit("v3")
    assert repo.read("HEAD", "empty.jsonl").num_rows == 0


def test_load_reads_paths_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = dsv.Repository.init(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "qa.jsonl").write_text('{"id": "root"}\n')
    (tmp_path / "sub" / "qa.jsonl").write_text('{"id": "sub"}\n')
    repo.add(["qa.jsonl", "sub/qa.jsonl"])
    repo.commit("v1")
    monkeypatch.chdir(tmp_path / "sub")
    assert dsv.load("qa.jsonl@HEAD").to_pylist() == [{"id": "sub"}]
    assert dsv.load("../qa.jsonl@HEAD").to_pylist() == [{"id": "root"}]


def test_python_api_diff_and_errors(tmp_path: Path) -> None:
    repo = dsv.Repository.init(tmp_path)
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA))
    repo.add(["qa.jsonl"], key=("id",))
    first = repo.commit("v1")
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA[1:]))
    second = repo.commit("v2", all=True)
    labels.deploy(repo, "production", first.hex())
    result = repo.diff("production", "HEAD", paths=["qa.jsonl"], key="id")
    assert (result.from_oid, result.to_oid) == (first, second)
    assert [(c.status, c.key) for c in result.changes()] == [("removed", {"id": 1})]
    with pytest.raises(BadInput, match="empty field name"):
        repo.diff("HEAD~1", "HEAD", key=("id", ""))


def test_repository_environments_deploy_and_diff_records(tmp_path: Path) -> None:
    repo = dsv.Repository.init(tmp_path)
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA))
    repo.add(["qa.jsonl"], key=("id",))
    first = repo.commit("first")
    assert repo.deploy("production") == first
    assert [(e.name, e.oid) for e in repo.environments()] == [("production", first)]
    changed = [{**QA[0], "a": "changed"}, *QA[1:]]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in changed))
    repo.add(["qa.jsonl"])
    repo.commit("second")
    records = list(repo.diff_records("production", "HEAD"))
    assert [(r["path"], r["status"], r["key"]) for r in records] == [
        ("qa.jsonl", "modified", {"id": QA[0]["id"]})
    ]


def test_load_into_polars_pandas_and_hf(tmp_path: Path) -> None:
    repo = dsv.Repository.init(tmp_path)
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA))
    repo.add(["qa.jsonl"])
    commit = repo.commit("first")
    table = dsv.load("qa.jsonl", cwd=tmp_path)
    again = dsv.load("qa.jsonl@HEAD", cwd=tmp_path)  # the second from the table cache
    assert table.to_pylist() == again.to_pylist() == QA
    assert again.schema.metadata[b"dsv.commit"] == commit.hex().encode()
    assert dsv.load("qa.jsonl", cwd=tmp_path, into="polars").to_dicts() == QA
    assert dsv.load("qa.jsonl", cwd=tmp_path, into="pandas").to_dict("records") == QA
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(dsv.BadState, match="datasets package is not installed"):
            dsv.load("qa.jsonl", cwd=tmp_path, into="hf")
    else:
        assert dsv.load("qa.jsonl", cwd=tmp_path, into="hf").to_list() == QA


def test_iter_records_streams_in_order(tmp_path: Path) -> None:
    repo = dsv.Repository.init(tmp_path)
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA))
    repo.add(["qa.jsonl"])
    repo.commit("first")
    records = dsv.iter_records("qa.jsonl", cwd=tmp_path)
    assert next(records) == QA[0]
    assert list(records) == QA[1:]
