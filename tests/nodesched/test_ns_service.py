"""The node scheduler live: real gRPC on loopback, a fake scheduler we own, the tiny sim profile."""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import grpc
import pytest

from symphony.grpcutil import start_server
from symphony.v1 import common_pb2, nodesched_pb2, nodesched_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from symphony_nodesched.app import NodeApp
from symphony_nodesched.config import NodeConfig
from symphony_nodesched.fakes import FakeScheduler

if TYPE_CHECKING:
    from symphony.v1.nodesched_pb2_grpc import NodeSchedulerAsyncStub

pytestmark = pytest.mark.integration

ANSWER = "Because air scatters blue light more than red light."


class Stack:
    def __init__(self, fake: FakeScheduler, nodes: list[NodeApp]) -> None:
        self.fake = fake
        self.nodes = nodes
        self.channels: list[grpc.aio.Channel] = []

    def stub(self, i: int = 0) -> "NodeSchedulerAsyncStub":
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.nodes[i].grpc_port}")
        self.channels.append(channel)
        return nodesched_pb2_grpc.NodeSchedulerStub(channel)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    fake = FakeScheduler()
    name = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name
    sched = await start_server(
        lambda s: scheduler_pb2_grpc.add_SchedulerServicer_to_server(fake, s), [name], "127.0.0.1:0"
    )
    nodes = []
    for i in range(2):
        config = NodeConfig(
            node_id=f"node-{i}",
            listen="127.0.0.1:0",
            advertise="127.0.0.1:0",
            metrics_listen="127.0.0.1:0",
            scheduler=f"127.0.0.1:{sched.port}",
            profile="cpu-tiny/test",
            heartbeat_interval_s=0.05,
        )
        node = NodeApp(config)
        await node.start()
        nodes.append(node)
    s = Stack(fake, nodes)
    try:
        yield s
    finally:
        for c in s.channels:
            await c.close(None)
        for node in nodes:
            await node.stop()
        await sched.stop(0)


def turn(
    session: str, index: int, messages: list[common_pb2.ChatMessage], **kw: object
) -> nodesched_pb2.NodeGenerateRequest:
    t = common_pb2.TurnRequest(session_id=session, turn_index=index, messages=messages, **kw)  # type: ignore[arg-type]
    return nodesched_pb2.NodeGenerateRequest(turn=t, route_reason="test")


async def generate(
    stub: "NodeSchedulerAsyncStub", req: nodesched_pb2.NodeGenerateRequest
) -> tuple[str, common_pb2.TurnSummary]:
    text, summary = "", None
    async for item in stub.Generate(req):
        if item.HasField("delta"):
            assert summary is None, "a delta after the summary"
            text += item.delta.text
        else:
            summary = item.summary
    assert summary is not None
    return text, summary


FIRST = [
    common_pb2.ChatMessage(role="system", content="You answer physics questions."),
    common_pb2.ChatMessage(role="user", content="Why is the sky blue? " * 40),
]


async def test_registers_and_reports_status(stack: Stack) -> None:
    await stack.fake.wait_for(lambda: len(stack.fake.reports) >= 2)
    reg = next(r for r in stack.fake.registrations if r.node_id == "node-0")
    assert reg.address == f"127.0.0.1:{stack.nodes[0].grpc_port}"
    assert reg.engine == scheduler_pb2.ENGINE_KIND_SIM and reg.profile == "cpu-tiny/test"
    assert {t.tier for t in reg.tiers} == {common_pb2.TIER_GPU, common_pb2.TIER_HOST, common_pb2.TIER_DISK}
    seqs = [r.sequence for r in stack.fake.reports if r.node_id == stack.fake.reports[-1].node_id]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_registers_again_when_the_scheduler_forgets_it(stack: Stack) -> None:
    await stack.fake.wait_for(lambda: any(r.node_id == "node-0" for r in stack.fake.reports))
    stack.fake.forget("node-0")
    await stack.fake.wait_for(lambda: sum(r.node_id == "node-0" for r in stack.fake.registrations) >= 2)


async def test_generate_streams_then_summarises_and_caches_the_next_turn(stack: Stack) -> None:
    stub = stack.stub()
    text, s1 = await generate(stub, turn("sess", 0, FIRST, max_tokens=64, expected_response=ANSWER))
    assert text == ANSWER
    assert (s1.node_id, s1.route_reason, s1.finish_reason) == ("node-0", "test", "stop")
    assert s1.completion_tokens == 13 and s1.cached_tokens == 0
    assert s1.recomputed_tokens == s1.prompt_tokens > 0
    assert 0 < s1.ttft_s <= s1.e2e_s
    second = [
        *FIRST,
        common_pb2.ChatMessage(role="assistant", content=text),
        common_pb2.ChatMessage(role="user", content="And sunsets?"),
    ]
    _, s2 = await generate(stub, turn("sess", 1, second, max_tokens=8))
    assert s2.cached_tokens >= s1.prompt_tokens - 16
    assert [(t.tier, t.tokens) for t in s2.cached_by_tier] == [(common_pb2.TIER_GPU, s2.cached_tokens)]
    status = await stub.GetStatus(nodesched_pb2.GetStatusRequest(include_sessions=True))
    (res,) = status.sessions
    assert res.session_id == "sess" and res.tier == common_pb2.TIER_GPU and res.gpu_fraction == 1.0
    gpu = next(t for t in status.tiers if t.tier == common_pb2.TIER_GPU)
    assert gpu.used_bytes > 0 and gpu.capacity_bytes > gpu.used_bytes
    await stack.fake.wait_for(
        lambda: any(s.session_id == "sess" for r in stack.fake.reports for s in r.sessions)
    )


