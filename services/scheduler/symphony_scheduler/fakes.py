"""A fake node scheduler the project owns, for tests and benchmarks (as httpx ships MockTransport).

It is a real ``symphony.v1.NodeScheduler`` gRPC server: it registers with a scheduler, answers
Generate with a few deltas and a summary, remembers the K,V it "holds", and records every Prepare
and Release so a test can assert what the scheduler ordered. Behaviour switches make it fail
before or after its first token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from symphony.grpcutil import CHANNEL_OPTIONS, ServerHandle, start_server
from symphony.tokens import count_text_tokens, prompt_token_count
from symphony.v1 import common_pb2, nodesched_pb2, nodesched_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

if TYPE_CHECKING:
    from symphony.v1.scheduler_pb2_grpc import SchedulerAsyncStub

NODE_SERVICE = nodesched_pb2.DESCRIPTOR.services_by_name["NodeScheduler"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class FakeBehaviour:
    deltas: int = 3
    text: str = "ok "
    fail_before_first: bool = False  # abort Generate with UNAVAILABLE before any delta
    fail_after_first: bool = False  # abort with UNAVAILABLE after the first delta
    kv_load_s: float = 0.0  # reported in the summary (0: the K,V was ready)


@dataclass
class FakeNodeState:
    held: dict[str, int] = field(default_factory=dict)  # session -> tokens on "GPU"
    prepares: list[nodesched_pb2.PrepareRequest] = field(default_factory=list)
    releases: list[nodesched_pb2.ReleaseRequest] = field(default_factory=list)
    generates: list[nodesched_pb2.NodeGenerateRequest] = field(default_factory=list)


class FakeNodeServicer(nodesched_pb2_grpc.NodeSchedulerServicer):
    def __init__(self, node_id: str, behaviour: FakeBehaviour | None = None) -> None:
        self.node_id = node_id
        self.behaviour = behaviour or FakeBehaviour()
        self.state = FakeNodeState()
        self.changed = asyncio.Condition()

    async def _record(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[FakeNodeState], bool]) -> None:
        """Waits until ``predicate(state)`` holds (an event, not a sleep); callers bound the wait."""
        async with self.changed:
            await self.changed.wait_for(lambda: predicate(self.state))

    async def Generate(
        self, request: nodesched_pb2.NodeGenerateRequest, context: Context
    ) -> AsyncIterator[common_pb2.GenerateResponse]:
        b = self.behaviour
        turn = request.turn
        self.state.generates.append(request)
        await self._record()
        if b.fail_before_first:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.node_id} is going away")
        n = min(b.deltas, turn.max_tokens)
        for i in range(n):
            yield common_pb2.GenerateResponse(delta=common_pb2.TokenDelta(text=b.text, num_tokens=1))
            if i == 0 and b.fail_after_first:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.node_id} crashed mid-stream")
        prompt = prompt_token_count(turn.messages)
        cached = min(self.state.held.get(turn.session_id, 0), max(prompt - 1, 0))
        answer = b.text * n
        self.state.held[turn.session_id] = prompt + count_text_tokens(answer)
        summary = common_pb2.TurnSummary(
            request_id=turn.request_id,
            session_id=turn.session_id,
            turn_index=turn.turn_index,
            node_id=self.node_id,
            prompt_tokens=prompt,
            completion_tokens=n,
            cached_tokens=cached,
            recomputed_tokens=prompt - cached,
            kv_load_s=b.kv_load_s,
            ttft_s=0.001,
            e2e_s=0.002,
            finish_reason="length",
            route_reason=request.route_reason,
        )
        if cached:
            summary.cached_by_tier.add(tier=common_pb2.TIER_GPU, tokens=cached)
        yield common_pb2.GenerateResponse(summary=summary)

    async def Prepare(
        self, request: nodesched_pb2.PrepareRequest, context: Context
    ) -> nodesched_pb2.PrepareResponse:
        self.state.prepares.append(request)
        self.state.held[request.session_id] = max(
            self.state.held.get(request.session_id, 0), request.expected_tokens
        )
        await self._record()
        return nodesched_pb2.PrepareResponse(
            accepted=True, source=request.source, expected_ready_s=0.0, tokens=request.expected_tokens
        )

    async def Release(
        self, request: nodesched_pb2.ReleaseRequest, context: Context
    ) -> nodesched_pb2.ReleaseResponse:
        self.state.releases.append(request)
        released = self.state.held.pop(request.session_id, None) is not None
        await self._record()
        return nodesched_pb2.ReleaseResponse(released=released)

    async def FetchKv(
        self, request: nodesched_pb2.FetchKvRequest, context: Context
    ) -> AsyncIterator[nodesched_pb2.KvChunk]:
        tokens = self.state.held.get(request.session_id)
        if tokens is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"{self.node_id} holds no K,V of {request.session_id}"
            )
            return
        yield nodesched_pb2.KvChunk(session_id=request.session_id, layer_start=0, layer_end=32, tokens=tokens)

    async def GetStatus(
        self, request: nodesched_pb2.GetStatusRequest, context: Context
    ) -> common_pb2.NodeStatus:
        return self.status(request.include_sessions)

    def status(self, include_sessions: bool = True, sequence: int = 0) -> common_pb2.NodeStatus:
        st = common_pb2.NodeStatus(node_id=self.node_id, sequence=sequence)
        if include_sessions:
            for sid, tokens in self.state.held.items():
                st.sessions.add(session_id=sid, tokens=tokens, tier=common_pb2.TIER_GPU, gpu_fraction=1.0)
        return st


class FakeNode:
    """A started fake node on loopback, registered with a scheduler."""

    def __init__(self, servicer: FakeNodeServicer, handle: ServerHandle, channel: grpc.aio.Channel) -> None:
        self.servicer = servicer
        self.handle = handle
        self.channel = channel
        self.scheduler: SchedulerAsyncStub = scheduler_pb2_grpc.SchedulerStub(channel)
        self.address = f"127.0.0.1:{handle.port}"
        self._sequence = 0

    @property
    def node_id(self) -> str:
        return self.servicer.node_id

    @property
    def state(self) -> FakeNodeState:
        return self.servicer.state

    @classmethod
    async def start(
        cls,
        node_id: str,
        scheduler_address: str,
        behaviour: FakeBehaviour | None = None,
        register: bool = True,
    ) -> FakeNode:
        servicer = FakeNodeServicer(node_id, behaviour)
        handle = await start_server(
            lambda s: nodesched_pb2_grpc.add_NodeSchedulerServicer_to_server(servicer, s),
            [NODE_SERVICE],
            "127.0.0.1:0",
        )
        node = cls(servicer, handle, grpc.aio.insecure_channel(scheduler_address, options=CHANNEL_OPTIONS))
        if register:
            await node.register()
        return node

    def registration(self) -> scheduler_pb2.RegisterNodeRequest:
        return scheduler_pb2.RegisterNodeRequest(
            node_id=self.node_id,
            address=self.address,
            engine=scheduler_pb2.ENGINE_KIND_SIM,
            model="fake-model",
            kv_bytes_per_token=131_072,
            host_link_gbps=24.8,
            network_gbps=12.5,
            profile="fake",
            max_num_seqs=256,
        )

    async def register(self) -> None:
        await self.scheduler.RegisterNode(self.registration(), timeout=10.0)

    async def report(self) -> None:
        self._sequence += 1
        await self.scheduler.ReportStatus(self.servicer.status(True, self._sequence), timeout=10.0)

    async def stop(self) -> None:
        await self.handle.stop(0)
        await self.channel.close(None)
