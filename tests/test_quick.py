"""dsv.quick: a clean `status` answered from the index gives the full CLI's answer, or none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dsv import listing
from dsv.index import read_index
from dsv.notebook import Repository
from dsv.quick import decode_msgpack, quick_status
from tests.conftest import Dsv

ENVIRON = {"DSV_LOCK_TIMEOUT": "0.5"}
FORMS = (["status"], ["status", "--porcelain"], ["status", "--json"])


def _index_head(dsv: Dsv) -> bytes:
    return msgspec.msgpack.decode((dsv.root / ".dsv" / "index").read_bytes())[2]


def _agrees(dsv: Dsv) -> list[str | None]:
    """Each status form's quick answer, checked against the full CLI's output."""
    answers = []
    for args in FORMS:
        quick = quick_status(args, ENVIRON)
        if quick is not None:
            assert quick == dsv(*args).stdout, args
        answers.append(quick)
    return answers


def _committed(dsv: Dsv) -> None:
    dsv.write("evals/qa.jsonl", [{"id": i, "q": f"question {i}"} for i in range(20)])
    dsv.write("other.jsonl", [{"id": 1}])
    dsv("add", "evals/qa.jsonl", "other.jsonl")
    dsv("commit", "-m", "first")
    os.utime(dsv.root / "evals/qa.jsonl", ns=(10**18, 10**18))
    os.utime(dsv.root / "other.jsonl", ns=(10**18, 10**18))
    dsv("add", "evals/qa.jsonl", "other.jsonl")  # stats old enough to be trusted


def test_a_clean_tree_is_answered_as_the_cli_answers(dsv: Dsv) -> None:
    _committed(dsv)
    assert _agrees(dsv) == [
        "On branch main\nnothing to commit, working tree clean\n",
        "",
        "[]\n",
    ]


def test_every_index_writer_names_the_commit_it_matches(dsv: Dsv) -> None:
    _committed(dsv)
    repo = Repository(dsv.root)
    assert _index_head(dsv) == repo.head()
    dsv.write("evals/qa.jsonl", [{"id": 1, "q": "changed"}])
    os.utime(dsv.root / "evals/qa.jsonl", ns=(10**18, 10**18))
    dsv("add", "evals/qa.jsonl")
    assert read_index(dsv.root / ".dsv" / "index")["evals/qa.jsonl"].stat is not None
    assert _index_head(dsv) == b""  # staged: the index is no commit's tree
    assert _agrees(dsv) == [None, None, None]
    dsv("commit", "-m", "second")
    assert _index_head(dsv) == repo.head()
    dsv("checkout", "HEAD~1")
    assert _index_head(dsv) == repo.head() == repo.resolve("HEAD")
    dsv("switch", "-c", "side")
    dsv("rm", "--cached", "other.jsonl")
    assert _index_head(dsv) == b""
    dsv("commit", "-m", "drop other")
    assert _index_head(dsv) == repo.head()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda root: (root / "other.jsonl").write_text('{"id": 2}\n'), id="edited"),
        pytest.param(lambda root: (root / "other.jsonl").unlink(), id="deleted"),
        pytest.param(lambda root: os.utime(root / "other.jsonl"), id="touched"),
        pytest.param(
            lambda root: (root / ".dsv" / "config").write_text('{"format": 4}'), id="format 4"
        ),
        pytest.param(
            lambda root: (root / ".dsv" / "config").write_text('{"format": true}'), id="bool"
        ),
        pytest.param(
            lambda root: (root / ".dsv" / "config").write_text(
                '{"format": 2, "remotes": {"origin": {"key_env": "K"}}}'
            ),
            id="remote without url",
        ),
        pytest.param(lambda root: (root / ".dsv" / "config").write_text("{"), id="bad json"),
        pytest.param(
            lambda root: (root / ".dsv" / "index").write_bytes(
                (root / ".dsv" / "index").read_bytes()[:-3]
            ),
            id="truncated index",
        ),
        pytest.param(
            lambda root: (root / ".dsv" / "refs" / "heads" / "main").write_text("abc\n"),
            id="corrupt ref",
        ),
        pytest.param(lambda root: (root / ".dsv" / "index").unlink(), id="no index"),
    ],
)
def test_anything_else_is_left_to_the_cli(dsv: Dsv, change: Callable[[Path], object]) -> None:
    _committed(dsv)
    change(dsv.root)
    assert [quick_status(args, ENVIRON) for args in FORMS] == [None, None, None]


def test_a_moved_head_or_a_detached_one(dsv: Dsv) -> None:
    _committed(dsv)
    first = Repository(dsv.root).head()
    assert first is not None
    dsv.write("other.jsonl", [{"id": 2}])
    dsv("commit", "-a", "-m", "second")
    repo = Repository(dsv.root)
    with repo.lock():  # HEAD's branch moved under the index, as by another dsv
        repo.refs.update("refs/heads/main", first, expected=repo.head(), user="u", reason="r")
    assert _agrees(dsv) == [None, None, None]
    dsv("checkout", "--force", first.hex())
    os.utime(dsv.root / "evals/qa.jsonl", ns=(10**18, 10**18))
    os.utime(dsv.root / "other.jsonl", ns=(10**18, 10**18))
    dsv("add", "evals/qa.jsonl", "other.jsonl")
    assert _agrees(dsv)[0] == f"HEAD detached at {first.hex()[:12]}\n" + (
        "nothing to commit, working tree clean\n"
    )


def test_only_the_status_forms_it_knows(dsv: Dsv) -> None:
    _committed(dsv)
    for args in (["status", "-h"], ["-C", ".", "status"], ["status", "--json", "--porcelain"]):
        assert quick_status(args, ENVIRON) is None
    for timeout in ("soon", "-1", "nan"):
        assert quick_status(["status"], {"DSV_LOCK_TIMEOUT": timeout}) is None
    assert quick_status(["status"], {}) is not None


def test_the_dsv_command_answers_a_clean_status_without_msgspec_or_click(dsv: Dsv) -> None:
    _committed(dsv)
    # atexit, as the full CLI ends the process without tearing the interpreter down.
    probe = (
        "import atexit, sys, dsv.quick\n"
        "sys.argv = ['dsv'] + sys.argv[1:]\n"
        "atexit.register(lambda: print(sorted({'msgspec', 'click'} & set(sys.modules)),"
        " file=sys.stderr))\n"
        "dsv.quick.main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DSV_LOCK_TIMEOUT"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", probe, *args],
            cwd=dsv.root / "evals",
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    clean = run("status")
    assert (clean.returncode, clean.stdout) == (0, dsv("status").stdout)
    assert clean.stderr.splitlines()[-1] == "[]"
    (dsv.root / "other.jsonl").write_text('{"id": 2}\n')
    changed = run("status", "--porcelain")
    assert (changed.returncode, changed.stdout) == (0, "M other.jsonl\n")
    assert "'msgspec'" in changed.stderr.splitlines()[-1]


def test_the_index_decoder_agrees_with_the_cli(dsv: Dsv) -> None:
    _committed(dsv)
    data = (dsv.root / ".dsv" / "index").read_bytes()
    decoded = decode_msgpack(data)
    assert isinstance(decoded, list)
    entries = read_index(dsv.root / ".dsv" / "index")
    assert decoded[1] == [msgspec.to_builtins(e, builtin_types=(bytes,)) for e in entries.values()]


_values = st.recursive(
    st.none() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=20),
    max_leaves=60,
)


@given(_values)
@example([2**64 - 1, -(2**63), -33, -32, 127, 128, "x" * 32, b"y" * 256, [None] * 16])
def test_decode_msgpack_reads_what_msgspec_writes(value: object) -> None:
    assert decode_msgpack(msgspec.msgpack.encode(value)) == value


@pytest.mark.parametrize(
    "data",
    [b"\xc3", b"\xca\x00\x00\x00\x00", b"\x81\x01\x02", b"\x92\x01", b"\xc4\x05ab", b"\x01\x02"],
    ids=["bool", "float", "map", "short array", "short bin", "trailing"],
)
def test_decode_msgpack_refuses_what_the_index_never_holds(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_msgpack(data)


def test_an_old_index_without_a_head_still_reads(dsv: Dsv) -> None:
    _committed(dsv)
    path = dsv.root / ".dsv" / "index"
    version, entries, _ = msgspec.msgpack.decode(path.read_bytes())
    path.write_bytes(msgspec.msgpack.encode([version, entries]))
    assert quick_status(["status"], ENVIRON) is None
    assert dsv("status", "--porcelain").stdout == ""
    assert json.loads(dsv("status", "--json").stdout) == []


def test_untracked_files_are_answered_as_the_cli_answers(dsv: Dsv) -> None:
    _committed(dsv)
    dsv.write("new.jsonl", [{"id": 1}])
    dsv.write("node_modules/pkg/package.json", [{}])
    (dsv.root / "evals/b.CSV").write_text("id\n1\n")
    (dsv.root / "evals/readme.txt").write_text("not a dataset\n")
    assert _agrees(dsv) == [
        "On branch main\n"
        'Untracked files (use "dsv add <file>" to track):\n'
        "  evals/b.CSV\n"
        "  new.jsonl\n"
        'nothing added to commit but untracked files present (use "dsv add" to track)\n',
        "?? evals/b.CSV\n?? new.jsonl\n",
        '[{"path":"evals/b.CSV","staged":null,"unstaged":"untracked"},'
        '{"path":"new.jsonl","staged":null,"unstaged":"untracked"}]\n',
    ]
    (dsv.root / 'q"\\é.jsonl').write_text("{}\n")
    text, porcelain, as_json = _agrees(dsv)  # the quick answers agree with the full CLI's
    assert text is not None and '  "q\\"\\\\é.jsonl"\n' in text
    assert porcelain is not None and '?? "q\\"\\\\é.jsonl"\n' in porcelain
    assert as_json is None  # left to the full CLI's JSON encoder


@pytest.mark.parametrize("name", ["a.jsonl", "a.NDJSON", "a.json", "a.csv", "a.TSV", "a.parquet"])
def test_the_dataset_suffixes_are_those_dsv_reads(name: str) -> None:
    from dsv.formats import format_kind
    from dsv.listing import DATASET_SUFFIXES

    format_kind(name)
    assert Path(name).suffix.lower() in DATASET_SUFFIXES
    assert len(DATASET_SUFFIXES) == 6


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("qa.jsonl", "qa.jsonl"),
        ("dé/qa.jsonl", "dé/qa.jsonl"),
        ("a b.jsonl", "a b.jsonl"),
        ("x\x1b[31m.jsonl", '"x\\u001b[31m.jsonl"'),
        ("c1\x85.jsonl", '"c1\\u0085.jsonl"'),
        ("t\tn\n.jsonl", '"t\\tn\\n.jsonl"'),
        ('q"b\\.jsonl', '"q\\"b\\\\.jsonl"'),
        ("bad\udcff.jsonl", '"bad\\xff.jsonl"'),
    ],
)
def test_a_file_name_is_shown_quoted_when_a_terminal_could_misread_it(
    name: str, shown: str
) -> None:
    assert listing.quote_path(name) == shown


def _ended(probe: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """A Python process that ends with `exit_without_teardown`, as the `dsv` command does."""
    head = "import atexit, sys, threading, time\nfrom dsv.quick import exit_without_teardown\n"
    return subprocess.run(
        [sys.executable, "-c", head + probe],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )


def test_an_end_without_teardown_runs_atexit_flushes_and_keeps_the_status() -> None:
    ended = _ended(
        "atexit.register(lambda: print('atexit ran'))\n"
        "sys.stdout.write('buffered, ')\n"
        "exit_without_teardown(SystemExit(3))\n"
    )
    assert (ended.returncode, ended.stdout, ended.stderr) == (3, "buffered, atexit ran\n", "")
    assert _ended("exit_without_teardown(SystemExit(None))").returncode == 0


def test_a_thread_still_running_is_waited_for_as_python_does() -> None:
    ended = _ended(
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()\n"
        "exit_without_teardown(SystemExit(0))\n"
    )
    assert (ended.returncode, ended.stdout) == (0, "thread done\n")


def test_a_message_for_a_status_is_printed_as_python_does() -> None:
    ended = _ended("exit_without_teardown(SystemExit('bye'))")
    assert (ended.returncode, ended.stderr) == (1, "bye\n")


def test_closed_output_streams_end_as_python_ends_them() -> None:
    """`dsv ... >&- 2>&-`: Python makes such streams None, which an end must not flush."""
    probe = (
        "import sys\nfrom dsv.quick import exit_without_teardown\n"
        "assert sys.stdout is None and sys.stderr is None\n"
        "exit_without_teardown(SystemExit(4))\n"
    )
    ended = subprocess.run(
        [sys.executable, "-c", probe],
        preexec_fn=lambda: (os.close(1), os.close(2)),
        check=False,
    )
    assert ended.returncode == 4


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_that_cannot_be_written_is_an_error_not_a_silent_success() -> None:
    with open("/dev/full", "w") as full:
        ended = _ended(
            "sys.stdout = open(1, 'w', buffering=1 << 16, closefd=False)  # held until the end\n"
            "print('lost')\n"
            "exit_without_teardown(SystemExit(0))\n",
            stdout=full,
        )
    assert ended.returncode == 1
    assert ended.stderr == "error: cannot write the output: No space left on device\n"
