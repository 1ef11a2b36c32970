"""Deterministic seed-like chat datapoints, and a second version with 1% edited, 0.5% deleted
and 0.5% added, for the benchmarks (docs/performance.md).

    python -m benchmarks.generate --count 100000 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

__all__ = ["generate", "make_record"]

_WORDS = (  # noqa: SIM905 - one readable block of words
    "the model answer question context user assistant system retrieval document evidence "
    "policy refund order account shipping invoice customer support ticket error latency "
    "token budget prompt completion summary citation source paragraph table figure claim "
    "verify correct incorrect partial reasoning step final result metric score label "
    "french german spanish italian capital river mountain city population year century "
    "python function variable loop exception import module class method return value"
).split()
_TAGS = ["easy", "medium", "hard", "rag", "chat", "tool", "safety", "math", "code", "geo"]


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def make_record(index: int, rng: random.Random) -> dict[str, object]:
    """One chat datapoint of roughly 900 bytes as JSON."""
    question = _sentence(rng, rng.randint(8, 16))
    return {
        "id": f"dp-{index:07d}",
        "inputs": {"question": question, "context": _sentence(rng, rng.randint(36, 52))},
        "messages": [
            {"role": "system", "content": "You are a careful assistant. Cite the context."},
            {"role": "user", "content": question},
        ],
        "target": {"answer": _sentence(rng, rng.randint(10, 20)), "score": rng.randint(1, 5)},
        "tags": sorted(rng.sample(_TAGS, 2)),
    }


def generate(count: int, out: Path, *, seed: int = 2026) -> tuple[Path, Path]:
    """Write v1.jsonl and v2.jsonl under `out`; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    v1, v2 = out / "v1.jsonl", out / "v2.jsonl"
    changes = random.Random(seed + 1)
    edited = set(changes.sample(range(count), count // 100))
    remaining = [i for i in range(count) if i not in edited]
    deleted = set(changes.sample(remaining, count // 200))
    added_after = set(changes.sample(remaining, count // 200))
    next_id = count
    with open(v1, "w") as a, open(v2, "w") as b:
        for i in range(count):
            record = make_record(i, rng)
            line = json.dumps(record) + "\n"
            a.write(line)
            if i in edited:
                target = dict(record["target"])  # type: ignore[call-overload]
                target["answer"] = _sentence(changes, 12)
                record = {**record, "target": target}
                line = json.dumps(record) + "\n"
            if i not in deleted:
                b.write(line)
            if i in added_after:
                b.write(json.dumps(make_record(next_id, changes)) + "\n")
                next_id += 1
    return v1, v2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for path in generate(args.count, args.out):
        print(path, path.stat().st_size)


if __name__ == "__main__":
    main()
