"""Smoke run of the benchmark harness: it drives dsv, git and Oxen end to end at tiny size.

No timing is asserted here; speed is measured by `python -m benchmarks.run` and recorded in
docs/performance.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dsv
from benchmarks.generate import generate
from benchmarks.run import STEPS, format_table, install_dsv


def test_generator_makes_the_promised_second_version(tmp_path: Path) -> None:
    v1, v2 = generate(2000, tmp_path)
    old = {r["id"]: r for r in map(json.loads, v1.read_text().splitlines())}
    new = {r["id"]: r for r in map(json.loads, v2.read_text().splitlines())}
    assert len(old) == 2000
    assert len(set(old) - set(new)) == 10  # 0.5% deleted
    assert len(set(new) - set(old)) == 10  # 0.5% added
    assert sum(old[k] != new[k] for k in set(old) & set(new)) == 20  # 1% edited
    assert 600 < v1.stat().st_size / 2000 < 1200  # ~900 bytes a datapoint
    assert generate(2000, tmp_path / "again")[0].read_bytes() == v1.read_bytes()


def test_harness_runs_every_tool(tmp_path: Path) -> None:
    # As a user runs it: in its own process, whose peak RSS its steps' processes inherit.
    # 256 MiB is more than any step holds at this size (Oxen's diff ~100 MiB).
    warm = 256
    args = ["--count", "300", "--runs", "1", "--log-commits", "50", "--warm-mib", str(warm)]
    args += ["--work", str(tmp_path / "work"), "--json", str(tmp_path / "result.json")]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| diff |" in out.stdout and "dsv/oxen" in out.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert 0 < result["warm_bytes"] <= warm << 20  # at most half of the available memory
    for tool in ("dsv", "git"):
        assert set(result["medians"][tool]) == set(STEPS)
    assert set(result["medians"]["oxen"]) == set(STEPS) - {"gc"}  # Oxen has no gc
    # Both stores are measured after their gc, and before it.
    for sizes in (result["store_bytes"], result["store_bytes_before_gc"]):
        assert all(sizes[tool] > 0 for tool in ("dsv", "git", "oxen"))
    assert "| store size after gc |" in out.stdout and "| gc |" in out.stdout
    for tool in ("dsv", "git", "oxen"):
        assert all(seconds > 0 for seconds in result["medians"][tool].values())
    # The warmed memory is not counted in any step's peak RSS.
    peaks = result["peak_rss_kib"]
    assert all(0 < kib < result["warm_bytes"] >> 10 for s in peaks.values() for kib in s.values())
    assert result["dsv_status"] > 0 and result["dsv_log_20"] > 0
    assert result["python_start"] > 0  # compared with dsv's in the benchmark, not here: noise


def test_installed_dsv_runs_without_this_machines_start_up_hooks(tmp_path: Path) -> None:
    python = install_dsv(tmp_path)
    probe = (
        "import sys, dsv; print(dsv.__file__); "
        "print(any('certifi' in m or '__editable__' in m for m in sys.modules))"
    )
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [python, "-c", probe], cwd=tmp_path, env=clean, capture_output=True, text=True, check=True
    )
    where, hooked = out.stdout.split()
    assert Path(where).is_relative_to(tmp_path / "venv") and hooked == "False"
    assert list((Path(where).parent / "cli" / "__pycache__").glob("files.*.pyc"))  # byte-compiled
    version = subprocess.run(
        [python.parent / "dsv", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.split()[-1] == dsv.__version__


def test_table_of_dsv_alone_and_small_ratios() -> None:
    medians = {"dsv": dict.fromkeys(STEPS, 0.4), "oxen": dict.fromkeys(STEPS, 9.5)}
    both = {"medians": medians, "store_bytes": {"dsv": 2**20, "oxen": 2**24}}
    assert "| diff | 0.400 s | 9.500 s | 0.042x |" in format_table(both)
    alone = {"medians": {"dsv": medians["dsv"]}, "store_bytes": {"dsv": 2**20}}
    table = format_table(alone).splitlines()
    assert table[:2] == ["| step | dsv |", "|---|---|"]
    assert table[-1] == "| store size after gc | 1.0 MiB |"


def test_table_shows_a_step_a_tool_lacks_as_a_dash() -> None:
    medians = {"dsv": dict.fromkeys(STEPS, 2.0), "oxen": dict.fromkeys(STEPS, 1.0)}
    del medians["oxen"]["gc"]
    sizes = {"dsv": 3 * 2**20, "oxen": 2**20}
    result = {"medians": medians, "store_bytes": sizes, "store_bytes_before_gc": sizes}
    table = format_table(result)
    assert "| gc | 2.000 s | - | - |" in table
    assert "| diff_after_gc | 2.000 s | 1.000 s | 2.00x |" in table
    assert "| store size before gc | 3.0 MiB | 1.0 MiB | 3.00x |" in table


def test_serve_reads_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    # Tiny, as its own process (its stream readers are forked); figures are not asserted here.
    out = tmp_path / "reads.json"
    args = ["--count", "5000", "--missing-ids", "4500", "--workdir", str(tmp_path / "work")]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_reads", *args, "--json", str(out)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        check=True,
    )
    result = json.loads(out.read_text())
    assert result["datapoints"] == 5000 and result["missing_ids"] == 4500
    # Four whole streams of ~900-byte datapoints were read while pages were timed.
    assert result["stream_bytes"] > 5000 * 600 and result["page_busy_requests"] >= 1
    assert 0 < result["rss_idle_mib"] <= result["hwm_mib"]


def test_web_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    # Tiny; the figures are docs/performance.md's (Web view), not asserted here.
    out = tmp_path / "web.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.web", "--count", "3000", "--samples", "5",
         "--workdir", str(tmp_path / "work"), "--json", str(out)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        check=True,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["datapoints"] == 3000 and result["requests"] == 6
    assert result["first_page_ms"] > 0 and 0 < result["deep_p50_ms"] <= result["deep_max_ms"]


def test_load_benchmark_runs(tmp_path: Path) -> None:
    from benchmarks.load import measure_load, measure_stream

    load = measure_load(tmp_path / "load", 300, 1)
    assert load["count"] == 300 and load["ratio"] > 0
    stream = measure_stream(tmp_path / "stream", 300)
    assert stream["peak_rss_mib"] >= stream["after_imports_mib"] > 0


def test_dialect_pages_benchmark_runs_every_paging(tmp_path: Path) -> None:
    # Tiny; figures are not asserted here (docs/performance.md has the 1M run). 250
    # datapoints: the last page is short, and each fetch's item count is checked.
    from benchmarks.dialect_pages import PAGINGS, measure

    result = measure(250, tmp_path / "work", requests=6)
    assert result["datapoints"] == 250 and "build_seconds" in result
    assert len(PAGINGS) >= 7
    for name in PAGINGS:
        assert 0 < result[f"{name}_p50_ms"] <= result[f"{name}_p95_ms"]
        assert result[f"{name}_last_p50_ms"] > 0
    # A kept workdir is measured again without building.
    assert "build_seconds" not in measure(250, tmp_path / "work", requests=3)


def test_sync_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    from benchmarks.sync import generate_small, measure

    v1, v2 = generate_small(1000, tmp_path / "small")
    first, second = v1.read_text().splitlines(), v2.read_text().splitlines()
    assert len(first) == 1000 and len(second) == 1000 - 5 + 5
    assert sum(a != b for a, b in zip(first, second, strict=False)) > 10
    figures = measure(600, tmp_path / "work", small=True)
    assert figures["stored_bytes"] > 0 and figures["floor_s"] > 0
    for step in ("push", "clone", "push_1pct", "fetch_1pct"):
        assert figures[f"{step}_s"] > 0 and figures[f"{step}_rss_kib"] > 0
