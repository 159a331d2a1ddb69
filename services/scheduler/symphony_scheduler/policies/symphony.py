"""``symphony``: place each turn before it exists, using the advisory's ETA to hide K,V movement.

For every candidate node the policy estimates when the turn would complete there:

    expected = max(0, bring_s - eta)      # K,V still moving when the turn arrives
             + move_penalty * bring_s     # moving K,V costs links and memory even when hidden
             + waiting_tokens / prefill   # prefill work queued ahead of the turn
             + out_tokens * step(batch)   # decode at the node's batch size, counting the turns
                                          # other advisories already sent there

``bring_s`` is the cheapest way to get the session's K,V onto that node's GPU: nothing when it is
already there, tokens * kv_bytes_per_token / bandwidth for promotion from the node's own host or
disk tier (``host_link_gbps``) or a transfer from a peer (``network_gbps``), or a warm-up prefill of
the transcript. The node with the smallest estimate wins and gets a Prepare, so an overloaded home
node loses to a light peer whenever the transfer fits in the ETA, and a node with the K,V hot and a
moderate load keeps the session. Without an advisory the same estimate runs at request time with
ETA 0, which keeps sessions home unless their home is much busier.

The decision on an advisory is deferred (``advice_delay_s``) until shortly before the turn is due,
leaving twice the slowest K,V move of time: typing a prompt takes tens of seconds, and the load seen
when the user started typing says little about the load when the turn arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from symphony_scheduler.policies.base import Placement
from symphony_scheduler.state import NodeRecord, SessionRecord

DEFAULT_KV_BYTES_PER_TOKEN = 131_072  # Llama-3.1-8B, BF16


@dataclass(frozen=True)
class CostModel:
    """Constants of the estimate; defaults follow CALIBRATION.md for Llama-3.1-8B on an A100."""

    prefill_tokens_per_s: float = 12_000.0
    disk_gbps: float = 5.0
    default_host_link_gbps: float = 24.8
    default_network_gbps: float = 12.5
    base_step_s: float = 0.010
    batch_knee: float = 16.0
    expected_output_tokens: int = 256
    move_penalty: float = 0.25
    switch_margin: float = 0.2  # leave the node holding the K,V only for a clearly better one
    min_lead_s: float = 2.0  # decide at least this long before the turn is due


@dataclass(frozen=True)
class KvPlan:
    seconds: float
    source: str | None  # None: nothing to move (hot on GPU, or no K,V exists yet)
    peer_node_id: str = ""
    reason: str = "no_kv"


class SymphonyPolicy:
    name = "symphony"

    def __init__(self, cost: CostModel | None = None) -> None:
        self.cost = cost or CostModel()

    # -- the estimate ---------------------------------------------------------------------------
    def _bytes(self, node: NodeRecord, tokens: int) -> float:
        return tokens * float(node.registration.kv_bytes_per_token or DEFAULT_KV_BYTES_PER_TOKEN)

    def _host_gbps(self, node: NodeRecord) -> float:
        return node.registration.host_link_gbps or self.cost.default_host_link_gbps

    def _net_gbps(self, a: NodeRecord | None, b: NodeRecord) -> float:
        rates = [n.registration.network_gbps for n in (a, b) if n is not None and n.registration.network_gbps]
        return min(rates) if rates else self.cost.default_network_gbps

    def _tier_read_s(self, node: NodeRecord, tier: str, tokens: int) -> float:
        nbytes = self._bytes(node, tokens)
        if tier == "gpu":
            return 0.0
        host = nbytes / (self._host_gbps(node) * 1e9)
        return host if tier == "host" else host + nbytes / (self.cost.disk_gbps * 1e9)

    def kv_plan(self, node: NodeRecord, session: SessionRecord, by_id: dict[str, NodeRecord]) -> KvPlan:
        """The cheapest way to have the session's K,V on ``node``'s GPU, and how long it takes."""
        tokens = max([session.tokens, *(loc.tokens for loc in session.locations.values())])
        if tokens <= 0:
            return KvPlan(0.0, None, reason="no_kv")
        recompute_s = tokens / self.cost.prefill_tokens_per_s
        best = KvPlan(recompute_s, "recompute" if session.transcript else None, reason="kv_recompute")
        local = session.locations.get(node.node_id)
        if local is not None:
            missing = max(0, tokens - local.tokens) / self.cost.prefill_tokens_per_s
            seconds = self._tier_read_s(node, local.tier, local.tokens) + missing
            if local.tier == "gpu" and missing == 0:
                return KvPlan(0.0, None, reason="kv_gpu")
            if seconds <= best.seconds:
                best = KvPlan(seconds, "local", reason="kv_local")
        for peer_id, loc in session.locations.items():
            peer = by_id.get(peer_id)
            if peer_id == node.node_id or peer is None:
                continue
            nbytes = self._bytes(node, loc.tokens)
            missing = max(0, tokens - loc.tokens) / self.cost.prefill_tokens_per_s
            seconds = (
                self._tier_read_s(peer, loc.tier, loc.tokens)
                + nbytes / (self._net_gbps(peer, node) * 1e9)
                + missing
            )
            if seconds < best.seconds:
                best = KvPlan(seconds, "peer", peer_id, reason="kv_peer")
        return best

    def expected_s(self, node: NodeRecord, plan: KvPlan, eta_s: float) -> float:
        c = self.cost
        # Turns already advised here arrive about when this one does: count them as load.
        batch = node.requests + node.advised + 1
        decode = c.expected_output_tokens * c.base_step_s * (1.0 + batch / c.batch_knee)
        queue = node.load.waiting_tokens / c.prefill_tokens_per_s
        if batch > node.max_num_seqs:  # a full batch: the turn waits for a slot
            decode *= batch / node.max_num_seqs
        late = max(0.0, plan.seconds - eta_s)
        return late + c.move_penalty * plan.seconds + queue + decode

    def _choose(
        self, nodes: Sequence[NodeRecord], session: SessionRecord, eta_s: float
    ) -> tuple[NodeRecord, KvPlan]:
        by_id = {n.node_id: n for n in nodes}
        holder = session.best_location()
        home = holder[0] if holder is not None and holder[0] in by_id else None
        best: tuple[float, int, str] | None = None
        chosen: tuple[NodeRecord, KvPlan] | None = None
        home_choice: tuple[float, NodeRecord, KvPlan] | None = None
        for node in nodes:
            plan = self.kv_plan(node, session, by_id)
            key = (self.expected_s(node, plan, eta_s), node.requests, node.node_id)
            if node.node_id == home:
                home_choice = (key[0], node, plan)
            if best is None or key < best:
                best, chosen = key, (node, plan)
        assert chosen is not None and best is not None
        # Hysteresis: moving K,V for a marginal gain thrashes links and memory turn after turn.
        if home_choice is not None and best[0] > home_choice[0] * (1.0 - self.cost.switch_margin):
            return home_choice[1], home_choice[2]
        return chosen

    # -- the protocol ---------------------------------------------------------------------------
    def advice_delay_s(self, nodes: Sequence[NodeRecord], session: SessionRecord, eta_s: float) -> float:
        """Decide as late as the slowest K,V move allows (twice over), never later than
        ``min_lead_s`` before the turn: an advisory sent while the user starts typing a long
        prompt would otherwise be placed on the load of half a minute earlier. Recomputing is
        always possible, so its time bounds every node's move."""
        tokens = max([session.tokens, *(loc.tokens for loc in session.locations.values())])
        worst = tokens / self.cost.prefill_tokens_per_s
        return max(0.0, eta_s - max(self.cost.min_lead_s, 2.0 * worst))

    def on_advice(
        self, nodes: Sequence[NodeRecord], session: SessionRecord, eta_s: float
    ) -> Placement | None:
        node, plan = self._choose(nodes, session, eta_s)
        return Placement(node.node_id, plan.reason, plan.source, plan.peer_node_id)

    def place(self, nodes: Sequence[NodeRecord], session: SessionRecord, prompt_tokens: int) -> Placement:
        advice = session.advice
        if advice is not None and advice.node_id is not None:
            if any(n.node_id == advice.node_id for n in nodes):
                return Placement(advice.node_id, "advised")
            reason = "advised_node_gone"
        elif advice is not None:
            reason = "advice_not_placed_yet"  # the turn came well before its advisory's ETA
        else:
            reason = "no_advisory"
        node, plan = self._choose(nodes, session, 0.0)
        # Only a peer transfer needs an order at request time: a node finds its own tiers itself and
        # recomputes what it lacks.
        if plan.source == "peer":
            return Placement(node.node_id, reason, "peer", plan.peer_node_id)
        return Placement(node.node_id, reason)
