"""The Humanloop Datasets API of `dsv serve` (issue 6), driven by the official `humanloop` SDK
against a real server on 127.0.0.1, and round-tripped with the dsv CLI both ways.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from humanloop import Humanloop
from humanloop.core.api_error import ApiError
from humanloop.errors import UnprocessableEntityError

from benchmarks.push import Server
from dsv.cli import main
from dsv.notebook import Repository
from dsv.server.dialects import FieldError
from dsv.server.dialects.humanloop.backends import open_store
from dsv.server.dialects.humanloop.routes import parse_form
from dsv.server.dialects.humanloop.service import DATAPOINT_CHUNK, HumanloopService
from dsv.server.dialects.humanloop.types import CreateDatapoint, UpsertRequest
from dsv.server.storage import open_storage
from dsv.server.storage.sqlite import SqliteMetaStore
from dsv.server.storage.stored import StoredObjects

JSON = {"content-type": "application/json"}
QA = [
    {"inputs": {"question": "What is the capital of France?"}, "target": {"answer": "Paris"}},
    {
        "messages": [{"role": "user", "content": "Who wrote Hamlet?"}],
        "target": {"answer": "William Shakespeare"},
    },
]


KeyMaker = Callable[..., str]


class Keys:
    def __init__(self, make: KeyMaker) -> None:
        self.write = make("write")
        self.read = make("read")
        self.other = make("write", "other/repo")


@pytest.fixture(scope="module")
def server(server_root: Path, server_keys: KeyMaker) -> Iterator[tuple[Server, Keys]]:
    keys = Keys(server_keys)
    with Server(server_root) as running:
        yield running, keys


@pytest.fixture
def hl(server: tuple[Server, Keys]) -> Humanloop:
    running, keys = server
    return Humanloop(api_key=keys.write, base_url=f"{running.url}/v5")


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository of its own for each test, named after it."""
    return "hl/" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:80].strip("-")


@pytest.fixture
def local(tmp_path: Path, server: tuple[Server, Keys], repo: str, monkeypatch: Any) -> Path:
    """A dsv repository whose remote `origin` is the test's repository, with a write key."""
    running, keys = server
    monkeypatch.setenv("DSV_API_KEY", keys.write)
    root = tmp_path / "work"
    dsv(tmp_path, "init", str(root))
    dsv(root, "remote", "add", "origin", f"{running.url}/{repo}")
    return root


def raw(server: tuple[Server, Keys], method: str, path: str, **kwargs: Any) -> httpx.Response:
    running, keys = server
    headers = {"X-API-KEY": keys.write, **kwargs.pop("headers", {})}
    return httpx.request(method, running.url + path, headers=headers, timeout=30, **kwargs)


def dsv(root: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["-C", str(root), *args])
    assert result.exit_code == code, f"dsv {args}: {result.output}{result.exception!r}"
    return result


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def content(points: Any) -> list[dict[str, Any]]:
    """Datapoint responses without their ids, as the records they stand for."""
    out = []
    for p in points:
        data = p if isinstance(p, dict) else p.dict()
        out.append({k: v for k, v in data.items() if k != "id" and v is not None})
    return out


def error_detail(exc: pytest.ExceptionInfo[ApiError]) -> Any:
    body = exc.value.body
    return body.detail if hasattr(body, "detail") else body["detail"]


# -- datasets and datapoints -----------------------------------------------------------------


def test_upsert_creates_a_dataset_and_its_first_version(hl: Humanloop, repo: str) -> None:
    made = hl.datasets.upsert(
        path=f"{repo}/qa", datapoints=QA, version_name="v1", include_datapoints=True
    )
    assert made.path == f"{repo}/qa" and made.name == "qa" and made.type == "dataset"
    assert re.fullmatch(r"ds_[0-9a-f]{24}", made.id)
    assert re.fullmatch(r"dsv_[0-9a-f]{64}", made.version_id)
    assert made.version_name == "v1" and made.datapoints_count == 2
    assert content(made.datapoints or []) == QA
    assert all(re.fullmatch(r"dp_[0-9a-f]{64}", p.id) for p in made.datapoints or [])
    # Get returns the same version; without include_datapoints, no datapoints.
    got = hl.datasets.get(made.id)
    assert (got.id, got.version_id, got.datapoints) == (made.id, made.version_id, None)
    assert got.created_by["email_address"].startswith("key-")


def test_list_datapoints_pages_with_total(
    hl: Humanloop, repo: str, server: tuple[Server, Keys]
) -> None:
    points = [{"inputs": {"n": str(i)}} for i in range(7)]
    made = hl.datasets.upsert(path=f"{repo}/many", datapoints=points)
    # The SDK's pager walks every page (size 3: 3 + 3 + 1, then an empty page ends it).
    listed = list(hl.datasets.list_datapoints(made.id, size=3))
    assert content(listed) == points
    reply = raw(server, "GET", f"/v5/datasets/{made.id}/datapoints", params={"page": 3, "size": 3})
    body = reply.json()
    assert (body["page"], body["size"], body["total"], len(body["records"])) == (3, 3, 7, 1)
    assert (
        raw(server, "GET", f"/v5/datasets/{made.id}/datapoints", params={"page": 9}).json()[
            "records"
        ]
        == []
    )
    # The same datapoint keeps its id in every version.
    later = hl.datasets.upsert(id=made.id, action="add", datapoints=[{"inputs": {"n": "x"}}])
    before = {p.id for p in hl.datasets.list_datapoints(made.id, version_id=made.version_id)}
    after = {p.id for p in hl.datasets.list_datapoints(made.id, version_id=later.version_id)}
    assert len(before) == 7 and before < after and len(after) == 8


def test_actions_set_add_remove_and_their_base(hl: Humanloop, repo: str) -> None:
    a, b, c = ({"inputs": {"q": x}} for x in "abc")
    v1 = hl.datasets.upsert(path=f"{repo}/d", datapoints=[a, b])
    # add: deduplicated against the base and within the request.
    v2 = hl.datasets.upsert(id=v1.id, action="add", datapoints=[b, c, c])
    assert content(hl.datasets.list_datapoints(v1.id)) == [a, b, c]
    # _dedupe_id in inputs keeps an intentional duplicate.
    dup = {"inputs": {"q": "c", "_dedupe_id": "2"}}
    v3 = hl.datasets.upsert(id=v1.id, action="add", datapoints=[dup])
    assert v3.datapoints_count == 4
    # remove, based on a named version rather than the latest.
    v4 = hl.datasets.upsert(id=v1.id, action="remove", datapoints=[a], version_id=v2.version_id)
    assert content(hl.datasets.list_datapoints(v1.id, version_id=v4.version_id)) == [b, c]
    # add based on the environment's version.
    hl.datasets.set_deployment(v1.id, "staging", version_id=v1.version_id)
    v5 = hl.datasets.upsert(id=v1.id, action="add", datapoints=[c], environment="staging")
    assert content(hl.datasets.list_datapoints(v1.id, version_id=v5.version_id)) == [a, b, c]
    # set (the default action) replaces everything, deduplicated.
    v6 = hl.datasets.upsert(id=v1.id, datapoints=[c, c, a])
    assert content(hl.datasets.list_datapoints(v1.id, version_id=v6.version_id)) == [c, a]
    listed = [v.version_id for v in hl.datasets.list_versions(v1.id).records]
    made = [v.version_id for v in (v6, v5, v4, v3, v2, v1)]
    assert listed == made
    # Nothing to change: no new version, the latest is returned.
    same = hl.datasets.upsert(id=v1.id, datapoints=[c, a])
    assert same.version_id == v6.version_id
    assert len(hl.datasets.list_versions(v1.id).records) == 6


