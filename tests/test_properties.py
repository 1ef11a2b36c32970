"""Property tests: canonical ids, diffs that rebuild the second version, pack round trips."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsv
from dsv import ops
from dsv.canonical import (
    canonicalize,
    decode_canonical,
    encode_canonical,
    find_duplicate_key,
)
from dsv.diff import diff
from dsv.objects import Kind, hash_object
from dsv.pack import Pack, PackWriter
from dsv.packindex import scan_pack

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_objects = st.dictionaries(st.text(max_size=8), _json, max_size=6)


def _spelled(value: Any, rng: random.Random) -> str:
    """The same JSON value written another way: shuffled keys, other whitespace, escapes."""
    space = rng.choice(["", " ", "\n  ", "\t"])
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        inner = f",{space}".join(
            f"{json.dumps(k, ensure_ascii=rng.random() < 0.5)}{space}:{space}{_spelled(v, rng)}"
            for k, v in items
        )
        return "{" + space + inner + space + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(_spelled(v, rng) for v in value) + "]"
    return json.dumps(value, ensure_ascii=rng.random() < 0.5)


@given(_objects, st.randoms())
def test_canonical_form_ignores_key_order_whitespace_and_escapes(
    value: dict[str, Any], rng: random.Random
) -> None:
    canonical = encode_canonical(value)
    assert canonicalize(_spelled(value, rng).encode()) == canonical
    assert canonicalize(canonical) == canonical
    assert decode_canonical(canonical) == value


@given(_json, _objects, st.randoms())
def test_a_repeated_key_is_found_however_it_is_spelled(
    value: Any, obj: dict[str, Any], rng: random.Random
) -> None:
    assert find_duplicate_key(_spelled(value, rng).encode()) is None
    if obj:
        # The first key again, escaped or not: the object's own repeat is named, not a nested one.
        key = next(iter(obj))
        rest = _spelled(obj, rng)[1:]
        text = "{" + json.dumps(key, ensure_ascii=rng.random() < 0.5) + ": 0, " + rest
        assert find_duplicate_key(text.encode()) == ((), key)
        assert find_duplicate_key(f'[1, {{"x": {text}}}]'.encode()) == ((1, "x"), key)


@given(_objects, _objects)
def test_distinct_values_have_distinct_ids(a: dict[str, Any], b: dict[str, Any]) -> None:
    same = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    ids = (
        hash_object(Kind.DATAPOINT, encode_canonical(a)),
        hash_object(Kind.DATAPOINT, encode_canonical(b)),
    )
    assert (ids[0] == ids[1]) == same


_PATH = re.compile(
    r'\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]|^([A-Za-z_][A-Za-z0-9_]*)'
)


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _PATH.match(path, pos)
        assert match, (path, pos)
        name, index, quoted, first = match.groups()
        if index is not None:
            steps.append(int(index))
        elif quoted is not None:
            steps.append(json.loads(f'"{quoted}"'))
        else:
            steps.append(name or first)
        pos = match.end()
    return steps


def _apply(record: dict[str, Any], path: str, change: dict[str, Any]) -> None:
    steps = _steps(path)
    target: Any = record
    for step in steps[:-1]:
        target = target[step]
    last = steps[-1]
    if "new" not in change:
        if isinstance(target, list):
            target.pop(last)  # type: ignore[arg-type]
        else:
            del target[last]
    elif isinstance(target, list) and last == len(target):
        target.append(change["new"])
    else:
        target[last] = change["new"]


@st.composite
def _versions(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Records keyed by a unique int id, and a second version: edited, dropped, added."""
    n = draw(st.integers(1, 12))
    old = [{**draw(_objects), "id": i} for i in range(n)]
    new = [json.loads(json.dumps(r)) for r in old]
    rng = draw(st.randoms())
    for record in new:
        if rng.random() < 0.4:
            ident = record["id"]
            record.update(draw(_objects))
            record["id"] = ident
    new = [r for r in new if rng.random() > 0.2]
    new += [{**draw(_objects), "id": 100 + i} for i in range(draw(st.integers(0, 3)))]
    return old, new


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_applying_the_diff_to_the_first_version_gives_the_second(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    old, new = data.draw(_versions())
    root = tmp_path_factory.mktemp("repo")
    repo = dsv.Repository.init(root)
    for version, records in enumerate((old, new)):
        (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        repo.add(["qa.jsonl"], key=("id",))
        if version == 0 or ops.status(repo):
            repo.commit(f"v{version}")
    first = "HEAD~1" if len(list(repo.log())) == 2 else "HEAD"
    result = diff(repo, first, "HEAD")
    rebuilt = {r["id"]: json.loads(json.dumps(r)) for r in old}
    for change in result.changes():
        key = change.key["id"] if change.key else None
        if change.status == "removed":
            del rebuilt[key]
        elif change.status == "added":
            assert change.new is not None
            rebuilt[key] = decode_canonical(repo.store.read_body(change.new, Kind.DATAPOINT))
        else:
            # Removals name positions of the old list: take them from the end first.
            removals = [f for f in change.fields if f.new is msgspec.UNSET]
            for field in [f for f in change.fields if f.new is not msgspec.UNSET]:
                _apply(rebuilt[key], field.path, _present(field))
            for field in sorted(removals, key=lambda f: _steps(f.path), reverse=True):
                _apply(rebuilt[key], field.path, _present(field))
    assert {k: encode_canonical(v) for k, v in rebuilt.items()} == {
        r["id"]: encode_canonical(r) for r in new
    }


def _present(field: Any) -> dict[str, Any]:
    """The field change as the JSONL contract has it: absent sides left out."""
    out = {"path": field.path}
    if field.old is not msgspec.UNSET:
        out["old"] = field.old
    if field.new is not msgspec.UNSET:
        out["new"] = field.new
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.sampled_from(list(Kind)), st.binary(max_size=3000)), max_size=60))
def test_pack_round_trip(
    tmp_path_factory: pytest.TempPathFactory, objects: list[tuple[Kind, bytes]]
) -> None:
    directory = tmp_path_factory.mktemp("pack")
    writer = PackWriter(directory)
    unique: dict[bytes, tuple[Kind, bytes]] = {}
    for kind, body in objects:
        oid = hash_object(kind, body)
        if oid not in unique:
            unique[oid] = (kind, body)
            writer.add(kind, oid, body)
    name = writer.finish()
    if not unique:
        assert name == "" and not list(directory.iterdir())
        return
    pack = Pack(Path(directory), name)
    for oid, (kind, body) in unique.items():
        at = pack.find(oid)
        assert at >= 0 and pack.read_at(at) == (kind, body)
    assert sorted(scan_pack(directory / f"{name}.pack")) == sorted(unique.values())
    pack.close()
