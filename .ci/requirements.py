"""pyproject's dependency rules, checked, and the requirements of CI's lowest-versions run.

Every runtime dependency MUST read `name>=LOW,<NEXT_MAJOR` and every test tool `name==X.Y.Z`;
anything else is an error (exit 1), so the rules cannot drift.

    python .ci/requirements.py lowest > lowest.txt   # runtime lower bounds + test pins
    python .ci/requirements.py check newest          # in a venv of `pip install -e '.[test]'`
    python .ci/requirements.py check lowest          # in a venv of lowest.txt

`check newest`: the upper bound is the major version after the newest one installed (the one the
suite just passed with), not a guess. `check lowest`: what is installed is each lower bound, so
the lowest run tested what pyproject promises.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
RANGE = re.compile(r"^([A-Za-z0-9_.-]+)>=(\d+(?:\.\d+)+),<(\d+)$")
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\d+(?:\.\d+)+)$")
# Not in the lowest run, as they need a dependency far above dsv's lower bound, and dsv does
# not use them: oxenai (pyarrow>=22) is the benchmarks' peer
# (tests/test_benchmarks.py::test_harness_runs_every_tool); datasets (pyarrow>=24) is the
# optional `hf` extra, whose absence tests/test_notebook.py then checks; orq-ai-sdk
# (httpx>=0.28.1) is the client the orq.ai tests drive (tests/server/dialects/test_orq.py,
# tests/test_remote_hosted_orq.py).
NOT_IN_LOWEST = {"oxenai", "datasets", "orq-ai-sdk"}


def read_rules() -> tuple[list[tuple[str, str, int]], list[tuple[str, str]]]:
    """Each runtime dependency's (name, lower bound, upper major) and each test tool's pin."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    errors: list[str] = []
    runtime: list[tuple[str, str, int]] = []
    for spec in project["dependencies"]:
        if m := RANGE.match(spec.replace(" ", "")):
            runtime.append((m[1], m[2], int(m[3])))
        else:
            errors.append(f"runtime dependency {spec!r} is not 'name>=LOW,<NEXT_MAJOR'")
    tools: list[tuple[str, str]] = []
    for spec in project["optional-dependencies"]["test"]:
        if m := PIN.match(spec.replace(" ", "")):
            tools.append((m[1], m[2]))
        else:
            errors.append(f"test tool {spec!r} is not pinned exactly ('name==X.Y.Z')")
    if errors:
        sys.exit("\n".join(f"{PYPROJECT.name}: {e}" for e in errors))
    return runtime, tools


def installed(name: str) -> str:
    """The installed version of `name`, or exit naming it."""
    try:
        return version(name)
    except PackageNotFoundError:
        sys.exit(f"{name} is not installed")


def check(which: str) -> None:
    """Compare what is installed with pyproject's bounds; exit 1 naming every mismatch."""
    runtime, tools = read_rules()
    errors: list[str] = []
    for name, low, upper in runtime:
        have = installed(name)
        if which == "lowest" and have != low:
            errors.append(f"{name} {have} is installed, not the lower bound {low}")
        if which == "newest" and int(have.split(".")[0]) + 1 != upper:
            errors.append(f"{name}: the newest is {have}, so the upper bound is not <{upper}")
    for name, pin in tools:
        have = installed(name) if which == "newest" or name not in NOT_IN_LOWEST else pin
        if have != pin:
            errors.append(f"{name} {have} is installed, not the pinned {pin}")
    if errors:
        sys.exit("\n".join(errors))
    print(f"{which}: {', '.join(f'{n} {installed(n)}' for n, _, _ in runtime)}")


def main() -> None:
    """Run the command the arguments name."""
    args = sys.argv[1:]
    if args == ["lowest"]:
        runtime, tools = read_rules()
        for name, low, _ in runtime:
            print(f"{name}=={low}")
        for name, pin in tools:
            if name not in NOT_IN_LOWEST:
                print(f"{name}=={pin}")
    elif len(args) == 2 and args[0] == "check" and args[1] in ("newest", "lowest"):
        check(args[1])
    else:
        sys.exit("usage: python .ci/requirements.py lowest | check newest|lowest")


if __name__ == "__main__":
    main()
