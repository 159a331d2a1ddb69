"""Clocks. The functional core never reads the wall clock: it is handed one of these.

The live services pass a :class:`MonotonicClock`; the virtual-time simulator and the tests pass a
:class:`ManualClock` they advance themselves, so the same objects run in both.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic time line (the origin is arbitrary)."""
        ...


class MonotonicClock:
    """Real time, optionally sped up: ``scale=10`` makes 1 wall second count as 10 seconds."""

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("clock scale must be positive")
        self.scale = scale
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.scale

    def wall_seconds(self, model_seconds: float) -> float:
        """How long to really wait for ``model_seconds`` of modelled time to pass."""
        return model_seconds / self.scale


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds

    def set(self, t: float) -> None:
        if t < self._now:
            raise ValueError("a clock cannot go backwards")
        self._now = t
