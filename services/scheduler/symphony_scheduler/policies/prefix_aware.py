"""``prefix_aware``: cache- and load-aware scoring, the shape of llm-d's precise prefix scorer.

Score = cache (tokens of the prompt the node holds, weighted GPU 1.0 / host 0.8 / disk 0.3)
minus a load term; nodes above the overload threshold are filtered out first, so a node holding
the whole prefix still loses when its batch is nearly full.
"""

from __future__ import annotations

from collections.abc import Sequence

from symphony_scheduler.policies.base import IgnoresAdvisories, Placement
from symphony_scheduler.policies.scoring import cache_score, load_score, not_overloaded, pick_best
from symphony_scheduler.state import NodeRecord, SessionRecord


class PrefixAwarePolicy(IgnoresAdvisories):
    name = "prefix_aware"

    def __init__(self, cache_weight: float = 1.0, load_weight: float = 0.5, overload: float = 0.9) -> None:
        self.cache_weight = cache_weight
        self.load_weight = load_weight
        self._filter = not_overloaded(overload)

    def place(self, nodes: Sequence[NodeRecord], session: SessionRecord, prompt_tokens: int) -> Placement:
        candidates = self._filter(nodes)
        # load_score is 1 - load, so a positive weight on it is "minus a load term" up to a constant.
        node, _ = pick_best(
            candidates,
            session,
            prompt_tokens,
            [(cache_score, self.cache_weight), (load_score, self.load_weight)],
        )
        reason = "cache_hit" if node.node_id in session.locations else "cache_miss"
        if len(candidates) < len(nodes) and session.locations and node.node_id not in session.locations:
            reason = "overloaded"
        return Placement(node.node_id, reason)
