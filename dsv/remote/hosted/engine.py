"""Push, fetch, pull and clone against a hosted platform (docs/remotes.md).

Each dataset file of the branch maps to one platform dataset. A push turns the file's version
into the platform's next version (only the records added or removed where the platform can
take just those); every platform version known here is linked to the commit it is, in
`.dsv/hosted/REMOTE.json`, so a fetch brings back as commits only versions made elsewhere.
A push writes nothing unless the platform's latest version is one the branch holds.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec

from dsv.canonical import CanonicalError, decode_canonical, encode_canonical
from dsv.config import Remote, now_and_tz
from dsv.errors import BadInput, BadState, NotFound, RemoteError
from dsv.manifest import build_dataset
from dsv.objects import Commit, Dataset, Format, Kind, Tree, TreeEntry, encode_object, split_oids
from dsv.paths import BadPath, check_dataset_path, check_tree_paths
from dsv.progress import Progress, ProgressFn
from dsv.refs import BRANCHES, ENVS, MISSING, REMOTES
from dsv.remote import get_remote
from dsv.remote.client import (
    CloneResult,
    FetchResult,
    PullResult,
    RefResult,
    fast_forward_to_tracking,
    is_ancestor,
)
from dsv.remote.hosted import (
    Change,
    DatasetState,
    Platform,
    PlatformDataset,
    PlatformVersion,
    SyncState,
    VersionLink,
    parse_hosted_url,
    read_state,
    write_state,
)
from dsv.repo import Repository

__all__ = [
    "DatasetPush",
    "EnvPush",
    "HostedPushResult",
    "RemoteShow",
    "clone",
    "fetch",
    "open_platform",
    "pull",
    "push",
    "show",
]

_JSONL = Format("jsonl")


def _quiet(_: Progress) -> None:
    pass


def open_platform(
    remote: Remote,
    name: str,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Platform:
    """The platform client of a hosted remote, its key from the variable the remote names."""
    url = parse_hosted_url(remote.url)
    source = remote.key_env or "DSV_API_KEY"
    key = os.environ.get(source) or None
    if url.kind == "humanloop":
        from dsv.remote.hosted.humanloop import Humanloop

        return Humanloop(
            url.base, name=name, key=key, key_source=source, transport=transport, sleep=sleep
        )
    if url.kind == "orq":
        from dsv.remote.hosted.orq import Orq

        return Orq(
            url.base, name=name, key=key, key_source=source, transport=transport, sleep=sleep
        )
    if url.kind == "tensorzero":
        from dsv.remote.hosted.tensorzero import TensorZero

        return TensorZero(
            url.base, name=name, key=key, key_source=source, transport=transport, sleep=sleep
        )
    if url.kind == "overmind":
        from dsv.remote.hosted.overmind import Overmind

        return Overmind(
            url.base, name=name, key=key, key_source=source, transport=transport, sleep=sleep
        )
    raise BadInput(f"remote {name!r}: no platform of kind {url.kind!r}")  # pragma: no cover


# -- results -----------------------------------------------------------------------------------

Action = Literal["create", "set", "add", "remove", "up-to-date", "adopted"]


class DatasetPush(msgspec.Struct, frozen=True):
    """One dataset file of a push: what was (or, in a dry run, would be) done to it.

    `adopted`: the platform's latest version already held this content (a push cut short
    after the platform took it); it is linked to the commit, nothing is sent."""

    file: str
    path: str
    action: Action
    records: int
    added: int = 0
    removed: int = 0
    version: str | None = None


class EnvPush(msgspec.Struct, frozen=True):
    environment: str
    file: str
    status: Literal["deployed", "up-to-date", "rejected", "skipped"]
    version: str | None = None
    reason: str = ""


class HostedPushResult(msgspec.Struct, frozen=True):
    url: str
    datasets: list[DatasetPush]
    envs: list[EnvPush]
    dry_run: bool
    bytes_sent: int
    bytes_received: int
    retries: int


class ShownDataset(msgspec.Struct, frozen=True):
    file: str
    path: str
    id: str | None
    synced: str | None
    versions: int


class RemoteShow(msgspec.Struct, frozen=True):
    name: str
    url: str
    kind: str
    key_env: str
    prefix: str | None
    branch: str | None
    datasets: list[ShownDataset]


# -- records -----------------------------------------------------------------------------------


def _read_records(repo: Repository, dataset_oid: bytes) -> list[dict[str, Any]]:
    return [decode_canonical(body) for body in repo.read_datapoints(repo.read_dataset(dataset_oid))]


def _where(file: str, n: int) -> str:
    return f"{file} line {n}" if file.endswith(".jsonl") else f"{file} record {n}"


def _translate(
    platform: Platform, file: str, records: list[dict[str, Any]], drop: frozenset[str]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The platform's datapoints for `records` and their canonical bytes; refused (naming
    the record) when one does not fit or repeats another, which the platform would merge."""
    out: list[dict[str, Any]] = []
    seen: dict[bytes, int] = {}
    keys: list[bytes] = []
    for n, record in enumerate(records, 1):
        point = platform.to_platform(record, _where(file, n), drop)
        key = encode_canonical(point)
        if key in seen:
            raise BadInput(
                f"{_where(file, n)} is the same {platform.title} datapoint as "
                f"{_where(file, seen[key]).removeprefix(file + ' ')}: {platform.title} stores "
                "identical datapoints once",
                hint="make the records differ (or remove the repeat)",
            )
        seen[key] = n
        keys.append(key)
        out.append(point)
    return out, keys


