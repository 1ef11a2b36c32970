"""What the web pages show, read through the server's storage interfaces (HTTP-free).

Every function takes a `Store` (a blob store, a metadata store and the decoded-object cache
of the server) and returns plain data for a template; nothing here escapes or formats HTML.
"""

from __future__ import annotations

import contextlib
import difflib
import heapq
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import msgspec

from dsv.canonical import decode_canonical
from dsv.deployment import deployment_message, deployment_paths, deployment_tree, source_of
from dsv.diff import Change, DatasetDiff, FieldChange, diff_trees
from dsv.errors import BadInput, Conflict, NotFound
from dsv.objects import OID_SIZE, Commit, Kind, Tree, TreeEntry, encode_object, hash_object
from dsv.pack import PackWriter
from dsv.paths import BadPath, check_tree_paths
from dsv.refs import BRANCHES, ENVS, TAGS
from dsv.server.storage import (
    BlobStore,
    MetaStore,
    RefChange,
    RefConflict,
    RefLogRecord,
    publish_pack,
)
from dsv.server.storage.stored import StoredObjects

if TYPE_CHECKING:
    from dsv.store import ObjectStore

__all__ = [
    "DEFAULT_SIZE",
    "Store",
    "deploy",
    "describe_datapoint",
    "diff_page",
    "env_names",
    "env_page",
    "history_page",
    "page_of",
    "repo_page",
    "resolve",
    "word_pieces",
]

DEFAULT_SIZE = 25
MAX_SIZE = 200
_HEX = frozenset("0123456789abcdef")
# A filter reads the dataset from its start; it stops after this many datapoints read.
_SCAN_LIMIT = 2_000_000


class Store(NamedTuple):
    """The server's storage, as the pages read it."""

    blobs: BlobStore
    meta: MetaStore
    objects: StoredObjects
    tmp_dir: Path


# -- revisions -----------------------------------------------------------------------------


def default_branch(store: Store, repo: str) -> str:
    record = store.meta.get_repo(repo)
    if record is None:
        raise NotFound(f"no repository {repo}", "the repositories page lists those you may read")
    return record.head if record.head else BRANCHES + "main"


def resolve(store: Store, repo: str, rev: str) -> bytes:
    """A commit id from a full id, a branch, a tag or an environment name (in that order)."""
    refs = store.meta.list_refs(repo)
    if len(rev) == 2 * OID_SIZE and set(rev) <= _HEX:
        oid = bytes.fromhex(rev)
        if not store.blobs.missing(repo, [oid]):
            return oid
    for prefix in ("", BRANCHES, TAGS, ENVS):
        found = refs.get(prefix + rev)
        if found is not None and (prefix or rev.startswith("refs/")):
            return found
    raise NotFound(
        f"{repo} has no revision {rev[:80]!r}", "use a commit id, branch, tag or environment"
    )


def _short(name: str) -> str:
    for prefix in (BRANCHES, TAGS, ENVS):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


# -- a repository ----------------------------------------------------------------------------


def repo_page(store: Store, repo: str) -> dict[str, Any]:
    """The datasets of the default branch with counts, and the refs of the repository."""
    head = default_branch(store, repo)
    refs = store.meta.list_refs(repo)
    commit = refs.get(head)
    datasets: list[dict[str, Any]] = []
    envs = {_short(n): oid for n, oid in refs.items() if n.startswith(ENVS)}
    if commit is not None:
        tree = store.objects.tree(repo, commit)
        latest = _latest_versions(store, repo, commit, tree)
        for path in sorted(tree, key=str.encode):
            dataset = store.objects.dataset(repo, tree[path])
            deployed = []
            for name, env in sorted(envs.items()):
                env_tree = store.objects.tree(repo, env)
                if path in env_tree:
                    src = _source(store, repo, env, path)
                    deployed.append({"env": name, "commit": src.hex() if src else None})
            changed = latest.get(path)
            datasets.append(
                {
                    "path": path,
                    "count": dataset.count,
                    "format": dataset.format.kind,
                    "envs": deployed,
                    "latest": _commit_view(store, repo, changed) if changed else None,
                }
            )
    return {
        "branch": _short(head),
        "commit": commit.hex() if commit else None,
        "latest": _commit_view(store, repo, commit) if commit else None,
        "datasets": datasets,
        "branches": sorted(_short(n) for n in refs if n.startswith(BRANCHES)),
        "tags": sorted(_short(n) for n in refs if n.startswith(TAGS)),
        "envs": sorted(envs),
    }


