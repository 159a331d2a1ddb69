"""Shared transfer links (host<->GPU, disk, network) as non-preemptive queues of per-layer copies.

A link moves one job at a time at its bandwidth. Waiting jobs are served by priority class
(a running request's load, then prefetches, then background demotions and write-behind), then by
layer index, then in arrival order — so several prefetches interleave their lower layers first and a
request that is waiting never queues behind a prefetch that has not started. No I/O, no clock: the
owner passes ``now``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

# Priority classes, most urgent first.
URGENT, PREFETCH, BACKGROUND = 0, 1, 2


@dataclass(eq=False)
class Job:
    """One layer of one session's K,V moving from ``src`` to ``dst``."""

    key: str
    src: str
    dst: str
    layer: int
    nbytes: int
    priority: int
    group: object
    epoch: int
    start: float = 0.0
    end: float = 0.0


@dataclass(order=True)
class _Queued:
    sort_key: tuple[int, int, int]
    job: Job = field(compare=False)


class Link:
    def __init__(self, name: str, gbps: float, latency_s: float = 0.0) -> None:
        self.name = name
        self.bytes_per_s = gbps * 1e9
        self.latency_s = latency_s
        self._queue: list[_Queued] = []
        self._seq = itertools.count()
        self.active: Job | None = None
        self.bytes_moved = 0

    def duration(self, nbytes: int) -> float:
        return self.latency_s + nbytes / self.bytes_per_s

    def enqueue(self, job: Job, now: float, valid: Callable[[Job], bool]) -> None:
        heapq.heappush(self._queue, _Queued((job.priority, job.layer, next(self._seq)), job))
        if self.active is None:
            self._start_next(now, valid)

    def backlog_s(self) -> float:
        """Seconds of work queued or in flight, as a readiness estimate."""
        return sum(self.duration(q.job.nbytes) for q in self._queue) + (
            self.active.end - self.active.start if self.active else 0.0
        )

    def next_event_time(self) -> float | None:
        return self.active.end if self.active else None

    def pop_finished(self, now: float, valid: Callable[[Job], bool]) -> list[Job]:
        """Completes every job ending at or before ``now``, starting the next one back to back."""
        done: list[Job] = []
        while self.active is not None and self.active.end <= now:
            job = self.active
            self.active = None
            self.bytes_moved += job.nbytes
            done.append(job)
            self._start_next(job.end, valid)
        return done

    def _start_next(self, now: float, valid: Callable[[Job], bool]) -> None:
        while self._queue:
            job = heapq.heappop(self._queue).job
            if not valid(job):  # cancelled while queued: costs no link time
                continue
            job.start, job.end = now, now + self.duration(job.nbytes)
            self.active = job
            return
