"""dsv inside a git project: keeping `.dsv` out of what git tracks."""

from __future__ import annotations

from pathlib import Path

from dsv.errors import BadState
from dsv.fsutil import write_atomic
from dsv.repo import DSV_DIR

__all__ = ["git_work_tree", "ignore_in_git"]

# Lines of a .gitignore that already keep `.dsv` (at this level) out of git.
_IGNORING = {f"{DSV_DIR}", f"{DSV_DIR}/", f"/{DSV_DIR}", f"/{DSV_DIR}/"}


def git_work_tree(path: Path) -> Path | None:
    """The top of the git work tree holding `path`, if any (`.git` is a directory or, in a
    linked worktree or submodule, a file)."""
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def ignore_in_git(root: Path) -> Path | None:
    """Add `/.dsv/` to the `.gitignore` beside `.dsv` when `root` is inside a git work tree and
    nothing there ignores it yet; the file changed, or None."""
    if git_work_tree(root) is None:
        return None
    path = root / ".gitignore"
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise BadState(f"cannot read {path}: {exc}") from exc
    if any(line.strip() in _IGNORING for line in text.splitlines()):
        return None
    if text and not text.endswith("\n"):
        text += "\n"
    text += f"# dsv's store: git tracks the dataset files, dsv their history\n/{DSV_DIR}/\n"
    write_atomic(path, text.encode())
    return path