# The repository page looks this far back for the version that last changed each dataset.
_LATEST_WALK = 2000


def _latest_versions(
    store: Store, repo: str, head: bytes, tree: dict[str, bytes]
) -> dict[str, bytes]:
    """Path -> the newest commit that made the dataset what `head` holds (within a walk of
    _LATEST_WALK commits)."""
    found: dict[str, bytes] = {}
    for walked, (oid, commit) in enumerate(_walk(store, repo, head)):
        if len(found) == len(tree) or walked >= _LATEST_WALK:
            break
        here = store.objects.tree(repo, oid)
        parent = store.objects.tree(repo, commit.parents[0]) if commit.parents else {}
        for path, dataset in tree.items():
            if path not in found and here.get(path) == dataset and parent.get(path) != dataset:
                found[path] = oid
    return found


def _source(store: Store, repo: str, commit: bytes, path: str) -> bytes | None:
    return source_of(
        commit,
        path,
        lambda oid: store.objects.commit(repo, oid),
        lambda oid: store.objects.tree(repo, oid),
    )


def _commit_view(store: Store, repo: str, oid: bytes) -> dict[str, Any]:
    commit = store.objects.commit(repo, oid)
    return {
        "oid": oid.hex(),
        "short": oid.hex()[:12],
        "author": commit.author,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(commit.time)),
        "title": commit.message.split("\n", 1)[0],
        "message": commit.message,
        "parents": [p.hex() for p in commit.parents],
        "merge": len(commit.parents) > 1,
    }


def _dataset_at(store: Store, repo: str, commit: bytes, path: str) -> bytes:
    found = store.objects.tree(repo, commit).get(path)
    if found is None:
        raise NotFound(f"{repo} has no dataset {path!r} at {commit.hex()[:12]}")
    return found


# -- a dataset's datapoints ----------------------------------------------------------------------


def _matches(body: bytes, field: str | None, value: str | None, text: str | None) -> bool:
    if text and text.casefold() not in body.decode("utf-8", "replace").casefold():
        return False
    if field:
        record = decode_canonical(body)
        if field not in record:
            return False
        if value is not None:
            found = record[field]
            shown = found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)
            return shown == value
    return True