def _plan_change(
    old: list[bytes], new: list[bytes], points: list[dict[str, Any]], message: str
) -> tuple[Change, int, int]:
    """The smallest write that turns `old` into `new`: an append, a removal or the whole set."""
    if len(new) > len(old) and new[: len(old)] == old:
        return Change("add", points[len(old) :], message, points), len(new) - len(old), 0
    if len(new) < len(old):
        kept = set(new)
        it = iter(old)
        if all(any(o == n for o in it) for n in new):  # new is old with some left out
            gone = [o for o in old if o not in kept]
            removal = Change("remove", [decode_canonical(g) for g in gone], message, points)
            return removal, 0, len(gone)
    whole = Change("set", points, message, points)
    return whole, len(set(new) - set(old)), len(set(old) - set(new))


def _platform_keys(platform: Platform, dataset: PlatformDataset, version: str) -> list[bytes]:
    return [
        encode_canonical(platform.from_platform(dp)) for dp in platform.datapoints(dataset, version)
    ]


# -- push --------------------------------------------------------------------------------------


def _parse_paths(paths: Sequence[str], files: Sequence[str]) -> dict[str, str]:
    """`FILE=PLATFORM_PATH` options (a bare PLATFORM_PATH when the version has one file)."""
    out: dict[str, str] = {}
    for spec in paths:
        file, sep, where = spec.partition("=")
        if not sep:
            if len(files) != 1:
                raise BadInput(
                    f"--path {spec!r}: name the file too (FILE=PLATFORM_PATH)",
                    hint="the version holds several datasets: " + ", ".join(files),
                )
            file, where = files[0], spec
        if not where.strip("/"):
            raise BadInput(f"--path {spec!r}: the platform path is empty")
        out[file] = where.strip("/")
    return out


class _Planned(msgspec.Struct):
    file: str
    path: str
    dataset_oid: bytes
    found: PlatformDataset | None
    change: Change | None
    result: DatasetPush
    adopt: str | None = None