def test_version_names_are_unique_and_renamed_without_new_commits(hl: Humanloop, repo: str) -> None:
    v1 = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA[:1], version_name="first")
    with pytest.raises(ApiError) as exc:
        hl.datasets.upsert(id=v1.id, datapoints=QA, version_name="first")
    assert exc.value.status_code == 409
    assert "Version name 'first' is already used" in error_detail(exc)
    assert len(hl.datasets.list_versions(v1.id).records) == 1
    v2 = hl.datasets.upsert(
        id=v1.id, datapoints=QA, version_name="second", version_description="both rows"
    )
    assert (v2.version_name, v2.version_description) == ("second", "both rows")
    renamed = hl.datasets.update_dataset_version(
        v1.id, v1.version_id, name="baseline", description="one row"
    )
    assert (renamed.version_id, renamed.version_name) == (v1.version_id, "baseline")
    assert renamed.version_description == "one row"
    with pytest.raises(ApiError) as exc:
        hl.datasets.update_dataset_version(v1.id, v1.version_id, name="second")
    assert exc.value.status_code == 409
    # Sending the same upsert again (the SDK retries on its own) is not a conflict.
    again = hl.datasets.upsert(
        id=v1.id, datapoints=QA, version_name="second", version_description="both rows"
    )
    assert again.version_id == v2.version_id
    # A renamed version keeps its description, not its old name.
    v3 = hl.datasets.upsert(id=v1.id, datapoints=QA[1:], version_name="third")
    assert v3.version_description == "set 1 datapoint of d.jsonl (Humanloop API)"
    renamed = hl.datasets.update_dataset_version(v1.id, v3.version_id, name="3rd")
    assert (renamed.version_name, renamed.version_description) == (
        "3rd",
        "set 1 datapoint of d.jsonl (Humanloop API)",
    )
    versions = hl.datasets.list_versions(v1.id).records
    assert [(v.version_id, v.version_name) for v in versions] == [
        (v3.version_id, "3rd"),
        (v2.version_id, "second"),
        (v1.version_id, "baseline"),
    ]
    # A deleted version's name stays taken: were it deployed again, two would share it.
    hl.datasets.delete_dataset_version(v1.id, v2.version_id)
    with pytest.raises(ApiError) as exc:
        hl.datasets.update_dataset_version(v1.id, v3.version_id, name="second")
    assert exc.value.status_code == 409


def test_list_versions_include_datapoints(hl: Humanloop, repo: str) -> None:
    v1 = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA[:1])
    hl.datasets.upsert(id=v1.id, datapoints=QA)
    latest, first = hl.datasets.list_versions(v1.id, include_datapoints="latest_saved").records
    assert content(latest.datapoints or []) == QA and first.datapoints is None
    with pytest.raises(UnprocessableEntityError) as exc:
        hl.datasets.list_versions(v1.id, include_datapoints="all")  # type: ignore[arg-type]
    assert exc.value.body.detail[0].loc == ["query", "include_datapoints"]


def test_an_upsert_that_changes_nothing_keeps_every_version_name(
    hl: Humanloop, repo: str, server: tuple[Server, Keys]
) -> None:
    v1 = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA, version_name="v1")
    assert v1.version_created is True  # type: ignore[attr-defined]
    # Adding datapoints that are all there already makes no version: the latest stays as it
    # is, named v1, and the response says that no version was made.
    same = hl.datasets.upsert(
        id=v1.id,
        datapoints=QA[:1],
        action="add",
        version_name="v2",
        version_description="nothing new",
        attributes={"run": 2},
    )
    assert (same.version_id, same.version_name) == (v1.version_id, "v1")
    assert same.version_created is False  # type: ignore[attr-defined]
    assert same.version_description == v1.version_description and same.attributes is None
    versions = hl.datasets.list_versions(v1.id).records
    assert [(v.version_id, v.version_name) for v in versions] == [(v1.version_id, "v1")]
    # The name it did not get is still free for a version that changes something.
    v2 = hl.datasets.upsert(id=v1.id, datapoints=QA[1:], action="remove", version_name="v2")
    assert v2.version_created is True  # type: ignore[attr-defined]
    # A `set` to the same datapoints, or a retried upsert, changes nothing either.
    again = hl.datasets.upsert(id=v1.id, datapoints=QA[:1], version_name="v3")
    assert (again.version_id, again.version_name) == (v2.version_id, "v2")
    assert again.version_created is False  # type: ignore[attr-defined]
    assert [v.version_name for v in hl.datasets.list_versions(v1.id).records] == ["v2", "v1"]
    # Only an upsert's response carries version_created.
    assert "version_created" not in raw(server, "GET", f"/v5/datasets/{v1.id}").json()


def test_include_datapoints_streams_every_datapoint_of_a_large_dataset(
    hl: Humanloop, repo: str, server: tuple[Server, Keys]
) -> None:
    # More than two chunks of DATAPOINT_CHUNK, so the response is made of several pieces.
    points = [{"inputs": {"q": f"question {i}"}, "target": {"i": i}} for i in range(1300)]
    assert len(points) > 2 * DATAPOINT_CHUNK
    made = hl.datasets.upsert(path=f"{repo}/big", datapoints=points, include_datapoints=True)
    assert content(made.datapoints or []) == points
    paged = list(hl.datasets.list_datapoints(made.id, size=500))
    got = hl.datasets.get(made.id, include_datapoints=True)
    assert got.datapoints == paged and got.datapoints_count == 1300
    assert got.version_id == made.version_id and got.path == f"{repo}/big"
    (latest,) = hl.datasets.list_versions(made.id, include_datapoints="latest_saved").records
    assert latest.datapoints == paged
    reply = raw(server, "GET", f"/v5/datasets/{made.id}?include_datapoints=true")
    assert reply.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in reply.headers
    assert reply.json()["datapoints"] == [p.dict(exclude_none=True) for p in paged]
    # An empty version streams as an empty list.
    empty = hl.datasets.upsert(id=made.id, datapoints=[], include_datapoints=True)
    assert empty.datapoints == [] and empty.datapoints_count == 0


def test_streamed_responses_are_whole_json_in_chunks_of_any_size(tmp_path: Path) -> None:
    blobs, meta = open_storage(tmp_path / "root")
    service = HumanloopService(
        StoredObjects(blobs), meta, open_store(meta), tmp_dir=tmp_path / "root", auth=False, chunk=2
    )
    try:
        points = [CreateDatapoint(inputs={"q": str(i)}) for i in range(7)]
        made = service.upsert(None, UpsertRequest(points, path="acme/evals/d")).response
        service.upsert(None, UpsertRequest(points[:3], id=made.id, version_name="three"))
        found = service.get(None, made.id, include_datapoints=True)
        pieces = list(service.encode_dataset(found))
        assert len(pieces) == 2 + 2  # the head, two chunks (of 3 datapoints: 2 and 1), the end
        body = json.loads(b"".join(pieces))
        assert [p["inputs"] for p in body["datapoints"]] == [{"q": "0"}, {"q": "1"}, {"q": "2"}]
        assert body["version_name"] == "three" and body["datapoints_count"] == 3
        listed = json.loads(
            b"".join(
                service.encode_versions(
                    service.list_versions(None, made.id, include_datapoints="latest_saved")
                )
            )
        )
        assert [len(r["datapoints"] or []) for r in listed["records"]] == [3, 0]
        assert listed["records"][1]["datapoints"] is None
        assert json.loads(b"".join(service.encode_dataset(service.get(None, made.id)))) == {
            **body,
            "datapoints": None,
        }
    finally:
        blobs.close()
        meta.close()


