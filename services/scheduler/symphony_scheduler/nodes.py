"""gRPC clients of the nodes: one cached channel per address, and the carrying-out of core orders."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc

from symphony.grpcutil import CHANNEL_OPTIONS
from symphony.v1 import nodesched_pb2, nodesched_pb2_grpc
from symphony_scheduler.commands import Command, PrepareCommand, ReleaseCommand

if TYPE_CHECKING:
    from symphony.v1.nodesched_pb2_grpc import NodeSchedulerAsyncStub

log = logging.getLogger(__name__)

SOURCES = {
    "auto": nodesched_pb2.KV_SOURCE_UNSPECIFIED,
    "local": nodesched_pb2.KV_SOURCE_LOCAL,
    "peer": nodesched_pb2.KV_SOURCE_PEER,
    "recompute": nodesched_pb2.KV_SOURCE_RECOMPUTE,
}


class NodeClients:
    """Channels to node schedulers, cached per address and closed when a node expires."""

    def __init__(self, rpc_timeout_s: float = 5.0) -> None:
        self.rpc_timeout_s = rpc_timeout_s
        self._channels: dict[str, tuple[grpc.aio.Channel, NodeSchedulerAsyncStub]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def stub(self, address: str) -> NodeSchedulerAsyncStub:
        entry = self._channels.get(address)
        if entry is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            entry = (channel, nodesched_pb2_grpc.NodeSchedulerStub(channel))
            self._channels[address] = entry
        return entry[1]

    async def close(self, address: str) -> None:
        entry = self._channels.pop(address, None)
        if entry is not None:
            await entry[0].close(None)

    async def close_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for address in list(self._channels):
            await self.close(address)

    async def execute(self, command: Command, address: str) -> None:
        """Sends one order; a failure is logged, never raised (orders are hints, not correctness)."""
        stub = self.stub(address)
        try:
            if isinstance(command, PrepareCommand):
                await stub.Prepare(
                    nodesched_pb2.PrepareRequest(
                        session_id=command.session_id,
                        source=SOURCES[command.source],
                        peer_node_id=command.peer_node_id,
                        peer_address=command.peer_address,
                        messages=list(command.messages),
                        eta_s=command.eta_s,
                        expected_tokens=command.expected_tokens,
                    ),
                    timeout=self.rpc_timeout_s,
                )
            elif isinstance(command, ReleaseCommand):
                await stub.Release(
                    nodesched_pb2.ReleaseRequest(
                        session_id=command.session_id, prefetch_only=command.prefetch_only
                    ),
                    timeout=self.rpc_timeout_s,
                )
        except grpc.aio.AioRpcError as err:
            log.warning(
                "%s of session %s on node %s failed: %s %s",
                type(command).__name__,
                command.session_id,
                command.node_id,
                err.code().name,
                err.details(),
            )

    def spawn(self, commands: Iterable[tuple[Command, str]]) -> None:
        """Carries out orders in the background (advisories must not wait for nodes)."""
        for command, address in commands:
            task = asyncio.create_task(self.execute(command, address))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
