"""Golden vectors: fixed inputs whose canonical bytes and ids must never drift."""

from __future__ import annotations

import blake3
import pytest

from dsv.canonical import canonicalize
from dsv.errors import CorruptObject
from dsv.objects import (
    OID_SIZE,
    Commit,
    Dataset,
    Format,
    Kind,
    Slice,
    Tree,
    TreeEntry,
    content_id,
    decode_commit,
    decode_dataset,
    encode_object,
    hash_object,
    hash_objects,
    split_oids,
)
from tests.test_canonical import NUMBERS, spec_number

GOLDEN_DATAPOINTS = [
    (
        b'{"b": 1, "a": [1.0, 1e16, 1.5e-7, -0.0, 100, 12345678901234567890123]}',
        b'{"a":[1.0,1e16,1.5e-7,-0.0,100,12345678901234567890123],"b":1}',
        "4841990c68af62296bc09eba22a96fa1ef372cb3921e0db9bdff582674a757ad",
    ),
    (
        b'{"text": "caf\\u00e9 \\/ \\u0001 \\t \\u2028 \xf0\x9f\x98\x80", '
        b'"ok": true, "none": null}',
        b'{"none":null,"ok":true,"text":"caf\xc3\xa9 / \\u0001 \\t \xe2\x80\xa8 \xf0\x9f\x98\x80"}',
        "ff1047e7c7b143f787498677de39059aa09e0c1c2ca3d4c7fab592c834c9ca75",
    ),
    (
        b'{"messages":[{"role":"user","content":"What is 2+2?"}],"target":{"answer":"4"}}',
        b'{"messages":[{"content":"What is 2+2?","role":"user"}],"target":{"answer":"4"}}',
        "1ef8db022b31be9b5ad3d1f545a61e5f393754affb85a5975aefdc2252a2b612",
    ),
    (
        b'{"n": [' + ", ".join(NUMBERS).encode() + b"]}",
        b'{"n":[' + ",".join(map(spec_number, NUMBERS)).encode() + b"]}",
        "eaa030d54d38ae09eb7424bdea491feb462bdf23374bf13739258d8ae9ad3db0",
    ),
]


@pytest.mark.parametrize(("raw", "canonical", "oid"), GOLDEN_DATAPOINTS)
def test_datapoint_golden_vectors(raw: bytes, canonical: bytes, oid: str) -> None:
    assert canonicalize(raw) == canonical
    assert hash_object(Kind.DATAPOINT, canonical).hex() == oid
    # The id is defined independently of dsv's code: blake3 of tag, NUL, body.
    assert blake3.blake3(b"datapoint\x00" + canonical).hexdigest() == oid


def test_bulk_hashing_gives_each_body_its_own_id() -> None:
    # One tagged hasher is copied per body: no state may leak from one body to the next.
    bodies = [canonical for _, canonical, _ in GOLDEN_DATAPOINTS] * 2
    assert [oid.hex() for oid in hash_objects(Kind.DATAPOINT, bodies)] == [
        oid for _, _, oid in GOLDEN_DATAPOINTS
    ] * 2
    assert hash_objects(Kind.PAGE, [b"x"]) == [hash_object(Kind.PAGE, b"x")]


def _golden_chain() -> tuple[bytes, Dataset, Tree, Commit]:
    dp = bytes.fromhex(GOLDEN_DATAPOINTS[2][2])
    page = hash_object(Kind.PAGE, dp)
    dataset = Dataset(Format("jsonl"), ("id",), 1, content_id(dp), (Slice(page, 0, 1),))
    ds_oid = hash_object(Kind.DATASET, encode_object(dataset))
    tree = Tree((TreeEntry("evals/qa.jsonl", ds_oid),))
    commit = Commit(
        hash_object(Kind.TREE, encode_object(tree)),
        (),
        "Ada <ada@example.com>",
        1767225600,
        60,
        "first\n",
    )
    return page, dataset, tree, commit


