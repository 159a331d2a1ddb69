"""The scheduler application object: owns the core, the clock, the metrics and the node clients.

The gRPC servicer and the HTTP front door both receive one of these (no module globals), so tests
build a fresh application each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from symphony.clock import Clock
from symphony.limits import AdvisoryRate, Limits, SessionQuota
from symphony.metrics import SchedulerMetrics
from symphony.security import Channels
from symphony.tracing import Tracing
from symphony_scheduler.commands import AdviceDecision, Command, PrepareCommand
from symphony_scheduler.core import SchedulerCore
from symphony_scheduler.nodes import NodeClients

log = logging.getLogger(__name__)


class SchedulerApp:
    def __init__(
        self,
        core: SchedulerCore,
        clock: Clock,
        registry: CollectorRegistry,
        metrics: SchedulerMetrics,
        limits: Limits | None = None,
        heartbeat_interval_s: float = 1.0,
        clients: NodeClients | None = None,
        tracing: Tracing | None = None,
        max_traced_advisories: int = 100_000,
        channels: Channels | None = None,
    ) -> None:
        self.core = core
        self.clock = clock
        self.registry = registry
        self.metrics = metrics
        self.limits = limits or Limits()
        self.advisory_rate = AdvisoryRate(self.limits)
        self.session_quota = SessionQuota(self.limits, idle_s=core.session_ttl_s)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.tracing = tracing or Tracing.disabled()
        self.channels = channels or Channels()  # plaintext, TLS or mTLS towards nodes and receivers
        self.clients = clients or NodeClients(metrics=metrics, tracing=self.tracing, channels=self.channels)
        # Span context of each session's pending advisory: its Prepare orders (even deferred ones)
        # join the advisory's trace, and the turn it serves links to it. Bounded, oldest dropped.
        self._advice_spans: OrderedDict[str, trace.SpanContext] = OrderedDict()
        self._max_traced_advisories = max_traced_advisories
        self._expiry_task: asyncio.Task[None] | None = None
        self._deadline_moved = asyncio.Event()

    def now(self) -> float:
        return self.clock.now()

    def admit_turn(self, client: str, session_id: str) -> None:
        """The per-client session limit (raises ResourceExhausted); call after validation."""
        self.session_quota.admit(client, session_id, self.now())

    def admit_advice(self, client: str) -> None:
        """The per-client advisory rate limit (raises ResourceExhausted)."""
        self.advisory_rate.admit(client, self.now())

    def addressed(self, commands: Sequence[Command]) -> list[tuple[Command, str]]:
        """Pairs orders with their node's address, skipping nodes that are gone."""
        out: list[tuple[Command, str]] = []
        for command in commands:
            address = self.core.node_address(command.node_id)
            if address is not None:
                out.append((command, address))
        return out

    def dispatch(self, commands: Sequence[Command]) -> None:
        plain: list[Command] = []
        for command in commands:
            ctx = self._advice_spans.get(command.session_id) if isinstance(command, PrepareCommand) else None
            if ctx is None:
                plain.append(command)
            else:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(ctx))
                self.clients.spawn(self.addressed([command]), parent)
        self.clients.spawn(self.addressed(plain))

    def advice_span(self, session_id: str) -> trace.SpanContext | None:
        """The span context of the session's last advisory, forgotten once a turn takes it."""
        return self._advice_spans.pop(session_id, None)

    def advise(self, session_id: str, eta_s: float, turn_index: int) -> AdviceDecision:
        """Records an advisory, sends the orders it yields, and wakes the timer for a deferred decision."""
        span_ctx = trace.get_current_span().get_span_context()
        if span_ctx.is_valid:
            self._advice_spans[session_id] = span_ctx
            self._advice_spans.move_to_end(session_id)
            while len(self._advice_spans) > self._max_traced_advisories:
                self._advice_spans.popitem(last=False)
        decision = self.core.advise(session_id, eta_s, turn_index, self.now())
        self.dispatch(decision.commands)
        self._deadline_moved.set()
        return decision

    async def tick(self) -> None:
        """One expiry pass: leases, advisories, idle sessions; closes channels of dropped nodes."""
        removed_before = self.core.take_removed_nodes()
        commands = self.core.expire(self.now())
        self.dispatch(commands)
        for node_id, address in [*removed_before, *self.core.take_removed_nodes()]:
            log.warning("node %s (%s) dropped", node_id, address)
            await self.clients.close(address)

    async def _expiry_loop(self) -> None:
        period = max(0.05, self.heartbeat_interval_s / 2)
        while True:
            # A timer: the periodic pass, or the next deferred advisory decision if that comes first.
            deadline = self.core.next_deadline()
            delay = period if deadline is None else min(period, max(0.0, deadline - self.now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._deadline_moved.wait(), delay)
            self._deadline_moved.clear()
            try:
                await self.tick()
            except Exception:  # the loop must survive a bug in one pass
                log.exception("expiry pass failed")

    def start(self) -> None:
        if self._expiry_task is None:
            self._expiry_task = asyncio.create_task(self._expiry_loop())

    async def close(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            await asyncio.gather(self._expiry_task, return_exceptions=True)
            self._expiry_task = None
        await self.clients.close_all()
        self.tracing.shutdown()