async def test_prepare_release_and_fetch_kv(stack: Stack) -> None:
    stub = stack.stub()
    prep = await stub.Prepare(
        nodesched_pb2.PrepareRequest(
            session_id="warm", source=nodesched_pb2.KV_SOURCE_RECOMPUTE, messages=FIRST, eta_s=2.0
        )
    )
    assert prep.accepted and prep.source == nodesched_pb2.KV_SOURCE_RECOMPUTE and prep.tokens > 0
    await stack.fake.wait_for(
        lambda: any(s.session_id == "warm" and s.prepared for r in stack.fake.reports for s in r.sessions)
    )
    chunks = [
        c async for c in stub.FetchKv(nodesched_pb2.FetchKvRequest(session_id="warm", requester_node_id="x"))
    ]
    assert chunks and chunks[0].layer_start == 0 and chunks[-1].layer_end == 4
    assert all(c.tokens == prep.tokens for c in chunks)
    rel = await stub.Release(nodesched_pb2.ReleaseRequest(session_id="warm"))
    assert rel.released and rel.freed_bytes > 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [c async for c in stub.FetchKv(nodesched_pb2.FetchKvRequest(session_id="warm"))]
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_prepare_from_a_peer_over_fetch_kv(stack: Stack) -> None:
    a, b = stack.stub(0), stack.stub(1)
    text, s1 = await generate(a, turn("mig", 0, FIRST, max_tokens=32, expected_response=ANSWER))
    prep = await b.Prepare(
        nodesched_pb2.PrepareRequest(
            session_id="mig",
            source=nodesched_pb2.KV_SOURCE_PEER,
            peer_node_id="node-0",
            peer_address=f"127.0.0.1:{stack.nodes[0].grpc_port}",
            messages=[*FIRST, common_pb2.ChatMessage(role="assistant", content=text)],
            eta_s=1.0,
        )
    )
    assert prep.accepted and prep.source == nodesched_pb2.KV_SOURCE_PEER and prep.tokens > s1.prompt_tokens
    second = [
        *FIRST,
        common_pb2.ChatMessage(role="assistant", content=text),
        common_pb2.ChatMessage(role="user", content="Why?"),
    ]
    _, s2 = await generate(b, turn("mig", 1, second, max_tokens=4))
    assert s2.node_id == "node-1" and s2.cached_tokens >= s1.prompt_tokens - 16
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{stack.nodes[1].http_port}/metrics") as resp,
    ):
        body = await resp.text()
    assert 'symphony_kv_transfers_total{dst="gpu",src="peer"} 1.0' in body
    assert 'symphony_kv_tier_used_bytes{node="node-1",tier="gpu"}' in body
    assert 'symphony_kv_tier_used_bytes{node="node-1",tier="gpu"} 0.0' not in body


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (turn("", 0, FIRST, max_tokens=5), "session_id"),
        (turn("s", 0, FIRST, max_tokens=-3), "max_tokens"),
        (turn("s", 0, [], max_tokens=5), "messages"),
        (turn("s", 0, [common_pb2.ChatMessage(role="robot", content="x")], max_tokens=5), "role"),
    ],
)
async def test_bad_turns_are_invalid_argument_naming_the_field(
    stack: Stack, request_: nodesched_pb2.NodeGenerateRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await generate(stack.stub(), request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.value.details() or "")
    status = await stack.stub().GetStatus(nodesched_pb2.GetStatusRequest(include_sessions=True))
    assert list(status.sessions) == [] and status.load.waiting_requests == 0  # nothing half-done


async def test_bad_orders_are_invalid_argument_naming_the_field(stack: Stack) -> None:
    stub = stack.stub()
    prepares = [
        (nodesched_pb2.PrepareRequest(session_id=""), "session_id"),
        (nodesched_pb2.PrepareRequest(session_id="s", eta_s=-1), "eta_s"),
        (nodesched_pb2.PrepareRequest(session_id="s", source=nodesched_pb2.KV_SOURCE_PEER), "peer_address"),
        (nodesched_pb2.PrepareRequest(session_id="s", source=nodesched_pb2.KV_SOURCE_RECOMPUTE), "messages"),
    ]
    for req, field in prepares:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Prepare(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Release(nodesched_pb2.ReleaseRequest(session_id=""))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "session_id" in (err.value.details() or "")


async def test_healthz(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{stack.nodes[0].http_port}/healthz") as resp,
    ):
        assert resp.status == 200
        assert (await resp.json()) == {"status": "ok"}
