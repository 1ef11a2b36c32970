"""Keys and access against a real `dsv serve`: every refusal is clear, and nothing moves."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from benchmarks.push import Server
from dsv.cli import main
from dsv.notebook import Repository

Keys = Callable[..., str]


@pytest.fixture(scope="module")
def server(server_root: Path, server_keys: Keys) -> Iterator[tuple[Server, Keys]]:
    with Server(server_root) as running:
        yield running, server_keys


def dsv(root: Path, *args: str, code: int = 0, key: str | None = None) -> Result:
    env = {"DSV_API_KEY": key}
    result = CliRunner().invoke(main, ["-C", str(root), *args], env=env)
    assert result.exit_code == code, (
        f"dsv {' '.join(args)} exited {result.exit_code}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    return result


def repo_with_data(tmp_path: Path, url: str) -> Path:
    root = tmp_path / "a"
    dsv(tmp_path, "init", "a")
    (root / "qa.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(100)))
    dsv(root, "add", "qa.jsonl")
    dsv(root, "commit", "-m", "first")
    dsv(root, "remote", "add", "origin", url)
    return root


def refs_on_server(url: str, key: str) -> dict[str, str]:
    base, _, repo = url.rpartition("/")
    owner_base, _, owner = base.rpartition("/")
    reply = httpx.get(f"{owner_base}/v1/{owner}/{repo}/info", headers={"X-API-KEY": key})
    assert reply.status_code == 200, reply.text
    refs: dict[str, str] = reply.json()["refs"]
    return refs


def test_every_refusal_is_clear_and_moves_nothing(
    tmp_path: Path, server: tuple[Server, Keys]
) -> None:
    running, keys = server
    url = f"{running.url}/acme/evals"
    admin = keys("write")
    a = repo_with_data(tmp_path, url)

    err = dsv(a, "push", code=5).stderr
    assert err.startswith("error: origin: this server requires an API key [request ")
    assert "hint: set DSV_API_KEY to an API key made with 'dsv keys create'" in err

    err = dsv(a, "push", code=5, key="dsv_0000_not-a-key").stderr
    assert "error: origin: the API key is not valid on this server" in err
    assert "hint: the key in DSV_API_KEY was refused" in err

    reader = keys("read", "acme/evals")
    err = dsv(a, "push", code=5, key=reader).stderr
    assert "may only read acme/evals; pushing needs a write key" in err
    assert "hint: use a key made with 'dsv keys create --scope write --repo acme/evals'" in err

    other = keys("write", "acme/other")
    err = dsv(a, "push", code=5, key=other).stderr
    assert "is for repository acme/other, not acme/evals" in err
    assert not (running.root / "repos" / "acme" / "evals").exists()  # nothing was stored

    writer = keys("write", "acme/evals")
    assert "new" in dsv(a, "push", key=writer).stdout  # the first push creates the repo
    assert set(refs_on_server(url, admin)) == {"refs/heads/main"}

    # A read key reads; the key of another repository does not.
    dsv(tmp_path, "clone", url, "b", key=reader)
    err = dsv(tmp_path, "clone", url, "c", code=5, key=other).stderr
    assert "is for repository acme/other" in err and not (tmp_path / "c").exists()


def test_key_from_the_variable_named_by_the_remote(
    tmp_path: Path, server: tuple[Server, Keys], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, keys = server
    url = f"{running.url}/acme/named"
    a = repo_with_data(tmp_path, url)
    dsv(a, "remote", "add", "team", url, "--key-env", "TEAM_KEY")
    err = dsv(a, "push", "team", code=5, key=keys("write")).stderr
    assert "hint: set TEAM_KEY to an API key" in err  # DSV_API_KEY is not used for it
    monkeypatch.setenv("TEAM_KEY", keys("write", "acme/named"))
    dsv(a, "push", "team")


def test_both_header_forms_and_revocation(tmp_path: Path, server: tuple[Server, Keys]) -> None:
    running, _ = server
    root = running.root
    out = dsv(tmp_path, "keys", "create", "--root", str(root), "--scope", "read").stdout
    key = out.splitlines()[-1]
    key_id = out.split()[3]
    assert key.startswith("dsv_") and key_id in key
    info = f"{running.url}/v1/x/y/info"
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-KEY": key}):
        reply = httpx.get(info, headers=headers)
        assert reply.status_code == 200 and reply.json()["can_write"] is False
    listed = dsv(tmp_path, "keys", "list", "--root", str(root)).stdout
    assert f"{key_id}  read " in listed and key not in listed
    assert key.encode() not in (root / "meta.sqlite3").read_bytes()
    dsv(tmp_path, "keys", "revoke", "--root", str(root), key_id)
    reply = httpx.get(info, headers={"X-API-KEY": key})
    assert reply.status_code == 401
    error = reply.json()["error"]
    assert error["code"] == "bad_key" and "revoked" in error["message"]
    assert error["request_id"] == reply.headers["x-request-id"]
    assert reply.status_code == httpx.get(info).status_code == 401
    assert "revoked" in dsv(tmp_path, "keys", "list", "--root", str(root)).stdout
    err = dsv(tmp_path, "keys", "revoke", "--root", str(root), "nope", code=2).stderr
    assert "no key with id 'nope'" in err


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    # Refused before anything is bound: no socket is ever opened on another address.
    for host in ("0.0.0.0", "192.0.2.1", "example.com"):
        result = dsv(
            tmp_path, "serve", "--root", str(tmp_path / "r"), "--host", host, "--no-auth", code=2
        )
        assert result.stderr.startswith(f"error: refusing to serve without keys on {host}")
        assert "hint: bind to 127.0.0.1" in result.stderr
    assert not (tmp_path / "r").exists()


def test_no_auth_on_loopback_needs_no_key(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Server(root, "--no-auth") as running:
        url = f"{running.url}/open/repo"
        a = repo_with_data(tmp_path, url)
        dsv(a, "push")
        dsv(tmp_path, "clone", url, "b")
        with Repository.open(tmp_path / "b") as repo:
            assert repo.head() == Repository.open(a).head()


def test_names_with_a_final_newline_are_refused(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    create = ("keys", "create", "--root", root, "--scope", "write", "--repo", "acme/evil\n")
    err = dsv(tmp_path, *create, code=2).stderr
    assert err.startswith("error: invalid repository name 'acme/evil\\n'"), err
    assert "acme" not in dsv(tmp_path, "keys", "list", "--root", root).stdout
    dsv(tmp_path, "init", "a")
    err = dsv(tmp_path / "a", "remote", "add", "origin\n", "http://h/acme/evals", code=2).stderr
    assert err.startswith("error: invalid remote name 'origin\\n'"), err
