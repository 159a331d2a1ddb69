"""The Symphony scheduler over gRPC: ``Advise``, ``CancelAdvice`` and the streaming ``Generate``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from symphony.grpcutil import CHANNEL_OPTIONS, retry_after
from symphony.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from symphony_workloadgen.clients.base import Clock, Delta, Done, TargetError, TurnCall, TurnEvent

if TYPE_CHECKING:
    from symphony.v1.scheduler_pb2_grpc import SchedulerAsyncStub

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
    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: grpc.aio.Channel | None = None
        self._stub: SchedulerAsyncStub | None = None

    @property
    def stub(self) -> SchedulerAsyncStub:
        if self._stub is None:
            raise RuntimeError("target not started")
        return self._stub

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)

    async def advise(self, session_id: str, eta_s: float, turn_index: int, prompt_chars: int) -> None:
        req = scheduler_pb2.AdviseRequest(
            session_id=session_id, eta_s=eta_s, turn_index=turn_index, expected_prompt_chars=prompt_chars
        )
        try:
            await self.stub.Advise(req)
        except grpc.aio.AioRpcError as err:
            raise rpc_error(err) from None

    async def cancel_advice(self, session_id: str) -> None:
        try:
            await self.stub.CancelAdvice(scheduler_pb2.CancelAdviceRequest(session_id=session_id))
        except grpc.aio.AioRpcError as err:
            raise rpc_error(err) from None

    async def run_turn(self, call: TurnCall, clock: Clock) -> AsyncIterator[TurnEvent]:
        stream = self.stub.Generate(to_turn_request(call))
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
        finally:
            stream.cancel()
        if summary is None:
            raise TargetError("PROTOCOL", "the Generate stream ended without a summary")
        yield summary_done(clock(), summary)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
