"""Deployment commits and the version an environment holds of each dataset (dsv.deployment)."""

from __future__ import annotations

from dsv.deployment import deployment_message, deployment_paths, deployment_tree, source_of
from dsv.objects import Commit

A, B, C, D, E = (bytes([n]) * 32 for n in range(1, 6))


def _graph(
    commits: dict[bytes, tuple[tuple[bytes, ...], str, dict[str, bytes]]],
) -> tuple[dict[bytes, Commit], dict[bytes, dict[str, bytes]]]:
    return (
        {
            oid: Commit(b"t" * 32, parents, "X <x@y>", 0, 0, msg)
            for oid, (parents, msg, _) in commits.items()
        },
        {oid: tree for oid, (_, _, tree) in commits.items()},
    )


def test_source_follows_each_dataset_to_the_version_it_was_deployed_from() -> None:
    qa_old, qa_new, rag_new = b"q" * 32, b"Q" * 32, b"R" * 32
    deployed_rag = deployment_message("deploy rag", deployed=["rag.jsonl"])
    deployed_qa = deployment_message("deploy qa", deployed=["qa.jsonl"])
    commits, trees = _graph(
        {
            A: ((), "qa 1\n", {"qa.jsonl": qa_old}),
            B: ((A,), "both new\n", {"qa.jsonl": qa_new, "rag.jsonl": rag_new}),
            C: ((B,), deployed_rag, {"rag.jsonl": rag_new}),
            D: ((C, A), deployed_qa, {"qa.jsonl": qa_old, "rag.jsonl": rag_new}),
        }
    )
    assert deployment_paths(commits[D]) == (frozenset({"qa.jsonl"}), frozenset())
    assert deployment_paths(commits[B]) is None
    assert source_of(D, "qa.jsonl", commits.__getitem__, trees.__getitem__) == A
    assert source_of(D, "rag.jsonl", commits.__getitem__, trees.__getitem__) == B
    assert source_of(C, "qa.jsonl", commits.__getitem__, trees.__getitem__) is None
    assert deployment_tree(trees[C], trees[A], deployed=["qa.jsonl"]) == trees[D]


def test_a_message_cannot_claim_a_dataset_its_parent_does_not_hold() -> None:
    forged = deployment_message("deploy qa", deployed=["qa.jsonl"])
    commits, trees = _graph(
        {
            A: ((), "qa 1\n", {"qa.jsonl": b"q" * 32}),
            E: ((A,), forged, {"qa.jsonl": b"x" * 32}),
        }
    )
    # E says it deployed qa from A, but A holds another dataset there: E is its own source.
    assert source_of(E, "qa.jsonl", commits.__getitem__, trees.__getitem__) == E
    # An ordinary paragraph among the trailers makes it no deployment commit at all.
    assert deployment_paths(Commit(b"t" * 32, (A,), "X", 0, 0, "t\n\nDeploy: a\nnote\n")) is None
