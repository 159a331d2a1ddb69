"""gRPC clients of the nodes: one cached channel per address, and the carrying-out of core orders."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import grpc
from opentelemetry import trace
from opentelemetry.context import Context

from symphony.grpcutil import CHANNEL_OPTIONS
from symphony.metrics import SchedulerMetrics
from symphony.security import Channels
from symphony.tracing import ATTR_KV_SOURCE, ATTR_NODE, ATTR_SESSION, Tracing, inject_metadata
from symphony.v1 import common_pb2, nodesched_pb2, nodesched_pb2_grpc
from symphony_scheduler.commands import Command, PrepareCommand, ReleaseCommand

if TYPE_CHECKING:
    from symphony.v1.nodesched_pb2_grpc import NodeSchedulerAsyncStub

log = logging.getLogger(__name__)

GenerateCall = grpc.aio.UnaryStreamCall[nodesched_pb2.NodeGenerateRequest, common_pb2.GenerateResponse]

SOURCES = {
    "auto": nodesched_pb2.KV_SOURCE_UNSPECIFIED,
    "local": nodesched_pb2.KV_SOURCE_LOCAL,
    "peer": nodesched_pb2.KV_SOURCE_PEER,
    "recompute": nodesched_pb2.KV_SOURCE_RECOMPUTE,
}


class NodeClients:
    """Channels to node schedulers, cached per address and closed when a node expires."""

    def __init__(
        self,
        rpc_timeout_s: float = 5.0,
        metrics: SchedulerMetrics | None = None,
        tracing: Tracing | None = None,
        channels: Channels | None = None,
    ) -> None:
        self.rpc_timeout_s = rpc_timeout_s
        self.channels = channels or Channels()
        self.metrics = metrics
        self.tracing = tracing or Tracing.disabled()
        self._channels: dict[str, tuple[grpc.aio.Channel, NodeSchedulerAsyncStub]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Generate streams open per address, so a dropped node's turns end at once (see ``close``).
        self._streams: dict[str, set[GenerateCall]] = {}
        self._abandoned: weakref.WeakSet[GenerateCall] = weakref.WeakSet()  # forgotten with the call

    def stub(self, address: str) -> NodeSchedulerAsyncStub:
        entry = self._channels.get(address)
        if entry is None:
            channel = self.channels.open(address, CHANNEL_OPTIONS)
            entry = (channel, nodesched_pb2_grpc.NodeSchedulerStub(channel))
            self._channels[address] = entry
        return entry[1]

    def generate(
        self, address: str, request: nodesched_pb2.NodeGenerateRequest, metadata: Sequence[tuple[str, str]]
    ) -> GenerateCall:
        """Opens a turn's stream on a node, tracked until it ends so that ``close`` can end it."""
        call = self.stub(address).Generate(request, metadata=metadata)
        streams = self._streams.setdefault(address, set())
        streams.add(call)

        call.add_done_callback(lambda _: streams.discard(call))
        return call

    def abandoned(self, call: GenerateCall) -> bool:
        """True when ``call`` was cancelled because its node was dropped, not by its caller."""
        return call in self._abandoned

    async def close(self, address: str) -> None:
        """Closes a node's channel. Its open turn streams are cancelled first and marked abandoned:
        closing a grpc.aio channel does not end calls awaited by other tasks, and a node that stopped
        answering (a partition) would otherwise hold those turns for ever."""
        for call in list(self._streams.pop(address, set())):
            self._abandoned.add(call)
            call.cancel()
        entry = self._channels.pop(address, None)
        if entry is not None:
            await entry[0].close(None)

    async def close_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for address in list(self._channels):
            await self.close(address)

    async def execute(self, command: Command, address: str, parent: Context | None = None) -> None:
        """Sends one order; a failure is logged, never raised (orders are hints, not correctness).

        ``parent`` is the trace context the order belongs to (an advisory's), else the current one."""
        stub = self.stub(address)
        prepare = isinstance(command, PrepareCommand)
        span: trace.Span = trace.INVALID_SPAN  # orders outside any trace start none of their own
        if trace.get_current_span(parent).get_span_context().is_valid:
            span = self.tracing.tracer.start_span(
                "scheduler.prepare" if prepare else "scheduler.release",
                context=parent,
                kind=trace.SpanKind.CLIENT,
                attributes={ATTR_SESSION: command.session_id, ATTR_NODE: command.node_id},
            )
        metadata = inject_metadata(context=trace.set_span_in_context(span, parent))
        try:
            if isinstance(command, PrepareCommand):
                span.set_attribute(ATTR_KV_SOURCE, command.source)
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
                    metadata=metadata,
                )
            elif isinstance(command, ReleaseCommand):
                await stub.Release(
                    nodesched_pb2.ReleaseRequest(
                        session_id=command.session_id, prefetch_only=command.prefetch_only
                    ),
                    timeout=self.rpc_timeout_s,
                    metadata=metadata,
                )
        except grpc.aio.AioRpcError as err:
            span.set_status(trace.StatusCode.ERROR, f"{err.code().name}: {err.details()}")
            if prepare and self.metrics is not None:
                self.metrics.fallback("prepare_failed")
            log.warning(
                "%s of session %s on node %s failed: %s %s",
                type(command).__name__,
                command.session_id,
                command.node_id,
                err.code().name,
                err.details(),
            )
        finally:
            span.end()

    def spawn(self, commands: Iterable[tuple[Command, str]], parent: Context | None = None) -> None:
        """Carries out orders in the background (advisories must not wait for nodes)."""
        for command, address in commands:
            task = asyncio.create_task(self.execute(command, address, parent))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
