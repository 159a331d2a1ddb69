"""K,V work ordered by an advisory is traced in the advisory's trace and linked from the turn it
served: a real scheduler and a real sim node scheduler in this process, exporting over OTLP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import grpc
import pytest

from symphony.tracing import TracingConfig
from symphony.v1 import common_pb2, nodesched_pb2, nodesched_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from symphony_nodesched.app import NodeApp
from symphony_nodesched.config import NodeConfig
from symphony_scheduler.server import RunningScheduler, SchedulerConfig, start_scheduler

from .otlp import OtlpReceiver, ReceivedSpan

if TYPE_CHECKING:
    from symphony.v1.scheduler_pb2_grpc import SchedulerAsyncStub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = OtlpReceiver()
    await r.start()
    yield r
    await r.stop()


@dataclass
class Services:
    sched: RunningScheduler
    nodes: list[NodeApp]


@contextlib.asynccontextmanager
async def traced_services(receiver: OtlpReceiver, nodes: int = 1) -> AsyncIterator[Services]:
    """A scheduler and sim nodes, all exporting to ``receiver``; stopping them flushes spans."""
    sched = await start_scheduler(
        SchedulerConfig(
            listen="127.0.0.1:0", http_listen="127.0.0.1:0", tracing=TracingConfig(endpoint=receiver.endpoint)
        )
    )
    apps = [
        NodeApp(
            NodeConfig(
                node_id=f"node-{chr(ord('a') + i)}",
                listen="127.0.0.1:0",
                advertise="127.0.0.1:0",
                scheduler=f"127.0.0.1:{sched.grpc_port}",
                profile="cpu-tiny/test",
                time_scale=20.0,
                metrics_listen="127.0.0.1:0",
                otlp_endpoint=receiver.endpoint,
            )
        )
        for i in range(nodes)
    ]
    try:
        for app in apps:
            await app.start()
        deadline = time.monotonic() + 30
        while len(sched.app.core.nodes) < nodes:  # registration runs in each node's own task
            assert time.monotonic() < deadline, "the nodes did not register"
            await asyncio.sleep(0.05)
        yield Services(sched, apps)
    finally:
        for app in apps:
            await app.stop()
        await sched.stop()


def _turn(index: int, messages: list[tuple[str, str]]) -> common_pb2.TurnRequest:
    return common_pb2.TurnRequest(
        session_id="s-1",
        turn_index=index,
        messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in messages],
        max_tokens=8,
        ignore_eos=True,
    )


async def _generate(stub: SchedulerAsyncStub, turn: common_pb2.TurnRequest) -> str:
    text = []
    async for resp in stub.Generate(turn):
        text.append(resp.delta.text)
    return "".join(text)


def _one(spans: list[ReceivedSpan], name: str, **attrs: object) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, f"{name} {attrs}: {len(found)} spans"
    return found[0]


async def test_prepare_ordered_by_an_advisory_is_in_its_trace_and_linked_from_the_turn(
    receiver: OtlpReceiver,
) -> None:
    async with (
        traced_services(receiver) as services,
        grpc.aio.insecure_channel(f"127.0.0.1:{services.sched.grpc_port}") as channel,
    ):
        stub: SchedulerAsyncStub = scheduler_pb2_grpc.SchedulerStub(channel)
        history = [("user", "Tell me about tiered K,V caches. " * 20)]
        answer = await _generate(stub, _turn(0, history))
        # The scheduler forgets where the K,V is, so the advisory must order a warm-up on the node.
        services.sched.app.core.sessions["s-1"].locations.clear()
        advice = await stub.Advise(scheduler_pb2.AdviseRequest(session_id="s-1", eta_s=0.0, turn_index=1))
        assert (advice.accepted, advice.node_id) == (True, "node-a")
        await _generate(stub, _turn(1, [*history, ("assistant", answer), ("user", "And the disk tier?")]))

    def ready(spans: list[ReceivedSpan]) -> bool:
        names = {s.name for s in spans}
        return {"scheduler.advise", "nodesched.prepare"} <= names and sum(
            s.name == "scheduler.generate" for s in spans
        ) == 2

    await receiver.wait_for(ready, timeout_s=20)
    spans = receiver.spans
    advise = _one(spans, "scheduler.advise")
    order = _one(spans, "scheduler.prepare")
    prepare = _one(spans, "nodesched.prepare")
    assert order.trace_id == prepare.trace_id == advise.trace_id
    assert order.parent_span_id == advise.span_id and prepare.parent_span_id == order.span_id
    assert prepare.attributes["symphony.session_id"] == "s-1"
    assert prepare.attributes["symphony.kv_source"] == "recompute"
    assert "symphony.kv_expected_ready_s" in prepare.attributes

    served = _one(spans, "scheduler.generate", **{"symphony.turn_index": 1})
    assert served.trace_id != advise.trace_id
    assert (advise.trace_id, advise.span_id) in served.links
    first = _one(spans, "scheduler.generate", **{"symphony.turn_index": 0})
    assert first.links == []


async def test_the_http_front_door_continues_the_callers_trace(receiver: OtlpReceiver) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with traced_services(receiver) as services, aiohttp.ClientSession() as http:
        resp = await http.post(
            f"http://127.0.0.1:{services.sched.http_port}/v1/chat/completions",
            json={"model": "", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            headers={"x-session-id": "web-1", "traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        assert resp.status == 200, await resp.text()
    await receiver.wait_for(lambda spans: {s.name for s in spans} >= {"nodesched.generate"}, timeout_s=20)
    served = _one(receiver.spans, "scheduler.generate")
    assert (served.trace_id, served.parent_span_id) == (trace_id, parent_id)
    assert _one(receiver.spans, "nodesched.generate").trace_id == trace_id


async def test_a_peer_fetch_continues_the_trace_of_the_prepare_that_needs_it(receiver: OtlpReceiver) -> None:
    async with (
        traced_services(receiver, nodes=2) as services,
        grpc.aio.insecure_channel(f"127.0.0.1:{services.sched.grpc_port}") as channel,
    ):
        await _generate(scheduler_pb2_grpc.SchedulerStub(channel), _turn(0, [("user", "hello " * 200)]))
        summary_node = next(n for n in services.nodes if n.backend.status(True).sessions)
        other = next(n for n in services.nodes if n is not summary_node)
        # An operator-style order straight to the other node: pull the K,V from the holder.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.grpc_port}") as node_channel:
            stub = nodesched_pb2_grpc.NodeSchedulerStub(node_channel)
            trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
            await stub.Prepare(
                nodesched_pb2.PrepareRequest(
                    session_id="s-1",
                    source=nodesched_pb2.KV_SOURCE_PEER,
                    peer_node_id=summary_node.config.node_id,
                    peer_address=f"127.0.0.1:{summary_node.grpc_port}",
                    eta_s=5.0,
                ),
                metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")],
            )
    await receiver.wait_for(lambda spans: any(s.name == "nodesched.fetch_kv" for s in spans), timeout_s=20)
    prepare = _one(receiver.spans, "nodesched.prepare")
    fetch = _one(receiver.spans, "nodesched.fetch_kv")
    assert (prepare.trace_id, prepare.parent_span_id) == (trace_id, parent_id)
    assert (fetch.trace_id, fetch.parent_span_id) == (trace_id, prepare.span_id)
    assert fetch.attributes["symphony.node_id"] == summary_node.config.node_id
    assert fetch.attributes["symphony.kv_bytes"] > 0
