"""The scheduler's functional core: node registry, session map and policy, with no I/O.

Every method takes ``now`` (seconds) and returns the orders the shell must carry out, so the live
gRPC/HTTP service and the virtual-time simulator drive the very same object. The session map's
own view is updated on every route and finish, so decisions never wait for the next heartbeat.

An advisory is placed when it arrives, or later (``expire`` places it) if the policy prefers to
decide closer to the turn with fresher load (``Policy.advice_delay_s``); ``expire`` should run about
once per heartbeat. Advisory outcomes (``advice_outcomes``): *used* when the turn went to the node its advisory chose
and found its K,V ready (the summary's ``kv_load_s`` is 0), *late* when it went there but the K,V
was still moving, *unused* when the advisory expired or the turn went elsewhere, *cancelled*.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, OrderedDict
from collections.abc import Sequence

from symphony.errors import InvalidArgument, NotFound, Unavailable
from symphony.metrics import SchedulerMetrics
from symphony.tokens import prompt_token_count
from symphony.v1 import common_pb2, scheduler_pb2
from symphony_scheduler.commands import AdviceDecision, Command, PrepareCommand, ReleaseCommand, RouteDecision
from symphony_scheduler.policies.base import Placement, Policy
from symphony_scheduler.state import TIER_NAMES, Advice, KvLocation, NodeRecord, SessionRecord


class SchedulerCore:
    def __init__(
        self,
        policy: Policy,
        lease_s: float = 5.0,
        session_ttl_s: float = 900.0,
        *,
        metrics: SchedulerMetrics | None = None,
        advice_grace_s: float = 30.0,
        max_sessions: int = 1_000_000,
    ) -> None:
        if lease_s <= 0 or session_ttl_s <= 0 or advice_grace_s < 0 or max_sessions <= 0:
            raise ValueError("lease_s, session_ttl_s and max_sessions must be positive")
        self.policy = policy
        self.lease_s = lease_s
        self.session_ttl_s = session_ttl_s
        self.advice_grace_s = advice_grace_s
        self.max_sessions = max_sessions
        self.metrics = metrics
        self.nodes: dict[str, NodeRecord] = {}
        # Least recently active first, so TTL expiry and the size bound pop from the front.
        self.sessions: OrderedDict[str, SessionRecord] = OrderedDict()
        self.advice_outcomes: Counter[str] = Counter()
        self.route_reasons: Counter[str] = Counter()
        self._advice_heap: list[tuple[float, int, str]] = []  # (expires_at, seq, session)
        self._decide_heap: list[tuple[float, int, str]] = []  # (decide_at, seq, session)
        self._seq = itertools.count()
        self._removed: list[tuple[str, str]] = []
        # Sessions ended lately (session -> when): a node's report written before our Release reached
        # it must not bring them back as if a restart were being recovered from.
        self._ended: OrderedDict[str, float] = OrderedDict()
        if metrics is not None:
            metrics.sessions_active.set_function(lambda: len(self.sessions))
            metrics.nodes_healthy.set_function(lambda: len(self.nodes))

    # -- nodes ----------------------------------------------------------------------------------
    def register_node(self, reg: scheduler_pb2.RegisterNodeRequest, now: float) -> None:
        if not reg.node_id:
            raise InvalidArgument("node_id", "must not be empty")
        if not reg.address:
            raise InvalidArgument("address", "must be host:port of the node's NodeScheduler service")
        node = self.nodes.get(reg.node_id)
        if node is None:
            self.nodes[reg.node_id] = NodeRecord(registration=reg, last_seen=now, tiers=list(reg.tiers))
        else:
            node.registration = reg
            node.last_seen = now
            node.sequence = 0  # a restarted node counts its reports from 1 again

    def node_status(self, status: common_pb2.NodeStatus, now: float) -> None:
        """Applies a heartbeat: load, tiers and residency (which also rebuilds a fresh session map)."""
        node = self.nodes.get(status.node_id)
        if node is None:
            raise NotFound(f"node {status.node_id!r} is not registered: register again")
        node.last_seen = now
        if status.sequence and status.sequence < node.sequence:
            return  # a report overtaken by a newer one
        node.sequence = max(status.sequence, 1)
        node.load = status.load
        node.since_report = 0
        node.tiers = list(status.tiers)
        reported: set[str] = set()
        for res in status.sessions:
            reported.add(res.session_id)
            rec = self.sessions.get(res.session_id)
            if rec is None:
                if len(self.sessions) >= self.max_sessions or res.session_id in self._ended:
                    continue
                rec = SessionRecord(res.session_id, last_seen=now, tokens=res.tokens)
                self.sessions[res.session_id] = rec
                self.sessions.move_to_end(res.session_id, last=False)  # not recently active
            tier = TIER_NAMES.get(res.tier, "disk")
            rec.locations[node.node_id] = KvLocation(tier, res.tokens, res.prepared)
            rec.tokens = max(rec.tokens, res.tokens)
        for sid in node.sessions - reported:
            rec = self.sessions.get(sid)
            if rec is not None and rec.active_node != node.node_id:
                rec.locations.pop(node.node_id, None)
        node.sessions = reported
        if self.metrics is not None:
            self.metrics.node_load.labels(node=node.node_id).set(node.requests)

    def node_failed(self, node_id: str, now: float) -> list[Command]:
        """Forgets a node; advisories that chose it are placed again elsewhere."""
        node = self.nodes.pop(node_id, None)
        if node is None:
            return []
        self._removed.append((node_id, node.address))
        if self.metrics is not None:
            self.metrics.node_load.remove(node_id)
        commands: list[Command] = []
        for rec in self.sessions.values():
            rec.locations.pop(node_id, None)
            if rec.active_node == node_id:
                rec.active_node = None
            advice = rec.advice
            if advice is not None and advice.node_id == node_id:
                eta = max(0.0, advice.issued_at + advice.eta_s - now)
                commands += self._place_advice(rec, advice, eta, now)
        return commands

    def take_removed_nodes(self) -> list[tuple[str, str]]:
        """(node_id, address) of nodes dropped since the last call, so the shell closes channels."""
        removed, self._removed = self._removed, []
        return removed

    def healthy_nodes(self, exclude: frozenset[str] = frozenset()) -> list[NodeRecord]:
        return [n for n in self.nodes.values() if n.node_id not in exclude]

    def node_address(self, node_id: str) -> str | None:
        node = self.nodes.get(node_id)
        return node.address if node is not None else None

    # -- advisories -----------------------------------------------------------------------------
    def advise(self, session_id: str, eta_s: float, turn_index: int, now: float) -> AdviceDecision:
        if not eta_s >= 0:
            raise InvalidArgument("eta_s", f"must be a finite number >= 0, got {eta_s}")
        rec = self._touch(session_id, now)
        commands: list[Command] = []
        if rec.advice is not None:  # a newer advisory replaces the pending one
            commands += self._drop_advice(rec, "unused")
        advice = Advice(
            issued_at=now,
            eta_s=eta_s,
            turn_index=turn_index,
            expires_at=now + eta_s + max(self.advice_grace_s, eta_s),
            node_id=None,
            reason="no_nodes",
            seq=next(self._seq),
        )
        rec.advice = advice
        heapq.heappush(self._advice_heap, (advice.expires_at, advice.seq, session_id))
        nodes = self.healthy_nodes()
        delay = self.policy.advice_delay_s(nodes, rec, eta_s) if nodes else 0.0
        if delay > 0:
            advice.reason, advice.decide_at = "deferred", now + delay
            heapq.heappush(self._decide_heap, (advice.decide_at, advice.seq, session_id))
        else:
            commands += self._place_advice(rec, advice, eta_s, now)
        return AdviceDecision(advice.node_id, advice.reason, commands)

    def next_deadline(self) -> float | None:
        """When the next deferred advisory decision is due: the shell wakes then, so a decision is
        taken on time rather than at the next periodic pass (leases and TTLs can wait for that)."""
        return self._decide_heap[0][0] if self._decide_heap else None

    def has_advice(self, session_id: str) -> bool:
        rec = self.sessions.get(session_id)
        return rec is not None and rec.advice is not None

    def cancel_advice(self, session_id: str, now: float) -> list[Command]:
        rec = self.sessions.get(session_id)
        if rec is None:
            raise NotFound(f"unknown session {session_id!r}: nothing to cancel")
        rec.last_seen = now
        return self._drop_advice(rec, "cancelled") if rec.advice is not None else []

    def _place_advice(self, rec: SessionRecord, advice: Advice, eta_s: float, now: float) -> list[Command]:
        nodes = self.healthy_nodes()
        if not nodes:
            advice.node_id, advice.reason, advice.source = None, "no_nodes", ""
            return []
        placement = self.policy.on_advice(nodes, rec, eta_s)
        if placement is None:
            advice.node_id, advice.reason, advice.source = None, "policy_ignores_advisories", ""
            return []
        advice.node_id, advice.reason, advice.source = (
            placement.node_id,
            placement.reason,
            placement.source or "",
        )
        self.nodes[placement.node_id].advised += 1
        return self._prepare(rec, placement, eta_s)

    def _prepare(self, rec: SessionRecord, placement: Placement, eta_s: float) -> list[Command]:
        if placement.source is None:
            return []
        peer_address = self.node_address(placement.peer_node_id) or "" if placement.peer_node_id else ""
        return [
            PrepareCommand(
                node_id=placement.node_id,
                session_id=rec.session_id,
                source=placement.source,
                peer_node_id=placement.peer_node_id,
                peer_address=peer_address,
                eta_s=eta_s,
                messages=rec.transcript,
                expected_tokens=rec.tokens,
            )
        ]

    def _drop_advice(self, rec: SessionRecord, outcome: str, keep_node: str | None = None) -> list[Command]:
        advice = rec.advice
        rec.advice = None
        if advice is None:
            return []
        self._unadvise(advice)
        self._count_advice(outcome)
        if advice.node_id is not None and advice.source and advice.node_id != keep_node:
            return [ReleaseCommand(advice.node_id, rec.session_id, prefetch_only=True)]
        return []

    def _unadvise(self, advice: Advice) -> None:
        node = self.nodes.get(advice.node_id) if advice.node_id is not None else None
        if node is not None:
            node.advised = max(0, node.advised - 1)

    def _fallback(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.fallback(reason)

    def _count_advice(self, outcome: str) -> None:
        self.advice_outcomes[outcome] += 1
        if self.metrics is not None:
            self.metrics.advisories.labels(outcome=outcome).inc()

    # -- turns ----------------------------------------------------------------------------------
    def route(
        self, turn: common_pb2.TurnRequest, now: float, exclude: frozenset[str] = frozenset()
    ) -> RouteDecision:
        nodes = self.healthy_nodes(exclude)
        if not nodes:
            tried = f" (tried: {', '.join(sorted(exclude))})" if exclude else ""
            raise Unavailable(f"no healthy node to serve the turn{tried}", retry_after_s=1.0)
        rec = self._touch(turn.session_id, now)
        prompt_tokens = prompt_token_count(turn.messages)
        placement = self.policy.place(nodes, rec, prompt_tokens)
        commands: list[Command] = []
        advice = rec.advice
        rec.active_advised = False
        if advice is not None:
            if advice.node_id is not None and advice.node_id == placement.node_id:
                rec.advice = None
                self._unadvise(advice)
                rec.active_advised = True  # used or late: the summary will tell
            else:
                commands += self._drop_advice(rec, "unused", keep_node=placement.node_id)
                self._fallback("advice_rerouted")
        moved_here = rec.active_advised or placement.source == "peer"  # an advisory's Prepare or a fetch
        if rec.locations and placement.node_id not in rec.locations and not moved_here:
            self._fallback("kv_recomputed")  # the session's K,V exists elsewhere but is not moved here
        commands += self._prepare(rec, placement, 0.0)
        node = self.nodes[placement.node_id]
        node.inflight += 1
        node.since_report += 1
        node.inflight_tokens += prompt_tokens
        rec.active_node = node.node_id
        rec.transcript = list(turn.messages)
        self.route_reasons[placement.reason] += 1
        if self.metrics is not None:
            self.metrics.routing_decisions.labels(policy=self.policy.name, reason=placement.reason).inc()
            self.metrics.node_load.labels(node=node.node_id).set(node.requests)
        return RouteDecision(node.node_id, placement.reason, commands)

    def turn_finished(
        self, summary: common_pb2.TurnSummary, is_last: bool, now: float, answer: str = ""
    ) -> list[Command]:
        self._settle(summary.node_id, summary.prompt_tokens)
        rec = self.sessions.get(summary.session_id)
        if rec is None:
            return []
        rec.last_seen = now
        self.sessions.move_to_end(rec.session_id)
        if rec.active_advised:
            self._count_advice("used" if summary.kv_load_s <= 0 else "late")
            rec.active_advised = False
        rec.active_node = None
        rec.turns += 1
        tokens = summary.prompt_tokens + summary.completion_tokens
        rec.tokens = tokens
        if summary.node_id in self.nodes:
            rec.home_node = summary.node_id
            rec.locations[summary.node_id] = KvLocation("gpu", tokens)
            self.nodes[summary.node_id].sessions.add(rec.session_id)
        if answer:
            rec.transcript = [*rec.transcript, common_pb2.ChatMessage(role="assistant", content=answer)]
        if is_last:
            return self._end_session(rec, now)
        return []

    def turn_aborted(self, session_id: str, node_id: str, prompt_tokens: int, now: float) -> None:
        """A turn routed to ``node_id`` ended without a summary (client gone or node failed)."""
        self._settle(node_id, prompt_tokens)
        rec = self.sessions.get(session_id)
        if rec is not None and rec.active_node == node_id:
            rec.active_node = None
            rec.active_advised = False

    def _settle(self, node_id: str, prompt_tokens: int) -> None:
        node = self.nodes.get(node_id)
        if node is not None:
            node.inflight = max(0, node.inflight - 1)
            node.since_report -= 1
            node.inflight_tokens = max(0, node.inflight_tokens - prompt_tokens)
            if self.metrics is not None:
                self.metrics.node_load.labels(node=node_id).set(node.requests)

    # -- sessions -------------------------------------------------------------------------------
    def _touch(self, session_id: str, now: float) -> SessionRecord:
        rec = self.sessions.get(session_id)
        if rec is None:
            rec = SessionRecord(session_id, last_seen=now)
            self.sessions[session_id] = rec
        else:
            rec.last_seen = now
            self.sessions.move_to_end(session_id)
        return rec

    def _end_session(self, rec: SessionRecord, now: float) -> list[Command]:
        self._ended[rec.session_id] = now
        self._ended.move_to_end(rec.session_id)
        commands = self._drop_advice(rec, "unused")
        commands += [ReleaseCommand(n, rec.session_id, prefetch_only=False) for n in rec.locations]
        for node_id in rec.locations:
            node = self.nodes.get(node_id)
            if node is not None:
                node.sessions.discard(rec.session_id)
        del self.sessions[rec.session_id]
        return commands

    def expire(self, now: float) -> list[Command]:
        """Drops nodes past their lease, advisories past their ETA, sessions idle past the TTL."""
        commands: list[Command] = []
        while self._ended and (
            now - next(iter(self._ended.values())) > self.lease_s or len(self._ended) > self.max_sessions
        ):
            self._ended.popitem(last=False)
        for node in [n for n in self.nodes.values() if now - n.last_seen > self.lease_s]:
            commands += self.node_failed(node.node_id, now)
        while self._decide_heap and self._decide_heap[0][0] <= now:
            _, seq, sid = heapq.heappop(self._decide_heap)
            rec = self.sessions.get(sid)
            advice = rec.advice if rec is not None else None
            if rec is not None and advice is not None and advice.seq == seq and advice.node_id is None:
                commands += self._place_advice(
                    rec, advice, max(0.0, advice.issued_at + advice.eta_s - now), now
                )
        while self._advice_heap and self._advice_heap[0][0] <= now:
            _, seq, sid = heapq.heappop(self._advice_heap)
            rec = self.sessions.get(sid)
            if rec is not None and rec.advice is not None and rec.advice.seq == seq:
                commands += self._drop_advice(rec, "unused")
        while self.sessions:
            rec = next(iter(self.sessions.values()))
            over_size = len(self.sessions) > self.max_sessions
            if not over_size and now - rec.last_seen <= self.session_ttl_s:
                break
            if rec.active_node is not None and not over_size:
                self.sessions.move_to_end(rec.session_id)
                rec.last_seen = now
                continue
            commands += self._end_session(rec, now)
        return commands

    def sessions_snapshot(self, limit: int | None = None) -> Sequence[SessionRecord]:
        items = list(self.sessions.values())
        return items if limit is None else items[-limit:]
