"""Prometheus metrics of every component, built on a registry that the caller owns (no globals).

Names, labels and buckets follow DESIGN.md. Labels stay bounded: no session ids, turn indices
bucketed into six classes. The cache hit ratio is
``symphony_cached_prompt_tokens_total / symphony_prompt_tokens_total``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# TTFT and end-to-end latency: 10 ms to 60 s; TPOT: 1 ms to 1 s.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
TRANSFER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

TURN_LABELS = ("1", "2", "3", "4", "5-8", "9+")
ADVISORY_OUTCOMES = ("used", "late", "unused", "cancelled")
# Why a turn did not take the path its session's K,V or its advisory promised (see SchedulerMetrics).
FALLBACK_REASONS = ("node_failed", "advice_rerouted", "kv_recomputed", "prepare_failed")


def turn_label(turn_index: int) -> str:
    """The bounded ``turn`` label of a 0-based turn index (turn 1 is the first)."""
    n = turn_index + 1
    if n <= 4:
        return str(max(n, 1))
    return "5-8" if n <= 8 else "9+"


class TurnMetrics:
    """Per-turn latency and cache figures, exported by whichever component completes turns."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "symphony_turn_ttft_seconds",
            "Time to first token of a turn.",
            ["turn"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tpot = Histogram(
            "symphony_turn_tpot_seconds",
            "Time per output token after the first: (e2e - ttft)/(tokens - 1).",
            ["turn"],
            buckets=TPOT_BUCKETS,
            registry=registry,
        )
        self.e2e = Histogram(
            "symphony_turn_e2e_seconds",
            "End-to-end time of a turn.",
            ["turn"],
            buckets=E2E_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "symphony_prompt_tokens",
            "Prompt tokens of completed turns.",
            registry=registry,
        )
        self.completion_tokens = Counter(
            "symphony_completion_tokens",
            "Output tokens of completed turns.",
            registry=registry,
        )
        self.cached_prompt_tokens = Counter(
            "symphony_cached_prompt_tokens",
            "Prompt tokens served from a K,V cache tier.",
            ["tier"],
            registry=registry,
        )
        self.turns = Counter(
            "symphony_turns",
            "Turns finished, by outcome.",
            ["outcome"],
            registry=registry,
        )
        for tier in ("gpu", "host", "disk"):
            self.cached_prompt_tokens.labels(tier=tier)
        for outcome in ("ok", "error"):
            self.turns.labels(outcome=outcome)

    def observe_turn(
        self,
        turn_index: int,
        ttft_s: float,
        e2e_s: float,
        completion_tokens: int,
        prompt_tokens: int,
        cached_by_tier: dict[str, int],
    ) -> None:
        label = turn_label(turn_index)
        self.ttft.labels(turn=label).observe(ttft_s)
        self.e2e.labels(turn=label).observe(e2e_s)
        if completion_tokens > 1:
            self.tpot.labels(turn=label).observe((e2e_s - ttft_s) / (completion_tokens - 1))
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)
        for tier, n in cached_by_tier.items():
            if n:
                self.cached_prompt_tokens.labels(tier=tier).inc(n)
        self.turns.labels(outcome="ok").inc()