def page_of(
    store: Store,
    repo: str,
    commit: bytes,
    path: str,
    *,
    page: int,
    size: int,
    field: str | None = None,
    value: str | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    """Page `page` (from 1) of a dataset at a commit; filtered by a field's value or by text.

    Unfiltered, only the id pages and datapoints of the page are read, so a deep page of a
    million datapoints costs what the first does. A filter reads from the start.
    """
    if page < 1 or not 1 <= size <= MAX_SIZE:
        raise BadInput(f"page must be >= 1 and size 1 to {MAX_SIZE}")
    oid = _dataset_at(store, repo, commit, path)
    dataset = store.objects.dataset(repo, oid)
    start = (page - 1) * size
    filtered = bool(field or text)
    rows: list[tuple[int, bytes, bytes]] = []
    total: int | None = dataset.count
    more = False
    if not filtered:
        for i, (point, body) in enumerate(
            store.objects.datapoints(repo, oid, start, start + size), start
        ):
            rows.append((i, point, body))
        more = start + size < dataset.count
    else:
        seen = matched = 0
        total = None
        for batch in store.objects.datapoint_batches(repo, oid):
            for point, body in batch:
                if _matches(body, field, value, text):
                    if matched >= start + size:
                        more = True
                        break
                    if matched >= start:
                        rows.append((seen, point, body))
                    matched += 1
                seen += 1
            if more or seen >= _SCAN_LIMIT:
                break
    return {
        "count": dataset.count,
        "total": total,
        "page": page,
        "size": size,
        "more": more,
        "pages": -(-total // size) if total is not None else None,
        "rows": [
            {"index": i, "oid": p.hex(), "view": describe_datapoint(decode_canonical(b))}
            for i, p, b in rows
        ],
        "key": list(dataset.key),
        "format": dataset.format.kind,
    }


_LABELLED = ("inputs", "input", "target", "expected_output", "output", "reference")


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _safe_link(url: Any) -> str | None:
    """An http(s) URL to show as a link; anything else is shown as text, never followed."""
    if isinstance(url, str) and url.lower().startswith(("https://", "http://")):
        return url
    return None


def _part(
    text: str = "", *, json: bool = False, image: str | None = None, link: str | None = None
) -> dict[str, Any]:
    return {"text": text, "json": json, "image": image, "link": link}


def _message_view(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        return {"role": "?", "parts": [_part(_pretty(message))], "tools": [], "extra": []}
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append(_part(content))
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(_part(str(part.get("text", ""))))
            elif isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                image = part.get("image_url", part.get("url", part.get("source")))
                url = image.get("url") if isinstance(image, dict) else image
                shown = url if isinstance(url, str) else _pretty(image)
                parts.append(_part(image=shown, link=_safe_link(url)))
            else:
                parts.append(_part(_pretty(part), json=True))
    elif content is not None:
        parts.append(_part(_pretty(content), json=True))
    tools = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str):
            with contextlib.suppress(ValueError):
                arguments = json.loads(arguments)
        tools.append(
            {
                "id": call.get("id") if isinstance(call, dict) else None,
                "name": function.get("name") if isinstance(function, dict) else None,
                "arguments": _pretty(arguments) if arguments is not None else _pretty(call),
            }
        )
    known = {"role", "content", "tool_calls"}
    extra = [(k, _pretty(v)) for k, v in message.items() if k not in known]
    return {"role": str(message.get("role", "?")), "parts": parts, "tools": tools, "extra": extra}


def describe_datapoint(record: Any) -> dict[str, Any]:
    """How a datapoint is shown: a conversation, labelled fields, or formatted JSON."""
    if not isinstance(record, dict):
        return {"shape": "json", "json": _pretty(record)}
    messages = record.get("messages")
    if isinstance(messages, list) and all(isinstance(m, dict) and "role" in m for m in messages):
        rest = [(k, _pretty(v)) for k, v in record.items() if k != "messages"]
        return {"shape": "chat", "messages": [_message_view(m) for m in messages], "fields": rest}
    if any(k in record for k in _LABELLED):
        first = [k for k in _LABELLED if k in record]
        rest = [k for k in record if k not in first]
        return {"shape": "fields", "fields": [(k, _pretty(record[k])) for k in first + rest]}
    return {"shape": "json", "json": _pretty(record)}


# -- history ---------------------------------------------------------------------------------


def history_page(
    store: Store, repo: str, commit: bytes, path: str, *, page: int, size: int
) -> dict[str, Any]:
    """The versions of one dataset reachable from `commit`, newest first, merges included."""
    refs = store.meta.list_refs(repo)
    marks: dict[bytes, list[tuple[str, str]]] = {}
    for name, oid in refs.items():
        if name.startswith(ENVS):
            src = _source(store, repo, oid, path)
            if src is not None:
                marks.setdefault(src, []).append(("env", _short(name)))
        elif name.startswith((BRANCHES, TAGS)):
            kind = "branch" if name.startswith(BRANCHES) else "tag"
            marks.setdefault(oid, []).append((kind, _short(name)))
    start = (page - 1) * size
    entries: list[dict[str, Any]] = []
    more = False
    for oid, commit_obj in _walk(store, repo, commit):
        if deployment_paths(commit_obj) is not None:
            continue
        tree = store.objects.tree(repo, oid)
        here = tree.get(path)
        parents = [store.objects.tree(repo, p).get(path) for p in commit_obj.parents]
        merge = len(commit_obj.parents) > 1
        changed = here is not None and (not parents or any(p != here for p in parents))
        if not (changed or (merge and here is not None)):
            continue
        if start > 0:
            start -= 1
            continue
        if len(entries) == size:
            more = True
            break
        view = _commit_view(store, repo, oid)
        view["marks"] = marks.get(oid, [])
        view["count"] = store.objects.dataset(repo, here).count if here else 0
        view["parent"] = commit_obj.parents[0].hex() if commit_obj.parents else None
        view["changed"] = changed
        entries.append(view)
    return {"entries": entries, "page": page, "size": size, "more": more}


def _walk(store: Store, repo: str, start: bytes) -> Iterator[tuple[bytes, Commit]]:
    """Commits reachable from `start`, newest first, never a parent before its children
    (commits made in the same second are still in their order): git's --date-order."""
    commits: dict[bytes, Commit] = {}
    children: dict[bytes, int] = {start: 0}
    todo = [start]
    while todo:
        oid = todo.pop()
        commit = commits[oid] = store.objects.commit(repo, oid)
        for parent in commit.parents:
            if parent not in children:
                children[parent] = 0
                todo.append(parent)
            children[parent] += 1
    seq = 0
    heap = [(-commits[start].time, seq, start)]
    while heap:
        _, _, oid = heapq.heappop(heap)
        commit = commits[oid]
        yield oid, commit
        for parent in commit.parents:
            children[parent] -= 1
            if children[parent] == 0:
                seq += 1
                heapq.heappush(heap, (-commits[parent].time, seq, parent))


# -- diffs -----------------------------------------------------------------------------------


class _Objects:
    """The reads dsv.diff makes of an object store, answered by a server's blob store."""

    def __init__(self, blobs: BlobStore, repo: str) -> None:
        self.blobs = blobs
        self.repo = repo

    def read_body(self, oid: bytes, kind: Kind) -> bytes:
        return self.blobs.read(self.repo, kind, [oid])[0]

    def read_bulk(self, oids: list[bytes], kind: Kind) -> list[bytes]:
        return self.blobs.read(self.repo, kind, oids)

    def iter_bulk(self, oids: list[bytes], kind: Kind) -> Iterator[tuple[int, bytes]]:
        for at in range(0, len(oids), 2048):
            yield from enumerate(self.blobs.read(self.repo, kind, oids[at : at + 2048]), at)


def _field_view(change: FieldChange) -> dict[str, Any]:
    old = None if change.old is msgspec.UNSET else _pretty(change.old)
    new = None if change.new is msgspec.UNSET else _pretty(change.new)
    words = None
    if isinstance(change.old, str) and isinstance(change.new, str):
        words = word_pieces(change.old, change.new)
    return {"path": change.path, "old": old, "new": new, "words": words}


_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")


def word_pieces(old: str, new: str) -> list[tuple[str, str]]:
    """`new` against `old` word by word: ("equal"|"delete"|"insert", text) pieces."""
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    out: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out.append(("equal", "".join(a[i1:i2])))
        if tag in ("delete", "replace"):
            out.append(("delete", "".join(a[i1:i2])))
        if tag in ("insert", "replace"):
            out.append(("insert", "".join(b[j1:j2])))
    return out


def diff_page(
    store: Store, repo: str, old: bytes, new: bytes, path: str, *, page: int, size: int
) -> dict[str, Any]:
    """One dataset compared between two commits: counts, then a page of its changes, the
    same changes (and order) as `dsv diff --format jsonl OLD NEW PATH`."""
    old_tree = store.objects.tree(repo, old)
    new_tree = store.objects.tree(repo, new)
    if path not in old_tree and path not in new_tree:
        raise NotFound(f"{repo} has no dataset {path!r} at either revision")
    reader = cast("ObjectStore", _Objects(store.blobs, repo))
    result = diff_trees(
        reader,
        lambda oid: store.objects.dataset(repo, oid),
        old_tree,
        new_tree,
        from_oid=old,
        to_oid=new,
        accept=lambda name: name == path,
    )
    summary: DatasetDiff | None = result.datasets[0] if result.datasets else None
    start = (page - 1) * size
    changes: list[dict[str, Any]] = []
    more = False
    for i, change in enumerate(result.changes(records=True)):
        if i < start:
            continue
        if i >= start + size:
            more = True
            break
        changes.append(_change_view(change))
    return {
        "summary": summary,
        "changes": changes,
        "page": page,
        "size": size,
        "more": more,
        "old": _commit_view(store, repo, old),
        "new": _commit_view(store, repo, new),
    }


def _change_view(change: Change) -> dict[str, Any]:
    return {
        "status": change.status,
        "key": json.dumps(change.key, ensure_ascii=False) if change.key else None,
        "old": change.old.hex() if change.old else None,
        "new": change.new.hex() if change.new else None,
        "fields": [_field_view(f) for f in change.fields],
        "record": describe_datapoint(change.record) if change.record is not None else None,
    }


# -- environments ----------------------------------------------------------------------------


def env_page(store: Store, repo: str, environments: Sequence[str]) -> dict[str, Any]:
    """Each environment: the version of each dataset it holds, and its moves, newest first."""
    refs = store.meta.list_refs(repo)
    names = env_names(store, repo, environments)
    head = refs.get(default_branch(store, repo))
    envs = []
    for name in names:
        oid = refs.get(ENVS + name)
        held = []
        if oid is not None:
            tree = store.objects.tree(repo, oid)
            for path in sorted(tree, key=str.encode):
                src = _source(store, repo, oid, path)
                held.append({"path": path, "commit": src.hex() if src else None})
        log = [_log_view(r) for r in reversed(store.meta.ref_log(repo, ENVS + name))]
        envs.append({"name": name, "oid": oid.hex() if oid else "", "held": held, "log": log})
    paths = sorted(store.objects.tree(repo, head), key=str.encode) if head else []
    return {"envs": envs, "paths": paths, "head": head.hex() if head else None}


def env_names(store: Store, repo: str, environments: Sequence[str]) -> list[str]:
    """The server's environments and any other the repository has (pushed ones)."""
    refs = store.meta.list_refs(repo)
    return sorted({_short(n) for n in refs if n.startswith(ENVS)} | set(environments))


def _log_view(record: RefLogRecord) -> dict[str, Any]:
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record.time)),
        "user": record.user,
        "reason": record.reason,
        "new": record.new.hex() if any(record.new) else None,
    }


