"""The C library's allocator tuning: what dsv sets, and what it leaves to the user."""

from __future__ import annotations

import pytest


def test_malloc_tuning_leaves_a_setting_of_the_user_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    from dsv.memory import limit_malloc_arenas, return_free_memory

    calls: list[tuple[int, int]] = []

    class Libc:
        def mallopt(self, option: int, value: int) -> int:
            calls.append((option, value))
            return 1

        def malloc_trim(self, pad: int) -> int:
            calls.append((0, pad))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    limit_malloc_arenas()
    assert calls == []  # the user's MALLOC_ARENA_MAX stands
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    limit_malloc_arenas()
    return_free_memory()
    assert calls == [(-8, 2), (0, 0)]
