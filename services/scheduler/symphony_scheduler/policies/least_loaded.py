"""``least_loaded``: request-level balancing that ignores where the K,V lives."""

from __future__ import annotations

from collections.abc import Sequence

from symphony_scheduler.policies.base import IgnoresAdvisories, Placement
from symphony_scheduler.policies.scoring import load_score, pick_best
from symphony_scheduler.state import NodeRecord, SessionRecord


class LeastLoadedPolicy(IgnoresAdvisories):
    name = "least_loaded"

    def place(self, nodes: Sequence[NodeRecord], session: SessionRecord, prompt_tokens: int) -> Placement:
        node, _ = pick_best(nodes, session, prompt_tokens, [(load_score, 1.0)])
        return Placement(node.node_id, "least_loaded")
