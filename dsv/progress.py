"""How long work reports how far it got: one struct and one callback type, for every layer.

The library calls a `ProgressFn` it was given (or nothing: None costs one test per report);
only the CLI draws anything.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

__all__ = ["Progress", "ProgressFn", "Step", "report_every"]


class Progress(msgspec.Struct, frozen=True):
    """A step's state: `done` of `total` (0: unknown) `unit`s in `phase` (e.g. 'writing
    objects'); `bytes` is what a transfer moved so far (0 when it moves none)."""

    phase: str
    done: int
    total: int
    bytes: int = 0
    unit: str = "objects"


ProgressFn = Callable[[Progress], None]


def report_every(total: int) -> int:
    """How many items between two reports of `total`: ~200 reports at most, so a report
    stays cheap beside the work however fine-grained the loop."""
    return max(1, total // 200)


class Step:
    """One phase of `total` units (0: unknown) reported through `progress`: from 0, never
    backwards, never past `total`, and ending at it (`finish`)."""

    def __init__(self, progress: ProgressFn, phase: str, total: int, unit: str = "objects") -> None:
        self.progress = progress
        self.phase = phase
        self.total = total
        self.unit = unit
        self.done = 0
        progress(Progress(phase, 0, total, unit=unit))

    def to(self, done: int) -> None:
        """Report `done` units, if that is further than before."""
        if self.total:
            done = min(done, self.total)
        if done > self.done:
            self.done = done
            self.progress(Progress(self.phase, done, self.total, unit=self.unit))

    def within(self, base: int) -> Callable[[int], None]:
        """A callback for part of the work that starts at `base` units and counts from 0."""
        return lambda n: self.to(base + n)

    def finish(self) -> None:
        """The phase is over: report it complete (an unknown total becomes what was done)."""
        if not self.total:
            self.total = self.done
            self.progress(Progress(self.phase, self.done, self.total, unit=self.unit))
        else:
            self.to(self.total)
