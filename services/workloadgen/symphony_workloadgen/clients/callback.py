"""Callback mode, as the original design had it: ``Submit`` a turn, then the scheduler posts the whole
response to the generator's own ``ResponseReceiver`` server.

The client sees the answer only once it is complete, so TTFT is taken from the server's
``first_token_s`` (submit to first token, server-side) added to the client's send time; E2E is
client-measured.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc

from symphony.grpcutil import ServerHandle, start_server
from symphony.v1 import receiver_pb2, receiver_pb2_grpc, scheduler_pb2
from symphony_workloadgen.clients.base import Clock, Delta, TargetError, TurnCall, TurnEvent
from symphony_workloadgen.clients.symphony_grpc import (
    SymphonyGrpcTarget,
    rpc_error,
    summary_done,
    to_turn_request,
)

RECEIVER_SERVICE = "symphony.v1.ResponseReceiver"


def local_address_towards(host: str, port: int) -> str:
    """The address of this machine the scheduler can reach us on (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class _Receiver(receiver_pb2_grpc.ResponseReceiverServicer):
    def __init__(self, pending: dict[str, asyncio.Future[receiver_pb2.PostResponseRequest]]) -> None:
        self._pending = pending

    async def PostResponse(
        self, request: receiver_pb2.PostResponseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> receiver_pb2.PostResponseResponse:
        fut = self._pending.pop(request.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(request)
        return receiver_pb2.PostResponseResponse()


class CallbackTarget(SymphonyGrpcTarget):
    """Advisories as in streaming mode; turns through ``Submit`` and ``PostResponse``."""

    def __init__(self, address: str, receiver_listen: str, callback_address: str, channels: int = 1) -> None:
        super().__init__(address, channels)
        self.receiver_listen = receiver_listen
        self.callback_address = callback_address
        self._pending: dict[str, asyncio.Future[receiver_pb2.PostResponseRequest]] = {}
        self._server: ServerHandle | None = None

    @property
    def receiver_port(self) -> int:
        if self._server is None:
            raise RuntimeError("target not started")
        return self._server.port

    async def start(self) -> None:
        await super().start()
        receiver = _Receiver(self._pending)
        try:
            self._server = await start_server(
                lambda s: receiver_pb2_grpc.add_ResponseReceiverServicer_to_server(receiver, s),
                [RECEIVER_SERVICE],
                self.receiver_listen,
                credentials=self.tls.server_credentials(),
            )
        except (OSError, RuntimeError):  # grpc reports a port in use as a RuntimeError
            raise TargetError(
                "UNAVAILABLE", f"the receiver cannot listen on {self.receiver_listen} (port in use?)"
            ) from None
        if self.callback_address.endswith(":0"):
            self.callback_address = f"{self.callback_address[:-2]}:{self._server.port}"

    async def run_turn(self, call: TurnCall, clock: Clock) -> AsyncIterator[TurnEvent]:
        sent = clock()
        fut: asyncio.Future[receiver_pb2.PostResponseRequest] = asyncio.get_running_loop().create_future()
        self._pending[call.request_id] = fut
        try:
            try:
                resp = await self.stub.Submit(
                    scheduler_pb2.SubmitRequest(
                        turn=to_turn_request(call), callback_address=self.callback_address
                    )
                )
            except grpc.aio.AioRpcError as err:
                raise rpc_error(err) from None
            if not resp.accepted:
                raise TargetError("REJECTED", "the scheduler did not accept the turn", retryable=True)
            post = await fut
            t = clock()
        finally:
            self._pending.pop(call.request_id, None)
        if post.error_code:
            raise TargetError(post.error_code, post.error_message, retryable=post.error_code == "UNAVAILABLE")
        s = post.summary
        tokens = s.completion_tokens or max(1, len(post.text) // 4)
        if post.text:
            yield Delta(t, post.text, tokens)
        yield summary_done(t, s, first_token_s=post.first_token_s or (t - sent))

    async def close(self) -> None:
        for fut in self._pending.values():
            fut.cancel()
        if self._server is not None:
            await self._server.stop(0.5)
        await super().close()
