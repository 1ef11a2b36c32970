"""The client side of dsv remotes: push, fetch, pull and clone over HTTP (docs/protocol.md).

Library code: it returns results and reports progress through a callback; it never prints.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from dsv.config import Remote
from dsv.deployment import deployment_paths
from dsv.errors import BadInput, BadState, CorruptObject, RemoteError
from dsv.labels import rebase_deployments
from dsv.merge import Conflict
from dsv.objects import (
    OID_SIZE,
    Commit,
    Kind,
    PackedOids,
    decode_commit,
    decode_dataset,
    split_oids,
)
from dsv.pack import BLOCK_SIZE, PreparedPack
from dsv.packindex import read_chunks
from dsv.progress import Progress, ProgressFn
from dsv.protocol import (
    PackEncoder,
    RefUpdate,
    block_bound,
    references,
)
from dsv.refs import BRANCHES, ENVS, MISSING, REMOTES, TAGS
from dsv.remote import missing_from, parse_url
from dsv.remote.connection import Connection, RemoteRefused, connect, open_remote
from dsv.remote.packing import Sending, cut_packs
from dsv.repo import Repository
from dsv.sorting import unique_oids
from dsv.store import ObjectStore
from dsv.text import plural

__all__ = [
    "PACK_TARGET",
    "CloneResult",
    "Connection",
    "FetchResult",
    "Progress",
    "ProgressFn",
    "PullResult",
    "PushResult",
    "RefResult",
    "RefStatus",
    "RemoteRefused",
    "clone",
    "connect",
    "fast_forward_to_tracking",
    "fetch",
    "is_ancestor",
    "pull",
    "push",
]

# Packs a client sends are at most this big (or the server's limit, if lower): a push cut
# short loses at most one pack's worth of transfer.
PACK_TARGET = 8 << 20
_MIN_PACK = 64 << 10
_READ_BATCH = 1024


def _quiet(_: Progress) -> None:
    pass


# -- results ------------------------------------------------------------------------------------


RefStatus = Literal["new", "updated", "forced", "rebased", "deleted", "up-to-date", "rejected"]


class RefResult(msgspec.Struct, frozen=True):
    """One ref of a push or fetch: `status` is new, updated, forced, up-to-date, rejected,
    rebased (an environment whose deployments were replayed on the remote's), or deleted (a
    remote-tracking ref whose ref the remote no longer has; `new` is None)."""

    name: str
    target: str
    old: bytes | None
    new: bytes | None
    status: RefStatus
    reason: str = ""


class PushResult(msgspec.Struct, frozen=True):
    refs: list[RefResult]
    objects: int
    packs: int
    bytes_sent: int
    bytes_received: int


class FetchResult(msgspec.Struct, frozen=True):
    refs: list[RefResult]
    objects: int
    bytes_sent: int
    bytes_received: int


class PullResult(msgspec.Struct, frozen=True):
    fetch: FetchResult
    branch: str
    old: bytes | None
    new: bytes | None
    status: Literal["fast-forward", "up-to-date", "ahead", "merged", "conflicts"]
    conflicts: tuple[Conflict, ...] = ()


class CloneResult(msgspec.Struct, frozen=True):
    path: Path
    branch: str | None
    fetch: FetchResult


# -- history helpers ----------------------------------------------------------------------------


def _reach(repo: Repository, start: bytes) -> set[bytes]:
    """Commits reachable from `start`, itself included."""
    seen = {start}
    queue = [start]
    while queue:
        oid = queue.pop()
        for parent in repo.read_commit(oid).parents:
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return seen


def _deployed_meanwhile(repo: Repository, old: bytes, new: bytes) -> bool:
    """Is `new` an environment's deployment commit that lacks the remote's tip `old`?"""
    if missing_from(repo.store, [new]) or deployment_paths(repo.read_commit(new)) is None:
        return False
    return not is_ancestor(repo, old, new)


def is_ancestor(repo: Repository, ancestor: bytes, descendant: bytes) -> bool:
    """Is `ancestor` `descendant` or one of its ancestors (False when it is not held here)?"""
    if ancestor == descendant:
        return True
    if missing_from(repo.store, [ancestor]):
        return False
    seen = {descendant}
    queue = [descendant]
    while queue:
        for parent in repo.read_commit(queue.pop()).parents:
            if parent == ancestor:
                return True
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return False


def _topo_order(commits: dict[bytes, Commit]) -> list[bytes]:
    """Commits of `commits`, every parent before its children."""
    order: list[bytes] = []
    done: set[bytes] = set()
    for root in commits:
        stack = [(root, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in done:
                continue
            if expanded:
                done.add(oid)
                order.append(oid)
                continue
            stack.append((oid, True))
            stack.extend((p, False) for p in commits[oid].parents if p in commits and p not in done)
    return order


# -- push ---------------------------------------------------------------------------------------


def _resolve_push_ref(repo: Repository, name: str) -> str:
    if name.startswith("refs/"):
        if repo.refs.read(name) is None:
            raise BadInput(f"no ref named {name!r}")
        return name
    for prefix in (BRANCHES, TAGS, ENVS):
        if repo.refs.read(prefix + name) is not None:
            return prefix + name
    raise BadInput(
        f"no branch, tag or environment named {name!r}",
        hint="'dsv branch', 'dsv tag' and 'dsv env list' show what there is",
    )


def _push_refs(repo: Repository, names: Sequence[str], tags: bool, envs: bool) -> list[str]:
    refs: list[str] = [_resolve_push_ref(repo, n) for n in names]
    if not names:
        branch = repo.current_branch()
        if branch is None:
            raise BadState("HEAD is detached: name what to push", hint="dsv push origin BRANCH")
        if repo.head() is None:
            raise BadState(f"branch {branch} has no versions yet", hint="commit something first")
        refs.append(BRANCHES + branch)
    if tags:
        refs += [full for full, _ in repo.refs.list_refs(TAGS)]
    if envs:
        refs += [full for full, _ in repo.refs.list_refs(ENVS)]
    return list(dict.fromkeys(refs))


def _tracking_ref(remote: str, name: str) -> str | None:
    """Where a remote's ref is recorded locally (tags: nowhere, they are shared as they are)."""
    if name.startswith(BRANCHES):
        return f"{REMOTES}{remote}/{name[len(BRANCHES) :]}"
    if name.startswith(ENVS):
        return f"{REMOTES}{remote}/envs/{name[len(ENVS) :]}"
    return None