def test_list_datasets_filters_sorts_and_pages(hl: Humanloop, repo: str) -> None:
    for name in ("beta", "alpha", "gamma/nested"):
        hl.datasets.upsert(path=f"{repo}/{name}", datapoints=[{"inputs": {"n": name}}])
    mine = [d for d in hl.datasets.list(size=100) if d.path.startswith(repo + "/")]
    assert sorted(d.name for d in mine) == ["alpha", "beta", "nested"]
    by_name = list(hl.datasets.list(name=repo, sort_by="name", order="asc", size=2))
    assert [d.name for d in by_name] == ["alpha", "beta", "nested"]
    page = hl.datasets.list(name=repo, sort_by="name", order="desc", size=1, page=2)
    assert [d.name for d in page.items or []] == ["beta"]
    assert [d.name for d in hl.datasets.list(name=f"{repo}/GAMMA")] == ["nested"]
    with pytest.raises(UnprocessableEntityError) as exc:
        hl.datasets.list(sort_by="size")  # type: ignore[arg-type]
    assert exc.value.body.detail[0].loc == ["query", "sort_by"]


# -- environments ----------------------------------------------------------------------------


def test_deploy_list_and_remove_environments(
    hl: Humanloop, repo: str, server: tuple[Server, Keys]
) -> None:
    v1 = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA[:1])
    v2 = hl.datasets.upsert(id=v1.id, datapoints=QA)
    envs = hl.datasets.list_environments(v1.id)
    assert [(e.name, e.tag, e.file) for e in envs] == [
        ("production", "default", None),
        ("staging", "other", None),
    ]
    assert all(re.fullmatch(r"env_[0-9a-f]{24}", e.id) for e in envs)
    production = envs[0].id
    # Deploy by environment id; Get then defaults to the default environment's version.
    deployed = hl.datasets.set_deployment(v1.id, production, version_id=v1.version_id)
    assert deployed.version_id == v1.version_id
    assert [e.name for e in deployed.environments or []] == ["production"]
    assert hl.datasets.get(v1.id).version_id == v1.version_id
    assert hl.datasets.get(v1.id, environment="production").datapoints_count == 1
    # ...and by name.
    hl.datasets.set_deployment(v1.id, "staging", version_id=v2.version_id)
    envs = hl.datasets.list_environments(v1.id)
    assert [(e.name, e.file and e.file.version_id) for e in envs] == [
        ("production", v1.version_id),
        ("staging", v2.version_id),
    ]
    hl.datasets.remove_deployment(v1.id, production)
    assert hl.datasets.get(v1.id).version_id == v2.version_id  # the latest again
    with pytest.raises(ApiError) as exc:
        hl.datasets.get(v1.id, environment="production")
    assert exc.value.status_code == 404
    # Every move is in the environment's ref log, with who did it.
    running, _ = server
    meta = SqliteMetaStore(running.root / "meta.sqlite3")
    try:
        log = meta.ref_log(repo, "refs/envs/production")
    finally:
        meta.close()
    assert [(e.new.hex(), e.reason) for e in log] == [
        (v1.version_id[4:], f"humanloop: deploy {v1.version_id}"),
        ("0" * 64, "humanloop: remove deployment"),
    ]
    assert all(e.user.startswith("Humanloop API [key ") for e in log)


def test_configured_environments(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with Server(root, "--no-auth", "--environment", "prod", "--environment", "qa") as running:
        client = Humanloop(api_key="unused", base_url=f"{running.url}/v5")
        made = client.datasets.upsert(path="a/b/c", datapoints=QA)
        envs = client.datasets.list_environments(made.id)
        assert [(e.name, e.tag) for e in envs] == [("prod", "default"), ("qa", "other")]
        client.datasets.set_deployment(made.id, "prod", version_id=made.version_id)
        with pytest.raises(ApiError) as exc:
            client.datasets.set_deployment(made.id, "production", version_id=made.version_id)
        assert exc.value.status_code == 404
    result = CliRunner().invoke(
        main, ["serve", "--root", str(root), "--environment", "a/b", "--port", "0"]
    )
    assert result.exit_code == 2
    assert "error: invalid environment name 'a/b': it may not contain '/'" in result.output


# -- CSV upload ------------------------------------------------------------------------------


def test_upload_csv_adds_rows_to_the_default_environments_version(hl: Humanloop, repo: str) -> None:
    v1 = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA[:1])
    hl.datasets.upsert(id=v1.id, action="add", datapoints=QA[1:])
    hl.datasets.set_deployment(v1.id, "production", version_id=v1.version_id)
    csv_text = (
        "question,messages,target\n"
        'Capital of Peru?,,"{""answer"": ""Lima""}"\n'
        '"What is 2+2?","[{""role"": ""user"", ""content"": ""2+2?""}]",\n'
    )
    made = hl.datasets.upload_csv(
        v1.id,
        file=("rows.csv", io.BytesIO(csv_text.encode()), "text/csv"),
        version_name="from csv",
    )
    assert made.version_name == "from csv"
    assert content(hl.datasets.list_datapoints(v1.id, version_id=made.version_id)) == [
        QA[0],
        {"inputs": {"question": "Capital of Peru?"}, "target": {"answer": "Lima"}},
        {
            "inputs": {"question": "What is 2+2?"},
            "messages": [{"role": "user", "content": "2+2?"}],
        },
    ]
    # Based on a named version instead: the rows join all of it.
    again = hl.datasets.upload_csv(
        v1.id,
        file=("rows.csv", io.BytesIO(b"question\nnew one\n"), "text/csv"),
        version_id=made.version_id,
    )
    assert again.datapoints_count == 4
    with pytest.raises(UnprocessableEntityError) as exc:
        hl.datasets.upload_csv(
            v1.id, file=("bad.csv", io.BytesIO(b"question,target\nok,\nx,{not json}\n"))
        )
    detail = exc.value.body.detail[0]
    assert detail.loc == ["body", "file"]
    assert detail.msg.startswith("line 3: column target is not JSON")


def test_upload_the_bundled_humanloop_csv(hl: Humanloop, repo: str) -> None:
    fixture = Path(__file__).resolve().parents[3] / "fixtures" / "humanloop.csv"
    made = hl.datasets.upsert(path=f"{repo}/support", datapoints=[])
    with fixture.open("rb") as handle:
        uploaded = hl.datasets.upload_csv(made.id, file=("humanloop.csv", handle, "text/csv"))
    with fixture.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    points = list(hl.datasets.list_datapoints(made.id, version_id=uploaded.version_id))
    assert len(points) == len(rows) == uploaded.datapoints_count
    for row, point in zip(rows, points, strict=True):
        assert point.inputs == {"question": row["question"], "context": row["context"]}
        assert [m.dict(exclude_none=True) for m in point.messages or []] == json.loads(
            row["messages"]
        )
        assert point.target == json.loads(row["target"])


# -- versions --------------------------------------------------------------------------------


def test_delete_version_hides_it_unless_a_ref_needs_it(hl: Humanloop, repo: str) -> None:
    v1 = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA[:1])
    v2 = hl.datasets.upsert(id=v1.id, datapoints=QA)
    v3 = hl.datasets.upsert(id=v1.id, datapoints=QA[1:])
    hl.datasets.set_deployment(v1.id, "production", version_id=v1.version_id)
    for needed, why in ((v1, "deployed to environment production"), (v3, "latest version")):
        with pytest.raises(ApiError) as exc:
            hl.datasets.delete_dataset_version(v1.id, needed.version_id)
        assert exc.value.status_code == 409 and why in error_detail(exc)
    hl.datasets.delete_dataset_version(v1.id, v2.version_id)
    listed = [v.version_id for v in hl.datasets.list_versions(v1.id).records]
    assert listed == [v3.version_id, v1.version_id]
    with pytest.raises(ApiError) as exc:
        hl.datasets.get(v1.id, version_id=v2.version_id)
    assert exc.value.status_code == 404
    with pytest.raises(ApiError) as exc:
        hl.datasets.delete_dataset_version(v1.id, v2.version_id)
    assert exc.value.status_code == 404


