"""Relays a turn to the node the core chose and streams its tokens back.

If the node fails before its first token the turn is routed again without it (every turn carries
the whole conversation, so another node answers it correctly); after the first token a retry would
duplicate text, so the turn fails with UNAVAILABLE naming the node and the cause.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator

import grpc

from symphony.errors import InvalidArgument, ResourceExhausted, SymphonyError, Unavailable
from symphony.tokens import prompt_token_count
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
        self, turn: common_pb2.TurnRequest
    ) -> AsyncGenerator[common_pb2.GenerateResponse, None]:
        """Deltas, then exactly one summary (with ``route_reason`` and ``attempts`` filled in)."""
        app, core = self.app, self.app.core
        if not turn.request_id:
            turn.request_id = uuid.uuid4().hex
        started = app.now()
        prompt_tokens = prompt_token_count(turn.messages)
        exclude: frozenset[str] = frozenset()
        for attempt in range(1, self.max_attempts + 1):
            decision = core.route(turn, app.now(), exclude)
            node_id = decision.node_id
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
                call = app.clients.stub(address).Generate(
                    nodesched_pb2.NodeGenerateRequest(turn=turn, route_reason=decision.reason)
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
                    self._observe(turn, summary, started, first_token_at)
                    yield resp
                    return
                cause = "stream ended without a summary"
                code = None
            except grpc.aio.AioRpcError as err:
                cause = f"{err.code().name}: {err.details()}"
                code = err.code()
                if first_token_at is None and code != grpc.StatusCode.UNAVAILABLE:
                    raise _node_error(node_id, err) from None
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
