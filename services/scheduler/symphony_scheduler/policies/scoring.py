"""Composable routing pieces in the llm-d shape: filters, scorers clamped to [0, 1], one picker."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from symphony_scheduler.state import NodeRecord, SessionRecord

# Weights of a cached token by tier, as llm-d's precise prefix scorer uses for GPU and CPU blocks.
TIER_WEIGHTS = {"gpu": 1.0, "host": 0.8, "disk": 0.3}

Scorer = Callable[[NodeRecord, SessionRecord, int], float]


def clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def load_score(node: NodeRecord, session: SessionRecord, prompt_tokens: int) -> float:
    """1 for an idle node, 0 for a node whose batch is full."""
    return 1.0 - node.load_fraction


def cache_score(node: NodeRecord, session: SessionRecord, prompt_tokens: int) -> float:
    """Fraction of the prompt the node holds in K,V, each token weighted by its tier."""
    loc = session.locations.get(node.node_id)
    if loc is None or prompt_tokens <= 0:
        return 0.0
    return clamp01(TIER_WEIGHTS[loc.tier] * min(loc.tokens, prompt_tokens) / prompt_tokens)


def not_overloaded(threshold: float) -> Callable[[Sequence[NodeRecord]], Sequence[NodeRecord]]:
    """Drops nodes at or above ``threshold`` load, unless that would drop them all."""

    def apply(nodes: Sequence[NodeRecord]) -> Sequence[NodeRecord]:
        kept = [n for n in nodes if n.load_fraction < threshold and n.load.kv_usage < 0.98]
        return kept or nodes

    return apply


def pick_best(
    nodes: Sequence[NodeRecord],
    session: SessionRecord,
    prompt_tokens: int,
    scorers: Sequence[tuple[Scorer, float]],
) -> tuple[NodeRecord, float]:
    """The node with the highest weighted score; ties go to fewer requests, then the node id."""
    best: tuple[float, int, str] | None = None
    chosen = nodes[0]
    for node in nodes:
        score = sum(weight * clamp01(scorer(node, session, prompt_tokens)) for scorer, weight in scorers)
        key = (-score, node.requests, node.node_id)
        if best is None or key < best:
            best, chosen = key, node
    assert best is not None
    return chosen, -best[0]