def deploy(
    store: Store,
    repo: str,
    *,
    env: str,
    path: str,
    version: bytes,
    expected: bytes | None,
    user: str,
    author: str,
    now: Callable[[], float] = time.time,
) -> bytes:
    """Deploy dataset `path` of commit `version` to `env`, if `env` is still at `expected`
    (compare-and-swap: a page shown before someone else's deploy cannot undo it)."""
    ref = ENVS + env
    chosen = store.objects.tree(repo, version)
    if path not in chosen:
        raise NotFound(f"{repo} has no dataset {path!r} at {version.hex()[:12]}")
    current = store.meta.list_refs(repo).get(ref)
    if current != expected:
        raise Conflict(
            f"environment {env} moved since the page was shown",
            "reload the environments page and deploy again",
        )
    previous = store.objects.tree(repo, current) if current else {}
    tree = deployment_tree(previous, chosen, deployed=[path])
    new = version
    if current is not None or tree != chosen:
        message = deployment_message(f"deploy {path} to {env} (web)", deployed=[path])
        parents = (current, version) if current else (version,)
        new = _deployment_commit(store, repo, tree, parents, message, author, int(now()))
    try:
        store.meta.update_refs(
            repo, [RefChange(ref, current, new)], user=user, reason=f"web: deploy {path}"
        )
    except RefConflict as exc:
        raise Conflict(
            f"environment {env} moved while deploying",
            "reload the environments page and deploy again",
        ) from exc
    return new


def _deployment_commit(
    store: Store,
    repo: str,
    tree: dict[str, bytes],
    parents: tuple[bytes, ...],
    message: str,
    author: str,
    when: int,
) -> bytes:
    ordered = sorted(tree, key=str.encode)
    try:
        check_tree_paths(ordered)
    except BadPath as exc:
        raise Conflict(f"cannot deploy to this environment: {exc.message}") from exc
    tree_body = encode_object(Tree(tuple(TreeEntry(p, tree[p]) for p in ordered)))
    tree_oid = hash_object(Kind.TREE, tree_body)
    body = encode_object(Commit(tree_oid, parents, author, when, 0, message))
    oid = hash_object(Kind.COMMIT, body)
    wanted = {tree_oid: (Kind.TREE, tree_body), oid: (Kind.COMMIT, body)}
    absent = store.blobs.missing(repo, wanted)

    def fill(writer: PackWriter) -> None:
        for found, (kind, data) in wanted.items():
            if found in absent:
                writer.add(kind, found, data)

    publish_pack(store.blobs, store.meta, store.tmp_dir, repo, fill)
    return oid
