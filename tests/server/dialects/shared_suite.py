"""A dialect's suite run again against three `dsv serve` processes on SeaweedFS and PostgreSQL
(the `deployment` fixture): every test but those about one process's own storage."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

__all__ = ["shared_suite"]

# A test that opens the embedded root's files or starts servers of its own is about one
# process's storage, not the shared deployment.
_EMBEDDED = ("server_root", ".root", "SqliteMetaStore", "open_storage", "Server(")


def shared_suite(module: str, *, fixtures: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """The suite module `module` (beside this file), and what a shared module takes of it:
    its tests that fit a deployment and the `fixtures` named."""
    spec = importlib.util.spec_from_file_location(
        f"_shared_{module.removesuffix('.py')}", Path(__file__).with_name(module)
    )
    assert spec is not None and spec.loader is not None
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    taken = {
        name: value
        for name, value in vars(suite).items()
        if (
            name.startswith("test_")
            and not any(word in inspect.getsource(value) for word in _EMBEDDED)
        )
        or name in fixtures
    }
    return suite, taken