def test_deleted_version_returns_while_an_environment_holds_it(
    hl: Humanloop, repo: str, tmp_path: Path, server: tuple[Server, Keys]
) -> None:
    v1 = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA[:1])
    hl.datasets.upsert(id=v1.id, datapoints=QA)
    hl.datasets.delete_dataset_version(v1.id, v1.version_id)
    assert len(hl.datasets.list_versions(v1.id).records) == 1
    # A dsv user deploys that commit to staging: the version is needed again, so shown again.
    running, keys = server
    local = tmp_path / "clone"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSV_API_KEY", keys.write)
        dsv(tmp_path, "clone", f"{running.url}/{repo}", str(local))
        dsv(local, "env", "deploy", "staging", v1.version_id[4:])
        dsv(local, "push", "origin", "staging")
    listed = hl.datasets.list_versions(v1.id).records
    assert [v.version_id for v in listed][-1] == v1.version_id
    assert [e.name for e in listed[-1].environments or []] == ["staging"]


# -- move and delete -------------------------------------------------------------------------


def test_move_keeps_the_id_and_the_versions(hl: Humanloop, repo: str) -> None:
    v1 = hl.datasets.upsert(path=f"{repo}/old/name", datapoints=QA[:1])
    v2 = hl.datasets.upsert(id=v1.id, datapoints=QA)
    hl.datasets.upsert(path=f"{repo}/taken", datapoints=QA)
    moved = hl.datasets.move(v1.id, name="renamed")
    assert (moved.id, moved.path, moved.name) == (v1.id, f"{repo}/old/renamed", "renamed")
    moved = hl.datasets.move(v1.id, path=f"{repo}/elsewhere/final")
    assert moved.path == f"{repo}/elsewhere/final" and moved.version_id == v2.version_id
    versions = [v.version_id for v in hl.datasets.list_versions(v1.id).records]
    assert versions == [v2.version_id, v1.version_id]
    assert content(hl.datasets.list_datapoints(v1.id, version_id=v1.version_id)) == QA[:1]
    with pytest.raises(ApiError) as exc:
        hl.datasets.move(v1.id, path=f"{repo}/taken")
    assert exc.value.status_code == 409
    assert f"{repo} already has a dataset at taken.jsonl" in error_detail(exc)
    with pytest.raises(UnprocessableEntityError) as unprocessable:
        hl.datasets.move(v1.id, path="other/repo/final")
    assert "a dataset moves within its repository" in unprocessable.value.body.detail[0].msg


def test_delete_dataset(hl: Humanloop, repo: str) -> None:
    made = hl.datasets.upsert(path=f"{repo}/gone", datapoints=QA)
    kept = hl.datasets.upsert(path=f"{repo}/kept", datapoints=QA)
    hl.datasets.delete(made.id)
    assert [d.name for d in hl.datasets.list(name=repo)] == ["kept"]
    for call in (
        lambda: hl.datasets.get(made.id),
        lambda: hl.datasets.delete(made.id),
        lambda: list(hl.datasets.list_datapoints(made.id)),
    ):
        with pytest.raises(ApiError) as exc:
            call()
        assert exc.value.status_code == 404
    assert hl.datasets.get(kept.id).datapoints_count == 2


# -- v4 --------------------------------------------------------------------------------------


def test_v4_create_datapoint_commits_a_generated_version(
    hl: Humanloop, repo: str, server: tuple[Server, Keys]
) -> None:
    made = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA[:1])
    one = {"inputs": {"q": "one"}, "target": {"a": 1}}
    reply = raw(server, "POST", f"/v4/datasets/{made.id}/datapoints", json=one)
    assert reply.status_code == 200, reply.text
    (created,) = reply.json()
    assert created["dataset_id"] == made.id and created["inputs"] == {"q": "one"}
    assert re.fullmatch(r"dp_[0-9a-f]{64}", created["id"])
    two = [{"inputs": {"q": "two"}}, {"messages": [{"role": "user", "content": "three"}]}]
    reply = raw(server, "POST", f"/v4/datasets/{made.id}/datapoints", json=two)
    assert [p["inputs"] if "inputs" in p else p["messages"] for p in reply.json()] == [
        {"q": "two"},
        [{"role": "user", "content": "three"}],
    ]
    versions = hl.datasets.list_versions(made.id).records
    assert [v.datapoints_count for v in versions] == [4, 2, 1]
    assert versions[0].version_description == "add 2 datapoints of d.jsonl (Humanloop API)"
    listed = {p.id for p in hl.datasets.list_datapoints(made.id)}
    assert created["id"] in listed
    reply = raw(server, "POST", f"/v4/datasets/{made.id}/datapoints", json={"log_ids": ["x"]})
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "log_ids"]


# -- errors ----------------------------------------------------------------------------------


def test_inputs_must_be_strings(hl: Humanloop, repo: str) -> None:
    with pytest.raises(UnprocessableEntityError) as exc:
        hl.datasets.upsert(path=f"{repo}/d", datapoints=[QA[0], {"inputs": {"question": 42}}])
    (detail,) = exc.value.body.detail
    assert (detail.loc, detail.msg, detail.type) == (
        ["body", "datapoints", 1, "inputs", "question"],
        "Input should be a valid string",
        "string_type",
    )
    # Nothing was written.
    assert not [d for d in hl.datasets.list(name=repo)]


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"path": "x/y/z", "datapoints": [{"input": {}}]}, ["body", "datapoints", 0, "input"],
         "unknown field"),
        ({"datapoints": []}, ["body", "path"], "give the dataset's path or its id"),
        ({"path": "only/two", "datapoints": []}, ["body", "path"], "must be OWNER/REPO/NAME"),
        ({"path": "a/b/../c", "datapoints": []}, ["body", "path"], "invalid dataset name"),
        # The one path rule (dsv.paths): .dsv in any case at any depth, '\', control chars.
        ({"path": "a/b/sub/.DSV/c", "datapoints": []}, ["body", "path"],
         "invalid dataset name 'sub/.DSV/c': its segment '.DSV' names .dsv"),
        ({"path": "a/b/c\\d", "datapoints": []}, ["body", "path"],
         "invalid dataset name 'c\\\\d': it contains '\\'"),
        ({"path": "a/b/c\x7f", "datapoints": []}, ["body", "path"],
         "invalid dataset name 'c\\x7f': it contains a control character"),
        ({"path": "a/b/" + "n" * 250, "datapoints": []}, ["body", "path"],
         "a segment is longer than 255 UTF-8 bytes"),
        ({"path": "a/evil\n/c", "datapoints": []}, ["body", "path"], "invalid repository name"),
        ({"path": "a/b/c", "datapoints": [{"messages": [{"content": "x"}]}]},
         ["body", "datapoints", 0, "messages", 0, "role"], "Field required"),
        ({"path": "a/b/c", "datapoints": [], "action": "merge"}, ["body", "action"],
         "Invalid enum value 'merge'"),
        ({"path": "a/b/c"}, ["body", "datapoints"], "missing required field"),
    ],
)  # fmt: skip
def test_bad_upsert_bodies_are_422_naming_the_field(
    server: tuple[Server, Keys], body: dict[str, Any], loc: list[Any], message: str
) -> None:
    reply = raw(server, "POST", "/v5/datasets", json=body)
    assert reply.status_code == 422, reply.text
    (detail,) = reply.json()["detail"]
    assert detail["loc"] == loc and message in detail["msg"], detail


def test_a_repeated_key_in_a_body_is_422_naming_it(
    server: tuple[Server, Keys], hl: Humanloop, repo: str
) -> None:
    """The SDK cannot send one, but a raw client can; a decoder would keep the last silently."""
    made = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA)
    for method, path, body, loc in [
        (
            "POST",
            "/v5/datasets",
            b'{"path": "%s/d", "datapoints": [{"target": {"x": 1, "x": 2}}]}' % repo.encode(),
            ["body", "datapoints", 0, "target", "x"],
        ),
        (
            "POST",
            "/v5/datasets",
            b'{"path": "%s/d", "path": "%s/e", "datapoints": []}' % (repo.encode(), repo.encode()),
            ["body", "path"],
        ),
        (
            "POST",
            f"/v4/datasets/{made.id}/datapoints",
            b'{"inputs": {"q": "a", "\\u0071": "b"}}',
            ["body", "inputs", "q"],
        ),
        ("PATCH", f"/v5/datasets/{made.id}", b'{"path": "x", "path": "y"}', ["body", "path"]),
    ]:
        reply = raw(server, method, path, content=body, headers=JSON)
        assert reply.status_code == 422, reply.text
        (detail,) = reply.json()["detail"]
        assert detail["loc"] == loc and detail["msg"].startswith("duplicate key '"), detail
    # Nothing was written.
    assert [v.version_id for v in hl.datasets.list_versions(made.id).records] == [made.version_id]


