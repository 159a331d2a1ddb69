"""The scheduler's gRPC service, live on loopback, against fake nodes the project owns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from symphony.clock import ManualClock
from symphony.grpcutil import start_server
from symphony.limits import Limits
from symphony.v1 import (
    common_pb2,
    nodesched_pb2,
    receiver_pb2,
    receiver_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)
from symphony_scheduler.fakes import FakeBehaviour, FakeNode
from symphony_scheduler.server import RunningScheduler, SchedulerConfig, start_scheduler

if TYPE_CHECKING:
    from symphony.v1.scheduler_pb2_grpc import SchedulerAsyncStub

WAIT = 10.0


def turn(session: str, index: int = 0, n_messages: int = 1, chars: int = 40) -> common_pb2.TurnRequest:
    msgs = [common_pb2.ChatMessage(role="user", content="y" * chars) for _ in range(n_messages)]
    return common_pb2.TurnRequest(session_id=session, turn_index=index, messages=msgs, max_tokens=8)


class Stack:
    def __init__(self, sched: RunningScheduler, channel: grpc.aio.Channel, clock: ManualClock) -> None:
        self.sched = sched
        self.channel = channel
        self.clock = clock
        self.stub: SchedulerAsyncStub = scheduler_pb2_grpc.SchedulerStub(channel)
        self.nodes: list[FakeNode] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sched.grpc_port}"

    async def add_node(self, node_id: str, behaviour: FakeBehaviour | None = None) -> FakeNode:
        node = await FakeNode.start(node_id, self.address, behaviour)
        self.nodes.append(node)
        return node

    async def generate(self, t: common_pb2.TurnRequest) -> tuple[str, common_pb2.TurnSummary]:
        text, summary = "", common_pb2.TurnSummary()
        async for resp in self.stub.Generate(t, timeout=WAIT):
            if resp.HasField("delta"):
                text += resp.delta.text
            else:
                summary = resp.summary
        return text, summary

    def metric(self, name: str, **labels: str) -> float:
        value = self.sched.app.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def make_stack(policy: str = "symphony", limits: Limits | None = None) -> Stack:
    clock = ManualClock()
    config = SchedulerConfig(
        listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        policy=policy,
        limits=limits or Limits(max_messages=16),
    )
    sched = await start_scheduler(config, clock=clock)
    return Stack(sched, grpc.aio.insecure_channel(f"127.0.0.1:{sched.grpc_port}"), clock)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack()
    yield s
    for node in s.nodes:
        await node.stop()
    await s.channel.close(None)
    await s.sched.stop()


async def test_advisory_routes_the_turn_to_the_prepared_node(stack: Stack) -> None:
    a = await stack.add_node("a")
    b = await stack.add_node("b")
    _, first = await stack.generate(turn("s", 0))
    home = a if first.node_id == "a" else b
    other = b if home is a else a
    # The home node is swamped: the advisory should move the session to the idle peer.
    home.state.held["s"] = first.prompt_tokens + first.completion_tokens
    stack.sched.app.core.nodes[home.node_id].load.running_requests = 200
    advice = await stack.stub.Advise(scheduler_pb2.AdviseRequest(session_id="s", eta_s=2.0, turn_index=1))
    assert advice.accepted and advice.node_id == other.node_id and advice.reason == "kv_peer"
    await asyncio.wait_for(other.servicer.wait_for(lambda st: len(st.prepares) == 1), WAIT)
    prep = other.state.prepares[0]
    assert prep.peer_node_id == home.node_id and prep.peer_address == home.address
    assert [m.role for m in prep.messages] == ["user", "assistant"]  # transcript for a warm-up
    _, summary = await stack.generate(turn("s", 1))
    assert (summary.node_id, summary.route_reason, summary.attempts) == (other.node_id, "advised", 1)
    assert stack.metric("symphony_advisories_total", outcome="used") == 1
    assert stack.metric("symphony_routing_decisions_total", policy="symphony", reason="advised") == 1


async def test_cancel_releases_and_unknown_session_is_not_found(stack: Stack) -> None:
    a = await stack.add_node("a")
    await stack.generate(turn("s", 0))
    a.state.held.pop("s")
    stack.sched.app.core.sessions["s"].locations["a"].tier = "host"
    advice = await stack.stub.Advise(scheduler_pb2.AdviseRequest(session_id="s", eta_s=2.0))
    assert advice.reason == "kv_local"
    cancelled = await stack.stub.CancelAdvice(scheduler_pb2.CancelAdviceRequest(session_id="s"))
    assert cancelled.cancelled
    await asyncio.wait_for(a.servicer.wait_for(lambda st: len(st.releases) == 1), WAIT)
    assert a.state.releases[0].prefetch_only
    assert stack.metric("symphony_advisories_total", outcome="cancelled") == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.stub.CancelAdvice(scheduler_pb2.CancelAdviceRequest(session_id="nobody"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "unknown session" in (err.value.details() or "")


async def test_node_failing_before_first_token_is_retried_elsewhere(stack: Stack) -> None:
    await stack.add_node("a", FakeBehaviour(fail_before_first=True))
    await stack.add_node("b", FakeBehaviour(fail_before_first=True))
    await stack.add_node("c")
    text, summary = await stack.generate(turn("s", 0))
    assert text == "ok " * 3  # the client sees one clean answer
    # Equal nodes tie-break by id: a, then b failed and were dropped; c answered.
    assert (summary.node_id, summary.attempts) == ("c", 3)
    assert stack.metric("symphony_turn_retries_total") == 2
    assert set(stack.sched.app.core.nodes) == {"c"}


async def test_node_failing_after_first_token_fails_the_turn_with_the_cause(stack: Stack) -> None:
    await stack.add_node("a", FakeBehaviour(fail_after_first=True))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.generate(turn("s", 0))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "after the first token" in (err.value.details() or "")
    assert "crashed mid-stream" in (err.value.details() or "")
    assert stack.sched.app.core.nodes["a"].inflight == 0


async def test_lease_expiry_drops_a_silent_node_and_reroutes(stack: Stack) -> None:
    a = await stack.add_node("a")
    b = await stack.add_node("b")
    stack.clock.advance(4.0)
    await b.report()
    stack.clock.advance(2.0)  # a: 6 s without a report, lease 5 s
    await stack.sched.app.tick()
    assert set(stack.sched.app.core.nodes) == {"b"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await a.report()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # "register again"
    _, summary = await stack.generate(turn("s", 0))
    assert summary.node_id == "b"


async def test_bad_input_gets_clear_statuses(stack: Stack) -> None:
    await stack.add_node("a")
    cases: list[tuple[Any, grpc.StatusCode, str]] = [
        (
            stack.stub.Advise(scheduler_pb2.AdviseRequest(session_id="s", eta_s=-1.0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "eta_s",
        ),
        (
            stack.stub.Advise(scheduler_pb2.AdviseRequest(session_id="", eta_s=1.0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "session_id",
        ),
        (stack.generate(turn("s", 0, n_messages=17)), grpc.StatusCode.RESOURCE_EXHAUSTED, "limit of 16"),
        (
            stack.generate(common_pb2.TurnRequest(session_id="s", max_tokens=4)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "messages",
        ),
        (
            stack.stub.RegisterNode(scheduler_pb2.RegisterNodeRequest(node_id="x")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "address",
        ),
        (
            stack.stub.ReportStatus(common_pb2.NodeStatus(node_id="ghost")),
            grpc.StatusCode.NOT_FOUND,
            "register again",
        ),
    ]
    for call, code, text in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == code and text in (err.value.details() or ""), err.value
    assert stack.sched.app.core.sessions.keys() == set()  # nothing recorded for rejected turns


async def test_no_node_is_unavailable() -> None:
    s = await make_stack()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.generate(turn("s", 0))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "no healthy node" in (
            err.value.details() or ""
        )
    finally:
        await s.channel.close(None)
        await s.sched.stop()


class Receiver(receiver_pb2_grpc.ResponseReceiverServicer):
    def __init__(self) -> None:
        self.got: asyncio.Queue[receiver_pb2.PostResponseRequest] = asyncio.Queue()

    async def PostResponse(
        self, request: receiver_pb2.PostResponseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> receiver_pb2.PostResponseResponse:
        await self.got.put(request)
        return receiver_pb2.PostResponseResponse()


async def test_submit_posts_the_response_to_the_callback_receiver(stack: Stack) -> None:
    await stack.add_node("a")
    receiver = Receiver()
    handle = await start_server(
        lambda s: receiver_pb2_grpc.add_ResponseReceiverServicer_to_server(receiver, s),
        ["symphony.v1.ResponseReceiver"],
        "127.0.0.1:0",
    )
    try:
        ack = await stack.stub.Submit(
            scheduler_pb2.SubmitRequest(turn=turn("cb", 0), callback_address=f"127.0.0.1:{handle.port}")
        )
        assert ack.accepted and ack.request_id
        post = await asyncio.wait_for(receiver.got.get(), WAIT)
        assert post.request_id == ack.request_id and post.text == "ok " * 3 and not post.error_code
        assert post.summary.node_id == "a" and post.summary.completion_tokens == 3
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stack.stub.Submit(
                scheduler_pb2.SubmitRequest(turn=turn("cb", 1), callback_address="nowhere")
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await handle.stop(0)


async def test_cluster_state_shows_nodes_and_sessions(stack: Stack) -> None:
    await stack.add_node("a")
    await stack.generate(turn("s", 0))
    state = await stack.stub.GetClusterState(scheduler_pb2.GetClusterStateRequest(include_sessions=True))
    assert state.policy == "symphony" and [n.registration.node_id for n in state.nodes] == ["a"]
    assert [(s.session_id, s.node_id, s.turns) for s in state.sessions] == [("s", "a", 1)]


async def test_deferred_advisory_is_placed_by_the_expiry_pass(stack: Stack) -> None:
    a = await stack.add_node("a")
    b = await stack.add_node("b")
    _, first = await stack.generate(turn("s", 0))
    holder = a if first.node_id == "a" else b
    advice = await stack.stub.Advise(scheduler_pb2.AdviseRequest(session_id="s", eta_s=30.0, turn_index=1))
    assert (advice.accepted, advice.node_id, advice.reason) == (True, "", "deferred")
    stack.clock.advance(28.5)
    for node in (a, b):
        await node.report()  # keep their leases
    holder.state.held.clear()  # the holder lost the K,V: the policy must warm it up again
    stack.sched.app.core.sessions["s"].locations.clear()
    await stack.sched.app.tick()
    chosen = stack.sched.app.core.sessions["s"].advice
    assert chosen is not None and chosen.node_id is not None and chosen.reason == "kv_recompute"
    target = a if chosen.node_id == "a" else b
    await asyncio.wait_for(target.servicer.wait_for(lambda st: len(st.prepares) == 1), WAIT)
    assert target.state.prepares[0].source == nodesched_pb2.KV_SOURCE_RECOMPUTE
    assert len(target.state.prepares[0].messages) == 2
