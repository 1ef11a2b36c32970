"""The Overmind Lab Datasets API of `dsv serve` (issue 23): raw HTTP (no client is published)
against a real server on 127.0.0.1, and the same data checked through dsv itself.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from benchmarks.push import Server
from dsv.cli import main
from dsv.server.dialects.overmind.types import (
    agent_of_record_id,
    datapoint_id,
    record_id_of_agent,
)
from tests.conftest import KeyMaker, datapoint_oid

TICKETS = [
    {
        "input": {"ticket_text": "My invoice is wrong", "customer_tier": "enterprise"},
        "expected_output": {"team": "billing", "priority": "high"},
        "order": 0,
        "persona": "enterprise-customer",
        "tags": {"category": "billing", "difficulty": "easy"},
    },
    {
        "input": {"ticket_text": "App keeps crashing on iOS 17", "customer_tier": "standard"},
        "expected_output": {"team": "mobile-engineering", "priority": "medium"},
        "order": 1,
    },
]
# What dsv keeps of each: the vocabulary of docs/dialects.md.
TICKET_RECORDS = [
    {
        "inputs": TICKETS[0]["input"],
        "expected_output": TICKETS[0]["expected_output"],
        "persona": "enterprise-customer",
        "tags": {"category": "billing", "difficulty": "easy"},
    },
    {"inputs": TICKETS[1]["input"], "expected_output": TICKETS[1]["expected_output"]},
]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class Keys:
    def __init__(self, make: KeyMaker) -> None:
        self.make = make
        # Keys for every repository: their datasets are in the API repository.
        self.write = make("write")
        self.read = make("read")


@pytest.fixture(scope="module")
def server(server_root: Path, server_keys: KeyMaker) -> Iterator[tuple[Server, Keys]]:
    with Server(server_root) as running:
        yield running, Keys(server_keys)


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository of its own for each test, named after it."""
    return "om/" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:80].strip("-")


class Api:
    """Raw HTTP against the server's /api, with one key."""

    def __init__(self, url: str, key: str | None) -> None:
        self.url = url
        self.key = key

    def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        headers.update(kwargs.pop("headers", {}))
        target = path if path.startswith("http") else self.url + path
        return httpx.request(method, target, headers=headers, timeout=60, **kwargs)

    def create(self, agent: str, datapoints: list[Any], **fields: Any) -> dict[str, Any]:
        reply = self(
            "POST", "/api/datasets/", json={"agent": agent, "datapoints": datapoints, **fields}
        )
        assert reply.status_code == 201, reply.text
        assert reply.headers["content-type"].startswith("application/json")
        found: dict[str, Any] = reply.json()
        return found

    def everything(self, path: str) -> list[dict[str, Any]]:
        """Every result of a paged list, following `next`."""
        out: list[dict[str, Any]] = []
        url: str | None = path
        while url:
            reply = self("GET", url)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            out.extend(body["results"])
            url = body["next"]
        return out


ApiMaker = Callable[..., Api]


@pytest.fixture
def api_for(server: tuple[Server, Keys]) -> ApiMaker:
    """An Api with a key: `api_for("write", "om/x")` (scoped), `api_for(None)` (no key)."""
    running, keys = server

    def make(scope: str | None, repo: str | None = None) -> Api:
        if scope is None:
            return Api(running.url, None)
        if repo is None:
            return Api(running.url, keys.write if scope == "write" else keys.read)
        return Api(running.url, keys.make(scope, repo))

    return make


@pytest.fixture
def api(api_for: ApiMaker, repo: str) -> Api:
    """A write key for the test's own repository."""
    return api_for("write", repo)