def _short(name: str) -> str:
    for prefix in (BRANCHES, TAGS, ENVS):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _plan_push(repo: Repository, conn: Connection, tips: list[bytes], known: set[bytes]) -> Sending:
    """Every object the remote lacks, bottom-up, found level by level from the commits down.

    The remote holds everything an object it holds reaches (docs/protocol.md §4), so each
    level asks only about what the objects missing at the level above refer to.
    """
    commits: dict[bytes, Commit] = {}
    queue = [t for t in tips if t not in known]
    while queue:
        oid = queue.pop()
        if oid in commits or oid in known:
            continue
        commits[oid] = repo.read_commit(oid)
        queue.extend(commits[oid].parents)
    absent = conn.missing(Kind.COMMIT, list(commits))
    commits = {oid: c for oid, c in commits.items() if oid in absent}
    trees = conn.missing(Kind.TREE, list(dict.fromkeys(c.tree for c in commits.values())))
    datasets: list[bytes] = []
    for tree in trees:
        datasets += [e.dataset for e in repo.read_tree(tree).entries]
    # Pages, and so datapoints, go in the order the datasets list them: the remote stores
    # them so, and a clone reads them back in that order.
    datasets = list(dict.fromkeys(datasets))
    absent = conn.missing(Kind.DATASET, datasets)
    datasets = [oid for oid in datasets if oid in absent]
    pages: list[bytes] = []
    for oid in datasets:
        pages += [s.page for s in repo.read_dataset(oid).slices]
    pages = list(dict.fromkeys(pages))
    absent = conn.missing(Kind.PAGE, pages)
    pages = [oid for oid in pages if oid in absent]
    # The pages' ids stay packed (32 bytes each) from here on: a million of them as Python
    # objects in lists and sets had been most of a push's memory.
    bodies: list[bytes] = []
    # Pages are up to 512 KiB each: a few at a time.
    for start in range(0, len(pages), 16):
        bodies += repo.store.read_bulk(pages[start : start + 16], Kind.PAGE)
    points = unique_oids(b"".join(bodies))
    del bodies
    view, step = memoryview(points), conn.info.limits.max_ids * OID_SIZE
    kept: list[bytes] = []
    for at in range(0, len(points), step):
        batch = split_oids(view[at : at + step])
        absent = conn.missing(Kind.DATAPOINT, batch)
        kept.append(b"".join([oid for oid in batch if oid in absent]))
    sending = Sending()
    sending.add(Kind.DATAPOINT, b"".join(kept))
    sending.add(Kind.PAGE, b"".join(pages))
    sending.add(Kind.DATASET, b"".join(sorted(datasets)))
    sending.add(Kind.TREE, b"".join(sorted(trees)))
    sending.add(Kind.COMMIT, b"".join(_topo_order(commits)))
    return sending