class SchedulerMetrics(TurnMetrics):
    """What the global scheduler knows: routing, advisories, sessions, nodes."""

    def __init__(self, registry: CollectorRegistry, policy: str) -> None:
        super().__init__(registry)
        self.policy = policy
        self.advisories = Counter(
            "symphony_advisories",
            "Advisories by outcome: used (the turn found its prepared node), "
            "late (the turn came before the K,V was ready), unused (expired or rerouted), cancelled.",
            ["outcome"],
            registry=registry,
        )
        for o in ADVISORY_OUTCOMES:
            self.advisories.labels(outcome=o)
        self.routing_decisions = Counter(
            "symphony_routing_decisions",
            "Routing decisions by policy and reason.",
            ["policy", "reason"],
            registry=registry,
        )
        self.sessions_active = Gauge(
            "symphony_sessions_active",
            "Sessions the scheduler tracks.",
            registry=registry,
        )
        self.node_load = Gauge(
            "symphony_node_load",
            "Requests running plus waiting on a node, as last reported.",
            ["node"],
            registry=registry,
        )
        self.nodes_healthy = Gauge(
            "symphony_nodes_healthy",
            "Nodes with a live lease.",
            registry=registry,
        )
        self.retries = Counter(
            "symphony_turn_retries",
            "Turns retried on another node after a node failed before the first token.",
            registry=registry,
        )
        self.fallbacks = Counter(
            "symphony_routing_fallbacks",
            "Turns or orders that fell back from the cache path, by reason: node_failed (retried "
            "elsewhere before the first token), advice_rerouted (the turn left the node its advisory "
            "prepared), kv_recomputed (the session had K,V on a node but is recomputed elsewhere, not moved there), "
            "prepare_failed (a Prepare order failed on its node).",
            ["reason"],
            registry=registry,
        )
        for reason in FALLBACK_REASONS:
            self.fallbacks.labels(reason=reason)

    def fallback(self, reason: str) -> None:
        """Counts one fallback; ``reason`` must be one of FALLBACK_REASONS (bounded label)."""
        if reason not in FALLBACK_REASONS:
            raise ValueError(f"unknown fallback reason {reason!r}")
        self.fallbacks.labels(reason=reason).inc()


class NodeMetrics:
    """What a node scheduler knows: its tiers and the K,V it moves."""

    def __init__(self, registry: CollectorRegistry, node_id: str) -> None:
        self.node_id = node_id
        self.tier_used_bytes = Gauge(
            "symphony_kv_tier_used_bytes",
            "Bytes of K,V held on each tier of a node.",
            ["node", "tier"],
            registry=registry,
        )
        self.tier_capacity_bytes = Gauge(
            "symphony_kv_tier_capacity_bytes",
            "Capacity of each K,V tier of a node.",
            ["node", "tier"],
            registry=registry,
        )
        self.transfers = Counter(
            "symphony_kv_transfers",
            "K,V transfers between tiers or nodes.",
            ["src", "dst"],
            registry=registry,
        )
        self.transfer_bytes = Counter(
            "symphony_kv_transfer_bytes",
            "Bytes of K,V moved between tiers or nodes.",
            ["src", "dst"],
            registry=registry,
        )
        self.transfer_seconds = Histogram(
            "symphony_kv_transfer_seconds",
            "Duration of K,V transfers.",
            ["src", "dst"],
            buckets=TRANSFER_BUCKETS,
            registry=registry,
        )
        self.engine_running = Gauge(
            "symphony_engine_requests_running",
            "Requests in the engine's running batch.",
            ["node"],
            registry=registry,
        )
        self.engine_waiting = Gauge(
            "symphony_engine_requests_waiting",
            "Requests waiting for the engine.",
            ["node"],
            registry=registry,
        )
        self.engine_kv_usage = Gauge(
            "symphony_engine_kv_usage_ratio",
            "Fraction of the engine's GPU K,V blocks in use.",
            ["node"],
            registry=registry,
        )
        self.prepares = Counter(
            "symphony_prepares",
            "Prepare orders by the source used.",
            ["node", "source"],
            registry=registry,
        )
        self.recomputed_tokens = Counter(
            "symphony_recomputed_prompt_tokens",
            "Prompt tokens the engine prefilled (not found in a cache).",
            ["node"],
            registry=registry,
        )

    def record_transfer(self, src: str, dst: str, nbytes: int, seconds: float) -> None:
        self.transfers.labels(src=src, dst=dst).inc()
        self.transfer_bytes.labels(src=src, dst=dst).inc(nbytes)
        self.transfer_seconds.labels(src=src, dst=dst).observe(seconds)
