"""Configurable limits, enforced at both front doors with RESOURCE_EXHAUSTED / 429 and a message
naming the limit; a refused request leaves no state behind."""

from __future__ import annotations

import grpc
import pytest

from symphony.limits import Limits
from symphony.v1 import scheduler_pb2

from .frontdoor import front_doors, turn


async def test_history_length_limit_on_both_front_doors() -> None:
    async with front_doors(Limits(max_messages=4)) as fd:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fd.generate(turn("s-long", messages=5))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "5 messages exceed the limit of 4" in (info.value.details() or "")
        body = {"messages": [{"role": "user", "content": "hi"}] * 5, "max_tokens": 4}
        async with fd.http.post(f"{fd.url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 429
            assert "exceed the limit of 4" in (await resp.json())["error"]["message"]
        assert await fd.sessions_tracked() == 0
        assert (await fd.generate(turn("s-ok", messages=4))).completion_tokens > 0


async def test_message_size_limit() -> None:
    async with front_doors(Limits(max_grpc_message_bytes=32 * 1024)) as fd:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fd.generate(turn("s-big", chars=64 * 1024))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        body = {"messages": [{"role": "user", "content": "x" * 64 * 1024}], "max_tokens": 4}
        async with fd.http.post(f"{fd.url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == 413
        assert await fd.sessions_tracked() == 0


async def test_sessions_per_client_limit_frees_a_slot_when_a_session_ends() -> None:
    async with front_doors(Limits(max_sessions_per_client=2)) as fd:
        await fd.generate(turn("s-1"))
        await fd.generate(turn("s-2"))
        await fd.generate(turn("s-1", index=1))  # an open session goes on
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fd.generate(turn("s-3"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "already has 2 open sessions" in (info.value.details() or "")
        assert await fd.sessions_tracked() == 2, "the refused session left state behind"
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        async with fd.http.post(
            f"{fd.url}/v1/chat/completions", json=body, headers={"x-session-id": "s-4"}
        ) as resp:
            assert resp.status == 429
        await fd.generate(turn("s-1", index=2, last=True))  # ends s-1
        await fd.generate(turn("s-3"))


async def test_advisory_rate_limit_refills_with_time() -> None:
    async with front_doors(Limits(max_advisories_per_s=2, advisory_burst=3)) as fd:
        for i in range(3):
            await fd.stub.Advise(scheduler_pb2.AdviseRequest(session_id=f"a-{i}", eta_s=5), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fd.stub.Advise(scheduler_pb2.AdviseRequest(session_id="a-x", eta_s=5), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "advisories: more than 2/s" in (info.value.details() or "")
        async with fd.http.post(f"{fd.url}/v1/sessions/a-y/advice", json={"eta_s": 5}) as resp:
            assert resp.status == 429
        assert await fd.sessions_tracked() == 3
        fd.clock.advance(0.5)  # one advisory's worth of refill
        await fd.stub.Advise(scheduler_pb2.AdviseRequest(session_id="a-x", eta_s=5), timeout=5)


async def test_limits_reject_nonsense_values() -> None:
    with pytest.raises(ValueError, match="max_advisories_per_s"):
        Limits(max_advisories_per_s=-1)
