"""How counts and keys read: one plural rule, one change format, one key format."""

from __future__ import annotations

from dsv.text import change_counts, key_text, plural
from tests.conftest import Dsv


def test_plural() -> None:
    assert plural(1, "datapoint") == "1 datapoint"
    assert [plural(n, "dataset") for n in (0, 2)] == ["0 datasets", "2 datasets"]
    assert plural(3, "child", "children") == "3 children"
    assert plural(10, "object", shown="3/10") == "3/10 objects"
    assert plural(1, "object", shown="0/1") == "0/1 object"


def test_change_counts() -> None:
    assert change_counts(1, 0, 12) == "+1 -0 ~12"


def test_a_key_string_is_quoted_where_it_could_be_read_as_another_value() -> None:
    assert key_text({"id": 2}) == "id=2"
    assert key_text({"id": "2"}) == 'id="2"'
    assert key_text({"id": "q-7", "lang": "en"}) == "id=q-7, lang=en"
    assert key_text({"task_id": "HumanEval/3"}) == "task_id=HumanEval/3"
    quoted = ["1e5", "-1.5", "+3", "nan", "Infinity", "true", "null", "", "a b", 'say "hi"']
    assert [key_text({"k": s}) for s in quoted] == [
        'k="1e5"', 'k="-1.5"', 'k="+3"', 'k="nan"', 'k="Infinity"', 'k="true"', 'k="null"',
        'k=""', 'k="a b"', 'k="say \\"hi\\""',
    ]  # fmt: skip
    assert key_text({"k": True}) == "k=true" and key_text({"k": None}) == "k=null"
    assert key_text({"k": [1, "a"]}) == 'k=[1,"a"]'


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
