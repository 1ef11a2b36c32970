"""Deployment commits: an environment that holds a version per dataset (docs/format.md §5).

A deploy of some datasets writes a commit whose tree takes those datasets from the deployed
version and every other one from the environment's previous commit; its message names what it
deployed. Which version of a dataset an environment holds is found by following those commits
back to the version the dataset came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from dsv.objects import Commit

__all__ = [
    "DEPLOY",
    "UNDEPLOY",
    "deployment_message",
    "deployment_paths",
    "deployment_tree",
    "source_of",
]

DEPLOY = "Deploy: "
UNDEPLOY = "Undeploy: "


def deployment_message(
    title: str, *, deployed: Iterable[str] = (), removed: Iterable[str] = ()
) -> str:
    """A deployment commit's message: one line for people, then one trailer per dataset."""
    trailers = [DEPLOY + p for p in sorted(deployed)] + [UNDEPLOY + p for p in sorted(removed)]
    return f"{' '.join(title.split())}\n\n" + "".join(t + "\n" for t in trailers)


def deployment_paths(commit: Commit) -> tuple[frozenset[str], frozenset[str]] | None:
    """(deployed, removed) paths of a deployment commit; None for any other commit."""
    if not 1 <= len(commit.parents) <= 2 or "\n\n" not in commit.message:
        return None
    lines = commit.message.rstrip("\n").rsplit("\n\n", 1)[1].split("\n")
    deployed: set[str] = set()
    removed: set[str] = set()
    for line in lines:
        if line.startswith(DEPLOY):
            deployed.add(line[len(DEPLOY) :])
        elif line.startswith(UNDEPLOY):
            removed.add(line[len(UNDEPLOY) :])
        else:
            return None
    # A deploy names the version it took the datasets from as its last parent; a removal has
    # only the environment's previous commit.
    if (deployed and not removed) or (removed and not deployed and len(commit.parents) == 1):
        return frozenset(deployed), frozenset(removed)
    return None


def deployment_tree(
    previous: Mapping[str, bytes],
    version: Mapping[str, bytes],
    *,
    deployed: Iterable[str] = (),
    removed: Iterable[str] = (),
) -> dict[str, bytes]:
    """The tree of a deployment commit: `deployed` from `version`, the rest from `previous`."""
    tree = dict(previous)
    for path in removed:
        tree.pop(path, None)
    for path in deployed:
        tree[path] = version[path]
    return tree


def source_of(
    commit_oid: bytes,
    path: str,
    read_commit: Callable[[bytes], Commit],
    read_tree: Callable[[bytes], Mapping[str, bytes]],
) -> bytes | None:
    """The commit that dataset `path` of `commit_oid` was deployed from (format.md §5): through
    deployment commits to the version that holds it; None when `commit_oid` lacks it."""
    oid = commit_oid
    entry = read_tree(oid).get(path)
    if entry is None:
        return None
    while True:
        commit = read_commit(oid)
        paths = deployment_paths(commit)
        if paths is None:
            return oid
        step = commit.parents[-1] if path in paths[0] else commit.parents[0]
        # Only to a commit holding the very same dataset: a message cannot claim another's.
        if read_tree(step).get(path) != entry:
            return oid
        oid = step
