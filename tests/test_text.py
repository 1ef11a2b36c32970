"""How counts read: one plural rule and one change format for every command."""

from __future__ import annotations

from dsv.text import change_counts, plural
from tests.conftest import Dsv


def test_plural() -> None:
    assert plural(1, "datapoint") == "1 datapoint"
    assert [plural(n, "dataset") for n in (0, 2)] == ["0 datasets", "2 datasets"]
    assert plural(3, "child", "children") == "3 children"
    assert plural(10, "object", shown="3/10") == "3/10 objects"
    assert plural(1, "object", shown="0/1") == "0/1 object"


def test_change_counts() -> None:
    assert change_counts(1, 0, 12) == "+1 -0 ~12"


def test_one_datapoint_is_singular_everywhere(dsv: Dsv) -> None:
    dsv.write("one.jsonl", [{"id": 1}])
    dsv("add", "one.jsonl")
    assert "added:    one.jsonl (1 datapoint)" in dsv("status").stdout
    header = dsv("diff", "--staged").stdout.splitlines()[0]
    assert header == "diff one.jsonl (new dataset, 1 datapoint)"
    dsv("commit", "-m", "one")
    assert dsv("show").stdout.splitlines()[-1] == " A one.jsonl  1 datapoint"
    assert dsv("log", "--stat", "--oneline").stdout.splitlines()[-1] == (
        " 1 dataset changed, 1 added, 0 removed, 0 modified"
    )