def dsv(root: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["-C", str(root), *args])
    assert result.exit_code == code, f"dsv {args}: {result.output}{result.exception!r}"
    return result


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def keyed(root: Path, key: str | None, *args: str) -> Result:
    """dsv with DSV_API_KEY set to `key`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSV_API_KEY", key or "")
        return dsv(root, *args)


def clone(server: tuple[Server, Keys], repo: str, tmp_path: Path, key: str | None) -> Path:
    running, _ = server
    local = tmp_path / "clone"
    keyed(tmp_path, key, "clone", f"{running.url}/{repo}", str(local))
    return local


def agent() -> str:
    return str(uuid.uuid4())


# -- a realistic flow ------------------------------------------------------------------------


def test_flow_create_page_get_version_filter_delete_and_dsv_sees_it(
    api: Api, repo: str, server: tuple[Server, Keys], tmp_path: Path
) -> None:
    bot = agent()
    many = [
        {"input": {"q": f"question {i}"}, "expected_output": {"a": str(i)}, "tags": {"n": str(i)}}
        for i in range(250)
    ]
    v1 = api.create(bot, many, name="Q1 test cases", source="seed", generator_model="gpt-x")
    assert v1["version"] == 1 and v1["num_datapoints"] == 250 and v1["agent"] == bot
    assert [p["input"] for p in v1["datapoints"]] == [p["input"] for p in many]
    # Page through everything: 100 a page, next and previous as Django REST framework's.
    first = api("GET", f"/api/datasets/{v1['id']}/datapoints/").json()
    assert first["count"] == 250 and len(first["results"]) == 100
    assert first["previous"] is None
    assert first["next"] == f"{api.url}/api/datasets/{v1['id']}/datapoints/?page=2"
    second = api("GET", first["next"]).json()
    assert second["previous"] == f"{api.url}/api/datasets/{v1['id']}/datapoints/"
    third = api("GET", second["next"]).json()
    assert len(third["results"]) == 50 and third["next"] is None
    assert third["previous"].endswith("?page=2")
    paged = api.everything(f"/api/datasets/{v1['id']}/datapoints/")
    assert [p["order"] for p in paged] == list(range(250))
    assert [p["tags"] for p in paged] == [p["tags"] for p in many]
    assert paged == v1["datapoints"]
    # Get.
    got = api("GET", f"/api/datasets/{v1['id']}/").json()
    assert got == {k: v for k, v in v1.items() if k != "version_created"}
    # A new version: the first ten dropped, one changed; the unchanged keep their ids.
    changed = [*many[10:249], {"input": {"q": "new"}, "expected_output": {"a": "new"}}]
    v2 = api.create(bot, changed, source="synthetic")
    assert v2["version"] == 2 and v2["num_datapoints"] == 240 and v2["id"] != v1["id"]
    assert [p["id"] for p in v2["datapoints"][:239]] == [p["id"] for p in paged[10:249]]
    v3 = api.create(bot, changed[:5], source="augmented")
    # List the versions; filter by version, version range, source, agent.
    listed = api.everything(f"/api/datasets/?agent={bot}")
    assert [(v["version"], v["source"]) for v in listed] == [
        (3, "augmented"),
        (2, "synthetic"),
        (1, "seed"),
    ]
    assert [v["id"] for v in api.everything(f"/api/datasets/?agent={bot}&version=2")] == [v2["id"]]
    ranged = api.everything(f"/api/datasets/?agent={bot}&version_min=2&version_max=3")
    assert [v["version"] for v in ranged] == [3, 2]
    assert [v["id"] for v in api.everything("/api/datasets/?source=seed")] == [v1["id"]]
    assert [v["id"] for v in api.everything("/api/datasets/?generator_model=gpt-x")] == [v1["id"]]
    assert [
        v["version"] for v in api.everything(f"/api/datasets/?agent={bot}&ordering=version")
    ] == [
        1,
        2,
        3,
    ]
    by_size = api.everything(f"/api/datasets/?agent={bot}&ordering=num_datapoints")
    assert [v["num_datapoints"] for v in by_size] == [5, 240, 250]
    by_source = api.everything(f"/api/datasets/?agent={bot}&ordering=-source,nope")
    assert [v["source"] for v in by_source] == ["synthetic", "seed", "augmented"]
    # Delete version 2 -> 404; the others stay, numbered as before.
    assert api("DELETE", f"/api/datasets/{v2['id']}/").status_code == 204
    assert api("GET", f"/api/datasets/{v2['id']}/").status_code == 404
    assert api("GET", f"/api/datasets/{v2['id']}/datapoints/").status_code == 404
    assert [v["version"] for v in api.everything(f"/api/datasets/?agent={bot}")] == [3, 1]
    # The same data through dsv: one file per agent, one commit per version.
    local = clone(server, repo, tmp_path, api.key)
    kept = records(local / f"{bot}.jsonl")
    assert kept == [
        {"inputs": p["input"], "expected_output": p["expected_output"], "tags": p["tags"]}
        for p in changed[:5]
    ]
    log = json.loads(dsv(local, "log", "--json").stdout)
    assert [c["oid"] for c in log] == [
        v3["dsv_version"][4:],
        v2["dsv_version"][4:],
        v1["dsv_version"][4:],
    ]
    assert log[2]["message"] == "Q1 test cases (Overmind Lab API)"
    assert log[1]["message"] == f"set 240 datapoints of {bot}.jsonl (Overmind Lab API)"
    shown = json.loads(dsv(local, "show", "--json", v1["dsv_version"][4:]).stdout)
    assert shown["oid"] == v1["dsv_version"][4:]
    # Deleting the only version left... first the latest is refused while others remain.
    latest = api("DELETE", f"/api/datasets/{v3['id']}/")
    assert latest.status_code == 409
    assert "latest" in latest.json()["detail"]
    assert api("DELETE", f"/api/datasets/{v1['id']}/").status_code == 204
    assert api("DELETE", f"/api/datasets/{v3['id']}/").status_code == 204
    assert api("GET", f"/api/datasets/{v3['id']}/").status_code == 404
    assert api.everything(f"/api/datasets/?agent={bot}") == []
    keyed(local, api.key, "pull")
    assert not (local / f"{bot}.jsonl").exists()


# -- fields ----------------------------------------------------------------------------------


def test_every_documented_field_of_a_dataset_and_a_datapoint(api: Api) -> None:
    bot = agent()
    made = api.create(
        bot,
        TICKETS,
        name="Q1 test cases",
        source="seed",
        generator_model="gpt-4o",
        metadata={"owner": "support", "n": 2},
    )
    assert set(made) == {
        "id",
        "agent",
        "created_at",
        "version",
        "num_datapoints",
        "name",
        "source",
        "generator_model",
        "policy_hash",
        "metadata",
        "dsv_version",
        "is_active",
        "version_created",
        "datapoints",
    }
    assert UUID.fullmatch(made["id"])
    assert made["agent"] == bot
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", made["created_at"])
    assert (made["version"], made["num_datapoints"]) == (1, 2)
    assert (made["name"], made["source"], made["generator_model"]) == (
        "Q1 test cases",
        "seed",
        "gpt-4o",
    )
    assert made["policy_hash"] is None
    assert made["metadata"] == {"owner": "support", "n": 2}
    assert made["is_active"] is False and made["version_created"] is True
    assert made["dsv_version"].startswith("dsv_")
    first, second = made["datapoints"]
    assert first == {
        "id": datapoint_id(bytes.fromhex(datapoint_oid(TICKET_RECORDS[0]))),
        "input": TICKETS[0]["input"],
        "expected_output": TICKETS[0]["expected_output"],
        "order": 0,
        "persona": "enterprise-customer",
        "tags": {"category": "billing", "difficulty": "easy"},
    }
    assert second["persona"] is None and second["tags"] == {} and second["order"] == 1
    assert UUID.fullmatch(first["id"])
    # The list shows the same dataset without its datapoints.
    (listed,) = api.everything(f"/api/datasets/?agent={bot}")
    assert listed == {k: v for k, v in made.items() if k not in ("datapoints", "version_created")}


def test_order_places_datapoints_and_is_their_position(api: Api) -> None:
    bot = agent()
    made = api.create(
        bot,
        [
            {"input": {"q": "c"}, "order": 30},
            {"input": {"q": "a"}, "order": 10},
            {"input": {"q": "b"}, "order": 20},
        ],
    )
    assert [(p["input"]["q"], p["order"]) for p in made["datapoints"]] == [
        ("a", 0),
        ("b", 1),
        ("c", 2),
    ]
    down = api("GET", f"/api/datasets/{made['id']}/datapoints/?ordering=-order").json()
    assert [p["input"]["q"] for p in down["results"]] == ["c", "b", "a"]
    # An ordering field Django REST framework does not know is dropped.
    other = api("GET", f"/api/datasets/{made['id']}/datapoints/?ordering=nope").json()
    assert [p["input"]["q"] for p in other["results"]] == ["a", "b", "c"]


def test_a_field_without_a_place_is_kept_under_its_own_name(
    api: Api, repo: str, server: tuple[Server, Keys], tmp_path: Path
) -> None:
    bot = agent()
    made = api.create(
        bot,
        [
            {"input": "plain text", "expected_output": "yes", "difficulty": 3},
            {"input": ["a", "b"], "id": "ignored", "tags": {}},
        ],
    )
    first, second = made["datapoints"]
    assert first["input"] == "plain text" and first["difficulty"] == 3
    assert first["expected_output"] == "yes"
    assert second["input"] == ["a", "b"] and second["tags"] == {}
    local = clone(server, repo, tmp_path, api.key)
    assert records(local / f"{bot}.jsonl") == [
        {"input": "plain text", "expected_output": "yes", "difficulty": 3},
        {"input": ["a", "b"]},
    ]


def test_search_finds_datapoints_and_dataset_names(api: Api) -> None:
    bot = agent()
    made = api.create(bot, TICKETS, name="Billing set")
    found = api("GET", f"/api/datasets/{made['id']}/datapoints/?search=INVOICE").json()
    assert found["count"] == 1 and found["results"][0]["order"] == 0
    assert [v["id"] for v in api.everything("/api/datasets/?search=billing")] == [made["id"]]


def test_an_unchanged_create_makes_no_version(api: Api) -> None:
    bot = agent()
    v1 = api.create(bot, TICKETS, name="first")
    again = api.create(bot, TICKETS, name="second")
    assert again["id"] == v1["id"] and again["version"] == 1
    assert again["version_created"] is False and again["name"] == "first"


# -- active dataset --------------------------------------------------------------------------


def test_activate_deploys_to_the_default_environment(api: Api, repo: str) -> None:
    bot = agent()
    v1 = api.create(bot, TICKETS, make_active=True)
    assert v1["is_active"] is True
    v2 = api.create(bot, TICKETS[:1])
    assert v2["is_active"] is False
    active = api("POST", f"/api/datasets/{v2['id']}/activate/")
    assert active.status_code == 200 and active.json()["is_active"] is True
    assert active.json()["datapoints"] == v2["datapoints"]
    listed = api.everything(f"/api/datasets/?agent={bot}")
    assert [(v["version"], v["is_active"]) for v in listed] == [(2, True), (1, False)]
    # The active dataset is the version Humanloop shows as deployed to production.
    (found,) = [
        d for d in api("GET", "/v5/datasets?size=100").json()["records"] if d["name"] == bot
    ]
    envs = api("GET", f"/v5/datasets/{found['id']}/environments").json()
    production = next(e for e in envs if e["name"] == "production")
    assert production["file"]["version_id"] == v2["dsv_version"]
    # The active version cannot be deleted.
    refused = api("DELETE", f"/api/datasets/{v2['id']}/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "dataset version 2 is the agent's active dataset"


# -- other dialects and dsv ------------------------------------------------------------------


def test_written_here_reads_the_same_through_humanloop(api: Api, repo: str) -> None:
    bot = agent()
    made = api.create(bot, TICKETS)
    listed = api("GET", "/v5/datasets?size=100").json()["records"]
    (found,) = [d for d in listed if d["path"] == f"{repo}/{bot}"]
    assert found["version_id"] == made["dsv_version"]
    points = api("GET", f"/v5/datasets/{found['id']}/datapoints?size=100").json()["records"]
    assert [{k: v for k, v in p.items() if k != "id"} for p in points] == TICKET_RECORDS
    # One datapoint, one object id: Humanloop's dp_ id and Overmind's UUID spell the same one.
    assert [datapoint_id(bytes.fromhex(p["id"][3:])) for p in points] == [
        p["id"] for p in made["datapoints"]
    ]


def test_a_dataset_pushed_with_dsv_and_records_of_other_dialects(
    api: Api, repo: str, server: tuple[Server, Keys], tmp_path: Path
) -> None:
    running, _ = server
    local = tmp_path / "work"
    dsv(tmp_path, "init", str(local))
    dsv(local, "remote", "add", "origin", f"{running.url}/{repo}")
    pushed = [
        {"inputs": {"question": "2+2?"}, "target": {"answer": "4"}},
        {
            "messages": [{"role": "user", "content": "hi"}],
            "output": [{"type": "text", "text": "yo"}],
        },
        {"inputs": {"q": "x"}, "expected_output": "orq text", "metadata": {"k": 1}, "id": 7},
    ]
    (local / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pushed))
    dsv(local, "add", "qa.jsonl")
    dsv(local, "commit", "-m", "pushed")
    keyed(local, api.key, "push")
    (listed,) = api.everything("/api/datasets/")
    hl = api("GET", "/v5/datasets").json()["records"][0]
    # The agent of a file not named by a UUID stands for its dataset id, and maps back.
    assert listed["agent"] == agent_of_record_id(hl["id"])
    assert record_id_of_agent(listed["agent"]) == hl["id"]
    assert listed["version"] == 1 and listed["name"] is None and listed["source"] is None
    points = api.everything(f"/api/datasets/{listed['id']}/datapoints/")
    assert points[0] == {
        "id": datapoint_id(bytes.fromhex(datapoint_oid(pushed[0]))),
        "input": {"question": "2+2?"},
        "expected_output": {"answer": "4"},
        "order": 0,
        "persona": None,
        "tags": {},
        "target": {"answer": "4"},
    }
    assert points[1]["input"] is None
    assert points[1]["expected_output"] == [{"type": "text", "text": "yo"}]
    assert points[1]["messages"] == [{"role": "user", "content": "hi"}]
    # A record's own `id` is replaced by the datapoint's, its other fields shown as they are.
    assert points[2]["id"] == datapoint_id(bytes.fromhex(datapoint_oid(pushed[2])))
    assert points[2]["expected_output"] == "orq text" and points[2]["metadata"] == {"k": 1}
    # A new version posted for that agent is a new version of qa.jsonl.
    v2 = api.create(listed["agent"], TICKETS)
    assert v2["version"] == 2
    keyed(local, api.key, "pull")
    assert records(local / "qa.jsonl") == TICKET_RECORDS


# -- access ----------------------------------------------------------------------------------


def test_keys_on_every_route(api_for: ApiMaker, repo: str) -> None:
    writer = api_for("write", repo)
    made = writer.create(agent(), TICKETS)
    item = f"/api/datasets/{made['id']}/"
    body = {"agent": agent(), "datapoints": TICKETS}
    routes: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/datasets/", {}),
        ("POST", "/api/datasets/", {"json": body}),
        ("GET", item, {}),
        ("DELETE", item, {}),
        ("POST", item + "activate/", {}),
        ("GET", item + "datapoints/", {}),
    ]
    nobody = api_for(None)
    for method, path, extra in routes:
        reply = nobody(method, path, **extra)
        assert reply.status_code == 401, (method, path)
        assert reply.json()["detail"] == "this server requires an API key"
    reader = api_for("read", repo)
    for method, path, extra in routes:
        reply = reader(method, path, **extra)
        expected = 200 if method == "GET" else 403
        assert reply.status_code == expected, (method, path, reply.text)
    assert "may only read" in reader("POST", "/api/datasets/", json=body).json()["detail"]
    # A key for another repository sees that repository's datasets, not these.
    other = api_for("write", repo + "-other")
    for method, path, extra in routes:
        if path == "/api/datasets/":
            continue
        assert other(method, path, **extra).status_code == 404, (method, path)
    assert other.everything("/api/datasets/") == []
    # A key for every repository works in the API repository (dsv serve --api-repo).
    assert api_for("write")("GET", item).status_code == 404


# -- errors ----------------------------------------------------------------------------------


def test_errors_are_django_rest_framework_bodies(api: Api) -> None:
    made = api.create(agent(), TICKETS, source="seed")
    cases: list[tuple[str, str, dict[str, Any], int, Any]] = [
        ("GET", "/api/datasets/?version=two", {}, 400, {"version": ["Enter a number."]}),
        ("GET", "/api/datasets/?agent=x", {}, 400, {"agent": ["Must be a valid UUID."]}),
        (
            "GET",
            "/api/datasets/?source=web",
            {},
            400,
            {"source": ["Select a valid choice. web is not one of the available choices."]},
        ),
        (
            "POST",
            "/api/datasets/",
            {"json": {"datapoints": []}},
            400,
            {"agent": ["This field is required."]},
        ),
        (
            "POST",
            "/api/datasets/",
            {"json": {"agent": agent(), "datapoints": [{"order": -1}]}},
            400,
            {"datapoints[0].order": ["A valid non-negative integer is required."]},
        ),
        (
            "POST",
            "/api/datasets/",
            {"json": {"agent": agent(), "datapoints": [], "source": "web"}},
            400,
            {"source": ['"web" is not a valid choice.']},
        ),
        (
            "POST",
            "/api/datasets/",
            {"json": {"agent": agent(), "datapoints": [], "colour": 1}},
            400,
            {"colour": ["Unknown field."]},
        ),
        (
            "POST",
            "/api/datasets/",
            {"json": {"agent": agent(), "datapoints": [{"persona": "p" * 129}]}},
            400,
            {"datapoints[0].persona": ["Ensure this field is a string of at most 128 characters."]},
        ),
    ]
    for method, path, extra, status, body in cases:
        reply = api(method, path, **extra)
        assert (reply.status_code, reply.json()) == (status, body), (method, path, extra)
    for path in (
        f"/api/datasets/{uuid.uuid4()}/",
        "/api/datasets/not-a-uuid/",
        f"/api/datasets/{made['id']}/datapoints/?page=2",
        f"/api/datasets/{made['id']}/datapoints/?page=x",
        # The filters apply to the version a route looks up, as in Django REST framework.
        f"/api/datasets/{made['id']}/datapoints/?source=synthetic",
        f"/api/datasets/{made['id']}/datapoints/?version_min=2",
        f"/api/datasets/{made['id']}/?version=3",
    ):
        reply = api("GET", path)
        assert reply.status_code == 404, path
        assert reply.json()["detail"] in ("Not found.", "Invalid page.")
    assert (
        api("GET", f"/api/datasets/{made['id']}/datapoints/?version=1&source=seed").status_code
        == 200
    )
    assert api("GET", f"/api/datasets/{made['id']}/datapoints/?page=last").json()["count"] == 2
    wrong = api(
        "POST", "/api/datasets/", content=b"agent=x", headers={"content-type": "text/plain"}
    )
    assert wrong.status_code == 415 and "detail" in wrong.json()
    duplicate = api(
        "POST",
        "/api/datasets/",
        content=b'{"agent": "%s", "agent": "x", "datapoints": []}' % agent().encode(),
        headers={"content-type": "application/json"},
    )
    assert duplicate.status_code == 422
    assert duplicate.json() == {"agent": ["duplicate key 'agent' in body"]}


def test_the_openapi_document_covers_every_route(api: Api) -> None:
    paths = api("GET", "/openapi.json").json()["paths"]
    assert {
        p: sorted(m.upper() for m in ops if m != "parameters")
        for p, ops in paths.items()
        if p.startswith("/api/")
    } == {
        "/api/datasets": ["GET", "POST"],
        "/api/datasets/{id}": ["DELETE", "GET"],
        "/api/datasets/{id}/activate": ["POST"],
        "/api/datasets/{id}/datapoints": ["GET"],
    }
