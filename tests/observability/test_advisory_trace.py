"""K,V work ordered by an advisory is traced in the advisory's trace and linked from the turn it
served: a real scheduler and a real sim node scheduler in this process, exporting over OTLP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import grpc
import pytest

from symphony.tracing import TracingConfig
from symphony.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
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


@contextlib.asynccontextmanager
async def traced_services(receiver: OtlpReceiver) -> AsyncIterator[RunningScheduler]:
    """A scheduler and one sim node, both exporting to ``receiver``; stopping them flushes spans."""
    sched = await start_scheduler(
        SchedulerConfig(
            listen="127.0.0.1:0", http_listen="127.0.0.1:0", tracing=TracingConfig(endpoint=receiver.endpoint)
        )
    )
    node = NodeApp(
        NodeConfig(
            node_id="node-a",
            listen="127.0.0.1:0",
            advertise="127.0.0.1:0",
            scheduler=f"127.0.0.1:{sched.grpc_port}",
            profile="cpu-tiny/test",
            time_scale=20.0,
            metrics_listen="127.0.0.1:0",
            otlp_endpoint=receiver.endpoint,
        )
    )
    await node.start()
    try:
        deadline = time.monotonic() + 30
        while "node-a" not in sched.app.core.nodes:  # registration runs in the node's own task
            assert time.monotonic() < deadline, "the node did not register"
            await asyncio.sleep(0.05)
        yield sched
    finally:
        await node.stop()
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
        traced_services(receiver) as sched,
        grpc.aio.insecure_channel(f"127.0.0.1:{sched.grpc_port}") as channel,
    ):
        stub: SchedulerAsyncStub = scheduler_pb2_grpc.SchedulerStub(channel)
        history = [("user", "Tell me about tiered K,V caches. " * 20)]
        answer = await _generate(stub, _turn(0, history))
        # The scheduler forgets where the K,V is, so the advisory must order a warm-up on the node.
        sched.app.core.sessions["s-1"].locations.clear()
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
    async with traced_services(receiver) as sched, aiohttp.ClientSession() as http:
        resp = await http.post(
            f"http://127.0.0.1:{sched.http_port}/v1/chat/completions",
            json={"model": "", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            headers={"x-session-id": "web-1", "traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        assert resp.status == 200, await resp.text()
    await receiver.wait_for(lambda spans: {s.name for s in spans} >= {"nodesched.generate"}, timeout_s=20)
    served = _one(receiver.spans, "scheduler.generate")
    assert (served.trace_id, served.parent_span_id) == (trace_id, parent_id)
    assert _one(receiver.spans, "nodesched.generate").trace_id == trace_id
