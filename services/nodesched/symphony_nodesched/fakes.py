"""Fakes the project owns, for tests and local experiments: a scheduler that records what nodes
send it, and a loop that drives a :class:`SimNode` through its events in virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from symphony.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from symphony_nodesched.events import NodeEvent
from symphony_nodesched.simnode import SimNode


class FakeScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """Records RegisterNode and ReportStatus; ``forget()`` makes the next report answer NOT_FOUND."""

    def __init__(self, heartbeat_interval_s: float = 0.05) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.registrations: list[scheduler_pb2.RegisterNodeRequest] = []
        self.reports: list[common_pb2.NodeStatus] = []
        self.known: set[str] = set()
        self.changed = asyncio.Event()

    def forget(self, node_id: str) -> None:
        self.known.discard(node_id)

    async def RegisterNode(
        self, request: scheduler_pb2.RegisterNodeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.RegisterNodeResponse:
        self.registrations.append(request)
        self.known.add(request.node_id)
        self.changed.set()
        return scheduler_pb2.RegisterNodeResponse(heartbeat_interval_s=self.heartbeat_interval_s, lease_s=5.0)

    async def ReportStatus(
        self, request: common_pb2.NodeStatus, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.ReportStatusResponse:
        if request.node_id not in self.known:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown node {request.node_id!r}")
        self.reports.append(request)
        self.changed.set()
        return scheduler_pb2.ReportStatusResponse(heartbeat_interval_s=self.heartbeat_interval_s)

    # The client-facing RPCs are not what a node talks to.
    async def Generate(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[common_pb2.GenerateResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake scheduler: nodes only")
        yield common_pb2.GenerateResponse()

    async def Advise(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake scheduler: nodes only")

    async def CancelAdvice(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake scheduler: nodes only")

    async def Submit(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake scheduler: nodes only")

    async def GetClusterState(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake scheduler: nodes only")

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Waits (on the recorder's own event, not a timer) until ``predicate()`` holds."""

        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout_s)


def drive(
    node: SimNode, now: float, until: Callable[[list[NodeEvent]], bool] | None = None
) -> tuple[list[NodeEvent], float]:
    """Jumps from event to event until ``until(events)`` holds (or nothing is left to do).

    Returns the events and the virtual time reached, as ``symphony simulate`` would."""
    events: list[NodeEvent] = []
    while until is None or not until(events):
        t = node.next_event_time()
        if t is None:
            break
        now = max(now, t)
        events.extend(node.advance(now))
    return events, now