def test_a_multipart_boundary_is_matched_whole() -> None:
    body = b"--abc\n\r\nContent-Disposition: form-data; name=file\r\n\r\nq\r\n--abc\n--\r\n"
    with pytest.raises(FieldError, match="no valid boundary"):
        parse_form(body, "multipart/form-data")
    assert parse_form(body.replace(b"abc\n", b"abc"), "multipart/form-data") == {"file": b"q"}


def test_deeply_nested_json_is_422(server: tuple[Server, Keys], hl: Humanloop, repo: str) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    body = b'{"path": "a/b/c", "datapoints": [{"target": {"a": ' + deep + b"}}]}"
    reply = raw(server, "POST", "/v5/datasets", content=body, headers=JSON)
    assert reply.status_code == 422 and reply.json()["detail"][0]["loc"] == ["body"]
    made = hl.datasets.upsert(path=f"{repo}/d", datapoints=[])
    with pytest.raises(UnprocessableEntityError):
        hl.datasets.upload_csv(made.id, file=("x.csv", io.BytesIO(b"messages\n" + deep)))


def test_a_dataset_path_may_not_be_a_folder_of_another(
    hl: Humanloop, repo: str, tmp_path: Path, server: tuple[Server, Keys], monkeypatch: Any
) -> None:
    # The file x.jsonl and a folder x.jsonl/ cannot both exist, whichever comes first.
    hl.datasets.upsert(path=f"{repo}/x", datapoints=QA)
    inner = hl.datasets.upsert(path=f"{repo}/y.jsonl/z", datapoints=QA)
    for clash in (f"{repo}/x.jsonl/w", f"{repo}/y"):
        with pytest.raises(ApiError) as exc:
            hl.datasets.upsert(path=clash, datapoints=QA)
        assert exc.value.status_code == 409, clash
        assert "cannot sit beside" in error_detail(exc)
    with pytest.raises(ApiError) as exc:
        hl.datasets.move(inner.id, path=f"{repo}/x.jsonl/w")
    assert exc.value.status_code == 409
    running, keys = server
    monkeypatch.setenv("DSV_API_KEY", keys.write)
    dsv(tmp_path, "clone", f"{running.url}/{repo}", str(tmp_path / "clone"))
    assert records(tmp_path / "clone" / "x.jsonl") == QA
    assert records(tmp_path / "clone" / "y.jsonl" / "z.jsonl") == QA


def test_an_environment_never_shows_another_datasets_version(hl: Humanloop, repo: str) -> None:
    x = hl.datasets.upsert(path=f"{repo}/a", datapoints=QA[:1])
    z = hl.datasets.upsert(path=f"{repo}/b", datapoints=QA[1:])
    hl.datasets.set_deployment(z.id, "staging", version_id=z.version_id)
    hl.datasets.delete(z.id)
    moved = hl.datasets.move(x.id, path=f"{repo}/b")
    assert moved.datapoints_count == 1
    # staging holds z alone (a deployment is per dataset): z's datapoints, now at x's path b,
    # are not x's, and x was never deployed there.
    envs = {e.name: e.file and e.file.version_id for e in hl.datasets.list_environments(x.id)}
    assert envs == {"production": None, "staging": None}
    with pytest.raises(ApiError) as exc:
        hl.datasets.list_datapoints(x.id, environment="staging")
    assert exc.value.status_code == 404
    assert [v.version_id for v in hl.datasets.list_versions(x.id).records] == [x.version_id]


def test_a_new_dataset_at_an_old_path_inherits_nothing(hl: Humanloop, repo: str) -> None:
    first = hl.datasets.upsert(path=f"{repo}/a", datapoints=[{"inputs": {"q": "secret-D"}}])
    hl.datasets.set_deployment(first.id, "production", version_id=first.version_id)
    hl.datasets.move(first.id, path=f"{repo}/b")
    new = hl.datasets.upsert(path=f"{repo}/a", datapoints=[{"inputs": {"q": "E"}}])
    assert new.id != first.id
    # production holds a commit from before this dataset existed: nothing of it is deployed.
    assert [e.file for e in hl.datasets.list_environments(new.id)] == [None, None]
    assert content(hl.datasets.list_datapoints(new.id)) == [{"inputs": {"q": "E"}}]
    csv_added = hl.datasets.upload_csv(new.id, file=("r.csv", io.BytesIO(b"q\nfrom csv\n")))
    assert content(hl.datasets.list_datapoints(new.id, version_id=csv_added.version_id)) == [
        {"inputs": {"q": "E"}},
        {"inputs": {"q": "from csv"}},
    ]
    # The moved dataset still has its deployment.
    assert hl.datasets.get(first.id, environment="production").version_id == first.version_id


def test_reads_during_moves_never_miss_the_dataset(hl: Humanloop, repo: str) -> None:
    made = hl.datasets.upsert(path=f"{repo}/a", datapoints=QA)
    stop = threading.Event()
    failures: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                hl.datasets.get(made.id)
                hl.datasets.list_versions(made.id)
                listed = [d.id for d in hl.datasets.list(name=repo)]
                assert listed == [made.id], listed
            except BaseException as exc:
                failures.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for n in range(12):
            hl.datasets.move(made.id, path=f"{repo}/{'ab'[n % 2 == 0]}")
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not failures, failures[0]


def test_datapoints_deeper_than_the_limit_are_422(hl: Humanloop, repo: str) -> None:
    def nested(levels: int) -> Any:
        value: Any = "leaf"
        for _ in range(levels - 1):
            value = [value]
        return {"deep": value}

    made = hl.datasets.upsert(path=f"{repo}/d", datapoints=[{"target": nested(199)}])
    (latest,) = hl.datasets.list_versions(made.id, include_datapoints="latest_saved").records
    assert content(latest.datapoints or []) == [{"target": nested(199)}]
    with pytest.raises(UnprocessableEntityError) as exc:
        hl.datasets.upsert(id=made.id, datapoints=[QA[0], {"target": nested(200)}])
    (detail,) = exc.value.body.detail
    assert detail.loc == ["body", "datapoints", 1]
    assert detail.msg == "the datapoint is nested more than 200 levels deep"


def test_dataset_names_fit_the_file_system(hl: Humanloop, repo: str) -> None:
    fits = "é" * 124  # 248 bytes, +".jsonl" = 254
    hl.datasets.upsert(path=f"{repo}/{fits}", datapoints=QA)
    for name in ("é" * 125, "x" * 256 + "/y"):
        with pytest.raises(UnprocessableEntityError) as exc:
            hl.datasets.upsert(path=f"{repo}/{name}", datapoints=QA)
        assert "longer than" in exc.value.body.detail[0].msg


