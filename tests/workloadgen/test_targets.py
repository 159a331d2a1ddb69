"""Each target against a fake it talks to over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from symphony_workloadgen.clients.base import Delta, Done, TargetError, TurnCall
from symphony_workloadgen.clients.callback import CallbackTarget
from symphony_workloadgen.clients.openai_http import OpenAIHttpTarget
from symphony_workloadgen.clients.symphony_grpc import SymphonyGrpcTarget
from symphony_workloadgen.dataset import Conversation, Turn
from symphony_workloadgen.runner import RunConfig, Runner
from symphony_workloadgen.session import SessionPlanner, UserModel

from .fakes import FakeOpenAI, FakeScheduler, start_fake_scheduler

CALL = TurnCall(
    session_id="s-1",
    turn_index=0,
    messages=(("user", "hello"),),
    max_tokens=8,
    ignore_eos=True,
    is_last=False,
    expected_response="an answer of some thirty chars",
    request_id="r-1",
)
CONVS = [Conversation("c", (Turn("hi" * 10, "ok" * 40), Turn("more" * 5, "fine" * 20)))]


@pytest.fixture
async def openai_fake() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def loop_clock() -> float:
    return asyncio.get_running_loop().time()


async def collect(target: OpenAIHttpTarget | SymphonyGrpcTarget, call: TurnCall) -> list[Delta | Done]:
    return [ev async for ev in target.run_turn(call, loop_clock)]


async def test_openai_target_streams_chat_completions(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, url = openai_fake
    target = OpenAIHttpTarget(url)
    await target.start()
    try:
        assert target.model == "fake-model"  # discovered from /v1/models
        events = await collect(target, CALL)
        await target.advise("s/1", 1.5, 2, 40)
        await target.cancel_advice("s/1")
    finally:
        await target.close()
    deltas = [e for e in events if isinstance(e, Delta)]
    done = events[-1]
    assert "".join(d.text for d in deltas) == fake.answer
    assert isinstance(done, Done) and done.output_tokens == len(fake.answer.split())
    assert done.prompt_tokens == 100 and done.cached_tokens == 64
    body, headers = fake.requests[0]
    assert headers["x-session-id"] == "s-1"
    assert body["stream"] and body["max_tokens"] == 8 and body["ignore_eos"]
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert fake.advice == [
        ("POST", "s/1", {"eta_s": 1.5, "turn_index": 2, "expected_prompt_chars": 40}),
        ("DELETE", "s/1", None),
    ]


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (400, False)])
async def test_openai_errors_carry_the_server_message(
    openai_fake: tuple[FakeOpenAI, str], status: int, retryable: bool
) -> None:
    fake, url = openai_fake
    fake.status = status
    target = OpenAIHttpTarget(url, model="m")
    await target.start()
    try:
        with pytest.raises(TargetError, match="the fake is overloaded") as info:
            await collect(target, CALL)
    finally:
        await target.close()
    assert info.value.code == f"HTTP_{status}" and info.value.retryable is retryable


async def test_runner_drives_an_openai_server(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, url = openai_fake
    target = OpenAIHttpTarget(url)
    await target.start()
    planner = SessionPlanner(CONVS, UserModel(time_scale=100), seed=0)
    try:
        result = await Runner(target, planner, RunConfig(num_clients=2, max_turns=4)).run()
    finally:
        await target.close()
    assert len(result.records) == 4 and all(r.ok for r in result.records)
    assert all(r.cached_tokens == 64 and r.output_tokens == len(fake.answer.split()) for r in result.records)
    assert all(r.first_token <= r.finished and len(r.itl) == r.output_tokens - 1 for r in result.records)
    assert len(fake.advice) == result.advisories_sent >= 4


async def test_callback_mode_receives_responses_on_the_receiver_server() -> None:
    sched = FakeScheduler()
    server = await start_fake_scheduler(sched)
    target = CallbackTarget(f"127.0.0.1:{server.port}", "127.0.0.1:0", "127.0.0.1:0")
    await target.start()
    try:
        assert target.callback_address == f"127.0.0.1:{target.receiver_port}"
        events = await collect(target, CALL)
        planner = SessionPlanner(CONVS, UserModel(time_scale=100), seed=0)
        result = await Runner(target, planner, RunConfig(num_clients=2, max_turns=4)).run()
        sched.fail_turns = frozenset({0})
        with pytest.raises(TargetError, match="INVALID_ARGUMENT: rejected by the fake"):
            await collect(target, CALL)
    finally:
        await target.close()
        await server.stop(0)
    assert "".join(e.text for e in events if isinstance(e, Delta)) == CALL.expected_response
    done = events[-1]
    assert isinstance(done, Done) and done.server_first_token_s == pytest.approx(0.001)
    assert len(result.records) == 4 and all(r.ok for r in result.records)
    # TTFT in callback mode is the server's first-token time.
    assert all(r.ttft == pytest.approx(0.001) for r in result.records)


async def test_grpc_target_reports_a_lost_scheduler_as_retryable() -> None:
    with pytest.raises(TargetError, match="no scheduler reachable"):
        await SymphonyGrpcTarget("127.0.0.1:1", connect_timeout_s=0.2).start()
    server = await start_fake_scheduler(FakeScheduler())
    target = SymphonyGrpcTarget(f"127.0.0.1:{server.port}")
    await target.start()
    await server.stop(0)
    try:
        with pytest.raises(TargetError) as info:
            await collect(target, CALL)
    finally:
        await target.close()
    assert info.value.code == "UNAVAILABLE" and info.value.retryable
