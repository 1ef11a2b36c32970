"""Moving up: copy an embedded server root into shared storage (S3 + PostgreSQL), then check
the copy from the far side, as `dsv fsck` checks a repository."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec

from dsv.errors import BadInput, CorruptObject
from dsv.objects import Kind
from dsv.pack import PreparedPack
from dsv.server.dialects.humanloop.backends import open_store
from dsv.server.dialects.humanloop.store import DatasetMove, SqliteHumanloopStore
from dsv.server.storage import BlobStore, MetaStore, RefChange, StorageError, open_storage
from dsv.server.storage.sqlite import SqliteMetaStore
from dsv.server.storage.stored import StoredObjects

__all__ = ["CopyReport", "copy_root", "verify_copy"]

_BATCH = 4096


class CopyReport(msgspec.Struct):
    repos: int = 0
    packs: int = 0
    refs: int = 0
    keys: int = 0
    datasets: int = 0
    objects: int = 0


def copy_root(
    root: Path,
    blobs: BlobStore,
    meta: MetaStore,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> CopyReport:
    """Copy every repository's packs, refs and head, every key and the Humanloop API's
    records of root `root` into `blobs` and `meta`; the far side must hold none of it yet.

    Packs go first and refs last, as in a push: a copy cut short leaves no ref at missing
    data, and running it again finishes it (packs already there are stored again, harmless).
    """
    if not (root / "meta.sqlite3").is_file():
        raise BadInput(f"{root}: not a dsv server root", hint="give the --root of 'dsv serve'")
    src_blobs, src_meta = open_storage(root)
    report = CopyReport()
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    try:
        assert isinstance(src_meta, SqliteMetaStore)
        for repo in src_meta.list_repos():
            progress(f"copying {repo.name}")
            meta.create_repo(repo.name)
            owner, name = repo.name.split("/")
            pack_dir = root / "repos" / owner / name / "objects" / "pack"
            for idx in sorted(pack_dir.glob("*.idx")) if pack_dir.is_dir() else []:
                pack = idx.with_suffix(".pack")
                # put_pack takes its files: it gets copies, the root keeps its own.
                pack_tmp, idx_tmp = tmp / f"copy-{idx.stem}.pack", tmp / f"copy-{idx.stem}.idx"
                shutil.copyfile(pack, pack_tmp)
                shutil.copyfile(idx, idx_tmp)
                blobs.put_pack(repo.name, PreparedPack(tmp, idx.stem, pack_tmp, idx_tmp))
                report.packs += 1
            refs = src_meta.list_refs(repo.name)
            there = meta.list_refs(repo.name)
            changes = [
                RefChange(ref, there.get(ref), oid)
                for ref, oid in refs.items()
                if there.get(ref) != oid
            ]
            if changes:
                meta.update_refs(
                    repo.name,
                    changes,
                    user="dsv copy-server",
                    reason=f"copied from {root}",
                    head=repo.head,
                )
            report.refs += len(refs)
            report.repos += 1
        known = {k.id for k in meta.list_keys()}
        for key in src_meta.list_keys():
            if key.id not in known:
                meta.add_key(key)
                report.keys += 1
        report.datasets = _copy_humanloop(src_meta, meta)
    finally:
        src_blobs.close()
        src_meta.close()
    return report


def _copy_humanloop(src: SqliteMetaStore, meta: MetaStore) -> int:
    """The Humanloop API's dataset ids, moves and version notes, so its ids stay valid."""
    source = SqliteHumanloopStore(src)
    target = open_store(meta)
    with src.reading("read the Humanloop tables") as db:
        datasets = db.execute("SELECT id, repo, path, created FROM datasets ORDER BY id").fetchall()
    for dataset_id, repo, path, created in datasets:
        record = target.register_dataset(repo, path, [dataset_id], created=created)
        if record.id != dataset_id:
            raise StorageError(
                f"dataset {repo}/{path} is {record.id} on the far side, not {dataset_id}",
                hint="copy into an empty database",
            )
        for commit, old_path in source.dataset_moves(dataset_id).items():
            # No ref moves: only the move's record, beside the dataset's current path.
            target.update_refs(
                repo,
                [],
                user="dsv copy-server",
                reason="copied",
                move=DatasetMove(dataset_id, path, commit, old_path),
            )
        for note in source.version_notes(dataset_id).values():
            target.put_version_note(note)
    return len(datasets)


def verify_copy(blobs: BlobStore, meta: MetaStore) -> int:
    """Read back every object reachable from every ref of `meta` through `blobs`, each
    re-hashed on the way; the number of objects. CorruptObject names the first one missing."""
    objects = StoredObjects(blobs)
    count = 0
    for repo in meta.list_repos():
        seen: set[bytes] = set()
        todo = list(dict.fromkeys(meta.list_refs(repo.name).values()))
        datasets: set[bytes] = set()
        while todo:
            oid = todo.pop()
            if oid in seen:
                continue
            seen.add(oid)
            try:
                commit = objects.commit(repo.name, oid)
            except CorruptObject as exc:
                raise CorruptObject(f"{repo.name}: {exc}", hint="run the copy again") from exc
            todo.extend(commit.parents)
            datasets.update(objects.tree(repo.name, oid).values())
            count += 2
        pages: set[bytes] = set()
        for dataset in datasets:
            pages.update(s.page for s in objects.dataset(repo.name, dataset).slices)
        count += len(datasets)
        points: set[bytes] = set()
        for page in pages:
            (body,) = blobs.read(repo.name, Kind.PAGE, [page])
            points.update(body[i : i + 32] for i in range(0, len(body), 32))
        count += len(pages)
        wanted = sorted(points)
        for at in range(0, len(wanted), _BATCH):
            blobs.read(repo.name, Kind.DATAPOINT, wanted[at : at + _BATCH])
        count += len(wanted)
    return count
