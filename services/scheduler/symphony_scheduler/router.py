"""Relays a turn to the node the core chose and streams its tokens back.

If the node fails before its first token the turn is routed again without it (every turn carries
the whole conversation, so another node answers it correctly); after the first token a retry would
duplicate text, so the turn fails with UNAVAILABLE naming the node and the cause.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator

import grpc
from opentelemetry import trace
from opentelemetry.context import Context

from symphony.errors import InvalidArgument, ResourceExhausted, SymphonyError, Unavailable
from symphony.tokens import prompt_token_count
from symphony.tracing import (
    ATTR_ATTEMPTS,
    ATTR_CACHED_TOKENS,
    ATTR_COMPLETION_TOKENS,
    ATTR_NODE,
    ATTR_POLICY,
    ATTR_PROMPT_TOKENS,
    ATTR_REASON,
    ATTR_RECOMPUTED_TOKENS,
    ATTR_SESSION,
    ATTR_TRANSFER_S,
    ATTR_TURN,
    inject_metadata,
)
from symphony.v1 import common_pb2, nodesched_pb2
from symphony_scheduler.app import SchedulerApp

log = logging.getLogger(__name__)

# Labels of symphony_cached_prompt_tokens_total{tier}: where a turn's cached prompt tokens came from.
CACHED_TIER_LABELS = {
    common_pb2.TIER_GPU: "gpu",
    common_pb2.TIER_HOST: "host",
    common_pb2.TIER_DISK: "disk",
    common_pb2.TIER_PEER: "peer",
}

# Node statuses passed through to the client as the same kind of error.
_PASSTHROUGH: dict[grpc.StatusCode, type[SymphonyError]] = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def _node_error(node_id: str, err: grpc.aio.AioRpcError) -> SymphonyError:
    if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument("turn", f"rejected by node {node_id}: {err.details()}")
    kind = _PASSTHROUGH.get(err.code())
    if kind is not None:
        return kind(f"node {node_id}: {err.details()}")
    return Unavailable(f"node {node_id} failed: {err.code().name}: {err.details()}")


class Router:
    def __init__(self, app: SchedulerApp, max_attempts: int = 3) -> None:
        self.app = app
        self.max_attempts = max_attempts

    async def generate(
        self, turn: common_pb2.TurnRequest, trace_context: Context | None = None
    ) -> AsyncGenerator[common_pb2.GenerateResponse, None]:
        """Deltas, then exactly one summary (with ``route_reason`` and ``attempts`` filled in).

        ``trace_context`` is the caller's (from gRPC metadata or HTTP headers); the turn's span is
        its child and links to the span of the advisory that prepared the session, if any."""
        advice = self.app.advice_span(turn.session_id)
        span = self.app.tracing.tracer.start_span(
            "scheduler.generate",
            context=trace_context,
            kind=trace.SpanKind.SERVER,
            attributes={
                ATTR_SESSION: turn.session_id,
                ATTR_TURN: turn.turn_index,
                ATTR_POLICY: self.app.core.policy.name,
            },
            links=[trace.Link(advice)] if advice is not None else None,
        )
        try:
            async for resp in self._generate(turn, span):
                yield resp
        except SymphonyError as err:
            span.set_status(trace.StatusCode.ERROR, err.message)
            raise
        finally:
            span.end()

    async def _generate(
        self, turn: common_pb2.TurnRequest, span: trace.Span
    ) -> AsyncGenerator[common_pb2.GenerateResponse, None]:
        app, core = self.app, self.app.core
        if not turn.request_id:
            turn.request_id = uuid.uuid4().hex
        started = app.now()
        metadata = inject_metadata(context=trace.set_span_in_context(span))
        prompt_tokens = prompt_token_count(turn.messages)
        exclude: frozenset[str] = frozenset()
        for attempt in range(1, self.max_attempts + 1):
            decision = core.route(turn, app.now(), exclude)
            node_id = decision.node_id
            span.set_attributes({ATTR_NODE: node_id, ATTR_REASON: decision.reason, ATTR_ATTEMPTS: attempt})
            address = core.node_address(node_id) or ""
            call: (
                grpc.aio.UnaryStreamCall[nodesched_pb2.NodeGenerateRequest, common_pb2.GenerateResponse]
                | None
            )
            call = None
            parts: list[str] = []
            first_token_at: float | None = None
            finished = False
            try:
                for command, addr in app.addressed(decision.commands):
                    await app.clients.execute(command, addr)  # the node learns where K,V comes from first
                call = app.clients.generate(
                    address,
                    nodesched_pb2.NodeGenerateRequest(turn=turn, route_reason=decision.reason),
                    metadata,
                )
                async for resp in call:
                    if resp.HasField("delta"):
                        if first_token_at is None:
                            first_token_at = app.now()
                        parts.append(resp.delta.text)
                        yield resp
                        continue
                    summary = resp.summary
                    summary.route_reason = decision.reason
                    summary.attempts = attempt
                    summary.node_id = summary.node_id or node_id
                    summary.request_id = summary.request_id or turn.request_id
                    summary.session_id = summary.session_id or turn.session_id
                    answer = "".join(parts)
                    finished = True
                    app.dispatch(core.turn_finished(summary, turn.is_last, app.now(), answer))
                    if turn.is_last:
                        app.session_quota.close(turn.session_id)
                    self._observe(turn, summary, started, first_token_at)
                    span.set_attributes(
                        {
                            ATTR_PROMPT_TOKENS: summary.prompt_tokens,
                            ATTR_COMPLETION_TOKENS: summary.completion_tokens,
                            ATTR_CACHED_TOKENS: summary.cached_tokens,
                            ATTR_RECOMPUTED_TOKENS: summary.recomputed_tokens,
                            ATTR_TRANSFER_S: summary.kv_load_s,
                        }
                    )
                    yield resp
                    return
                cause = "stream ended without a summary"
                code = None
            except grpc.aio.AioRpcError as err:
                cause = f"{err.code().name}: {err.details()}"
                code = err.code()
                if first_token_at is None and code != grpc.StatusCode.UNAVAILABLE:
                    raise _node_error(node_id, err) from None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if call is None or not app.clients.abandoned(call) or (task and task.cancelling()):
                    raise
                cause = "the node was dropped (no status report within the lease)"  # retried like UNAVAILABLE
                code = grpc.StatusCode.UNAVAILABLE
            finally:
                if not finished:
                    if call is not None:
                        call.cancel()
                    core.turn_aborted(turn.session_id, node_id, prompt_tokens, app.now())
            if first_token_at is not None:
                app.metrics.turns.labels(outcome="error").inc()
                raise Unavailable(f"node {node_id} failed after the first token: {cause}")
            log.warning("node %s failed before the first token (%s); routing again", node_id, cause)
            app.dispatch(core.node_failed(node_id, app.now()))
            await app.clients.close(address)
            app.metrics.retries.inc()
            app.metrics.fallback("node_failed")
            exclude = exclude | {node_id}
        app.metrics.turns.labels(outcome="error").inc()
        raise Unavailable(f"turn failed on {self.max_attempts} nodes: {', '.join(sorted(exclude))}")

    def _observe(
        self,
        turn: common_pb2.TurnRequest,
        summary: common_pb2.TurnSummary,
        started: float,
        first_token_at: float | None,
    ) -> None:
        end = self.app.now()
        ttft = (first_token_at if first_token_at is not None else end) - started
        cached = {CACHED_TIER_LABELS.get(t.tier, "disk"): int(t.tokens) for t in summary.cached_by_tier}
        self.app.metrics.observe_turn(
            turn.turn_index, ttft, end - started, summary.completion_tokens, summary.prompt_tokens, cached
        )
