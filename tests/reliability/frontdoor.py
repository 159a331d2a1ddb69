"""An in-process scheduler with one fake node on loopback ports: the front doors the fuzz and limit
tests knock on (real gRPC and HTTP servers; the node is the project's own fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import grpc

from symphony.clock import ManualClock
from symphony.limits import Limits
from symphony.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from symphony_scheduler.fakes import FakeNode
from symphony_scheduler.server import RunningScheduler, SchedulerConfig, start_scheduler

GRPC_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}


@dataclass
class FrontDoors:
    sched: RunningScheduler
    node: FakeNode
    channel: grpc.aio.Channel
    http: aiohttp.ClientSession
    clock: ManualClock

    @property
    def stub(self) -> scheduler_pb2_grpc.SchedulerAsyncStub:
        return scheduler_pb2_grpc.SchedulerStub(self.channel)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sched.http_port}"

    async def sessions_tracked(self) -> int:
        state = await self.stub.GetClusterState(scheduler_pb2.GetClusterStateRequest(), timeout=5)
        return state.sessions_tracked

    async def generate(self, turn: common_pb2.TurnRequest) -> common_pb2.TurnSummary:
        summary = common_pb2.TurnSummary()
        async for resp in self.stub.Generate(turn, timeout=10):
            if resp.HasField("summary"):
                summary = resp.summary
        return summary


@asynccontextmanager
async def front_doors(limits: Limits | None = None) -> AsyncIterator[FrontDoors]:
    clock = ManualClock(1000.0)
    config = SchedulerConfig(listen="127.0.0.1:0", http_listen="127.0.0.1:0", limits=limits or Limits())
    sched = await start_scheduler(config, clock=clock)
    node = await FakeNode.start("node-a", f"127.0.0.1:{sched.grpc_port}")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{sched.grpc_port}")
    http = aiohttp.ClientSession()
    try:
        yield FrontDoors(sched, node, channel, http, clock)
    finally:
        await http.close()
        await channel.close(None)
        await node.stop()
        await sched.stop()


def turn(
    session: str, index: int = 0, messages: int = 1, chars: int = 20, last: bool = False
) -> common_pb2.TurnRequest:
    return common_pb2.TurnRequest(
        session_id=session,
        turn_index=index,
        messages=[common_pb2.ChatMessage(role="user", content="x" * chars) for _ in range(messages)],
        max_tokens=4,
        is_last=last,
    )