class _PackCut:
    """Packs the objects from `start` on until `budget` bytes, one block at a time."""

    def __init__(
        self,
        repo: Repository,
        items: Sending,
        start: int,
        budget: int,
        report: Callable[[int, int], None],
    ) -> None:
        self.repo = repo
        self.items = items
        self.end = start
        self.budget = budget
        self.report = report

    def _bodies(self) -> Iterator[tuple[Kind, bytes, bytes]]:
        for kind, oids in self.items.batches(self.end, _READ_BATCH):
            for oid, body in zip(oids, self.repo.store.read_bulk(oids, kind), strict=True):
                yield kind, oid, body

    def chunks(self) -> Iterator[bytes]:
        encoder = PackEncoder()
        yield encoder.start()
        block: list[tuple[Kind, bytes]] = []
        raw = 0
        for kind, oid, body in self._bodies():
            entry = len(body) + 5
            if encoder.bytes_out + block_bound(raw + entry + 4) + 32 > self.budget:
                if block:
                    yield encoder.block(block)
                    self.report(len(block), encoder.bytes_out)
                    block, raw = [], 0
                if encoder.bytes_out + block_bound(entry + 4) + 32 > self.budget:
                    if encoder.objects == 0:
                        raise RemoteError(
                            f"{kind.name.lower()} {oid.hex()} is {len(body)} bytes, more than "
                            f"the remote accepts in one request ({self.budget} bytes)",
                            hint="raise the server's --max-request-size",
                        )
                    break
            block.append((kind, body))
            raw += entry
            self.end += 1
            if raw >= BLOCK_SIZE:
                yield encoder.block(block)
                self.report(len(block), encoder.bytes_out)
                block, raw = [], 0
        if block:
            yield encoder.block(block)
            self.report(len(block), encoder.bytes_out)
        yield encoder.finish()


def _send(repo: Repository, conn: Connection, items: Sending, progress: ProgressFn) -> int:
    """Send `items` in packs that fit the server's limit; return how many packs."""
    budget = max(_MIN_PACK, min(conn.info.limits.max_request_bytes, PACK_TARGET))
    if conn.version >= 2:
        return _send_whole(repo, conn, items, progress, budget)
    sent_objects = 0
    sent_bytes = 0
    packs = 0
    at = 0
    while at < len(items):
        base_objects, base_bytes = sent_objects, sent_bytes

        def report(n: int, total: int, base_bytes: int = base_bytes) -> None:
            nonlocal sent_objects, sent_bytes
            sent_objects += n
            sent_bytes = base_bytes + total
            progress(Progress("sending", sent_objects, len(items), sent_bytes))

        cut = _PackCut(repo, items, at, budget, report)
        try:
            conn.send_pack(cut.chunks())
        except RemoteRefused as exc:
            # Some proxy in between takes less than the server said: halve and resend.
            if exc.status != 413 or budget <= _MIN_PACK:
                raise
            budget //= 2
            sent_objects, sent_bytes = base_objects, base_bytes
            continue
        packs += 1
        at = cut.end
    return packs


