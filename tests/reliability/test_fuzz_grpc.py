"""Fuzzing the gRPC front door: random, oversized and malformed messages get a status that names
the problem (never INTERNAL or UNKNOWN), the server stays up, and a refused turn leaves no session.

Also the protocol misuses a client can make: unknown or reused session ids, out-of-order turns,
cancels without advisories, negative or huge ETAs and max_tokens, undecodable bytes.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symphony.v1 import common_pb2, scheduler_pb2

from .frontdoor import GRPC_ERRORS, FrontDoors, front_doors, turn

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "", "robot", "USER"])
INT32 = st.integers(-(2**31), 2**31 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)

messages = st.lists(st.builds(common_pb2.ChatMessage, role=ROLES, content=st.text(max_size=200)), max_size=6)
turns = st.builds(
    common_pb2.TurnRequest,
    session_id=st.text(max_size=300),
    turn_index=INT32,
    messages=messages,
    max_tokens=INT32,
    ignore_eos=st.booleans(),
    is_last=st.booleans(),
    expected_response=st.text(max_size=50),
    request_id=st.text(max_size=300),
    sampling=st.builds(common_pb2.SamplingParams, temperature=FLOATS, top_p=FLOATS, min_tokens=INT32),
    model=st.text(max_size=20),
)


@pytest.fixture
async def fd() -> AsyncIterator[FrontDoors]:
    async with front_doors() as doors:
        yield doors


async def _assert_serving(fd: FrontDoors) -> None:
    health = health_pb2_grpc.HealthStub(fd.channel)
    resp = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


@FUZZ
@given(request=turns)
async def test_random_turns_are_answered_or_refused_by_name(
    fd: FrontDoors, request: common_pb2.TurnRequest
) -> None:
    before = await fd.sessions_tracked()
    try:
        summary = await fd.generate(request)
    except grpc.aio.AioRpcError as err:
        assert err.code() in GRPC_ERRORS, (err.code(), err.details())
        assert err.details(), "an error must say what is wrong"
        assert await fd.sessions_tracked() == before, "a refused turn left a session behind"
    else:
        assert summary.completion_tokens > 0
    await _assert_serving(fd)


@FUZZ
@given(session=st.text(max_size=300), eta=st.floats(width=64), index=INT32)
async def test_random_advisories(fd: FrontDoors, session: str, eta: float, index: int) -> None:
    req = scheduler_pb2.AdviseRequest(session_id=session, eta_s=eta, turn_index=index)
    try:
        await fd.stub.Advise(req, timeout=5)
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert any(f in (err.details() or "") for f in ("session_id", "eta_s", "turn_index"))
    else:
        assert session and 0 <= eta <= 3600 and math.isfinite(eta) and index >= 0


@pytest.mark.parametrize("eta", [-1.0, 1e12, float("nan"), float("inf")])
async def test_negative_or_huge_etas_are_refused(fd: FrontDoors, eta: float) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fd.stub.Advise(scheduler_pb2.AdviseRequest(session_id="s", eta_s=eta), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "eta_s" in (info.value.details() or "")
    assert await fd.sessions_tracked() == 0


@pytest.mark.parametrize("max_tokens", [-5, 0, 2**31 - 1])
async def test_negative_or_huge_max_tokens_are_refused(fd: FrontDoors, max_tokens: int) -> None:
    t = turn("s")
    t.max_tokens = max_tokens
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fd.generate(t)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_tokens" in (info.value.details() or "")


async def test_cancel_without_an_advisory(fd: FrontDoors) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fd.stub.CancelAdvice(scheduler_pb2.CancelAdviceRequest(session_id="never-seen"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "never-seen" in (info.value.details() or "")
    await fd.generate(turn("known"))
    resp = await fd.stub.CancelAdvice(scheduler_pb2.CancelAdviceRequest(session_id="known"), timeout=5)
    assert not resp.cancelled


async def test_out_of_order_and_reused_sessions_are_served_from_their_history(fd: FrontDoors) -> None:
    """Every turn carries its whole conversation, so order and reuse cannot corrupt an answer."""
    assert (await fd.generate(turn("ooo", index=3, messages=3))).completion_tokens > 0
    assert (await fd.generate(turn("ooo", index=1))).completion_tokens > 0
    await fd.generate(turn("reused", last=True))
    assert await fd.sessions_tracked() == 1  # "reused" ended
    assert (await fd.generate(turn("reused"))).completion_tokens > 0
    assert await fd.sessions_tracked() == 2


@FUZZ
@given(payload=st.binary(max_size=512))
async def test_undecodable_bytes_do_not_hurt_the_server(fd: FrontDoors, payload: bytes) -> None:
    generate = fd.channel.unary_stream(
        "/symphony.v1.Scheduler/Generate",
        request_serializer=lambda b: b,
        response_deserializer=common_pb2.GenerateResponse.FromString,
    )
    try:
        async for _ in generate(payload, timeout=5):
            pass
    except grpc.aio.AioRpcError as err:
        assert err.code() in GRPC_ERRORS, (err.code(), err.details())
        assert err.details()
    await _assert_serving(fd)


async def test_invalid_utf8_in_a_string_field_is_refused(fd: FrontDoors) -> None:
    bad = b"\x0a\x03\xff\xfe\xfd"  # field 1 (session_id), 3 bytes that are not UTF-8
    generate = fd.channel.unary_stream(
        "/symphony.v1.Scheduler/Generate",
        request_serializer=lambda b: b,
        response_deserializer=common_pb2.GenerateResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in generate(bad, timeout=5):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Generate: the request is not a valid message" in (info.value.details() or "")
    assert await fd.sessions_tracked() == 0