def test_structured_golden_vectors() -> None:
    page, dataset, tree, commit = _golden_chain()
    assert page.hex() == "675bc64ce6297c679276d72bfe386c1627ffc3cf93936db0c2abdaceff10cfb3"
    assert encode_object(dataset).hex() == (
        "9594a56a736f6e6c9090c40091a2696401c4203b6d92a50285cd659e07425aa27aa7fb6c96076aeea1da"
        "4866a7b159182f897a9193c420675bc64ce6297c679276d72bfe386c1627ffc3cf93936db0c2abdaceff"
        "10cfb30001"
    )
    assert hash_object(Kind.DATASET, encode_object(dataset)).hex() == (
        "1ea42fee77197394b09b5c28b18105626dc775db4ed13a12b8fb53e3cc763671"
    )
    assert hash_object(Kind.TREE, encode_object(tree)).hex() == (
        "4672a21c99127463aa3ee2c033c647ce8ac772b33cc292206bf48ac124dff1ae"
    )
    assert hash_object(Kind.COMMIT, encode_object(commit)).hex() == (
        "27def1745d0134ccd7946b45e91be9f8b38a31578f4614cf14b9e9320ebcf0f2"
    )
    assert content_id(b"").hex() == (
        "d0f669548b6fa823608dc1a44bcb0f19cdf14e895e06952a070183e9161ee131"
    )


def test_kinds_never_share_ids() -> None:
    body = b"{}"
    assert len({hash_object(kind, body) for kind in Kind}) == len(Kind)


def test_structured_objects_round_trip_and_refuse_other_byte_forms() -> None:
    _, dataset, _, commit = _golden_chain()
    assert decode_dataset(encode_object(dataset)) == dataset
    assert decode_commit(encode_object(commit)) == commit
    # Same commit, but time encoded as a 64-bit int instead of the smallest form.
    body = bytearray(encode_object(commit))
    small = body.index(bytes.fromhex("ce6955b900"))  # uint32 1767225600
    noncanonical = bytes(body[:small]) + b"\xcf" + (1767225600).to_bytes(8, "big")
    noncanonical += bytes(body[small + 5 :])
    with pytest.raises(CorruptObject, match="not in canonical form"):
        decode_commit(noncanonical)
    with pytest.raises(CorruptObject, match="not a valid commit"):
        decode_commit(b"\x93\x01\x02\x03")


def test_encode_canonical_rejects_what_json_cannot_carry() -> None:
    from dsv.canonical import CanonicalError, encode_canonical

    assert encode_canonical({"b": None, "a": 1.5}) == b'{"a":1.5,"b":null}'
    for bad in ({"x": float("nan")}, {"x": [1, {"y": float("inf")}]}):
        with pytest.raises(CanonicalError, match="not a JSON number"):
            encode_canonical(bad)
    with pytest.raises(CanonicalError, match="unpaired surrogate"):
        encode_canonical({"x": "\ud800"})
    with pytest.raises(CanonicalError, match=r"^number has too many digits \(at most 4300\)$"):
        encode_canonical({"x": 10**5000})


def test_split_oids_keeps_every_byte_value() -> None:
    # Ids are raw bytes: a newline (or any byte) inside one must not break the split.
    oids = [bytes([b]) * OID_SIZE for b in (0, 10, 13, 255)] + [bytes(range(32))]
    assert split_oids(b"".join(oids)) == oids
    assert split_oids(memoryview(b"".join(oids))[OID_SIZE:]) == oids[1:]
    assert split_oids(b"") == []


def test_format_md_states_the_golden_vectors() -> None:
    """docs/format.md §8 gives every vector this file checks, and each holds by its own hash."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "format.md").read_text()
    [block] = re.findall(r"```golden\n(.*?)```", text, re.S)
    vectors = re.findall(r"^(\w+) ([0-9a-f]{64})\n +([0-9a-f]+)$", block, re.M)
    for kind, oid, body in vectors:
        assert blake3.blake3(kind.encode() + b"\0" + bytes.fromhex(body)).hexdigest() == oid
    page, dataset, tree, commit = _golden_chain()
    expected = [("datapoint", oid, canonical.hex()) for _, canonical, oid in GOLDEN_DATAPOINTS]
    expected.append(("page", page.hex(), bytes.fromhex(GOLDEN_DATAPOINTS[2][2]).hex()))
    for kind, obj in ((Kind.DATASET, dataset), (Kind.TREE, tree), (Kind.COMMIT, commit)):
        body = encode_object(obj)
        expected.append((kind.name.lower(), hash_object(kind, body).hex(), body.hex()))
    assert vectors == expected
    # The table of numbers is the spec's rule applied to each (tests/test_canonical.py).
    [table] = re.findall(r"```numbers\n(.*?)```", text, re.S)
    rows = [tuple(line.split()) for line in table.splitlines()]
    assert rows == [(n, spec_number(n)) for n in NUMBERS]
