"""The Symphony scheduler over gRPC: ``Advise``, ``CancelAdvice`` and the streaming ``Generate``.

With tracing on, every turn is the root span of its own trace (``workloadgen.turn``) and every
advisory of another (``workloadgen.advise``); the W3C context rides in the calls' metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from opentelemetry import trace

from symphony.grpcutil import CHANNEL_OPTIONS, retry_after
from symphony.security import Channels
from symphony.tracing import (
    ATTR_CACHED_TOKENS,
    ATTR_COMPLETION_TOKENS,
    ATTR_ETA_S,
    ATTR_NODE,
    ATTR_PROMPT_TOKENS,
    ATTR_REASON,
    ATTR_SESSION,
    ATTR_TURN,
    Tracing,
    inject_metadata,
)
from symphony.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from symphony_workloadgen.clients.base import Clock, Delta, Done, TargetError, TurnCall, TurnEvent

if TYPE_CHECKING:
    from symphony.v1.scheduler_pb2_grpc import SchedulerAsyncStub

# No HTTP/2 keepalive pings on the generator's channels: with the shared keepalive options,
# bench-workloadgen saw bursts of CANCELLED turns (every call of a connection at once) on a loaded
# machine, and none without them. A dead scheduler is still noticed: calls fail with UNAVAILABLE,
# and --turn-timeout bounds every turn.
CHANNEL_OPTIONS_LOADED = [o for o in CHANNEL_OPTIONS if "keepalive" not in o[0] and "pings" not in o[0]]

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


def to_turn_request(call: TurnCall) -> common_pb2.TurnRequest:
    return common_pb2.TurnRequest(
        session_id=call.session_id,
        turn_index=call.turn_index,
        messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in call.messages],
        max_tokens=call.max_tokens,
        ignore_eos=call.ignore_eos,
        is_last=call.is_last,
        expected_response=call.expected_response,
        request_id=call.request_id,
    )


def rpc_error(err: grpc.aio.AioRpcError) -> TargetError:
    code = err.code()
    return TargetError(
        code.name, err.details() or "", retryable=code in RETRYABLE, retry_after_s=retry_after(err)
    )


def summary_done(t: float, s: common_pb2.TurnSummary, first_token_s: float | None = None) -> Done:
    return Done(
        t=t,
        output_tokens=s.completion_tokens,
        prompt_tokens=s.prompt_tokens,
        cached_tokens=s.cached_tokens,
        node_id=s.node_id,
        route_reason=s.route_reason,
        server_first_token_s=first_token_s,
    )


class SymphonyGrpcTarget:
    """``channels`` > 1 spreads calls over several HTTP/2 connections (one connection's streams are
    served in order by one server thread; thousands of sessions need more than one)."""

    def __init__(
        self,
        address: str,
        channels: int = 1,
        connect_timeout_s: float = 10.0,
        tracing: Tracing | None = None,
        tls: Channels | None = None,
    ) -> None:
        self.address = address
        self.tls = tls or Channels()  # plaintext unless the generator was given TLS flags
        self.tracing = tracing or Tracing.disabled()
        self.connect_timeout_s = connect_timeout_s
        self._n = max(1, channels)
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[SchedulerAsyncStub] = []
        self._next = 0

    @property
    def stub(self) -> SchedulerAsyncStub:
        if not self._stubs:
            raise RuntimeError("target not started")
        self._next = (self._next + 1) % len(self._stubs)
        return self._stubs[self._next]

    async def start(self) -> None:
        options = [*CHANNEL_OPTIONS_LOADED, ("grpc.use_local_subchannel_pool", 1)]
        self._channels = [self.tls.open(self.address, options) for _ in range(self._n)]
        self._stubs = [scheduler_pb2_grpc.SchedulerStub(c) for c in self._channels]
        # Fail fast with one clear message instead of a flood of failed turns.
        try:
            await asyncio.wait_for(self._channels[0].channel_ready(), self.connect_timeout_s)
        except TimeoutError:
            await self.close()
            raise TargetError(
                "UNAVAILABLE", f"no scheduler reachable at {self.address} within {self.connect_timeout_s:g} s"
            ) from None

    async def advise(self, session_id: str, eta_s: float, turn_index: int, prompt_chars: int) -> None:
        req = scheduler_pb2.AdviseRequest(
            session_id=session_id, eta_s=eta_s, turn_index=turn_index, expected_prompt_chars=prompt_chars
        )
        with self.tracing.tracer.start_as_current_span(
            "workloadgen.advise",
            kind=trace.SpanKind.CLIENT,
            attributes={ATTR_SESSION: session_id, ATTR_TURN: turn_index, ATTR_ETA_S: eta_s},
        ):
            try:
                await self.stub.Advise(req, metadata=inject_metadata())
            except grpc.aio.AioRpcError as err:
                raise rpc_error(err) from None

    async def cancel_advice(self, session_id: str) -> None:
        try:
            await self.stub.CancelAdvice(scheduler_pb2.CancelAdviceRequest(session_id=session_id))
        except grpc.aio.AioRpcError as err:
            raise rpc_error(err) from None

    async def run_turn(self, call: TurnCall, clock: Clock) -> AsyncIterator[TurnEvent]:
        # Started and ended explicitly: an async generator must not attach a context across yields.
        span = self.tracing.tracer.start_span(
            "workloadgen.turn",
            kind=trace.SpanKind.CLIENT,
            attributes={ATTR_SESSION: call.session_id, ATTR_TURN: call.turn_index},
        )
        try:
            async for event in self._run_turn(call, clock, span):
                yield event
        except TargetError as err:
            span.set_status(trace.StatusCode.ERROR, str(err))
            raise
        finally:
            span.end()

    async def _run_turn(self, call: TurnCall, clock: Clock, span: trace.Span) -> AsyncIterator[TurnEvent]:
        stream = self.stub.Generate(
            to_turn_request(call), metadata=inject_metadata(context=trace.set_span_in_context(span))
        )
        summary: common_pb2.TurnSummary | None = None
        try:
            async for resp in stream:
                kind = resp.WhichOneof("kind")
                if kind == "delta":
                    if resp.delta.text or resp.delta.num_tokens:
                        yield Delta(clock(), resp.delta.text, resp.delta.num_tokens)
                elif kind == "summary":
                    summary = resp.summary
        except grpc.aio.AioRpcError as err:
            raise rpc_error(err) from None
        except BaseException:
            stream.cancel()  # abandoned (the run was stopped): free the server's work at once
            raise
        if summary is None:
            raise TargetError("PROTOCOL", "the Generate stream ended without a summary")
        span.set_attributes(
            {
                ATTR_NODE: summary.node_id,
                ATTR_REASON: summary.route_reason,
                ATTR_PROMPT_TOKENS: summary.prompt_tokens,
                ATTR_COMPLETION_TOKENS: summary.completion_tokens,
                ATTR_CACHED_TOKENS: summary.cached_tokens,
            }
        )
        yield summary_done(clock(), summary)

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, [], []
        for channel in channels:
            await channel.close(None)
