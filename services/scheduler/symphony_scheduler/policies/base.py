"""The one protocol every routing policy implements, and the registry that names them.

A policy sees the healthy candidate nodes and the session's record and answers three questions:
how long an advisory's decision may wait (``advice_delay_s``),
where should an advised turn go (``on_advice``, may return ``None`` when the policy ignores
advisories) and where does a turn go now (``place``). It does no I/O and reads no clock, so the
live scheduler and the virtual-time simulator run the same objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from symphony.errors import InvalidArgument
from symphony_scheduler.state import NodeRecord, SessionRecord


@dataclass(frozen=True)
class Placement:
    """A policy's answer: the node, why, and how to bring the session's K,V there (if at all)."""

    node_id: str
    reason: str
    source: str | None = None  # None: no Prepare; else "local" | "peer" | "recompute"
    peer_node_id: str = ""


class Policy(Protocol):
    name: str

    def advice_delay_s(self, nodes: Sequence[NodeRecord], session: SessionRecord, eta_s: float) -> float:
        """How long the decision on an advisory may wait: deciding late sees fresher load, as long
        as the K,V can still be moved before the turn arrives. 0 decides at once."""
        ...

    def on_advice(
        self, nodes: Sequence[NodeRecord], session: SessionRecord, eta_s: float
    ) -> Placement | None: ...

    def place(self, nodes: Sequence[NodeRecord], session: SessionRecord, prompt_tokens: int) -> Placement:
        """Picks a node for a turn that has arrived; ``nodes`` is never empty."""
        ...


class IgnoresAdvisories:
    """For the baselines, which decide only when a turn arrives (as the systems they stand for do)."""

    def advice_delay_s(self, nodes: Sequence[NodeRecord], session: SessionRecord, eta_s: float) -> float:
        return 0.0

    def on_advice(
        self, nodes: Sequence[NodeRecord], session: SessionRecord, eta_s: float
    ) -> Placement | None:
        return None


PolicyFactory = Callable[[], Policy]


class PolicyRegistry:
    """Policies by name, so a flag or a config file selects one without ``if/elif`` chains."""

    def __init__(self) -> None:
        self._factories: dict[str, PolicyFactory] = {}

    def register(self, name: str, factory: PolicyFactory) -> None:
        if name in self._factories:
            raise ValueError(f"policy {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: str) -> Policy:
        try:
            factory = self._factories[name]
        except KeyError:
            raise InvalidArgument(
                "policy", f"unknown policy {name!r}; choose one of {self.names()}"
            ) from None
        return factory()
