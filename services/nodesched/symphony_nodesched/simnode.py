"""One simulated node: engine + K,V tier manager + transfer links, behind an I/O-free event API.

The virtual-time simulator drives it directly (``submit``/``prepare``/``release`` at ``now``, then
``advance`` to the next event time); the live ``sim`` backend drives the very same object from an
asyncio task on a (scaled) monotonic clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from symphony.tokens import MessageLike, prompt_token_ids
from symphony_nodesched.blockhash import block_hashes, common_blocks
from symphony_nodesched.costmodel import CostModel
from symphony_nodesched.engine import (
    EngineInfo,
    EngineRequest,
    EngineStatus,
    KvPiece,
    PrepareOutcome,
    Residency,
    TierUsage,
)
from symphony_nodesched.events import NodeEvent
from symphony_nodesched.kvtiers import DISK, GPU, HOST, PEER, TIER_NAMES, TierManager
from symphony_nodesched.profile import Profile
from symphony_nodesched.simengine import PRIVATE_KEY_SEP, SimEngine

SOURCES = ("auto", "local", "peer", "recompute")
LAYERS_PER_PIECE = 8  # FetchKv serves K,V in layer ranges of this size


class SimNode:
    def __init__(self, profile: Profile, node_id: str, rng_seed: int = 0) -> None:
        self.profile = profile
        self.node_id = node_id
        self.rng_seed = rng_seed  # the model is deterministic; kept for the simulator's contract
        self.tiers = TierManager(profile)
        self.cost = CostModel(profile)
        self.engine = SimEngine(profile, self.tiers, self.cost)

    @property
    def info(self) -> EngineInfo:
        p = self.profile
        return EngineInfo(
            kind="sim",
            model=p.model,
            profile=p.name,
            kv_bytes_per_token=p.kv_bytes_per_token,
            host_link_gbps=p.host_link_gbps,
            network_gbps=p.network_gbps,
            max_num_seqs=p.max_num_seqs,
            tiers=self._tier_usage(),
        )

    # ---- orders ---------------------------------------------------------------------------------
    def submit(self, req: EngineRequest, now: float) -> None:
        """A turn arrives; raises InvalidArgument when it can never fit this node."""
        self.engine.submit(req, now)
        self.engine.start_step(now)

    def abort(self, request_id: str, now: float) -> None:
        """The client went away: stop the request and keep what it computed in the cache."""
        self.engine.abort(request_id, now)

    def prepare(
        self,
        session_id: str,
        source: str,
        messages: Sequence[MessageLike],
        peer: SimNode | None,
        eta_s: float,
        now: float,
        peer_tokens: int = 0,
    ) -> PrepareOutcome:
        """Promotes a session's K,V toward the GPU ahead of its next turn.

        ``peer`` is the peer node in the simulator; the live backend passes ``peer_tokens`` fetched
        over FetchKv instead (the token ids then come from the transcript in ``messages``). The copy
        starts at once, whatever ``eta_s`` says: prefetched K,V is reclaimable, so starting early
        never hurts running requests.
        """
        entry = self.tiers.get(session_id)
        peer_entry = peer.tiers.get(session_id) if peer is not None else None
        if entry is not None and entry.pinned:
            return PrepareOutcome(True, "local", 0.0, entry.tokens)
        if source == "auto":
            if entry is not None and entry.tokens > 0:
                source = "local"
            elif (peer_entry is not None and peer_entry.tokens > 0) or peer_tokens > 0:
                source = "peer"
            elif messages:
                source = "recompute"
            else:
                return PrepareOutcome(False, "none", 0.0, 0)
        if source == "peer" and entry is not None and entry.tokens > 0:
            peer_has = peer_entry.tokens if peer_entry is not None else peer_tokens
            if peer_has <= entry.tokens:
                source = "local"  # this node already holds as much as the peer: no transfer needed
        if source == "local":
            if entry is None or entry.tokens == 0:
                return PrepareOutcome(False, "none", 0.0, 0)
            ready = self.tiers.prepare_local(entry, now)
            return self._outcome("local", ready, entry.tokens)
        if source == "peer":
            if peer_entry is not None:
                tokens, hashes = peer_entry.tokens, list(peer_entry.block_hashes)
            else:
                ids = prompt_token_ids(messages)[:peer_tokens]
                tokens, hashes = len(ids), block_hashes(ids, self.profile.block_size)
            if tokens == 0:
                return PrepareOutcome(False, "none", 0.0, 0)
            ready = self.tiers.prepare_remote(session_id, tokens, hashes, now)
            return self._outcome("peer", ready, tokens)
        ids = prompt_token_ids(messages)
        if not ids or not messages:
            return PrepareOutcome(False, "none", 0.0, 0)
        have = 0
        if entry is not None:
            bs = self.profile.block_size
            have = min(entry.tokens, common_blocks(entry.block_hashes, block_hashes(ids, bs)) * bs)
        self.engine.submit_warmup(session_id, ids, now)
        self.engine.start_step(now)
        queue = self.engine.step_time_ema * (1 + len(self.engine.waiting))
        return self._outcome("recompute", queue + self.cost.prefill_s(len(ids) - have, have), len(ids))

    @staticmethod
    def _outcome(source: str, ready: float, tokens: int) -> PrepareOutcome:
        if math.isinf(ready):
            return PrepareOutcome(False, source, 0.0, tokens)
        return PrepareOutcome(True, source, ready, tokens)

    def release(self, session_id: str, prefetch_only: bool, now: float) -> int:
        return self.tiers.release(session_id, prefetch_only, now)

    def kv_pieces(self, session_id: str) -> list[KvPiece]:
        """The session's K,V as a peer receives it (modelled: sizes only), or [] if not held."""
        e = self.tiers.get(session_id)
        if e is None or e.tokens == 0 or any(t == PEER for t in e.layers):
            return []
        per_layer = self.tiers.blocks(e.tokens) * self.tiers.unit_bytes
        L = self.profile.num_layers
        return [
            KvPiece(
                start,
                min(start + LAYERS_PER_PIECE, L),
                e.tokens,
                per_layer * (min(start + LAYERS_PER_PIECE, L) - start),
            )
            for start in range(0, L, LAYERS_PER_PIECE)
        ]

    # ---- time -----------------------------------------------------------------------------------
    def next_event_time(self) -> float | None:
        times = [t for t in (self.engine.next_event_time(), self.tiers.next_event_time()) if t is not None]
        return min(times) if times else None

    def advance(self, now: float) -> list[NodeEvent]:
        """Processes every step end and transfer up to ``now``, in time order."""
        events: list[NodeEvent] = []
        while True:
            t_engine, t_tiers = self.engine.next_event_time(), self.tiers.next_event_time()
            if t_tiers is not None and t_tiers <= now and (t_engine is None or t_tiers <= t_engine):
                events.extend(self.tiers.advance(t_tiers))
                self.engine.on_tiers_changed(t_tiers)
                self.engine.start_step(t_tiers)
            elif t_engine is not None and t_engine <= now:
                events.extend(self.engine.finish_step(t_engine))
            else:
                break
        if self.engine.step is None and self.engine.has_work():
            self.engine.start_step(now)
        return events

    # ---- status ---------------------------------------------------------------------------------
    def _tier_usage(self) -> list[TierUsage]:
        return [
            TierUsage(TIER_NAMES[t], self.tiers.capacity_bytes(t), self.tiers.used_bytes(t))
            for t in (GPU, HOST, DISK)
        ]

    def status(self, include_sessions: bool) -> EngineStatus:
        sessions: list[Residency] = []
        if include_sessions:
            L = self.profile.num_layers
            for key, e in self.tiers.entries.items():
                if e.tokens == 0 or PRIVATE_KEY_SEP in key or any(t == PEER for t in e.layers):
                    continue  # empty, request-private, or still arriving from a peer
                sessions.append(
                    Residency(
                        session_id=key,
                        tokens=e.tokens,
                        tier=TIER_NAMES[e.slowest_tier()],
                        gpu_fraction=e.gpu_layers() / L,
                        pinned=e.pinned,
                        prepared=e.prepared,
                    )
                )
        return EngineStatus(self.engine.load(), self._tier_usage(), sessions)
