"""The OpenAI-compatible front door, driven by the official ``openai`` client and raw HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from symphony.clock import ManualClock
from symphony.limits import Limits
from symphony_scheduler.fakes import FakeBehaviour, FakeNode
from symphony_scheduler.server import RunningScheduler, SchedulerConfig, start_scheduler


class Front:
    def __init__(self, sched: RunningScheduler, http: aiohttp.ClientSession) -> None:
        self.sched = sched
        self.http = http
        self.base = f"http://127.0.0.1:{sched.http_port}"
        self.client = openai.AsyncOpenAI(base_url=self.base + "/v1", api_key="unused", max_retries=0)
        self.nodes: list[FakeNode] = []

    async def add_node(self, node_id: str) -> FakeNode:
        node = await FakeNode.start(node_id, f"127.0.0.1:{self.sched.grpc_port}")
        self.nodes.append(node)
        return node


@pytest.fixture
async def front() -> AsyncIterator[Front]:
    config = SchedulerConfig(
        listen="127.0.0.1:0", http_listen="127.0.0.1:0", policy="symphony", limits=Limits(max_messages=8)
    )
    sched = await start_scheduler(config, clock=ManualClock())
    async with aiohttp.ClientSession() as http:
        f = Front(sched, http)
        yield f
        await f.client.close()
        for node in f.nodes:
            await node.stop()
    await sched.stop()


async def test_readyz_turns_ready_when_a_node_registers(front: Front) -> None:
    async with front.http.get(front.base + "/readyz") as r:
        assert r.status == 503 and (await r.json())["reason"] == "no node is registered"
    async with front.http.get(front.base + "/healthz") as r:
        assert r.status == 200
    await front.add_node("a")
    async with front.http.get(front.base + "/readyz") as r:
        assert r.status == 200 and (await r.json())["nodes"] == 1


async def test_openai_client_streams_with_session_header_and_advisory(front: Front) -> None:
    await front.add_node("a")
    await front.add_node("b")
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there, how are you?"}]
    first = await front.client.chat.completions.create(
        model="fake-model",
        messages=messages,
        max_tokens=8,
        extra_headers={"x-session-id": "chat-1"},
    )
    answer = first.choices[0].message.content or ""
    assert answer == "ok " * 3 and first.usage is not None and first.usage.completion_tokens == 3
    async with front.http.post(front.base + "/v1/sessions/chat-1/advice", json={"eta_s": 2.0}) as r:
        assert r.status == 200
        advice = await r.json()
    assert advice["accepted"] and advice["reason"] == "kv_gpu"
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "tell me more"}]
    stream = await front.client.chat.completions.create(
        model="fake-model",
        messages=messages,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-session-id": "chat-1"},
        extra_body={"ignore_eos": True, "min_tokens": 2},
    )
    text, usage, finish = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == "ok " * 3 and finish == "length"
    assert usage is not None and usage.prompt_tokens_details is not None
    # The second turn hit the K,V the first one left on the advised node.
    assert usage.prompt_tokens_details.cached_tokens and usage.prompt_tokens_details.cached_tokens > 0
    reg = front.sched.app.registry
    assert reg.get_sample_value("symphony_advisories_total", {"outcome": "used"}) == 1
    assert (
        reg.get_sample_value("symphony_routing_decisions_total", {"policy": "symphony", "reason": "advised"})
        == 1
    )
    async with front.http.get(front.base + "/metrics") as r:
        body = await r.text()
    assert 'symphony_routing_decisions_total{policy="symphony",reason="advised"} 1.0' in body
    assert "symphony_sessions_active 1.0" in body


async def test_completions_and_models(front: Front) -> None:
    await front.add_node("a")
    models = await front.client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    done = await front.client.completions.create(
        model="fake-model", prompt="Once upon a time", max_tokens=4, user="u-7"
    )
    assert done.choices[0].text == "ok " * 3 and done.usage is not None
    assert "u-7" in front.sched.app.core.sessions  # `user` names the session without the header
    chunks = [
        c
        async for c in await front.client.completions.create(model="m", prompt="p", max_tokens=4, stream=True)
    ]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "ok " * 3


async def test_bad_http_input_gets_4xx_json(front: Front) -> None:
    await front.add_node("a")
    url = front.base + "/v1/chat/completions"
    async with front.http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and "malformed JSON" in (await r.json())["error"]["message"]
    async with front.http.post(front.base + "/v1/sessions/s/advice", json={"eta_s": -2}) as r:
        body = await r.json()
        assert r.status == 400 and body["error"]["param"] == "eta_s"
    async with front.http.delete(front.base + "/v1/sessions/nobody/advice") as r:
        assert r.status == 404 and "unknown session" in (await r.json())["error"]["message"]
    too_many: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x"}] * 9
    with pytest.raises(openai.RateLimitError, match="exceed the limit of 8"):
        await front.client.chat.completions.create(model="m", messages=too_many, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="n: only n=1"):
        await front.client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], max_tokens=4, n=2
        )
    assert front.sched.app.core.sessions.keys() == set()  # rejected requests left nothing behind


async def test_no_node_is_503_before_the_stream_starts(front: Front) -> None:
    with pytest.raises(openai.InternalServerError, match="no healthy node"):
        await front.client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], max_tokens=4, stream=True
        )


async def test_a_node_dying_mid_stream_ends_the_stream_with_an_error_event(front: Front) -> None:
    node = await FakeNode.start(
        "a", f"127.0.0.1:{front.sched.grpc_port}", FakeBehaviour(fail_after_first=True)
    )
    front.nodes.append(node)
    stream = await front.client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], max_tokens=4, stream=True
    )
    text = ""
    with pytest.raises(openai.APIError, match="failed after the first token"):
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "ok "  # what was streamed before the failure stays delivered
    reg = front.sched.app.registry
    assert reg.get_sample_value("symphony_turns_total", {"outcome": "error"}) == 1


async def test_last_turn_header_ends_the_session_and_releases_its_kv(front: Front) -> None:
    node = await front.add_node("a")
    headers = {"x-session-id": "bye", "x-request-id": "req-42"}
    done = await front.client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], max_tokens=4, extra_headers=headers
    )
    assert done.id == "chatcmpl-req-42" and "bye" in front.sched.app.core.sessions
    await front.client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=4,
        extra_headers={**headers, "x-session-last": "true"},
    )
    assert "bye" not in front.sched.app.core.sessions
    await asyncio.wait_for(node.servicer.wait_for(lambda st: len(st.releases) == 1), 10.0)
    assert node.state.releases[0].session_id == "bye" and not node.state.releases[0].prefetch_only
    with pytest.raises(openai.BadRequestError, match="x-session-last"):
        await front.client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=4,
            extra_headers={"x-session-last": "maybe"},
        )
