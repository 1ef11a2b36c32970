"""Commands that check and tidy a repository: fsck, gc."""

from __future__ import annotations

from pathlib import Path

import click

from dsv import maintenance
from dsv.cli.common import (
    is_quiet,
    open_repo,
    progress_line,
    quiet_option,
)
from dsv.errors import BadInput
from dsv.text import plural

__all__ = ["COMMANDS", "fsck", "gc"]


@click.command()
@quiet_option
@click.pass_context
def fsck(ctx: click.Context) -> None:
    """Check every pack's checksum, re-hash every reachable object and check every tree's
    dataset paths; exit 1 on a problem.

    \b
    Example:
      dsv fsck
    """
    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        report = maintenance.fsck(repo, progress=progress.fn)
    for item in report.missing:
        click.echo(f"missing {item}")
    for item in report.corrupt:
        click.echo(f"corrupt {item}")
    if not (report.ok and is_quiet(ctx)):
        verdict = "ok" if report.ok else "PROBLEMS FOUND"
        click.echo(f"checked {plural(report.checked, 'object')}: {verdict}")
    if not report.ok:
        ctx.exit(1)


@click.command()
@click.option("--dry-run", "-n", is_flag=True, help="Only report what would be removed.")
@click.option(
    "--root",
    metavar="DIR",
    help="Compact every repository of the server at DIR ('dsv serve --root') instead.",
)
@quiet_option
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, root: str | None) -> None:
    """Drop objects nothing reaches and repack the rest into one pack.

    The pack is compressed denser than `add` writes (zstd level 15, with a dictionary
    learnt from the datapoints), as `git gc --aggressive` does: it takes longer (about
    17 s for 100,000 datapoints on 2 cores) and reads as fast.

    With --root, write the packs of every repository of an embedded server anew, into one
    pack of datapoints and one of the rest each, safely while it serves. On a server gc
    removes no object: one no ref reaches may be part of a push in flight (its packs are
    stored before its ref moves). A server on S3 compacts its packs itself (docs/deploy.md).

    \b
    Example:
      dsv gc --dry-run
      dsv gc --root /srv/dsv
    """
    if root is not None:
        _gc_server(ctx, Path(root), dry_run=dry_run)
        return
    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        report = maintenance.gc(repo, dry_run=dry_run, progress=progress.fn)
    if is_quiet(ctx) and not dry_run:
        return  # a dry run's report is its result, not chatter
    verb = "would remove" if dry_run else "removed"
    for name in report.temp_files:
        click.echo(f"{verb} {name} (a temporary file of an interrupted command)")
    if report.bytes_after is None:
        click.echo(
            f"would remove {plural(report.removed, 'unreachable object')}, keep {report.kept} "
            f"(the store takes {report.bytes_before} bytes now)"
        )
    else:
        click.echo(
            f"removed {plural(report.removed, 'unreachable object')}, kept {report.kept}; "
            f"{report.bytes_before} -> {report.bytes_after} bytes"
        )


def _gc_server(ctx: click.Context, root: Path, *, dry_run: bool) -> None:
    from dsv.server.storage.gc import gc_root

    if not root.is_dir():
        raise BadInput(f"{root}: no such directory", hint="give the --root of 'dsv serve'")
    reports = gc_root(root, dry_run=dry_run)
    if is_quiet(ctx) and not dry_run:
        return
    if not reports:
        click.echo(f"no repositories under {root}")
    for r in reports:
        if r.packs_after is None:
            click.echo(
                f"{r.name}: would write {plural(r.packs_before, 'pack')} anew "
                f"({r.bytes_before} bytes now)"
            )
        else:
            click.echo(
                f"{r.name}: {plural(r.packs_before, 'pack')} -> {r.packs_after}; "
                f"{r.bytes_before} -> {r.bytes_after} bytes"
            )


# The commands of this family, as `dsv.cli` registers them.
COMMANDS = (fsck, gc)
