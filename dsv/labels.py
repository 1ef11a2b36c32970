"""Branches, tags and environments: the names that point at versions, and their logs."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from dsv.config import now_and_tz
from dsv.deployment import deployment_message, deployment_paths, deployment_tree, source_of
from dsv.errors import BadInput, BadState, DsvError
from dsv.objects import ZERO_OID, Commit, Kind, Tree, TreeEntry, encode_object
from dsv.paths import BadPath, check_tree_paths
from dsv.refs import BRANCHES, ENVS, MISSING, TAGS, RefLogEntry, check_ref_name
from dsv.repo import Repository
from dsv.worktree import repo_path

__all__ = [
    "Deployment",
    "EnvInfo",
    "create_branch",
    "create_tag",
    "delete_branch",
    "delete_tag",
    "deploy",
    "deployed_version",
    "env_log",
    "env_path_log",
    "list_branches",
    "list_envs",
    "list_remote_branches",
    "list_remote_envs",
    "list_tags",
    "rebase_deployments",
    "remove_env",
    "undeploy",
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


def _check_env_name(name: str) -> None:
    check_ref_name(name, what="environment name")
    if "/" in name:
        raise BadInput(f"invalid environment name {name!r}: '/' is not allowed")


def _dataset_names(repo: Repository, paths: Sequence[str]) -> list[str]:
    return sorted(dict.fromkeys(repo_path(repo, p) for p in paths), key=str.encode)


def _write_deployment(
    repo: Repository, tree: dict[str, bytes], parents: tuple[bytes, ...], message: str
) -> bytes:
    """Store a deployment commit (docs/format.md §5) of `tree`; return its oid."""
    ordered = sorted(tree, key=str.encode)
    try:
        check_tree_paths(ordered)
    except BadPath as exc:
        raise BadInput(
            f"cannot deploy: {exc.message}", hint="deploy the clashing datasets together"
        ) from exc
    when, tz = now_and_tz()
    with repo.store.writer() as writer:
        tree_oid = writer.write(
            Kind.TREE, encode_object(Tree(tuple(TreeEntry(p, tree[p]) for p in ordered)))
        )
        return writer.write(
            Kind.COMMIT, encode_object(Commit(tree_oid, parents, repo.user, when, tz, message))
        )


def deploy(
    repo: Repository, name: str, rev: str | None = None, *, paths: Sequence[str] = ()
) -> tuple[bytes, bytes]:
    """Point environment `name` at version `rev` (default HEAD); return (old, new).

    With `paths`, deploy only those datasets: the environment moves to a deployment commit
    holding them from `rev` and every other dataset as it was (docs/format.md §5).
    """
    _check_env_name(name)
    shown = rev or "HEAD"
    with repo.lock():
        oid = repo.resolve(shown)
        old = repo.refs.read(ENVS + name)
        target = oid
        reason = f"deploy: {shown}"
        if paths:
            names = _dataset_names(repo, paths)
            version = repo.tree_of(oid)
            for path in names:
                if path not in version:
                    raise BadInput(
                        f"{shown} has no dataset {path}",
                        hint=f"'dsv show {shown}' lists its datasets",
                    )
            previous = repo.tree_of(old)
            tree = deployment_tree(previous, version, deployed=names)
            reason = f"deploy: {', '.join(names)} from {shown}"
            if old is not None and all(
                deployed_version(repo, old, p) == deployed_version(repo, oid, p) for p in names
            ):
                target = old
            elif old is not None or tree != version:
                # An environment that had nothing keeps the version itself when it is all
                # there is to deploy; otherwise the previous tip is the first parent, so an
                # environment's history only ever grows and a push can check it.
                title = f"deploy {', '.join(names)} to {name} from {shown} ({oid.hex()[:12]})"
                target = _write_deployment(
                    repo,
                    tree,
                    (old, oid) if old is not None else (oid,),
                    deployment_message(title, deployed=names),
                )
        repo.refs.update(
            ENVS + name, target, expected=old or MISSING, user=repo.user, reason=reason
        )
    return old or ZERO_OID, target


def undeploy(repo: Repository, name: str, paths: Sequence[str]) -> tuple[bytes, bytes]:
    """Remove the deployment of `paths` from environment `name`, keeping every other
    dataset's; return (old, new), new ZERO_OID when nothing is left deployed."""
    with repo.lock():
        old = repo.refs.read(ENVS + name)
        if old is None:
            raise BadInput(f"no environment named {name!r}")
        names = _dataset_names(repo, paths)
        previous = repo.tree_of(old)
        for path in names:
            if path not in previous:
                raise BadInput(f"environment {name} holds no dataset {path}")
        tree = deployment_tree(previous, {}, removed=names)
        reason = f"deployment removed: {', '.join(names)}"
        if not tree:
            repo.refs.delete(ENVS + name, expected=old, user=repo.user, reason=reason)
            return old, ZERO_OID
        title = f"remove {', '.join(names)} from {name}"
        new = _write_deployment(repo, tree, (old,), deployment_message(title, removed=names))
        repo.refs.update(ENVS + name, new, expected=old, user=repo.user, reason=reason)
    return old, new


