"""``round_robin``: a plain fleet behind a Service; only the engine's own prefix cache helps."""

from __future__ import annotations

from collections.abc import Sequence

from symphony_scheduler.policies.base import IgnoresAdvisories, Placement
from symphony_scheduler.state import NodeRecord, SessionRecord


class RoundRobinPolicy(IgnoresAdvisories):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def place(self, nodes: Sequence[NodeRecord], session: SessionRecord, prompt_tokens: int) -> Placement:
        ordered = sorted(nodes, key=lambda n: n.node_id)
        node = ordered[self._next % len(ordered)]
        self._next += 1
        return Placement(node.node_id, "round_robin")
