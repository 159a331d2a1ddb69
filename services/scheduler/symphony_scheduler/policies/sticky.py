"""``sticky``: session affinity, as InferCept / CachedAttention do.

A session's first turn goes to the least-loaded node, which becomes its home; every later turn
goes home while that node is healthy. Between turns the home node offloads the K,V to host memory
on its own (memory pressure); the policy never moves it elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from symphony_scheduler.policies.base import IgnoresAdvisories, Placement
from symphony_scheduler.policies.scoring import load_score, pick_best
from symphony_scheduler.state import NodeRecord, SessionRecord


class StickyPolicy(IgnoresAdvisories):
    name = "sticky"

    def place(self, nodes: Sequence[NodeRecord], session: SessionRecord, prompt_tokens: int) -> Placement:
        home = session.home_node
        if home is not None and any(n.node_id == home for n in nodes):
            return Placement(home, "home")
        node, _ = pick_best(nodes, session, prompt_tokens, [(load_score, 1.0)])
        return Placement(node.node_id, "new_session" if home is None else "home_gone")