def push(
    repo: Repository,
    remote: str,
    *,
    paths: Sequence[str] = (),
    drop: Sequence[str] = (),
    envs: bool = False,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
    platform: Platform | None = None,
) -> HostedPushResult:
    """Make each dataset file of the current branch the platform's latest version of its
    dataset, refusing (before any write) when the platform changed since the last sync or a
    record does not fit; with `envs`, deploy there what each environment holds."""
    report = progress or _quiet
    config = get_remote(repo, remote)
    branch = repo.current_branch()
    head = repo.head()
    if branch is None:
        raise BadState("HEAD is detached: push sends the current branch", hint="dsv switch BRANCH")
    if head is None:
        raise BadState(f"branch {branch} has no versions yet", hint="commit something first")
    state = read_state(repo, remote)
    if state.datasets and state.branch != branch:
        raise BadState(
            f"remote {remote} is synced with branch {state.branch}, not {branch}",
            hint=f"dsv switch {state.branch}",
        )
    tree = repo.tree_of(head)
    mapping = {**config.datasets, **_parse_paths(paths, sorted(tree))}
    for file, where in mapping.items():
        known = state.datasets.get(file)
        if known is not None and where not in (known.path, known.id):
            raise BadInput(
                f"--path {file}={where}: {file} is synced with {known.path} already",
                hint=f"'dsv remote show {remote}' shows the mapping",
            )
    own = platform is None
    plat = platform or open_platform(config, remote)
    drop_set = frozenset(drop)
    try:
        plans: list[_Planned] = []
        for n, file in enumerate(sorted(tree, key=str.encode), 1):
            report(
                Progress("comparing datasets", n - 1, len(tree), plat.bytes_received, "datasets")
            )
            plans.append(
                _plan_file(
                    repo, plat, remote, state, file, tree[file], mapping, config, head, drop_set
                )
            )
        report(
            Progress("comparing datasets", len(tree), len(tree), plat.bytes_received, "datasets")
        )
        results: list[DatasetPush] = []
        if dry_run:
            results = [p.result for p in plans]
        else:
            results = _execute(repo, plat, remote, state, plans, head, branch, report)
        env_results = _push_envs(repo, plat, state, dry_run) if envs else []
        return HostedPushResult(
            config.url,
            results,
            env_results,
            dry_run,
            plat.bytes_sent,
            plat.bytes_received,
            getattr(getattr(plat, "http", None), "retries", 0),
        )
    finally:
        if own:
            plat.close()


