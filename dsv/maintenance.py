"""Integrity checks (fsck) and garbage collection (gc) over everything a repository reaches."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec

from dsv.errors import CorruptObject
from dsv.fsutil import sweep_temps
from dsv.index import read_index
from dsv.manifest import iter_oids
from dsv.objects import ZERO_OID, Kind
from dsv.paths import BadPath, check_tree_paths
from dsv.progress import ProgressFn, Step, report_every
from dsv.repo import Repository

__all__ = ["GC_LEVEL", "FsckReport", "GcReport", "fsck", "gc"]

# gc recompresses as `git gc --aggressive` does: slower, denser than `add` (zstd 3). At 100k
# datapoints (docs/performance.md) level 15 took their bodies from 15.0 to 11.7 MB at ~5 MiB/s
# a core; levels 16-19 saved under 1% more at half that speed or less, and reading is as fast.
GC_LEVEL = int(os.environ.get("DSV_GC_LEVEL", "15"))
# Datapoints the dictionary is trained on, drawn evenly from all of them: the first block's
# (what `add` uses) gave 0.4 MB more at 100k, and 4,000 trains in ~0.5 s.
_GC_SAMPLES = 4000


class FsckReport(msgspec.Struct):
    checked: int = 0
    missing: list[str] = []
    corrupt: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt


def _roots(repo: Repository) -> set[bytes]:
    """Commits every ref, HEAD, ref log and the index reach."""
    roots: set[bytes] = set()
    head = repo.head()
    if head:
        roots.add(head)
    logs = repo.dsv_dir / "logs"
    roots.update(oid for _, oid in repo.refs.list_refs("refs/"))
    for dirpath, _, files in os.walk(logs):
        for file in files:
            name = Path(dirpath, file).relative_to(logs).as_posix()
            for entry in repo.refs.read_log(name):
                roots.update(o for o in (entry.old, entry.new) if o != ZERO_OID)
    return roots


def _walk(
    repo: Repository, report: FsckReport | None, step: Step | None = None
) -> tuple[set[bytes], list[tuple[Kind, bytes]]]:
    """Every reachable oid; with a report, record what is missing or corrupt instead of raising.

    `step` is told the objects read so far, every 4096.
    """
    from dsv.errors import CorruptObject

    seen: set[bytes] = set()
    order: list[tuple[Kind, bytes]] = []

    def visit(oid: bytes, kind: Kind) -> bytes | None:
        if oid in seen:
            return None
        seen.add(oid)
        try:
            _, body = repo.store.read(oid, kind)
        except CorruptObject as exc:
            if report is None:
                raise
            (report.missing if "missing" in str(exc) else report.corrupt).append(
                f"{kind.name.lower()} {oid.hex()}"
            )
            return None
        order.append((kind, oid))
        if report is not None:
            report.checked += 1
        if step is not None and not len(order) & 4095:
            step.to(len(order))
        return body

    datasets: list[bytes] = []
    commits = list(_roots(repo))
    datasets.extend(entry.dataset for entry in read_index(repo.index_path).values())
    while commits:
        oid = commits.pop()
        body = visit(oid, Kind.COMMIT)
        if body is None:
            continue
        from dsv.objects import decode_commit, decode_tree

        entry = decode_commit(body, oid)
        commits.extend(entry.parents)
        tree_body = visit(entry.tree, Kind.TREE)
        if tree_body is not None:
            entries = decode_tree(tree_body, entry.tree).entries
            if report is not None:
                try:
                    check_tree_paths([e.path for e in entries])
                except BadPath as exc:
                    report.corrupt.append(f"tree {entry.tree.hex()}: {exc.message}")
            datasets.extend(e.dataset for e in entries)
    from dsv.objects import decode_dataset

    for oid in datasets:
        body = visit(oid, Kind.DATASET)
        if body is None:
            continue
        dataset = decode_dataset(body, oid)
        pages_ok = True
        for s in dataset.slices:
            if s.page not in seen:
                pages_ok = visit(s.page, Kind.PAGE) is not None and pages_ok
        if not pages_ok:
            continue
        try:
            ids = repo.read_oid_list(dataset)
        except CorruptObject as exc:
            if report is None:
                raise
            report.corrupt.append(f"dataset {oid.hex()}: {exc}")
            continue
        for dp in iter_oids(ids):
            visit(dp, Kind.DATAPOINT)
    return seen, order


def fsck(repo: Repository, *, progress: ProgressFn | None = None) -> FsckReport:
    """Check every pack's and index's checksum, re-hash every reachable object and check that
    each one's references are present and each tree's paths obey format.md §3.

    `progress` follows 'checking packs' (packs), then 'checking objects' (of those stored).
    """
    report = FsckReport()
    try:
        packs = repo.store.packs
    except CorruptObject as exc:
        # A pack that cannot be opened stops every read of the store: say so and stop.
        report.corrupt.append(exc.message)
        return report
    step = Step(progress, "checking packs", len(packs), "packs") if progress else None
    for n, pack in enumerate(packs, 1):
        problem = pack.verify()
        if problem is not None:
            report.corrupt.append(f"pack {pack.name}: {problem}")
        if step is not None:
            step.to(n)
    step = None
    if progress is not None:
        # What the store holds bounds what is reachable: the bar ends early, never beyond.
        stored = sum(p.count for p in packs) + sum(1 for _ in repo.store.iter_loose())
        step = Step(progress, "checking objects", stored)
    _walk(repo, report, step)
    if step is not None:
        step.finish()
    return report


class GcReport(msgspec.Struct):
    kept: int
    removed: int
    bytes_before: int
    bytes_after: int | None  # None for a dry run: a repack's size is known only once made
    # Temporary files of interrupted commands that this gc removed (or, dry, would remove),
    # relative to the repository root.
    temp_files: list[str] = msgspec.field(default_factory=list)


def _store_size(repo: Repository) -> int:
    total = 0
    for dirpath, _, files in os.walk(repo.store.path):
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(Path(dirpath, file)).st_size
    return total


def _temp_dirs(repo: Repository) -> list[Path]:
    """Where dsv makes temporary files: beside each tracked file, and anywhere in `.dsv`."""
    tracked = {(repo.root / name).parent for name in read_index(repo.index_path)}
    inside = [Path(dirpath) for dirpath, _, _ in os.walk(repo.dsv_dir)]
    return sorted(tracked) + inside


def gc(repo: Repository, *, dry_run: bool = False, progress: ProgressFn | None = None) -> GcReport:
    """Keep what refs, ref logs and the index reach, in one new pack; drop the rest.

    `progress` follows 'counting objects' (total unknown), then 'writing objects'.
    """
    with repo.lock() as lock:
        temp_files = sorted(
            p.relative_to(repo.root).as_posix()
            for p in [*lock.recovered, *sweep_temps(_temp_dirs(repo), remove=not dry_run)]
        )
        counting = Step(progress, "counting objects", 0) if progress else None
        reachable, order = _walk(repo, None, counting)
        if counting is not None:
            counting.to(len(order))
            counting.finish()
        stored = set(repo.store.iter_oids())
        packs = repo.store.packs
        loose = list(repo.store.iter_loose())
        before = _store_size(repo)
        report = GcReport(
            kept=len(reachable & stored),
            removed=len(stored - reachable),
            bytes_before=before,
            bytes_after=None,
            temp_files=temp_files,
        )
        if dry_run:
            return report
        old_packs = [p.name for p in packs]
        from dsv.pack import PackWriter

        kind_rank = {Kind.COMMIT: 0, Kind.TREE: 1, Kind.DATASET: 2, Kind.PAGE: 3, Kind.DATAPOINT: 4}
        order.sort(key=lambda item: kind_rank[item[0]])
        if order:
            points = [oid for kind, oid in order if kind == Kind.DATAPOINT]
            samples = [
                repo.store.read(oid, Kind.DATAPOINT)[1]
                for oid in points[:: max(1, len(points) // _GC_SAMPLES)][:_GC_SAMPLES]
            ]
            writer = PackWriter(
                repo.store.pack_dir, level=GC_LEVEL, samples=samples, threads=os.cpu_count() or 1
            )
            step = Step(progress, "writing objects", len(order)) if progress else None
            every = report_every(len(order))
            try:
                for n, (kind, oid) in enumerate(order, 1):
                    writer.add(kind, oid, repo.store.read(oid, kind)[1])
                    if step is not None and not n % every:
                        step.to(n)
                if step is not None:
                    step.finish()
                repo.store.before_pack()
                new_name = writer.finish()
            except BaseException:
                writer.abort()
                raise
        else:
            new_name = ""
        repo.store.close()
        for name in old_packs:
            if name != new_name:
                repo.store.remove_pack(name)
        for oid in loose:
            repo.store.delete_loose(oid)
        for orphan in repo.store.pack_dir.glob("pack-*.pack"):
            # A removal cut short after the index went (remove_pack deletes it first). Packs
            # are published under the lock, so none is halfway through that now.
            if not orphan.with_suffix(".idx").exists():
                orphan.unlink(missing_ok=True)
        for fan in os.listdir(repo.store.path):
            if len(fan) == 2:
                with contextlib.suppress(OSError):
                    (repo.store.path / fan).rmdir()
        repo.store.reload()
        report.bytes_after = _store_size(repo)
    return report