def test_pushed_times_in_any_zone_sort_and_show(
    hl: Humanloop, repo: str, local: Path, monkeypatch: Any
) -> None:
    # Older, in +05:00; an hour later in UTC (its text sorts first); a zone Python cannot show.
    for name, date in (("older", "1800000000 +0500"), ("newer", "1800003600 +0000")):
        (local / f"{name}.jsonl").write_text(json.dumps(QA[0]) + "\n")
        dsv(local, "add", f"{name}.jsonl")
        monkeypatch.setenv("DSV_DATE", date)
        dsv(local, "commit", "-m", name)
    monkeypatch.setenv("DSV_DATE", "1800007200 +9959")
    (local / "odd.jsonl").write_text(json.dumps(QA[1]) + "\n")
    dsv(local, "add", "odd.jsonl")
    dsv(local, "commit", "-m", "odd zone")
    dsv(local, "push")
    listed = list(hl.datasets.list(name=repo, sort_by="updated_at", order="desc"))
    assert [d.name for d in listed] == ["odd", "newer", "older"]
    assert str(listed[2].updated_at.utcoffset()) == "5:00:00"


def test_unknown_dataset_version_and_environment_are_404(hl: Humanloop, repo: str) -> None:
    made = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA)
    missing_version = "dsv_" + "0" * 64
    cases = [
        (lambda: hl.datasets.get("ds_000000000000000000000000"), "Dataset ds_0"),
        (lambda: hl.datasets.get(made.id, version_id=missing_version), "Version dsv_0"),
        (lambda: hl.datasets.get(made.id, version_id="v1"), "Version v1 of dataset"),
        (lambda: hl.datasets.get(made.id, environment="nowhere"), "Environment nowhere"),
        (
            lambda: hl.datasets.set_deployment(made.id, "production", version_id=missing_version),
            "Version dsv_0",
        ),
        (lambda: hl.datasets.remove_deployment(made.id, "staging"), "not deployed to"),
        (
            lambda: hl.datasets.upsert(
                id=made.id, action="add", version_id=missing_version, datapoints=QA
            ),
            "Version dsv_0",
        ),
        (lambda: hl.datasets.upsert(id="ds_nope", datapoints=QA), "Dataset ds_nope"),
        (lambda: hl.datasets.list_environments("ds_nope"), "Dataset ds_nope"),
        (lambda: hl.datasets.list_versions("ds_nope"), "Dataset ds_nope"),
    ]
    for call, message in cases:
        with pytest.raises(ApiError) as exc:
            call()
        assert exc.value.status_code == 404, message
        assert message in error_detail(exc)


def test_pagination_parameters_are_checked(server: tuple[Server, Keys]) -> None:
    for params, loc in (({"page": 0}, "page"), ({"size": -1}, "size"), ({"page": "x"}, "page")):
        reply = raw(server, "GET", "/v5/datasets", params=params)
        assert reply.status_code == 422 and reply.json()["detail"][0]["loc"] == ["query", loc]


