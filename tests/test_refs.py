"""Refs: compare-and-swap moves, logs that survive deletion and torn lines, name rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsv.errors import BadInput, BadState
from dsv.refs import MISSING, Refs, check_ref_name

A, B, C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


def test_compare_and_swap(tmp_path: Path) -> None:
    refs = Refs(tmp_path)
    refs.update("refs/heads/main", A, expected=MISSING, user="u", reason="create")
    with pytest.raises(BadState, match="ref main moved: expected nothing, found aaaaaaaaaaaa"):
        refs.update("refs/heads/main", B, expected=MISSING, user="u", reason="again")
    refs.update("refs/heads/main", B, expected=A, user="u", reason="advance")
    with pytest.raises(BadState, match="moved"):
        refs.update("refs/heads/main", C, expected=A, user="u", reason="stale")
    assert refs.read("refs/heads/main") == B


def test_head_follows_its_branch(tmp_path: Path) -> None:
    refs = Refs(tmp_path)
    refs.set_symbolic("HEAD", "refs/heads/main")
    assert refs.read("HEAD") is None
    refs.update("HEAD", A, expected=MISSING, user="u", reason="commit")
    assert refs.read("refs/heads/main") == A
    refs.update("HEAD", B, user="u", reason="detach", deref=False)
    assert refs.symbolic_target("HEAD") is None and refs.read("HEAD") == B
    assert refs.read("refs/heads/main") == A


def test_log_keeps_deletions_and_ignores_a_torn_last_line(tmp_path: Path) -> None:
    refs = Refs(tmp_path)
    refs.update("refs/envs/production", A, user="ada", reason="deploy: v1")
    refs.update("refs/envs/production", B, user="bob", reason="deploy: v2")
    refs.delete("refs/envs/production", user="ada", reason="deployment removed")
    with open(tmp_path / "logs/refs/envs/production", "a") as log:
        log.write("deadbeef torn")
    entries = refs.read_log("refs/envs/production")
    assert [(e.new, e.user, e.reason) for e in entries] == [
        (A, "ada", "deploy: v1"),
        (B, "bob", "deploy: v2"),
        (bytes(32), "ada", "deployment removed"),
    ]
    assert refs.read("refs/envs/production") is None
    assert refs.list_refs("refs/envs/") == []


@pytest.mark.parametrize(
    "name",
    [
        *("", "a b", "a..b", "-x", ".hidden", "x.lock", "a/", "a\x01", "a:b", "a~1", "a^"),
        *("main\n", "x.lock\n", "a/\n", "a.\n"),
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(BadInput, match="invalid branch name"):
        check_ref_name(name, what="branch name")


@pytest.mark.parametrize("name", ["main", "feature/relabel", "v1.0", "prod-2026"])
def test_valid_names(name: str) -> None:
    assert check_ref_name(name) == name


def test_a_name_that_would_leave_the_refs_directory_names_no_ref(tmp_path: Path) -> None:
    from dsv.refs import Refs

    (tmp_path / ".dsv").mkdir()
    outside = tmp_path / "outside"
    outside.write_text("ab" * 32 + "\n")
    refs = Refs(tmp_path / ".dsv")
    for name in ("../outside", "refs/heads/../../../outside", str(outside), "refs//x", "a\0b"):
        assert refs.read(name) is None, name