def _plan_file(
    repo: Repository,
    plat: Platform,
    remote: str,
    state: SyncState,
    file: str,
    dataset_oid: bytes,
    mapping: dict[str, str],
    config: Remote,
    head: bytes,
    drop: frozenset[str],
) -> _Planned:
    records = _read_records(repo, dataset_oid)
    points, keys = _translate(plat, file, records, drop)
    message = (repo.read_commit(head).message.strip().splitlines() or [""])[0]
    known = state.datasets.get(file)
    path = mapping.get(file) or (known.path if known else plat.default_path(file, config.prefix))
    found = PlatformDataset(known.id, known.path) if known else plat.find_dataset(path)
    if found is None:
        change = Change("set", points, message, points)
        return _Planned(
            file,
            path,
            dataset_oid,
            None,
            change,
            DatasetPush(file, path, "create", len(points), len(points)),
        )
    versions = plat.versions(found)
    latest = versions[-1] if versions else None
    if latest is None:
        change = Change("set", points, message, points)
        return _Planned(
            file,
            path,
            dataset_oid,
            found,
            change,
            DatasetPush(file, path, "set", len(points), len(points)),
        )
    link = known.versions.get(latest.id) if known else None
    if link is not None:
        linked = bytes.fromhex(link.commit)
        if not is_ancestor(repo, linked, head):
            raise RemoteError(
                f"rejected: {file}: {remote} holds version {latest.id} of {found.path}, which "
                "your branch does not; nothing was pushed",
                hint=f"'dsv pull {remote}' takes it (then push again)",
            )
        base = bytes.fromhex(link.dataset)
        if repo.read_dataset(base).content == repo.read_dataset(dataset_oid).content:
            return _Planned(
                file,
                path,
                dataset_oid,
                found,
                None,
                DatasetPush(file, found.path, "up-to-date", len(points), version=latest.id),
            )
        try:
            _, old = _translate(plat, file, _read_records(repo, base), drop)
        except BadInput:
            old = []
        change, added, removed = _plan_change(old, keys, points, message)
        return _Planned(
            file,
            path,
            dataset_oid,
            found,
            change,
            DatasetPush(file, found.path, change.action, len(points), added, removed),
        )
    # A version not linked here: someone else's, or this push's own, cut short before the
    # link was saved. Only the second is taken as it is.
    ours = [encode_canonical(plat.from_platform(p)) for p in points]
    theirs = _platform_keys(plat, found, latest.id)
    if theirs == ours or (not plat.ordered and sorted(theirs) == sorted(ours)):
        return _Planned(
            file,
            path,
            dataset_oid,
            found,
            None,
            DatasetPush(file, found.path, "adopted", len(points), version=latest.id),
            adopt=latest.id,
        )
    if known is not None and known.pending == dataset_oid.hex() and known.synced in known.versions:
        # This push, cut short midway on a platform whose writes take several requests: the
        # platform holds the synced version with part of the change; the rest is sent.
        synced = known.versions[known.synced]
        _, old = _translate(plat, file, _read_records(repo, bytes.fromhex(synced.dataset)), drop)
        old_set = {encode_canonical(plat.from_platform(decode_canonical(k))) for k in old}
        if set(theirs) <= old_set | set(ours) and set(ours) & old_set <= set(theirs):
            change = Change("set", points, message, points)
            return _Planned(
                file,
                path,
                dataset_oid,
                found,
                change,
                DatasetPush(file, found.path, "set", len(points), len(points), 0),
            )
    if known is None and state.creating.get(file) == dataset_oid.hex() and set(theirs) <= set(ours):
        # This push's own creation of the dataset, cut short before all of it was written.
        change = Change("set", points, message, points)
        return _Planned(
            file,
            path,
            dataset_oid,
            found,
            change,
            DatasetPush(file, found.path, "create", len(points), len(points)),
        )
    if known is None:
        raise RemoteError(
            f"rejected: {file}: {remote} has a dataset {found.path} already, never synced with "
            "this repository; nothing was pushed",
            hint=f"clone it ('dsv clone {config.url} --path {found.path}'), or map {file} to "
            f"another dataset: 'dsv push {remote} --path {file}=OTHER/PATH'",
        )
    raise RemoteError(
        f"rejected: {file}: {found.path} on {remote} has changed since the last sync (version "
        f"{latest.id}); nothing was pushed (non-fast-forward)",
        hint=f"'dsv fetch {remote}' brings it in as a commit on {remote}/{state.branch}; "
        f"'dsv pull {remote}' takes it, then push again",
    )


def _link(
    state: SyncState, file: str, found: PlatformDataset, version: str, head: bytes, oid: bytes
) -> None:
    known = state.datasets.get(file)
    if known is None:
        known = state.datasets[file] = DatasetState(found.id, found.path)
    known.versions[version] = VersionLink(head.hex(), oid.hex())
    known.synced = version
    known.pending = None
    state.creating.pop(file, None)


def _execute(
    repo: Repository,
    plat: Platform,
    remote: str,
    state: SyncState,
    plans: list[_Planned],
    head: bytes,
    branch: str,
    report: ProgressFn,
) -> list[DatasetPush]:
    state.branch = branch
    out: list[DatasetPush] = []
    todo = [p for p in plans if p.change is not None]
    for plan in plans:
        if plan.change is not None:
            with repo.lock():
                if plan.file in state.datasets:
                    state.datasets[plan.file].pending = plan.dataset_oid.hex()
                else:
                    state.creating[plan.file] = plan.dataset_oid.hex()
                write_state(repo, remote, state)
            report(
                Progress(
                    "writing versions", todo.index(plan), len(todo), plat.bytes_sent, "datasets"
                )
            )
            found, version = plat.write(plan.found, plan.path, plan.change)
            result = msgspec.structs.replace(plan.result, path=found.path, version=version)
        elif plan.adopt is not None:
            assert plan.found is not None
            found, version, result = plan.found, plan.adopt, plan.result
        else:
            out.append(plan.result)
            continue
        # The link is saved as soon as the platform has the version: a push cut short after
        # this dataset does not send it again.
        with repo.lock():
            _link(state, plan.file, found, version, head, plan.dataset_oid)
            write_state(repo, remote, state)
        out.append(result)
    report(Progress("writing versions", len(todo), len(todo), plat.bytes_sent, "datasets"))
    with repo.lock():
        config = get_remote(repo, remote)
        mapped = {
            **config.datasets,
            **{p.file: p.path for p in plans if p.file not in config.datasets},
        }
        if mapped != config.datasets:
            remotes = dict(repo.config.remotes)
            remotes[remote] = msgspec.structs.replace(config, datasets=mapped)
            repo.save_config(msgspec.structs.replace(repo.config, remotes=remotes))
        if not state.datasets:
            write_state(repo, remote, state)
        tracking = f"{REMOTES}{remote}/{branch}"
        current = repo.refs.read(tracking)
        if current != head:
            repo.refs.update(
                tracking,
                head,
                expected=current or MISSING,
                user=repo.user,
                reason=f"push: {remote}",
            )
    return out