def test_auth_on_every_humanloop_route(
    hl: Humanloop, repo: str, server: tuple[Server, Keys]
) -> None:
    running, keys = server
    made = hl.datasets.upsert(path=f"{repo}/d", datapoints=QA)
    spec = httpx.get(f"{running.url}/openapi.json").json()
    found = [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        if path.startswith(("/v5/", "/v4/"))
        for method in operations
    ]
    assert len(found) == 14, found
    for method, path in found:
        url = running.url + path.format(
            dataset_id=made.id, version_id=made.version_id, environment_id="production"
        )
        for headers, status in (({}, 401), ({"X-API-KEY": "dsv_bogus"}, 401)):
            reply = httpx.request(method, url, headers=headers, timeout=30)
            assert reply.status_code == status, (method, path, reply.text)
            assert reply.json()["detail"], reply.text
    # A read key reads but may not write; a key for another repository sees nothing.
    reader = Humanloop(api_key=keys.read, base_url=f"{running.url}/v5")
    assert reader.datasets.get(made.id).version_id == made.version_id
    with pytest.raises(ApiError) as exc:
        reader.datasets.upsert(id=made.id, datapoints=[])
    assert exc.value.status_code == 403
    outsider = Humanloop(api_key=keys.other, base_url=f"{running.url}/v5")
    with pytest.raises(ApiError) as exc:
        outsider.datasets.get(made.id)
    assert exc.value.status_code == 404
    assert not [d for d in outsider.datasets.list(size=100) if d.path.startswith(repo)]
    with pytest.raises(ApiError) as exc:
        outsider.datasets.upsert(path=f"{repo}/new", datapoints=QA)
    assert exc.value.status_code == 403
    reply = raw(
        server, "POST", "/v5/datasets", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert reply.status_code == 415


def run_together(*calls: Any) -> list[Any]:
    """Run the calls in threads at once; each one's result or exception."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_adds_all_land(hl: Humanloop, repo: str) -> None:
    made = hl.datasets.upsert(path=f"{repo}/d", datapoints=[])

    def add(n: int) -> Any:
        point = {"inputs": {"n": str(n)}}
        return lambda: hl.datasets.upsert(id=made.id, action="add", datapoints=[point])

    results = run_together(*(add(n) for n in range(16)))
    assert not [r for r in results if isinstance(r, Exception)]
    names = sorted(p.inputs["n"] for p in hl.datasets.list_datapoints(made.id) if p.inputs)
    assert names == sorted(str(n) for n in range(16))
    assert len(hl.datasets.list_versions(made.id).records) == 17


def test_concurrent_upserts_with_one_name_make_one_version(hl: Humanloop, repo: str) -> None:
    made = hl.datasets.upsert(path=f"{repo}/d", datapoints=[])

    def add(n: int) -> Any:
        point = {"inputs": {"n": str(n)}}
        return lambda: hl.datasets.upsert(
            id=made.id, action="add", datapoints=[point], version_name="same"
        )

    results = run_together(*(add(n) for n in range(8)))
    won = [r for r in results if not isinstance(r, Exception)]
    assert len(won) == 1
    assert all(isinstance(r, ApiError) and r.status_code == 409 for r in results if r not in won)
    versions = hl.datasets.list_versions(made.id).records
    assert [v.version_name for v in versions] == ["same", None]


def test_a_move_among_concurrent_adds_leaves_one_dataset(hl: Humanloop, repo: str) -> None:
    for attempt in range(4):
        made = hl.datasets.upsert(path=f"{repo}/a{attempt}", datapoints=[])

        def add(n: int, dataset: str = made.id) -> Any:
            point = {"inputs": {"n": str(n)}}
            return lambda: hl.datasets.upsert(id=dataset, action="add", datapoints=[point])

        moved = f"{repo}/b{attempt}"
        results = run_together(
            add(1), lambda d=made.id, m=moved: hl.datasets.move(d, path=m), add(2), add(3)
        )
        assert not [r for r in results if isinstance(r, Exception)]
        paths = sorted(d.path for d in hl.datasets.list(name=f"{repo}/"))
        assert f"{repo}/a{attempt}" not in paths and moved in paths
        assert hl.datasets.get(made.id).datapoints_count == 3


def test_the_async_client_works_too(server: tuple[Server, Keys], repo: str) -> None:
    from humanloop import AsyncHumanloop

    running, keys = server

    async def scenario() -> None:
        client = AsyncHumanloop(api_key=keys.write, base_url=f"{running.url}/v5")
        made = await client.datasets.upsert(path=f"{repo}/d", datapoints=QA)
        await client.datasets.upload_csv(
            made.id, file=("r.csv", io.BytesIO(b"q\nfrom csv\n"), "text/csv")
        )
        points = [p async for p in await client.datasets.list_datapoints(made.id, size=1)]
        assert content(points) == [*QA, {"inputs": {"q": "from csv"}}]
        names = [d.path async for d in await client.datasets.list(name=repo)]
        assert names == [f"{repo}/d"]
        versions = await client.datasets.list_versions(made.id)
        await client.datasets.set_deployment(
            made.id, "staging", version_id=versions.records[-1].version_id
        )
        envs = await client.datasets.list_environments(made.id)
        assert envs[1].file is not None and envs[1].file.version_id == made.version_id

    asyncio.run(scenario())


# -- round trips with the dsv CLI ------------------------------------------------------------


def test_api_writes_are_dsv_commits(
    hl: Humanloop, repo: str, tmp_path: Path, server: tuple[Server, Keys], monkeypatch: Any
) -> None:
    running, keys = server
    monkeypatch.setenv("DSV_API_KEY", keys.write)
    v1 = hl.datasets.upsert(path=f"{repo}/evals/qa", datapoints=QA, version_name="v1")
    v2 = hl.datasets.upsert(
        id=v1.id, action="add", datapoints=[{"inputs": {"q": "more"}}], version_description="d"
    )
    hl.datasets.set_deployment(v1.id, "production", version_id=v1.version_id)
    local = tmp_path / "clone"
    dsv(tmp_path, "clone", f"{running.url}/{repo}", str(local))
    assert records(local / "evals/qa.jsonl") == [*QA, {"inputs": {"q": "more"}}]
    log = json.loads(dsv(local, "log", "--json").stdout)
    assert [c["oid"] for c in log] == [v2.version_id[4:], v1.version_id[4:]]
    # The version name lives beside the commit (it can be renamed); the description is the
    # commit message, else a generated one.
    assert log[1]["message"] == "set 2 datapoints of evals/qa.jsonl (Humanloop API)"
    assert log[0]["message"] == "d"
    # The deployment arrives as the remote's environment ref.
    production = Repository.open(local).refs.read("refs/remotes/origin/envs/production")
    assert production is not None and production.hex() == v1.version_id[4:]
    # Removing the deployment deletes the ref; a fetch deletes its remote-tracking ref too.
    hl.datasets.remove_deployment(v1.id, "production")
    fetched = dsv(local, "fetch").stdout
    gone = f" - deleted     env production -> origin/envs/production  (was {v1.version_id[4:16]})"
    assert gone in fetched
    assert Repository.open(local).refs.read("refs/remotes/origin/envs/production") is None
    assert "deleted" not in dsv(local, "fetch").stdout
    dsv(local, "fsck")


def test_dsv_push_is_read_by_the_api(hl: Humanloop, repo: str, local: Path) -> None:
    (local / "evals").mkdir()
    (local / "evals/qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA))
    (local / "notes.csv").write_text("a,b\n1,2\n")
    dsv(local, "add", "evals/qa.jsonl", "notes.csv")
    dsv(local, "commit", "-m", "first")
    dsv(local, "push")
    (found,) = [d for d in hl.datasets.list(name=repo)]
    assert found.path == f"{repo}/evals/qa" and found.datapoints_count == 2
    first_id = json.loads(dsv(local, "log", "--json").stdout)[0]["oid"]
    assert found.version_id == "dsv_" + first_id
    assert found.version_description == "first"
    assert content(hl.datasets.list_datapoints(found.id)) == QA
    # A second push is a new version; an environment deployed with dsv shows in the API.
    with (local / "evals/qa.jsonl").open("a") as f:
        f.write(json.dumps({"inputs": {"q": "pushed"}}) + "\n")
    dsv(local, "commit", "-a", "-m", "second")
    dsv(local, "env", "deploy", "production", first_id)
    dsv(local, "push", "origin", "main", "production")
    versions = hl.datasets.list_versions(found.id).records
    assert [v.version_description for v in versions] == ["second", "first"]
    # Created when its first version was committed, not when the API first saw it.
    assert {v.created_at for v in versions} == {versions[-1].updated_at}
    assert hl.datasets.get(found.id).version_id == "dsv_" + first_id
    (production, _) = hl.datasets.list_environments(found.id)
    assert production.file is not None and production.file.version_id == "dsv_" + first_id
    # The API writes on top of what was pushed, and dsv pulls it back.
    hl.datasets.upsert(id=found.id, action="remove", datapoints=QA[:1])
    dsv(local, "pull")
    assert records(local / "evals/qa.jsonl") == [QA[1], {"inputs": {"q": "pushed"}}]
    assert (local / "notes.csv").read_text() == "a,b\n1,2\n"


# -- per-dataset deployments (issue 30) --------------------------------------------------------


def _deployed(hl: Humanloop, dataset_id: str) -> dict[str, str | None]:
    return {e.name: e.file and e.file.version_id for e in hl.datasets.list_environments(dataset_id)}


def test_deploying_one_dataset_leaves_the_others_deployed(hl: Humanloop, repo: str) -> None:
    qa1 = hl.datasets.upsert(path=f"{repo}/qa", datapoints=QA[:1])
    qa2 = hl.datasets.upsert(id=qa1.id, datapoints=QA)
    rag1 = hl.datasets.upsert(path=f"{repo}/rag", datapoints=[{"inputs": {"q": "r1"}}])
    rag2 = hl.datasets.upsert(id=rag1.id, action="add", datapoints=[{"inputs": {"q": "r2"}}])
    hl.datasets.set_deployment(rag1.id, "production", version_id=rag2.version_id)
    # qa's first version is a commit from before rag existed: rag stays at its own version.
    deployed = hl.datasets.set_deployment(qa1.id, "production", version_id=qa1.version_id)
    assert deployed.version_id == qa1.version_id
    assert _deployed(hl, rag1.id) == {"production": rag2.version_id, "staging": None}
    assert _deployed(hl, qa1.id) == {"production": qa1.version_id, "staging": None}
    assert hl.datasets.get(rag1.id, environment="production").datapoints_count == 2
    assert content(hl.datasets.list_datapoints(qa1.id, environment="production")) == QA[:1]
    # A deployment commit changes no dataset: it is no version of either.
    assert [v.version_id for v in hl.datasets.list_versions(qa1.id).records] == [
        qa2.version_id,
        qa1.version_id,
    ]
    assert [v.version_id for v in hl.datasets.list_versions(rag1.id).records] == [
        rag2.version_id,
        rag1.version_id,
    ]
    # Each version says where it is deployed, per dataset.
    assert [e.name for e in hl.datasets.get(rag1.id).environments or []] == ["production"]
    assert hl.datasets.get(qa1.id, version_id=qa2.version_id).environments == []
    # Removing qa's deployment leaves rag's.
    hl.datasets.remove_deployment(qa1.id, "production")
    assert _deployed(hl, qa1.id) == {"production": None, "staging": None}
    assert _deployed(hl, rag1.id) == {"production": rag2.version_id, "staging": None}
    hl.datasets.remove_deployment(rag1.id, "production")
    assert _deployed(hl, rag1.id) == {"production": None, "staging": None}


def test_concurrent_api_deploys_of_two_datasets_both_land(hl: Humanloop, repo: str) -> None:
    made = [
        hl.datasets.upsert(path=f"{repo}/d{i}", datapoints=[{"inputs": {"q": str(i)}}])
        for i in range(4)
    ]
    errors: list[BaseException] = []

    def deploy(d: Any) -> None:
        try:
            hl.datasets.set_deployment(d.id, "staging", version_id=d.version_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=deploy, args=(d,)) for d in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for d in made:
        assert _deployed(hl, d.id)["staging"] == d.version_id


def test_concurrent_env_pushes_of_two_datasets_never_undo_each_other(
    hl: Humanloop, repo: str, server: tuple[Server, Keys], tmp_path: Path, monkeypatch: Any
) -> None:
    running, keys = server
    monkeypatch.setenv("DSV_API_KEY", keys.write)
    qa = hl.datasets.upsert(path=f"{repo}/qa", datapoints=QA[:1])
    rag = hl.datasets.upsert(path=f"{repo}/rag", datapoints=[{"inputs": {"q": "r1"}}])
    qa2 = hl.datasets.upsert(id=qa.id, datapoints=QA)
    hl.datasets.set_deployment(qa.id, "production", version_id=qa.version_id)
    ada, bob = tmp_path / "ada", tmp_path / "bob"
    for who in (ada, bob):
        dsv(tmp_path, "clone", f"{running.url}/{repo}", str(who))
        dsv(who, "env", "deploy", "production", "origin/envs/production")
    # Each deploys another dataset to production from the same starting point.
    dsv(ada, "env", "deploy", "production", "main", "--", "qa.jsonl")
    dsv(bob, "env", "deploy", "production", "main", "--", "rag.jsonl")
    dsv(ada, "push", "--envs", "origin", "main")
    assert _deployed(hl, qa.id)["production"] == qa2.version_id
    assert _deployed(hl, rag.id)["production"] is None
    # Bob's push finds Ada's deployment there: his is replayed on top, and both hold.
    pushed = dsv(bob, "push", "--envs", "origin", "main").stdout
    assert "* rebased     env production" in pushed
    assert "(your deployments replayed on the remote's)" in pushed
    assert _deployed(hl, qa.id)["production"] == qa2.version_id
    assert _deployed(hl, rag.id)["production"] == rag.version_id
    # Deploying the same dataset differently on both sides is refused, never undone.
    dsv(ada, "fetch")
    dsv(ada, "env", "deploy", "production", "origin/envs/production")
    dsv(ada, "env", "deploy", "production", "main~2", "--", "qa.jsonl")
    dsv(bob, "env", "deploy", "production", "main~1", "--", "qa.jsonl")
    dsv(ada, "push", "--envs", "origin", "main")
    refused = dsv(bob, "push", "--envs", "origin", "main", code=5).stderr
    assert refused.startswith(
        "error: rejected: production (environment production: cannot replay its deployments "
        "on the remote's: both sides changed qa.jsonl); nothing was pushed\n"
    )
    assert "hint: take the remote's deployments ('dsv env deploy production " in refused
    assert _deployed(hl, qa.id)["production"] == qa.version_id
    assert _deployed(hl, rag.id)["production"] == rag.version_id
    # An API deploy lands on top of the pushed environment, and a clone reads it all.
    hl.datasets.set_deployment(qa.id, "production", version_id=qa.version_id)
    assert _deployed(hl, rag.id)["production"] == rag.version_id
    clone = tmp_path / "clone"
    dsv(tmp_path, "clone", f"{running.url}/{repo}", str(clone))
    dsv(clone, "checkout", "origin/envs/production")
    assert records(clone / "qa.jsonl") == QA[:1]
    assert records(clone / "rag.jsonl") == [{"inputs": {"q": "r1"}}]
    dsv(clone, "fsck")


def test_a_version_that_came_in_through_a_merge_is_listed(
    hl: Humanloop, repo: str, local: Path
) -> None:
    rows = [{"id": i, "inputs": {"q": f"q{i}"}} for i in range(4)]

    def write(changed: dict[int, str]) -> None:
        current = records(local / "qa.jsonl") if (local / "qa.jsonl").exists() else rows
        out = [{**r, "inputs": {"q": changed.get(r["id"], r["inputs"]["q"])}} for r in current]
        (local / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))

    write({})
    dsv(local, "add", "qa.jsonl", "--key", "id")
    dsv(local, "commit", "-m", "first")
    dsv(local, "switch", "-c", "feature")
    write({1: "on feature"})
    dsv(local, "commit", "-a", "-m", "on feature")
    dsv(local, "switch", "main")
    write({2: "on main"})
    dsv(local, "commit", "-a", "-m", "on main")
    dsv(local, "merge", "feature")
    dsv(local, "push")
    (found,) = [d for d in hl.datasets.list(name=repo)]
    versions = hl.datasets.list_versions(found.id).records
    assert [v.version_description for v in versions] == [
        "Merge feature",
        "on feature",
        "on main",
        "first",
    ]
    feature = json.loads(dsv(local, "show", "--json", "feature").stdout)["oid"]
    assert versions[1].version_id == "dsv_" + feature
    got = hl.datasets.get(found.id, version_id="dsv_" + feature, include_datapoints=True)
    assert [d.inputs for d in got.datapoints or []] == [
        {"q": "q0"}, {"q": "on feature"}, {"q": "q2"}, {"q": "q3"}
    ]  # fmt: skip


def test_a_history_is_extended_by_the_writes_since_and_is_what_a_fresh_walk_finds(
    tmp_path: Path,
) -> None:
    """Each write moves the branch's tip: a dataset's versions are found by walking back
    only to the tip they were last found for. Walking the whole history again for each made
    a write's time grow with the history."""
    from dsv.server.dialects.humanloop.history import History
    from dsv.server.dialects.humanloop.types import MoveRequest

    blobs, meta = open_storage(tmp_path / "root")
    store = open_store(meta)
    objects = StoredObjects(blobs)
    service = HumanloopService(objects, meta, store, tmp_dir=tmp_path / "root", auth=False)
    walks: list[str] = []
    whole_walk = service.history._chain

    def counted(record: Any, tip: bytes, moves: dict[bytes, str]) -> Any:
        walks.append(record.path)
        return whole_walk(record, tip, moves)

    service.history._chain = counted  # type: ignore[method-assign]
    try:

        def point(text: str) -> list[CreateDatapoint]:
            return [CreateDatapoint(inputs={"q": text})]

        ids = [
            service.upsert(None, UpsertRequest(point(name), path=f"acme/evals/{name}")).response.id
            for name in ("a", "b")
        ]
        for n in range(8):
            for k, dataset_id in enumerate(ids):
                if (n, k) == (3, 1):
                    service.move(None, dataset_id, MoveRequest(path="acme/evals/renamed"))
                    continue
                action = "set" if n % 3 == 2 else "add"  # "set" keeps one: a new version
                service.upsert(None, UpsertRequest(point(f"{k}.{n}"), id=dataset_id, action=action))
            fresh = History(objects, store)
            for dataset_id in ids:
                record = store.dataset_by_id(dataset_id)
                assert record is not None
                branch = service.branch_of(record.repo)[1]
                assert service.history.versions(record, branch, {}) == fresh.versions(
                    record, branch, {}
                )
        # Once per dataset, and once more for the moved one (its path changed).
        assert sorted(walks) == ["a.jsonl", "b.jsonl", "renamed.jsonl"]
    finally:
        meta.close()
        blobs.close()


def test_a_branch_merged_twice_lists_its_versions_once_however_the_history_was_found(
    hl: Humanloop, repo: str, local: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The versions a merge brings in are listed once, under the newest merge: a history
    extended from the tip it was last found at must not list them again under the older."""
    clock = iter(range(1_700_000_000, 1_700_001_000, 10))

    def tick() -> None:
        # The versions a merge brings in are listed newest first: each commit a time of its
        # own, or two made in one second would list in the order of their ids.
        monkeypatch.setenv("DSV_DATE", f"{next(clock)} +0000")

    rows = [{"id": i, "inputs": {"q": f"q{i}"}} for i in range(4)]

    def write(changed: dict[int, str]) -> None:
        current = records(local / "qa.jsonl") if (local / "qa.jsonl").exists() else rows
        out = [{**r, "inputs": {"q": changed.get(r["id"], r["inputs"]["q"])}} for r in current]
        (local / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))

    def commit(branch: str, row: int, message: str) -> None:
        dsv(local, "switch", branch)
        write({row: message})
        tick()
        dsv(local, "commit", "-a", "-m", message)

    def listed() -> list[str]:
        (found,) = [d for d in hl.datasets.list(name=repo)]
        return [v.version_description or "" for v in hl.datasets.list_versions(found.id).records]

    write({})
    dsv(local, "add", "qa.jsonl", "--key", "id")
    tick()
    dsv(local, "commit", "-m", "c0")
    dsv(local, "branch", "feature")
    commit("feature", 1, "f0")
    commit("main", 2, "c1")
    tick()
    dsv(local, "merge", "feature")
    dsv(local, "push")
    assert listed() == ["Merge feature", "f0", "c1", "c0"]  # found for this tip, and kept
    commit("feature", 1, "f1")
    commit("main", 3, "c2")
    tick()
    dsv(local, "merge", "feature")
    dsv(local, "push")
    assert listed() == ["Merge feature", "f1", "f0", "c2", "Merge feature", "c1", "c0"]
