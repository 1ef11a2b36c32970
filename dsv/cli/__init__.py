"""The `dsv` command: parses arguments, calls the library, formats the result. Nothing else.

One module a family of commands: `files`, `history`, `labels`, `maintenance`, `pins`, `remote` and
`serve`; `common` holds what they share.
"""

from __future__ import annotations

import os

import click

from dsv.cli import files, history, labels, maintenance, merging, pins, remote, serve
from dsv.cli.common import DsvGroup
from dsv.version import __version__

__all__ = ["main"]


@click.group(name="dsv", cls=DsvGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


for _module in (files, history, labels, maintenance, merging, pins):
    for _name in _module.__all__:
        main.add_command(getattr(_module, _name))
for _command in (*remote.COMMANDS, serve.serve, serve.ui, serve.keys, serve.copy_server):
    main.add_command(_command)