def _push_envs(repo: Repository, plat: Platform, state: SyncState, dry_run: bool) -> list[EnvPush]:
    out: list[EnvPush] = []
    for full, commit in repo.refs.list_refs(ENVS):
        env = full[len(ENVS) :]
        for file, oid in sorted(repo.tree_of(commit).items()):
            known = state.datasets.get(file)
            if known is None:
                continue
            content = repo.read_dataset(oid).content
            version = next(
                (
                    v
                    for v, link in reversed(known.versions.items())
                    if repo.read_dataset(bytes.fromhex(link.dataset)).content == content
                ),
                None,
            )
            if version is None:
                out.append(
                    EnvPush(
                        env,
                        file,
                        "rejected",
                        None,
                        "this version of it is not on the platform: push it first",
                    )
                )
                continue
            found = PlatformDataset(known.id, known.path)
            deployed = plat.environments(found)
            if deployed is None:
                out.append(
                    EnvPush(env, file, "skipped", version, f"{plat.title} has no environments")
                )
                continue
            if env not in deployed:
                out.append(
                    EnvPush(
                        env, file, "rejected", version, f"the platform has no environment {env}"
                    )
                )
                continue
            if deployed[env] == version:
                out.append(EnvPush(env, file, "up-to-date", version))
                continue
            if not dry_run:
                plat.deploy(found, env, version)
            out.append(EnvPush(env, file, "deployed", version))
    return out


# -- fetch -------------------------------------------------------------------------------------


def _file_for(path: str) -> str:
    return path.rsplit("/", 1)[-1] + ".jsonl"


def _fetch_with(
    repo: Repository, plat: Platform, remote: str, state: SyncState, report: ProgressFn
) -> FetchResult:
    config = get_remote(repo, remote)
    files = sorted(set(state.datasets) | set(config.datasets), key=str.encode)
    if not files:
        raise BadState(
            f"remote {remote} maps no dataset yet",
            hint=f"'dsv push {remote}' maps each file; or clone a platform dataset with --path",
        )
    pending: list[tuple[int, int, str, PlatformDataset, PlatformVersion]] = []
    for file in files:
        known = state.datasets.get(file)
        found = (
            PlatformDataset(known.id, known.path)
            if known
            else plat.find_dataset(config.datasets[file])
        )
        if found is None:
            raise NotFound(
                f"{remote}: no dataset {config.datasets[file]!r} on the platform",
                hint=f"check the mapping with 'dsv remote show {remote}'",
            )
        if known is None:
            known = state.datasets[file] = DatasetState(found.id, found.path)
        for order, version in enumerate(plat.versions(found)):
            if version.id not in known.versions:
                pending.append((version.time, order, file, found, version))
            known.synced = version.id
    pending.sort(key=lambda item: (item[0], item[2].encode(), item[1]))
    tracking = f"{REMOTES}{remote}/{state.branch}"
    old = repo.refs.read(tracking)
    tip = old
    made = 0
    for n, (_, _, file, found, version) in enumerate(pending):
        report(Progress("receiving versions", n, len(pending), plat.bytes_received, "versions"))
        tip, new = _version_commit(repo, plat, remote, tip, file, found, version)
        made += new
        state.datasets[file].versions[version.id] = VersionLink(
            tip.hex() if tip else "", repo.tree_of(tip)[file].hex() if tip else ""
        )
    report(
        Progress("receiving versions", len(pending), len(pending), plat.bytes_received, "versions")
    )
    refs: list[RefResult] = []
    with repo.lock():
        if tip is not None and tip != old:
            repo.refs.update(
                tracking, tip, expected=old or MISSING, user=repo.user, reason=f"fetch: {remote}"
            )
        write_state(repo, remote, state)
    name = BRANCHES + state.branch
    if tip is not None:
        status: Literal["new", "updated", "up-to-date"] = (
            "up-to-date" if tip == old else "new" if old is None else "updated"
        )
        refs.append(RefResult(name, tracking, old, tip, status))
    return FetchResult(refs, made, plat.bytes_sent, plat.bytes_received)


