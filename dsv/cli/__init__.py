"""The `dsv` command: parses arguments, calls the library, formats the result. Nothing else.

One module a family of commands: `files`, `history`, `labels`, `maintenance`, `merging`,
`pins`, `remote` and `serve`; `common` holds what they share. A command's family is imported
when the command runs, not before: each process runs one command, and importing every family
(with the library behind each) was a fifth of a quick command's time.
"""

from __future__ import annotations

import importlib
import os

import click

from dsv.cli.common import DsvGroup
from dsv.version import __version__

__all__ = ["FAMILIES", "main"]

# Each command's family (its module under dsv.cli, whose COMMANDS it is in); a test keeps
# this in step with the families.
FAMILIES: dict[str, str] = {
    **dict.fromkeys(
        ("add", "checkout", "commit", "init", "mv", "restore", "rm", "status", "switch"), "files"
    ),
    **dict.fromkeys(("cat-object", "diff", "log", "show"), "history"),
    **dict.fromkeys(("branch", "env", "tag"), "labels"),
    **dict.fromkeys(("fsck", "gc"), "maintenance"),
    **dict.fromkeys(("cherry-pick", "conflicts", "merge", "resolve", "revert"), "merging"),
    **dict.fromkeys(("lock", "sync", "verify"), "pins"),
    **dict.fromkeys(("clone", "fetch", "pull", "push", "remote"), "remote"),
    **dict.fromkeys(("copy-server", "keys", "serve", "ui"), "serve"),
}


class _Commands(DsvGroup):
    """The top-level group: its commands are those of `FAMILIES`, each loaded when asked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(FAMILIES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        family = FAMILIES.get(cmd_name)
        if family is None:
            return None
        commands: tuple[click.Command, ...] = importlib.import_module(f"dsv.cli.{family}").COMMANDS
        return next(c for c in commands if c.name == cmd_name)


@click.group(name="dsv", cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
# The version given, not looked up in the installed metadata: that lookup costs ~50 ms.
@click.version_option(__version__, prog_name="dsv")
@click.option("-C", "cwd", metavar="PATH", help="Run as if dsv was started in PATH.")
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="No progress, no waiting notice, no informational output (as COMMAND -q).",
)
@click.pass_context
def main(ctx: click.Context, cwd: str | None, quiet: bool) -> None:
    """dsv: version control for LLM-evaluation datasets.

    Long steps (add, commit -a, checkout, switch, restore, gc, fsck, push, fetch, pull,
    clone) show progress on stderr once they take half a second, on a terminal only.

    \b
    Example:
      dsv init && dsv add evals/qa.jsonl && dsv commit -m "first version"
    """
    ctx.ensure_object(dict)
    if quiet:
        ctx.obj["quiet"] = True
    if cwd:
        if not os.path.isdir(cwd):
            raise click.BadParameter(f"{cwd}: no such directory", param_hint="-C")
        ctx.obj["cwd"] = cwd