def _send_whole(
    repo: Repository,
    conn: Connection,
    items: Sending,
    progress: ProgressFn,
    budget: int,
) -> int:
    """`_send` in protocol version 2: packs as stored, stored blocks copied as they are.

    One pack is sent (and checked by the server) while the next is made, so the two sides'
    work overlaps; packs still reach the server one at a time, in order, as §4 needs."""
    store = repo.store
    store.pack_dir.mkdir(parents=True, exist_ok=True)
    sent_objects = sent_bytes = packs = at = 0

    def send(prepared: PreparedPack) -> None:
        try:
            conn.send_pack(read_chunks(prepared.pack_tmp))
        finally:
            prepared.discard()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dsv-send") as sender:
        while at < len(items):
            cut = cut_packs(store, items, store.pack_dir, budget, start=at)
            in_flight: tuple[concurrent.futures.Future[None], int, int] | None = None

            def settle() -> None:
                nonlocal in_flight, packs, at, sent_objects, sent_bytes
                if in_flight is None:
                    return
                future, count, size = in_flight
                in_flight = None
                future.result()
                packs += 1
                at += count
                sent_objects += count
                sent_bytes += size
                progress(Progress("sending", sent_objects, len(items), sent_bytes))

            try:
                for prepared, count in cut:
                    size = prepared.pack_tmp.stat().st_size
                    try:
                        settle()
                    except BaseException:
                        prepared.discard()
                        raise
                    in_flight = (sender.submit(send, prepared), count, size)
                settle()
            except RemoteRefused as exc:
                # Some proxy in between takes less than the server said: halve and resend.
                if exc.status != 413 or budget <= _MIN_PACK:
                    raise
                budget //= 2
            finally:
                if in_flight is not None:
                    # An error while making the next pack: let the one in flight finish.
                    concurrent.futures.wait([in_flight[0]])
                cut.close()
    return packs