def _version_commit(
    repo: Repository,
    plat: Platform,
    remote: str,
    tip: bytes | None,
    file: str,
    found: PlatformDataset,
    version: PlatformVersion,
) -> tuple[bytes, int]:
    """The commit on top of `tip` whose `file` is `version`; (tip, 0) when tip holds it."""
    tree = repo.tree_of(tip)
    base_oid = tree.get(file)
    base: Dataset | None = repo.read_dataset(base_oid) if base_oid else None
    with repo.store.writer() as writer:
        oids = bytearray()
        for n, point in enumerate(plat.datapoints(found, version.id), 1):
            try:
                body = encode_canonical(plat.from_platform(point))
            except CanonicalError as exc:
                raise RemoteError(
                    f"{remote}: datapoint {n} of version {version.id} of {found.path} is not "
                    f"storable: {exc.message}"
                ) from exc
            oids += writer.write(Kind.DATAPOINT, body)
        fmt = base.format if base is not None else _JSONL
        key = base.key if base is not None else ()
        base_oids = repo.read_oid_list(base) if base is not None else None
        if not plat.ordered and base_oids:
            oids = bytearray(_keep_order(base_oids, bytes(oids)))
        dataset_oid, dataset = build_dataset(
            writer, bytes(oids), fmt, key, base=base, base_oids=base_oids
        )
        if tip is not None and base is not None and base.same_as(dataset):
            return tip, 0
        tree[file] = dataset_oid
        ordered = sorted(tree, key=str.encode)
        tree_oid = writer.write(
            Kind.TREE, encode_object(Tree(tuple(TreeEntry(p, tree[p]) for p in ordered)))
        )
        when, tz = (version.time, 0) if version.time else now_and_tz()
        author = version.author or f"{plat.title} <{remote}@dsv>"
        message = version.message or f"{plat.title} version {version.id} of {found.path}"
        commit = Commit(tree_oid, (tip,) if tip else (), author, when, tz, message)
        return writer.write(Kind.COMMIT, encode_object(commit)), 1


def _keep_order(base: bytes, got: bytes) -> bytes:
    """`got`'s ids in `base`'s order where base has them, the others after, as they came."""
    left: dict[bytes, int] = {}
    for oid in split_oids(got):
        left[oid] = left.get(oid, 0) + 1
    kept = bytearray()
    for oid in split_oids(base):
        if left.get(oid):
            left[oid] -= 1
            kept += oid
    for oid in split_oids(got):
        if left.get(oid):
            left[oid] -= 1
            kept += oid
    return bytes(kept)


def fetch(
    repo: Repository,
    remote: str,
    *,
    progress: ProgressFn | None = None,
    platform: Platform | None = None,
) -> FetchResult:
    """Bring the platform's versions made elsewhere in as commits on `REMOTE/BRANCH`."""
    own = platform is None
    plat = platform or open_platform(get_remote(repo, remote), remote)
    try:
        return _fetch_with(repo, plat, remote, read_state(repo, remote), progress or _quiet)
    finally:
        if own:
            plat.close()


