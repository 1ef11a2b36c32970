"""Branches, tags and environments: the names that point at versions, and their logs."""

from __future__ import annotations

import msgspec

from dsv.errors import BadInput, BadState
from dsv.objects import ZERO_OID
from dsv.refs import BRANCHES, ENVS, MISSING, TAGS, RefLogEntry, check_ref_name
from dsv.repo import Repository

__all__ = [
    "EnvInfo",
    "create_branch",
    "create_tag",
    "delete_branch",
    "delete_tag",
    "deploy",
    "env_log",
    "list_branches",
    "list_envs",
    "list_remote_branches",
    "list_remote_envs",
    "list_tags",
    "remove_env",
]


def list_branches(repo: Repository) -> list[tuple[str, bytes, bool]]:
    current = repo.current_branch()
    return [
        (name[len(BRANCHES) :], oid, name[len(BRANCHES) :] == current)
        for name, oid in repo.refs.list_refs(BRANCHES)
    ]


def list_remote_branches(repo: Repository) -> list[tuple[str, str, bytes]]:
    """(remote, branch, oid) of every remote-tracking branch, by remote then name."""
    return [
        (remote, name, oid)
        for remote in repo.remote_names()
        for name, oid in repo.remote_refs(remote, envs=False)
    ]


def _create_ref(repo: Repository, prefix: str, name: str, rev: str | None, what: str) -> bytes:
    check_ref_name(name, what=f"{what} name")
    with repo.lock():
        oid = repo.resolve(rev or "HEAD")
        if repo.refs.read(prefix + name) is not None:
            raise BadInput(f"a {what} named {name!r} already exists")
        repo.refs.update(
            prefix + name,
            oid,
            expected=MISSING,
            user=repo.user,
            reason=f"{what}: created from {rev or 'HEAD'}",
        )
    return oid


def create_branch(repo: Repository, name: str, rev: str | None = None) -> bytes:
    return _create_ref(repo, BRANCHES, name, rev, "branch")


def delete_branch(repo: Repository, name: str) -> bytes:
    with repo.lock():
        if repo.current_branch() == name:
            raise BadState(f"cannot delete branch {name!r}: it is the current branch")
        if repo.refs.read(BRANCHES + name) is None:
            raise BadInput(f"no branch named {name!r}")
        return repo.refs.delete(BRANCHES + name, user=repo.user, reason="branch: deleted")


def list_tags(repo: Repository) -> list[tuple[str, bytes]]:
    return [(name[len(TAGS) :], oid) for name, oid in repo.refs.list_refs(TAGS)]


def create_tag(repo: Repository, name: str, rev: str | None = None) -> bytes:
    return _create_ref(repo, TAGS, name, rev, "tag")


def delete_tag(repo: Repository, name: str) -> bytes:
    with repo.lock():
        if repo.refs.read(TAGS + name) is None:
            raise BadInput(f"no tag named {name!r}")
        return repo.refs.delete(TAGS + name, user=repo.user, reason="tag: deleted")


class EnvInfo(msgspec.Struct, frozen=True):
    """An environment: the version it points to, and when (with the deployer's UTC offset in
    minutes) and by whom it was last deployed (0 and "" when its log is lost, or unknown: a
    remote's environment, `remote` set, as last fetched)."""

    name: str
    oid: bytes
    time: int
    user: str
    tz: int = 0
    remote: str | None = None


def deploy(repo: Repository, name: str, rev: str | None = None) -> tuple[bytes, bytes]:
    """Point environment `name` at version `rev` (default HEAD); return (old, new)."""
    check_ref_name(name, what="environment name")
    if "/" in name:
        raise BadInput(f"invalid environment name {name!r}: '/' is not allowed")
    with repo.lock():
        oid = repo.resolve(rev or "HEAD")
        old = repo.refs.read(ENVS + name)
        repo.refs.update(
            ENVS + name,
            oid,
            expected=old or MISSING,
            user=repo.user,
            reason=f"deploy: {rev or 'HEAD'}",
        )
    return old or ZERO_OID, oid


def list_envs(repo: Repository) -> list[EnvInfo]:
    out = []
    for full, oid in repo.refs.list_refs(ENVS):
        entries = repo.refs.read_log(full)
        last = entries[-1] if entries else None
        out.append(
            EnvInfo(
                full[len(ENVS) :],
                oid,
                last.time if last else 0,
                last.user if last else "",
                last.tz if last else 0,
            )
        )
    return out


def list_remote_envs(repo: Repository) -> list[EnvInfo]:
    """The remotes' environments as last fetched, by remote then name."""
    return [
        EnvInfo(name, oid, 0, "", remote=remote)
        for remote in repo.remote_names()
        for name, oid in repo.remote_refs(remote, envs=True)
    ]


def remove_env(repo: Repository, name: str) -> bytes:
    with repo.lock():
        if repo.refs.read(ENVS + name) is None:
            raise BadInput(f"no environment named {name!r}")
        return repo.refs.delete(ENVS + name, user=repo.user, reason="deployment removed")


def env_log(repo: Repository, name: str) -> list[RefLogEntry]:
    entries = repo.refs.read_log(ENVS + name)
    if not entries:
        raise BadInput(f"no environment named {name!r} has ever been deployed")
    return entries