def push(
    repo: Repository,
    remote: str = "origin",
    refs: Sequence[str] = (),
    *,
    force: bool = False,
    tags: bool = False,
    envs: bool = False,
    progress: ProgressFn | None = None,
) -> PushResult:
    """Send refs (default: the current branch) and every object they need that the remote lacks.

    Refs move all together or not at all, and only after the remote holds all their data.
    """
    names = _push_refs(repo, refs, tags, envs)
    local = {name: repo.refs.read(name) for name in names}
    with connect(repo, remote) as conn:
        conn.require_write()
        theirs = {n: bytes.fromhex(o) for n, o in conn.info.refs.items()}
        results: list[RefResult] = []
        updates: list[RefUpdate] = []
        rejected: list[str] = []
        env_rejected: list[str] = []
        for name in names:
            new = local[name]
            assert new is not None
            old = theirs.get(name)
            status: RefStatus = "new" if old is None else "updated"
            if old == new:
                results.append(RefResult(name, name, old, new, "up-to-date"))
                continue
            if old is not None and not force:
                if name.startswith(TAGS):
                    rejected.append(f"{_short(name)} (the remote has this tag at another version)")
                    continue
                if name.startswith(BRANCHES) and not is_ancestor(repo, old, new):
                    rejected.append(
                        f"{_short(name)} (non-fast-forward: the remote has versions "
                        "you do not have)"
                    )
                    continue
                if name.startswith(ENVS) and _deployed_meanwhile(repo, old, new):
                    # Someone deployed to this environment since it was fetched: replay ours
                    # on top when the two touched different datasets, so both hold.
                    _receive_objects(repo, conn, [old], progress or _quiet)
                    try:
                        new = local[name] = rebase_deployments(repo, _short(name), old)
                    except BadState as exc:
                        rejected.append(f"{_short(name)} ({exc.message})")
                        env_rejected.append(_short(name))
                        continue
                    status = "rebased"
            if old is not None and force:
                status = "forced"
            results.append(RefResult(name, name, old, new, status))
            updates.append(RefUpdate(name, old.hex() if old else None, new.hex(), force))
        if rejected:
            env = env_rejected[0] if len(env_rejected) == len(rejected) else None
            raise RemoteError(
                f"rejected: {'; '.join(rejected)}; nothing was pushed",
                hint=f"take the remote's deployments ('dsv env deploy {env} {remote}/envs/{env}'"
                "), deploy your datasets again and push; or 'dsv push --force' overwrites them"
                if env
                # Word for word the server's hint: which side refuses depends on timing.
                else "the remote has versions you do not: 'dsv pull' takes them (merging them "
                "with yours), then push again; or 'dsv push --force' overwrites the remote's "
                "versions",
            )
        packs = 0
        items = Sending()
        if updates:
            (progress or _quiet)(Progress("negotiating", 0, 0, 0))
            known = {o for o in theirs.values() if not missing_from(repo.store, [o])}
            tips = [bytes.fromhex(u.new) for u in updates]
            items = _plan_push(repo, conn, tips, known)
            packs = _send(repo, conn, items, progress or _quiet)
            conn.update_refs(updates, repo.user)
        with repo.lock():
            for r in results:
                tracking = _tracking_ref(remote, r.name)
                if tracking is not None and r.new is not None:
                    current = repo.refs.read(tracking)
                    if current != r.new:
                        repo.refs.update(
                            tracking,
                            r.new,
                            expected=current or MISSING,
                            user=repo.user,
                            reason=f"push: {remote}",
                        )
        return PushResult(results, len(items), packs, conn.bytes_sent, conn.bytes_received)


# -- fetch ---------------------------------------------------------------------------------------


