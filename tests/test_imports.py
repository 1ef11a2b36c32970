"""Every module of dsv imports on its own, first: no circle of imports that only works in the
order the CLI happens to load things (import-linter checks direction, not this)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import dsv

_EACH_ALONE = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "dsv" or m.startswith("dsv.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
"""


def test_every_module_imports_first_and_alone() -> None:
    root = Path(dsv.__file__).parent
    # dsv.__main__ runs the CLI when imported: a script, not a module.
    names = sorted(
        info.name
        for info in pkgutil.walk_packages([str(root)], prefix="dsv.")
        if info.name != "dsv.__main__"
    )
    assert "dsv.notebook" in names and "dsv.server.app" in names
    result = subprocess.run(
        [sys.executable, "-c", _EACH_ALONE, *names], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
