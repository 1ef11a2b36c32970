"""The sorted id index the owner-less dialects find cursors and ids with."""

from __future__ import annotations

import os

from dsv.server.dialects.files import OidIndex


def test_an_id_is_found_at_its_first_copy() -> None:
    ids = [os.urandom(32) for _ in range(500)]
    ids[300] = ids[7]  # a copy of one datapoint
    index = OidIndex(b"".join(ids))
    assert len(index) == 500
    assert [index.position(oid) for oid in ids[:5]] == [0, 1, 2, 3, 4]
    assert index.position(ids[7]) == 7 and index.position(ids[300]) == 7
    assert index.position(ids[499]) == 499
    assert index.position(os.urandom(32)) == -1
    # Ids that start with a prefix: each with its position, copies in file order.
    assert list(index.positions(ids[7][:6])) == [(7, ids[7]), (300, ids[7])]


def test_ids_that_share_a_prefix_are_all_found() -> None:
    ids = [bytes([1, 2, 3]) + bytes([n]) * 29 for n in (9, 4, 7)] + [bytes(32)]
    index = OidIndex(b"".join(ids))
    assert [at for at, _ in index.positions(bytes([1, 2, 3]))] == [1, 2, 0]
    assert list(index.positions(bytes([1, 2, 4]))) == []


def test_an_empty_dataset_has_no_ids() -> None:
    index = OidIndex(b"")
    assert len(index) == 0 and index.position(bytes(32)) == -1
