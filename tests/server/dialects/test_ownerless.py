"""Where the dialects without owners in their paths keep datasets (docs/dialects.md), and the
owner name their prefix reserves."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from benchmarks.push import Server
from dsv.cli import main
from dsv.errors import BadInput
from dsv.server.dialects import Mount
from dsv.server.dialects.ownerless import DEFAULT_API_REPO, repo_for
from dsv.server.storage import KeyRecord, check_repo_name
from dsv.server.storage.stored import StoredObjects


def _mount(tmp_path: Path, **given: str) -> Mount:
    return Mount(
        StoredObjects(None),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        tmp_path,
        True,
        ("production",),
        lambda _: None,
        lambda _: None,
        **given,
    )


def _key(repo: str | None, scope: str = "write") -> KeyRecord:
    return KeyRecord("k1", b"\0" * 32, scope, repo, 0, None, "")  # type: ignore[arg-type]


def test_a_key_for_one_repository_writes_there(tmp_path: Path) -> None:
    mount = _mount(tmp_path, api_repo="team/shared")
    assert repo_for(mount, _key("acme/evals")) == "acme/evals"
    assert repo_for(mount, _key("acme/evals", "read")) == "acme/evals"


def test_a_key_for_every_repository_or_none_uses_the_api_repo(tmp_path: Path) -> None:
    assert repo_for(_mount(tmp_path, api_repo="team/shared"), _key(None)) == "team/shared"
    assert repo_for(_mount(tmp_path, api_repo="team/shared"), None) == "team/shared"
    assert repo_for(_mount(tmp_path), None) == DEFAULT_API_REPO == "api/datasets"


def test_the_owner_datasets_is_reserved() -> None:
    with pytest.raises(BadInput, match="the owner 'datasets' is reserved"):
        check_repo_name("datasets/qa")
    assert check_repo_name("acme/datasets") == "acme/datasets"


def test_serve_refuses_a_bad_api_repo(tmp_path: Path) -> None:
    for bad, said in (("nope", "invalid repository name 'nope'"), ("datasets/x", "reserved")):
        result = CliRunner().invoke(
            main, ["serve", "--root", str(tmp_path / "r"), "--api-repo", bad]
        )
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: invalid repository name"), result.stderr
        assert said in result.stderr
    assert not (tmp_path / "r").exists()


def test_no_key_is_made_for_a_reserved_owner(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    result = CliRunner().invoke(
        main, ["keys", "create", "--root", root, "--scope", "write", "--repo", "datasets/qa"]
    )
    assert result.exit_code == 2
    assert "the owner 'datasets' is reserved" in result.stderr


def test_a_push_to_a_reserved_owner_is_refused_clearly(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Server(root, "--no-auth") as running:
        reply = httpx.get(f"{running.url}/v1/datasets/qa/info")
        assert reply.status_code == 400
        # dsv's error shape, though TensorZero owns the prefix: a dsv client reads it.
        assert "the owner 'datasets' is reserved" in reply.json()["error"]["message"]
        result = CliRunner().invoke(
            main, ["-C", str(tmp_path), "clone", f"{running.url}/datasets/qa", "x"]
        )
        assert result.exit_code != 0
        assert "the owner 'datasets' is reserved" in result.stderr, result.stderr
        # Other owners are served as before.
        assert httpx.get(f"{running.url}/v1/acme/qa/info").status_code == 200
