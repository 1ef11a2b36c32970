"""Run the same dataset-versioning steps with dsv, git and Oxen; print medians and ratios.

Each step is a whole process (start-up included), tools are interleaved within every run so
that drift of this shared machine hits all of them alike, and each figure is the median of
the runs. See docs/performance.md for the method and the latest results.

    python -m benchmarks.run --count 100000 --runs 5
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from benchmarks.generate import generate

__all__ = ["Measurement", "run_benchmark", "warm_memory"]

SOURCE = Path(__file__).resolve().parent.parent / "dsv"
Measurement = tuple[float, int]  # seconds, peak RSS in KiB


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Measurement:
    """Run one process to completion; its wall time and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{' '.join(args)} failed in {cwd} ({proc.returncode}): {err}")
    if proc.stderr:
        proc.stderr.close()
    return elapsed, usage.ru_maxrss


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def install_dsv(work: Path) -> Path:
    """A venv holding a byte-compiled copy of dsv and its `dsv` script, as `pip install`
    leaves them, that sees this interpreter's packages (dsv's dependencies, Oxen) without
    running their .pth start-up hooks; its python.

    This machine's site-packages runs two hooks at every Python start that no user's does:
    the sandbox's certifi patch and the editable-install finder (`python -c pass` takes
    ~60 ms with them, ~14 ms without). dsv and Oxen's Python steps both run from here, so
    neither pays them. Byte-compiling matters too: under this machine's
    PYTHONDONTWRITEBYTECODE=1 an uncompiled dsv recompiles every module in every process."""
    import site

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    packages = Path(purelib)
    # A path line in a .pth file only extends sys.path; the hooks in that folder stay unrun.
    (packages / "_machine_packages.pth").write_text(
        "".join(f"{p}\n" for p in site.getsitepackages())
    )
    shutil.copytree(SOURCE, packages / "dsv", ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(packages / "dsv", quiet=1)
    # The entry point pyproject.toml names, as pip's script calls it.
    entry = tomllib.loads((SOURCE.parent / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = entry["dsv"].partition(":")
    script = venv / "bin" / "dsv"
    script.write_text(
        f"#!{python}\nimport sys\nfrom {module} import {function}\n\n"
        f"if __name__ == '__main__':\n    sys.exit({function}())\n"
    )
    script.chmod(0o755)
    return python


class Tool:
    name = ""
    store = ""

    def __init__(self, root: Path, env: dict[str, str], python: Path) -> None:
        self.root = root
        self.env = env
        self.python = str(python)  # of install_dsv: dsv's script and Oxen's runs use it

    def run(self, *args: str) -> Measurement:
        return _run(list(args), self.root, self.env)

    def prepare(self) -> None: ...
    def commit_v1(self) -> Measurement:
        raise NotImplementedError

    def commit_v2(self) -> Measurement:
        raise NotImplementedError

    def diff(self) -> Measurement:
        raise NotImplementedError

    def checkout_v1(self) -> Measurement:
        raise NotImplementedError

    def gc(self) -> Measurement | None:
        """Repack the store as the tool's own maintenance does (None: the tool has none)."""
        return None

    def diff_after_gc(self) -> Measurement:
        return self.diff()

    def settle(self) -> None:
        """Untimed, before the checkout: what a user's next command finds some time after a
        commit. A pause for every tool (writeback of what the steps before wrote drains);
        a tool with a status of its own runs it after."""
        time.sleep(1.2)


def _sum(*steps: Measurement) -> Measurement:
    return sum(s[0] for s in steps), max(s[1] for s in steps)


class Dsv(Tool):
    name, store = "dsv", ".dsv"

    def dsv(self, *args: str) -> list[str]:
        return [str(Path(self.python).parent / "dsv"), *args]

    def prepare(self) -> None:
        self.run(*self.dsv("init"))

    def commit_v1(self) -> Measurement:
        return _sum(
            self.run(*self.dsv("add", "data.jsonl", "--key", "id")),
            self.run(*self.dsv("commit", "-m", "v1")),
        )

    def commit_v2(self) -> Measurement:
        return self.run(*self.dsv("commit", "-a", "-m", "v2"))

    def diff(self) -> Measurement:
        return self.run(*self.dsv("diff", "HEAD~1", "HEAD", "--format", "jsonl"))

    def checkout_v1(self) -> Measurement:
        return self.run(*self.dsv("checkout", "HEAD~1"))

    def gc(self) -> Measurement:
        return self.run(*self.dsv("gc"))

    def status(self) -> Measurement:
        return self.run(*self.dsv("status", "--porcelain"))

    def settle(self) -> None:
        super().settle()  # as git's (`Git.settle`): the same pause, the same status
        self.status()


class Git(Tool):
    name, store = "git", ".git"

    def prepare(self) -> None:
        self.run("git", "init", "-q")

    def commit_v1(self) -> Measurement:
        return _sum(self.run("git", "add", "data.jsonl"), self.run("git", "commit", "-qm", "v1"))

    def commit_v2(self) -> Measurement:
        return self.run("git", "commit", "-qam", "v2")

    def diff(self) -> Measurement:
        return self.run("git", "diff", "--stat", "HEAD~1", "HEAD")

    def checkout_v1(self) -> Measurement:
        return self.run("git", "checkout", "-q", "HEAD~1")

    def settle(self) -> None:
        # v2 was copied in just before `commit -a`, so the index often records the file as
        # racily clean (its mtime in the index's own tick), and git's next checkout hashes
        # all 87 MB again first (0.44-0.48 s instead of 0.27-0.31). A status a while later
        # refreshes the index, as any later command of a user would find it.
        super().settle()
        self.run("git", "status", "--porcelain")

    def gc(self) -> Measurement:
        # Plain gc is what `git gc --auto` runs, so it is how a real repository ends up
        # packed; `--aggressive` gave the same bytes for these two versions (2026-12-07).
        return self.run("git", "gc", "-q")


_OXEN_COMMIT = "import oxen, sys; r = oxen.Repo('.'); r.add('data.jsonl'); r.commit(sys.argv[1])"
# Oxen checks out branches, not commit ids: mark v1 with a branch (not timed).
_OXEN_MARK = "import oxen; r = oxen.Repo('.'); r.checkout('v1', create=True); r.checkout('main')"
_OXEN_DIFF = (
    "import oxen; r = oxen.Repo('.'); c = [x.id for x in r.log()];"
    " d = oxen.diff('data.jsonl', repo_dir='.', revision_left=c[1], revision_right=c[0],"
    " keys=['id']); d.tabular"
)


class Oxen(Tool):
    name, store = "oxen", ".oxen"

    def prepare(self) -> None:
        self.run(self.python, "-c", "import oxen; oxen.Repo('.').init()")

    def commit_v1(self) -> Measurement:
        measured = self.run(self.python, "-c", _OXEN_COMMIT, "v1")
        self.run(self.python, "-c", _OXEN_MARK)
        return measured

    def commit_v2(self) -> Measurement:
        return self.run(self.python, "-c", _OXEN_COMMIT, "v2")

    def diff(self) -> Measurement:
        return self.run(self.python, "-c", _OXEN_DIFF)

    def checkout_v1(self) -> Measurement:
        return self.run(self.python, "-c", "import oxen; oxen.Repo('.').checkout('v1')")


TOOLS: dict[str, type[Tool]] = {"dsv": Dsv, "git": Git, "oxen": Oxen}
# The store is measured before and after `gc`, and the steps after it read the packed store:
# any real git repository is packed by auto-gc, and a diff or checkout must not pay for
# dsv's denser gc. Oxen has no gc: its `gc` figure is absent and its store is measured as is.
STEPS = ("commit_v1", "commit_v2", "diff", "gc", "diff_after_gc", "checkout_v1")


def _environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
        DSV_AUTHOR_NAME="bench",
        DSV_AUTHOR_EMAIL="bench@example.com",
    )
    (home / ".config" / "oxen").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "oxen" / "user_config.toml").write_text(
        'name = "bench"\nemail = "bench@example.com"\n'
    )
    return env


_WARM = """
import mmap, sys
size = int(sys.argv[1])
piece = bytes(range(256)) * (64 << 10)  # 16 MiB
with mmap.mmap(-1, size) as memory:
    for at in range(0, size, len(piece)):
        end = min(at + len(piece), size)
        memory[at:end] = piece[: end - at]
"""


def warm_memory(size: int) -> float:
    """Touch `size` bytes of fresh memory once, in a child process, and give it back; the
    seconds it took.

    On this virtual machine the first touch of a page the guest has never used costs ~12 us,
    against ~1.7 us for a page used before (measured 2026-12-03). Until a machine has touched
    as much memory as a benchmark's steps hold at once, whichever tool asks for new pages
    first pays for them: a checkout that writes its temp file beside the old one (dsv) pays,
    one that unlinks the old file first (git) reuses its pages. A machine that has been up a
    while, or any machine not under such a hypervisor, has no cold pages to hand out. Warmth
    fades here beyond about a gigabyte: 1 GiB touched again after 120 s idle took what it took
    at once (0.7 s), where 4 GiB took 3.2 s at once and 10.3 s again after 60 s. A child does
    the touching because a process's peak RSS passes to the children it starts, and the runner
    reads its steps' peak RSS from theirs.
    """
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", _WARM, str(size)], check=True)
    return time.perf_counter() - started


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _log_repo(work: Path, env: dict[str, str], python: Path, commits: int) -> Path:
    """A repository with `commits` versions, built through the library in one process."""
    root = work / "log-repo"
    here = str(Path(__file__).resolve().parent.parent)
    env = {**env, "PYTHONPATH": here + os.pathsep + env.get("PYTHONPATH", "")}
    _run([str(python), "-m", "benchmarks.history", str(root), str(commits)], work, env)
    return root


def run_benchmark(
    count: int,
    runs: int,
    tools: list[str],
    work: Path,
    *,
    log_commits: int = 10_000,
    warm: int = 1 << 30,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, object]:
    """Measure every step; return {'medians': {tool: {step: s}}, 'sizes': ..., 'dsv_only': ...}.

    `warm` bytes of memory (at most half of what is available) are touched first: see
    `warm_memory`."""
    available = _available_memory()
    if available is not None:
        warm = min(warm, available // 2)
    warm_seconds = warm_memory(warm) if warm > 0 else 0.0
    python = install_dsv(work)
    data = work / "data"
    v1, v2 = generate(count, data)
    env = _environment(work / "home")
    times: dict[str, dict[str, list[float]]] = {t: {s: [] for s in STEPS} for t in tools}
    rss: dict[str, dict[str, int]] = {t: {} for t in tools}
    sizes: dict[str, list[int]] = {t: [] for t in tools}
    sizes_before_gc: dict[str, list[int]] = {t: [] for t in tools}
    status: list[float] = []
    # The interpreter alone: what any Python command pays before its first line runs; and
    # this machine's own, with its start-up hooks, to tell how fast the machine was.
    python_start: list[float] = []
    machine_python_start: list[float] = []
    for run in range(runs):
        for _ in range(3):
            python_start.append(_run([str(python), "-c", "pass"], work, env)[0])
            machine_python_start.append(_run([sys.executable, "-c", "pass"], work, env)[0])
        for name in tools:
            root = work / f"{name}-{run}"
            root.mkdir()
            tool = TOOLS[name](root, env, python)
            tool.prepare()
            shutil.copyfile(v1, root / "data.jsonl")
            for step in STEPS:
                if step == "commit_v2":
                    shutil.copyfile(v2, root / "data.jsonl")
                if step == "gc":
                    sizes_before_gc[name].append(_size(root / tool.store))
                if step == "diff_after_gc":
                    sizes[name].append(_size(root / tool.store))
                if step == "checkout_v1":
                    tool.settle()
                measured = getattr(tool, step)()
                if measured is None:
                    continue
                seconds, peak = measured
                times[name][step].append(seconds)
                rss[name][step] = max(rss[name].get(step, 0), peak)
                progress(f"run {run + 1}/{runs} {name} {step}: {seconds:.3f} s")
            if isinstance(tool, Dsv):
                tool.status()  # the first status after a checkout proves the fresh stats
                status.extend(tool.status()[0] for _ in range(3))
            shutil.rmtree(root)
    medians = {
        t: {s: statistics.median(v) for s, v in steps.items() if v} for t, steps in times.items()
    }
    result: dict[str, object] = {
        "count": count,
        "bytes": v1.stat().st_size,
        "runs": runs,
        "medians": medians,
        "peak_rss_kib": rss,
        "store_bytes": {t: statistics.median(v) for t, v in sizes.items()},
        "store_bytes_before_gc": {t: statistics.median(v) for t, v in sizes_before_gc.items()},
        "python_start": statistics.median(python_start),
        "machine_python_start": statistics.median(machine_python_start),
        "warm_bytes": warm,
        "warm_seconds": warm_seconds,
    }
    if "dsv" in tools:
        result["dsv_status"] = statistics.median(status)
        if log_commits:
            log_root = _log_repo(work, env, python, log_commits)
            log = Dsv(log_root, env, python).dsv("log", "-n", "20")
            result["dsv_log_20"] = statistics.median(
                _run(log, log_root, env)[0] for _ in range(max(runs, 3))
            )
    return result


def _ratio(value: float) -> str:
    # Three decimals below 0.1: the keyed-diff goal is 0.05x.
    return f"{value:.3f}x" if value < 0.1 else f"{value:.2f}x"


def format_table(result: dict[str, object]) -> str:
    """Markdown table of medians with dsv/peer ratios."""
    medians: dict[str, dict[str, float]] = result["medians"]  # type: ignore[assignment]
    sizes: dict[str, float] = result["store_bytes"]  # type: ignore[assignment]
    peers = [t for t in medians if t != "dsv"]
    head = ["step", *medians, *(f"dsv/{p}" for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for step in STEPS:
        # A step a tool lacks (Oxen's gc) reads "-".
        row = [f"{medians[t][step]:.3f} s" if step in medians[t] else "-" for t in medians]
        ratios = [
            _ratio(medians["dsv"][step] / medians[p][step])
            if step in medians["dsv"] and step in medians[p]
            else "-"
            for p in peers
        ]
        lines.append("| " + " | ".join([step, *row, *ratios]) + " |")
    before: dict[str, float] | None = result.get("store_bytes_before_gc")  # type: ignore[assignment]
    for label, measured in (("store size before gc", before), ("store size after gc", sizes)):
        if measured is None:
            continue
        row = [f"{measured[t] / 2**20:.1f} MiB" for t in medians]
        ratios = [_ratio(measured["dsv"] / measured[p]) for p in peers]
        lines.append("| " + " | ".join([label, *row, *ratios]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tools", default="dsv,git,oxen")
    parser.add_argument("--log-commits", type=int, default=10_000)
    parser.add_argument(
        "--warm-mib", type=int, default=1024, help="memory to touch before measuring (0: none)"
    )
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the raw result here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dsv-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run_benchmark(
            args.count,
            args.runs,
            args.tools.split(","),
            work,
            log_commits=args.log_commits,
            warm=args.warm_mib << 20,
            progress=lambda m: print(m, file=sys.stderr),
        )
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(result))
    for key in ("python_start", "machine_python_start", "dsv_status", "dsv_log_20"):
        if key in result:
            print(f"{key}: {result[key]:.3f} s")
    warmed, seconds = result["warm_bytes"], result["warm_seconds"]
    assert isinstance(warmed, int) and isinstance(seconds, float)
    print(f"warmed {warmed / 2**30:.1f} GiB in {seconds:.2f} s")
    print("peak RSS (KiB):", json.dumps(result["peak_rss_kib"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
