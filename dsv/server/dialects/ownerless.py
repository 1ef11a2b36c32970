"""Where the datasets of a dialect without owners in its paths live (orq.ai, TensorZero,
Overmind Lab): one rule for all of them, docs/dialects.md "Which repository"."""

from __future__ import annotations

from dsv.server.dialects import Mount
from dsv.server.service import DEFAULT_API_REPO
from dsv.server.storage import KeyRecord

__all__ = ["DEFAULT_API_REPO", "repo_for"]


def repo_for(mount: Mount, record: KeyRecord | None) -> str:
    """The repository of a request: its key's, when the key is for one repository; else the
    server's API repository (a key for every repository, or a server without auth)."""
    if record is not None and record.repo is not None:
        return record.repo
    return mount.api_repo
