"""Many `dsv serve` processes, one truth: three servers on one SeaweedFS prefix and one
PostgreSQL database (tests/conftest.py `deployment`), driven by real `dsv` client processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from benchmarks.push import dsv_command
from benchmarks.services import Deployment
from dsv.cli import main
from dsv.errors import CorruptObject

POINTS = 300


def run(root: Path, *args: str, key: str) -> subprocess.CompletedProcess[str]:
    """`dsv -C root ARGS` as its own process, as a user runs it."""
    env = {**os.environ, "DSV_API_KEY": key}
    return subprocess.run(
        [*dsv_command(), "-C", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def ok(root: Path, *args: str, key: str) -> str:
    done = run(root, *args, key=key)
    assert done.returncode == 0, f"dsv {args}: {done.stderr}"
    return done.stdout


def _healthy(url: str, *, within: float) -> None:
    """Wait until the server's /healthz answers 200, at most `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=10).status_code == 200:
                return
        assert time.monotonic() < deadline, f"{url} is not healthy after {within} s"
        time.sleep(0.2)


def records(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_repo(path: Path, key: str, url: str, tag: str, count: int = POINTS) -> None:
    ok(path.parent, "init", path.name, key=key)
    lines = [json.dumps({"id": i, "q": f"{tag} {i}"}) for i in range(count)]
    (path / "qa.jsonl").write_text("\n".join(lines) + "\n")
    ok(path, "add", "qa.jsonl", "--key", "id", key=key)
    ok(path, "commit", "-m", tag, key=key)
    ok(path, "remote", "add", "origin", url, key=key)


def test_every_server_is_healthy_and_checks_both_stores(deployment: Deployment) -> None:
    for url in deployment.urls:
        reply = httpx.get(url + "/healthz", timeout=10)
        assert reply.status_code == 200 and reply.json()["status"] == "ok"


def test_a_push_to_one_server_is_cloned_from_another_and_passes_fsck(
    deployment: Deployment, tmp_path: Path
) -> None:
    key = deployment.key("write")
    one, two, three = deployment.urls
    make_repo(tmp_path / "a", key, f"{one}/scale/clone", "first")
    ok(tmp_path / "a", "push", "origin", "main", key=key)
    ok(tmp_path, "clone", f"{two}/scale/clone", "b", key=key)
    assert "ok" in ok(tmp_path / "b", "fsck", key=key)
    assert records(tmp_path / "b" / "qa.jsonl") == records(tmp_path / "a" / "qa.jsonl")
    # Server three has never read this repository: its cache fills from S3.
    ok(tmp_path, "clone", f"{three}/scale/clone", "c", key=key)
    assert "ok" in ok(tmp_path / "c", "fsck", key=key)


def test_keys_made_and_revoked_with_dsv_keys_hold_on_every_server_at_once(
    deployment: Deployment,
) -> None:
    made = CliRunner().invoke(
        main, ["keys", "create", "--meta", deployment.meta, "--scope", "read"]
    )
    assert made.exit_code == 0, made.output
    key = made.output.splitlines()[-1]
    key_id = re.search(r"read key (\w+)", made.output)[1]  # type: ignore[index]
    listed = CliRunner().invoke(main, ["keys", "list", "--meta", deployment.meta])
    assert re.search(rf"^{key_id}  read .* active$", listed.output, re.M)
    for url in deployment.urls:
        reply = httpx.get(f"{url}/v1/scale/any/info", headers={"X-API-KEY": key}, timeout=10)
        assert reply.status_code != 401
    revoked = CliRunner().invoke(main, ["keys", "revoke", "--meta", deployment.meta, key_id])
    assert revoked.exit_code == 0 and revoked.output == f"Revoked key {key_id}\n"
    for url in deployment.urls:
        reply = httpx.get(f"{url}/v1/scale/any/info", headers={"X-API-KEY": key}, timeout=10)
        assert reply.status_code == 401
        assert reply.json()["error"]["message"] == f"API key {key_id} has been revoked"


def test_dsv_keys_needs_a_root_or_a_database() -> None:
    result = CliRunner().invoke(main, ["keys", "list"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: no server given\nhint: give the --root (or --meta) of 'dsv serve'\n"
    )
    result = CliRunner().invoke(main, ["keys", "list", "--meta", "mysql://db/dsv"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid metadata store: give a postgresql:// DSN\n")


@pytest.mark.parametrize("round_", [1, 2])
def test_eight_pushers_and_eight_api_writers_over_three_servers(
    deployment: Deployment, tmp_path: Path, round_: int
) -> None:
    """Every write reported done is there; every refused one is refused clearly."""
    key = deployment.key("write")
    repo = f"scale/busy-{round_}"
    urls = deployment.urls
    base = tmp_path / "base"
    make_repo(base, key, f"{urls[0]}/{repo}", "base")
    ok(base, "push", "origin", "main", key=key)
    clients = []
    for n in range(8):
        path = tmp_path / f"c{n}"
        ok(tmp_path, "clone", f"{urls[n % 3]}/{repo}", path.name, key=key)
        with (path / "qa.jsonl").open("a") as out:
            out.write(json.dumps({"id": f"client-{n}", "q": "new"}) + "\n")
        ok(path, "commit", "-a", "-m", f"client {n}", key=key)
        ok(path, "branch", f"c{n}", key=key)
        clients.append(path)

    branches: dict[int, subprocess.CompletedProcess[str]] = {}
    pushed: dict[int, subprocess.CompletedProcess[str]] = {}
    written: dict[int, httpx.Response] = {}

    def push(n: int) -> None:
        # Each client's own branch (nobody else moves it), then main (all race for it).
        branches[n] = run(clients[n], "push", "origin", f"c{n}", key=key)
        pushed[n] = run(clients[n], "push", "origin", "main", key=key)

    def write(n: int) -> None:
        written[n] = httpx.post(
            f"{urls[(n + 1) % 3]}/v5/datasets",
            headers={"X-API-KEY": key},
            json={
                "path": f"{repo}/api-{n}",
                "datapoints": [{"inputs": {"n": str(n)}, "target": {"k": i}} for i in range(20)],
                "version_name": "v1",
            },
            timeout=120,
        )

    threads = [threading.Thread(target=push, args=(n,)) for n in range(8)]
    threads += [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)

    final = tmp_path / "final"
    ok(tmp_path, "clone", f"{urls[2]}/{repo}", final.name, key=key)
    assert "ok" in ok(final, "fsck", key=key)
    remote_refs = httpx.get(
        f"{urls[1]}/v1/{repo}/info", headers={"X-API-KEY": key}, timeout=10
    ).json()["refs"]
    main_log = ok(final, "log", "--json", key=key)
    main_commits = {doc["oid"] for doc in json.loads(main_log)}
    for n, done in pushed.items():
        head = ok(clients[n], "log", "--json", "-n", "1", key=key)
        commit = json.loads(head)[0]["oid"]
        assert branches[n].returncode == 0, branches[n].stderr
        assert remote_refs[f"refs/heads/c{n}"] == commit
        if done.returncode == 0:
            assert commit in main_commits
        else:
            # Refused as a whole, with one clear line: main moved under it.
            # (checked by the client, or by the server's compare-and-swap when main moved
            # between the client's look and its update)
            assert re.match(
                r"error: rejected: main \(non-fast-forward: the remote has versions you do "
                r"not have\); nothing was pushed\n"
                r"|error: origin: rejected main: the remote's main \(\w+\) has versions",
                done.stderr,
            ), done.stderr
            assert commit not in main_commits
    assert len(pushed) == 8 and len(written) == 8
    for n, reply in written.items():
        # The API retries on top of concurrent moves: every one of its writes lands.
        assert reply.status_code == 200, reply.text
        body = reply.json()
        got = httpx.get(
            f"{urls[n % 3]}/v5/datasets/{body['id']}",
            params={"version_id": body["version_id"], "include_datapoints": "true"},
            headers={"X-API-KEY": key},
            timeout=30,
        )
        assert got.status_code == 200 and len(got.json()["datapoints"]) == 20


def test_a_server_killed_mid_push_loses_nothing_and_another_takes_the_retry(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A remote names one URL; the client retries on another server (a load balancer's job)."""
    key = deployment.key("write")
    victim = deployment.servers[0]
    repo = "scale/killed"
    make_repo(tmp_path / "a", key, f"{victim.url}/{repo}", "big", count=60_000)
    proc = subprocess.Popen(
        [*dsv_command(), "-C", str(tmp_path / "a"), "push", "origin", "main"],
        env={**os.environ, "DSV_API_KEY": key},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Kill it once the push has begun (the server logged its first request): the objects
    # and the ref move are still to come, so the kill lands mid-push however fast the
    # machine is; waiting for a later request let a quick push finish first.
    for _ in range(2400):
        if f"/v1/{repo}/" in victim.log_path.read_text(errors="replace"):
            break
        threading.Event().wait(0.005)
    assert victim.proc is not None
    victim.proc.kill()
    _, err = proc.communicate(timeout=120)
    try:
        assert proc.returncode == 5, err
        # Cut mid-request, or refused at the next one: either way one clear line.
        assert err.startswith(
            (
                f"error: the connection to remote 'origin' ({victim.url}/{repo})",
                f"error: cannot reach remote 'origin' ({victim.url}/{repo})",
            )
        ), err
        # Nothing points at missing data: the ref did not move.
        info = httpx.get(
            f"{deployment.servers[1].url}/v1/{repo}/info",
            headers={"X-API-KEY": key},
            timeout=10,
        )
        assert info.status_code in (200, 404)
        if info.status_code == 200:
            assert "refs/heads/main" not in info.json()["refs"]
        # The retry on another server completes; the clone from the third is whole.
        other = f"{deployment.servers[1].url}/{repo}"
        ok(tmp_path / "a", "remote", "add", "other", other, key=key)
        ok(tmp_path / "a", "push", "other", "main", key=key)
        ok(tmp_path, "clone", f"{deployment.servers[2].url}/{repo}", "b", key=key)
        assert "ok" in ok(tmp_path / "b", "fsck", key=key)
    finally:
        victim.stop()
        victim.start(timeout=60)


def test_postgres_stopped_mid_write_is_a_clear_error_and_recovers(
    deployment: Deployment, postgres: Any, tmp_path: Path
) -> None:
    key = deployment.key("write")
    url = deployment.servers[1].url
    repo = "scale/pg-down"
    make_repo(tmp_path / "a", key, f"{url}/{repo}", "one")
    postgres.stop()
    try:
        down = run(tmp_path / "a", "push", "origin", "main", key=key)
        health = httpx.get(url + "/healthz", timeout=30)
    finally:
        postgres.start()
    assert down.returncode != 0
    assert "metadata database" in down.stderr or "503" in down.stderr or "Error:" in down.stderr
    assert health.status_code == 503
    assert "metadata database" in health.json()["error"]["message"]
    # No manual repair: once the server's pool has reconnected (its /healthz says so, as a
    # load balancer would wait for), the same push lands, and the clone is whole.
    for server in deployment.servers:
        _healthy(server.url, within=60)
    ok(tmp_path / "a", "push", "origin", "main", key=key)
    ok(tmp_path, "clone", f"{deployment.servers[2].url}/{repo}", "b", key=key)
    assert "ok" in ok(tmp_path / "b", "fsck", key=key)


def test_seaweedfs_stopped_mid_write_is_a_clear_error_and_recovers(
    deployment: Deployment, seaweedfs: Any, tmp_path: Path
) -> None:
    key = deployment.key("write")
    url = deployment.servers[2].url
    repo = "scale/s3-down"
    make_repo(tmp_path / "a", key, f"{url}/{repo}", "one")
    seaweedfs.stop()
    try:
        down = run(tmp_path / "a", "push", "origin", "main", key=key)
        health = httpx.get(url + "/healthz", timeout=60)
    finally:
        seaweedfs.start()
    assert down.returncode != 0 and "Traceback" not in down.stderr, down.stderr
    assert health.status_code == 503
    assert "object store" in health.json()["error"]["message"]
    # Nothing moved to missing data, and the same push lands once S3 is back.
    info = httpx.get(f"{url}/v1/{repo}/info", headers={"X-API-KEY": key}, timeout=10)
    assert info.status_code != 200 or "refs/heads/main" not in info.json()["refs"]
    for server in deployment.servers:
        _healthy(server.url, within=60)
    ok(tmp_path / "a", "push", "origin", "main", key=key)
    ok(tmp_path, "clone", f"{deployment.servers[0].url}/{repo}", "b", key=key)
    assert "ok" in ok(tmp_path / "b", "fsck", key=key)


def test_copy_server_moves_an_embedded_root_up_and_verifies_it(
    seaweedfs: Any, postgres: Any, tmp_path: Path
) -> None:
    from benchmarks.push import Server

    root = tmp_path / "root"
    root.mkdir()
    made = CliRunner().invoke(main, ["keys", "create", "--root", str(root), "--scope", "write"])
    key = made.output.splitlines()[-1]
    with Server(root) as local:
        make_repo(tmp_path / "a", key, f"{local.url}/acme/evals", "local")
        ok(tmp_path / "a", "push", "origin", "main", key=key)
        api = httpx.post(
            f"{local.url}/v5/datasets",
            headers={"X-API-KEY": key},
            json={
                "path": "acme/evals/api",
                "datapoints": [{"inputs": {"q": "x"}, "target": {"a": 1}}],
                "version_name": "v1",
            },
            timeout=60,
        ).json()
    objects, meta = f"s3://dsv/{uuid.uuid4().hex}", postgres.database()
    copied = CliRunner().invoke(
        main, ["copy-server", "--root", str(root), "--objects", objects, "--meta", meta]
    )
    assert copied.exit_code == 0, copied.output
    assert "Copied 1 repositories (" in copied.output
    assert ", 1 keys, 1 API datasets.\n" in copied.output
    assert re.search(r"^Verified: \d+ objects reachable from every ref", copied.output, re.M)
    with Server(
        tmp_path / "cache", "--objects", objects, "--meta", meta, env=dict(os.environ)
    ) as up:
        # The same key, the same clone, the same API dataset id and version name.
        ok(tmp_path, "clone", f"{up.url}/acme/evals", "b", key=key)
        assert "ok" in ok(tmp_path / "b", "fsck", key=key)
        got = httpx.get(
            f"{up.url}/v5/datasets/{api['id']}",
            headers={"X-API-KEY": key},
            params={"version_id": api["version_id"]},
            timeout=30,
        )
        assert got.status_code == 200 and got.json()["version_name"] == "v1"
    # Missing data on the far side is found by the verification.
    from dsv.server.moving import verify_copy
    from dsv.server.storage.postgres import PostgresMetaStore
    from dsv.server.storage.s3 import S3BlobStore

    empty = S3BlobStore(f"s3://dsv/{uuid.uuid4().hex}", tmp_path / "empty")
    far = PostgresMetaStore(meta)
    try:
        with pytest.raises(CorruptObject, match=r"^acme/evals: "):
            verify_copy(empty, far)
    finally:
        empty.close()
        far.close()
