"""Error translation over a real loopback gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from symphony.errors import InvalidArgument, Unavailable
from symphony.grpcutil import retry_after, start_server, translate_errors, translate_stream_errors
from symphony.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc


class _Failing(scheduler_pb2_grpc.SchedulerServicer):
    @translate_errors
    async def Advise(self, request: Any, context: Any) -> scheduler_pb2.AdviseResponse:
        raise InvalidArgument("eta_s", "must be >= 0")

    @translate_stream_errors
    async def Generate(self, request: Any, context: Any) -> AsyncIterator[common_pb2.GenerateResponse]:
        yield common_pb2.GenerateResponse(delta=common_pb2.TokenDelta(text="a", num_tokens=1))
        raise Unavailable("node lost mid-stream", retry_after_s=2.5)


def _register(server: grpc.aio.Server) -> None:
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(_Failing(), server)  # type: ignore[abstract]


async def test_errors_become_statuses_with_retry_advice_even_mid_stream() -> None:
    handle = await start_server(
        _register,
        ["symphony.v1.Scheduler"],
        "127.0.0.1:0",
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
            stub = scheduler_pb2_grpc.SchedulerStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Advise(scheduler_pb2.AdviseRequest(session_id="s"))
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert exc.value.details() == "eta_s: must be >= 0"
            call = stub.Generate(common_pb2.TurnRequest(session_id="s"))
            got = []
            with pytest.raises(grpc.aio.AioRpcError) as exc2:
                async for item in call:
                    got.append(item.delta.text)
            assert got == ["a"]
            assert exc2.value.code() == grpc.StatusCode.UNAVAILABLE
            assert retry_after(exc2.value) == 2.5
    finally:
        await handle.stop()