def rebase_deployments(repo: Repository, name: str, onto: bytes) -> bytes:
    """Replay environment `name`'s deployments that `onto` (a remote's tip of it, held here)
    lacks on top of `onto`, move the environment there and return the new tip.

    BadState, naming why, unless every such commit is a deployment commit (docs/format.md
    §5) and none of the datasets they deploy or remove was changed on `onto`'s side since:
    then the two sides touched different datasets, and both hold after the replay.
    """
    refused = f"environment {name}: cannot replay its deployments on the remote's"
    with repo.lock():
        tip = repo.refs.read(ENVS + name)
        if tip is None:
            raise BadState(f"no environment named {name!r}")
        behind = _ancestry(repo, onto)
        chain: list[tuple[Commit, frozenset[str], frozenset[str]]] = []
        at: bytes | None = tip
        while at is not None and at not in behind:
            commit = repo.read_commit(at)
            paths = deployment_paths(commit)
            if paths is None:
                raise BadState(
                    f"{refused}: {at.hex()[:12]} deploys a whole version, not some datasets"
                )
            chain.append((commit, *paths))
            deployed, removed = paths
            # A deploy's first parent is the environment before it, unless it had none.
            at = commit.parents[0] if removed or len(commit.parents) == 2 else None
        base, theirs = repo.tree_of(at), repo.tree_of(onto)
        changed = {p for p in base.keys() | theirs.keys() if base.get(p) != theirs.get(p)}
        ours = {p for _, deployed, removed in chain for p in deployed | removed}
        if clash := sorted(changed & ours):
            raise BadState(f"{refused}: both sides changed {', '.join(clash)}")
        new = onto
        for commit, deployed, removed in reversed(chain):
            version = commit.parents[-1]
            tree = deployment_tree(
                repo.tree_of(new), repo.tree_of(version), deployed=deployed, removed=removed
            )
            parents = (new,) if removed else (new, version)
            new = _write_deployment(repo, tree, parents, commit.message)
        repo.refs.update(
            ENVS + name, new, expected=tip, user=repo.user, reason=f"rebase: onto {onto.hex()}"
        )
    return new


def _ancestry(repo: Repository, oid: bytes) -> set[bytes]:
    """`oid` and every commit it descends from."""
    seen = {oid}
    queue = [oid]
    while queue:
        for parent in repo.read_commit(queue.pop()).parents:
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return seen


def deployed_version(repo: Repository, commit: bytes | None, path: str) -> bytes | None:
    """The version dataset `path` of environment commit `commit` was deployed from; None when
    it holds no such dataset, or the commits are gone (an old log entry's, after a gc)."""
    if commit is None or commit == ZERO_OID:
        return None
    try:
        return source_of(commit, path, repo.read_commit, repo.tree_of)
    except DsvError:
        return None


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


class Deployment(msgspec.Struct, frozen=True):
    """A move of an environment that changed which version of one dataset it holds: the
    version deployed (None: removed) and the one it replaced (None: none)."""

    entry: RefLogEntry
    version: bytes | None
    previous: bytes | None


def env_path_log(repo: Repository, name: str, path: str) -> list[Deployment]:
    """The moves of environment `name` that changed its version of dataset `path`, oldest
    first."""
    dataset = repo_path(repo, path)
    out = []
    for entry in env_log(repo, name):
        previous = deployed_version(repo, entry.old, dataset)
        version = deployed_version(repo, entry.new, dataset)
        if version != previous:
            out.append(Deployment(entry, version, previous))
    return out