def _receive_objects(
    repo: Repository, conn: Connection, wants: list[bytes], progress: ProgressFn
) -> int:
    """Bring in everything reachable from `wants` that the repository lacks; return the count.

    Datapoints are stored as they arrive (they refer to nothing); pages, datasets, trees and
    commits only at the end, so an interrupted fetch never leaves an object whose references
    are missing, and a rerun asks only for what is still absent.
    """
    store = repo.store
    wants = sorted(missing_from(store, wants))
    if not wants:
        return 0
    # Version-2 answers are written beside the packs they may become.
    store.pack_dir.mkdir(parents=True, exist_ok=True)
    conn.scratch = store.pack_dir
    haves = list(dict.fromkeys(oid for _, oid in repo.refs.list_refs("refs/")))
    received = 0
    structure = store.writer()
    try:
        commits: dict[bytes, Commit] = {}
        pending = wants
        half = max(1, conn.info.limits.max_ids // 2)
        while pending:
            ask, pending = pending[:half], pending[half:]
            batch: dict[bytes, bytes] = dict(conn.commits(ask, haves))
            if not set(ask) <= set(batch):
                raise RemoteError(f"{conn.name}: the remote left out commits asked for")
            fresh = missing_from(store, [oid for oid in batch if oid not in commits])
            for oid in fresh:
                commits[oid] = decode_commit(batch[oid], oid)
                structure.add(Kind.COMMIT, oid, batch[oid], check_store=False)
            # A commit held here is complete: only the parents of new ones are walked on.
            parents = {p for oid in fresh for p in commits[oid].parents}
            parents = missing_from(
                store, [p for p in parents if p not in commits and p not in batch]
            )
            pending = sorted(set(pending) | parents)
            received += len(fresh)
            progress(Progress("receiving commits", received, 0, conn.bytes_received))

        def level(kind: Kind, oids: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
            nonlocal received
            # In the order given, which the remote answers in: datapoints asked in the order
            # their datasets list them are stored that way, so a checkout reads them in order
            # (asked sorted, a clone's checkout decompressed a block for nearly every record).
            absent = missing_from(store, oids)
            wanted = [oid for oid in oids if oid in absent]
            phase = f"receiving {kind.name.lower()}s"
            step = max(1, conn.info.limits.max_ids)
            for start in range(0, len(wanted), step):
                for n, (oid, body) in enumerate(
                    conn.objects(kind, wanted[start : start + step]), start + 1
                ):
                    received += 1
                    if n % 256 == 0 or n == len(wanted):
                        progress(Progress(phase, n, len(wanted), conn.bytes_received))
                    yield oid, body
                # A boundary between batches: what was received so far may be published.
                yield b"", b""

        datasets: dict[bytes, None] = {}  # insertion-ordered sets
        trees = list(dict.fromkeys(c.tree for c in commits.values()))
        for oid, body in level(Kind.TREE, trees):
            if oid:
                datasets.update(dict.fromkeys(_checked_tree(conn, oid, body)))
                structure.add(Kind.TREE, oid, body, check_store=False)
        pages: dict[bytes, None] = {}
        for oid, body in level(Kind.DATASET, list(datasets)):
            if oid:
                pages.update(dict.fromkeys(s.page for s in decode_dataset(body, oid).slices))
                structure.add(Kind.DATASET, oid, body, check_store=False)
        bodies: list[bytes] = []
        for oid, body in level(Kind.PAGE, list(pages)):
            if not oid:
                continue
            if not body or len(body) % OID_SIZE:
                raise RemoteError(f"{conn.name}: page {oid.hex()} is malformed")
            bodies.append(body)
            structure.add(Kind.PAGE, oid, body, check_store=False)
        # Packed, each once where it first appears: a million ids as Python objects in a
        # list and a set had been most of a clone's memory.
        points = PackedOids(unique_oids(b"".join(bodies)))
        del bodies
        # Datapoints refer to nothing: each batch is published as it ends, so a rerun after
        # an interruption asks only for the batches that did not arrive.
        writer = store.writer()
        published: list[str] = []
        try:
            if conn.version >= 2:
                names, count = _receive_packs(store, conn, points, progress)
                published += names
                received += count
                points = PackedOids(b"")  # received: let go before the packs are merged
            for oid, body in level(Kind.DATAPOINT, points):
                if oid:
                    writer.add(Kind.DATAPOINT, oid, body, check_store=False)
                else:
                    writer.close()
                    published += writer.published
                    writer = store.writer()
            writer.close()
            published += writer.published
        except BaseException:
            writer.abort()
            raise
        structure.close()
    except BaseException:
        structure.abort()
        raise
    if len(published) > 1:
        # One pack per fetch, as one per batch slowed every later lookup (a keyed diff in a
        # 1M clone of 100 packs took 2.8x as long). Blocks are copied, not redone. Only an
        # optimisation: everything fetched is stored already, so a full disk leaves the
        # batch packs as they are.
        with contextlib.suppress(OSError):
            store.merge_packs(published)
    store.tidy()  # and fetch after fetch, the small packs are merged as they pile up
    return received


def _receive_packs(
    store: ObjectStore, conn: Connection, oids: Sequence[bytes], progress: ProgressFn
) -> tuple[list[str], int]:
    """The datapoints of `oids` that `store` lacks, kept in the packs the remote sends (each
    checked whole before it is published); the names of those packs, and how many came."""
    wanted: Sequence[bytes]
    if store.packs or next(store.iter_loose(), None) is not None:
        absent = missing_from(store, oids)
        wanted = [oid for oid in oids if oid in absent]
    else:
        wanted = oids  # a new clone holds nothing yet: no need to look a million ids up
    published: list[str] = []
    done = 0
    for prepared, count in conn.object_packs(Kind.DATAPOINT, wanted):
        if prepared is not None:
            store.before_pack()
            prepared.publish()
            published.append(prepared.name)
        done += count
        progress(Progress("receiving datapoints", done, len(wanted), conn.bytes_received))
    store.reload()
    return published, len(wanted)


def _checked_tree(conn: Connection, oid: bytes, body: bytes) -> list[bytes]:
    """The datasets of a received tree, refused unless well formed (format.md §3).

    A server is not trusted: a path like `../x` or `.dsv/HEAD` would be written outside the
    working tree, so it is refused here, before any object is stored or any ref moves.
    """
    try:
        return references(Kind.TREE, oid, body)
    except CorruptObject as exc:
        raise RemoteError(
            f"{conn.name} sent a tree that dsv refuses: {exc.message}",
            hint="the remote holds a version no correct dsv writes; nothing was written here",
        ) from exc


def _update_tracking(repo: Repository, remote: str, theirs: dict[str, bytes]) -> list[RefResult]:
    results = []
    for name, oid in sorted(theirs.items()):
        target = _tracking_ref(remote, name)
        if target is None:
            if not name.startswith(TAGS):
                continue
            target = name
        current = repo.refs.read(target)
        if current == oid:
            results.append(RefResult(name, target, current, oid, "up-to-date"))
            continue
        if name.startswith(TAGS) and current is not None:
            results.append(
                RefResult(name, target, current, oid, "rejected", "would clobber existing tag")
            )
            continue
        repo.refs.update(
            target, oid, expected=current or MISSING, user=repo.user, reason=f"fetch: {remote}"
        )
        results.append(
            RefResult(name, target, current, oid, "new" if current is None else "updated")
        )
    # The remote deleted these (an environment's deployment removed, a branch deleted): the
    # tracking refs follow, so they never show a state the remote no longer has.
    kept = {_tracking_ref(remote, name) for name in theirs}
    for target, oid in repo.refs.list_refs(f"{REMOTES}{remote}/"):
        if target in kept:
            continue
        repo.refs.delete(target, expected=oid, user=repo.user, reason=f"fetch: {remote} deleted it")
        short = target[len(f"{REMOTES}{remote}/") :]
        name = ENVS + short[len("envs/") :] if short.startswith("envs/") else BRANCHES + short
        results.append(RefResult(name, target, oid, None, "deleted"))
    return results


def _fetch_with(
    repo: Repository, conn: Connection, remote: str, progress: ProgressFn
) -> FetchResult:
    info = conn.info
    if not info.exists:
        raise RemoteError(
            f"{remote}: repository {conn.remote.repo} does not exist on {conn.remote.base}",
            hint="check the URL; a push with a write key creates it",
        )
    theirs = {n: bytes.fromhex(o) for n, o in info.refs.items()}
    with repo.lock():
        count = _receive_objects(repo, conn, list(dict.fromkeys(theirs.values())), progress)
        refs = _update_tracking(repo, remote, theirs)
    return FetchResult(refs, count, conn.bytes_sent, conn.bytes_received)


def fetch(
    repo: Repository, remote: str = "origin", *, progress: ProgressFn | None = None
) -> FetchResult:
    """Bring in the remote's refs as `refs/remotes/REMOTE/*` (environments under `envs/`)."""
    with connect(repo, remote) as conn:
        return _fetch_with(repo, conn, remote, progress or _quiet)


# -- pull and clone ------------------------------------------------------------------------------


def _fast_forward(
    repo: Repository,
    branch: str,
    old: bytes | None,
    new: bytes,
    why: str,
    progress: ProgressFn | None = None,
    *,
    force: bool = False,
) -> None:
    """Write the files of `new` and move `branch` there, keeping HEAD on the branch."""
    from dsv import ops

    with repo.lock():
        # checkout refuses before touching anything if local changes would be overwritten.
        ops.checkout(repo, new.hex(), force=force, progress=progress)
        repo.refs.update(
            BRANCHES + branch, new, expected=old or MISSING, user=repo.user, reason=why
        )
        repo.refs.set_symbolic("HEAD", BRANCHES + branch)


def pull(
    repo: Repository,
    remote: str = "origin",
    *,
    force: bool = False,
    ff_only: bool = False,
    progress: ProgressFn | None = None,
) -> PullResult:
    """Fetch, then fast-forward the current branch to its remote-tracking ref, or merge it
    when the two have diverged (refused with `ff_only`); with `force`, the new files of a
    fast-forward replace working files that differ (as `checkout --force`)."""
    branch = repo.current_branch()
    if branch is None:
        raise BadState(
            "HEAD is detached: pull updates the current branch", hint="dsv switch BRANCH"
        )
    fetched = fetch(repo, remote, progress=progress)
    return fast_forward_to_tracking(
        repo, remote, branch, fetched, force=force, ff_only=ff_only, progress=progress
    )


def fast_forward_to_tracking(
    repo: Repository,
    remote: str,
    branch: str,
    fetched: FetchResult,
    *,
    force: bool = False,
    ff_only: bool = False,
    progress: ProgressFn | None = None,
) -> PullResult:
    """After a fetch, fast-forward `branch` (the current one) to `REMOTE/BRANCH`, or merge it
    when the two have diverged (refused with `ff_only`)."""
    theirs = repo.refs.read(f"{REMOTES}{remote}/{branch}")
    if theirs is None:
        raise BadState(
            f"{remote} has no branch {branch!r}",
            hint=f"push it with 'dsv push {remote} {branch}'",
        )
    ours = repo.head()
    if ours == theirs:
        return PullResult(fetched, branch, ours, theirs, "up-to-date")
    if ours is not None and is_ancestor(repo, theirs, ours):
        return PullResult(fetched, branch, ours, ours, "ahead")
    if ours is not None and not is_ancestor(repo, ours, theirs) and not ff_only:
        from dsv.ops.merging import merge

        outcome = merge(repo, f"{remote}/{branch}")
        status: Literal["merged", "conflicts"] = (
            "merged" if outcome.status == "merged" else "conflicts"
        )
        return PullResult(fetched, branch, ours, outcome.commit, status, outcome.conflicts)
    if ours is not None and not is_ancestor(repo, ours, theirs):
        mine = _reach(repo, ours)
        other = _reach(repo, theirs)
        here = plural(len(mine - other), "version")
        raise BadState(
            f"{branch} and {remote}/{branch} have diverged: {here} here not on {remote}, "
            f"and {len(other - mine)} there not here",
            hint=f"merge them with 'dsv pull' (without --ff-only) or 'dsv merge {remote}/{branch}'",
        )
    _fast_forward(
        repo,
        branch,
        ours,
        theirs,
        f"pull: fast-forward to {remote}/{branch}",
        progress,
        force=force,
    )
    return PullResult(fetched, branch, ours, theirs, "fast-forward")


def clone(
    url: str,
    directory: str | os.PathLike[str] | None = None,
    *,
    key_env: str | None = None,
    progress: ProgressFn | None = None,
) -> CloneResult:
    """A new repository in `directory` with remote `origin`, its default branch checked out."""
    parsed = parse_url(url)
    target = Path(directory if directory is not None else parsed.repo.split("/")[1])
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BadInput(f"destination {str(target)!r} exists and is not an empty directory")
    remote = Remote(url=url.strip().rstrip("/"), key_env=key_env)
    created = not target.exists()
    with open_remote(remote, "origin") as conn:
        head = conn.info.head
        branch = head[len(BRANCHES) :] if head and head.startswith(BRANCHES) else "main"
        try:
            with Repository.init(target, branch=branch) as repo:
                repo.save_config(msgspec.structs.replace(repo.config, remotes={"origin": remote}))
                fetched = _fetch_with(repo, conn, "origin", progress or _quiet)
                tip = repo.refs.read(f"{REMOTES}origin/{branch}")
                if tip is None:
                    return CloneResult(target.resolve(), None, fetched)
                _fast_forward(repo, branch, None, tip, f"clone: from {parsed.url}", progress)
                return CloneResult(repo.root, branch, fetched)
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