def pull(
    repo: Repository,
    remote: str,
    *,
    force: bool = False,
    ff_only: bool = False,
    progress: ProgressFn | None = None,
    platform: Platform | None = None,
) -> PullResult:
    """Fetch, then fast-forward the current branch to `REMOTE/BRANCH`, or merge it when the
    two have diverged (refused with `ff_only`), as `dsv pull` does with a dsv remote."""
    branch = repo.current_branch()
    if branch is None:
        raise BadState(
            "HEAD is detached: pull updates the current branch", hint="dsv switch BRANCH"
        )
    state = read_state(repo, remote)
    if state.datasets and state.branch != branch:
        raise BadState(
            f"remote {remote} is synced with branch {state.branch}, not {branch}",
            hint=f"dsv switch {state.branch}",
        )
    fetched = fetch(repo, remote, progress=progress, platform=platform)
    return fast_forward_to_tracking(
        repo, remote, branch, fetched, force=force, ff_only=ff_only, progress=progress
    )


def clone(
    url: str,
    directory: str | os.PathLike[str] | None,
    *,
    paths: Sequence[str],
    key_env: str | None = None,
    progress: ProgressFn | None = None,
    platform: Platform | None = None,
) -> CloneResult:
    """A new repository whose `main` holds the whole version history of the platform
    datasets `paths` (`PLATFORM_PATH` or `FILE=PLATFORM_PATH`), with remote `origin`."""
    parse_hosted_url(url)
    if not paths:
        raise BadInput(
            "name the platform datasets to clone: --path PLATFORM_PATH (repeatable)",
            hint="e.g. dsv clone humanloop+https://api.humanloop.com/v5 --path evals/qa",
        )
    datasets: dict[str, str] = {}
    for spec in paths:
        file, sep, where = spec.partition("=")
        if not sep:
            file, where = _file_for(spec.strip("/")), spec
        try:
            check_dataset_path(file)
        except BadPath as exc:
            raise BadInput(f"--path {spec!r}: {exc.message}") from exc
        datasets[file] = where.strip("/")
    try:
        check_tree_paths(sorted(datasets, key=str.encode))
    except BadPath as exc:
        raise BadInput(f"--path: {exc.message}") from exc
    target = Path(directory if directory is not None else next(iter(datasets)).rsplit(".", 1)[0])
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BadInput(f"destination {str(target)!r} exists and is not an empty directory")
    remote = Remote(url=url.strip().rstrip("/"), key_env=key_env, datasets=datasets)
    created = not target.exists()
    own = platform is None
    plat = platform or open_platform(remote, "origin")
    try:
        with Repository.init(target) as repo:
            repo.save_config(msgspec.structs.replace(repo.config, remotes={"origin": remote}))
            fetched = _fetch_with(repo, plat, "origin", SyncState(), progress or _quiet)
            tip = repo.refs.read(f"{REMOTES}origin/main")
            if tip is None:
                return CloneResult(target.resolve(), None, fetched)
            fast_forward_to_tracking(repo, "origin", "main", fetched, progress=progress)
            return CloneResult(repo.root, "main", fetched)
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in target.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    finally:
        if own:
            plat.close()


# -- show --------------------------------------------------------------------------------------


def show(repo: Repository, remote: str) -> RemoteShow:
    """A remote's URL, key variable and, for a hosted one, its dataset mapping and sync state."""
    config = get_remote(repo, remote)
    key_env = config.key_env or "DSV_API_KEY"
    if "+" not in config.url.split("://", 1)[0]:
        return RemoteShow(remote, config.url, "dsv", key_env, None, None, [])
    url = parse_hosted_url(config.url)
    state = read_state(repo, remote)
    files = sorted(set(state.datasets) | set(config.datasets), key=str.encode)
    shown = []
    for file in files:
        known = state.datasets.get(file)
        path = known.path if known else config.datasets[file]
        shown.append(
            ShownDataset(
                file,
                path,
                known.id if known else None,
                known.synced if known else None,
                len(known.versions) if known else 0,
            )
        )
    return RemoteShow(
        remote, config.url, url.kind, key_env, config.prefix, state.branch if files else None, shown
    )
