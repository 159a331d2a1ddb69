"""Fuzzing the HTTP front door: random JSON, invalid UTF-8, bad headers and paths get a 4xx with
an OpenAI-style JSON error body naming the problem; never a 500, never a session left behind."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .frontdoor import FrontDoors, front_doors

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "bot", 7]), "content": json_values}
)
chat_bodies = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(message, max_size=4) | json_values,
        "max_tokens": st.integers(-(2**40), 2**40) | json_values,
        "stream": json_values,
        "temperature": st.floats() | json_values,
        "model": json_values,
        "stream_options": json_values,
    },
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)


@pytest.fixture
async def fd() -> AsyncIterator[FrontDoors]:
    async with front_doors() as doors:
        yield doors


async def _check_error(resp: Any) -> dict[str, Any]:
    assert resp.status < 500, (resp.status, await resp.text())
    body = await resp.json()
    assert body["error"]["message"], body
    assert body["error"]["code"] == resp.status
    return body  # type: ignore[no-any-return]


@FUZZ
@given(body=chat_bodies, session=st.none() | header_text)
async def test_random_chat_requests(fd: FrontDoors, body: dict[str, Any], session: str | None) -> None:
    before = await fd.sessions_tracked()
    headers = {"x-session-id": session} if session is not None else {}
    async with fd.http.post(f"{fd.url}/v1/chat/completions", json=body, headers=headers) as resp:
        if resp.status == 200:
            await resp.read()
            return
        await _check_error(resp)
    assert await fd.sessions_tracked() == before, "a refused request left a session behind"


@FUZZ
@given(raw=st.binary(max_size=300))
async def test_random_bytes_and_invalid_utf8(fd: FrontDoors, raw: bytes) -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/sessions/s/advice"):
        async with fd.http.post(
            f"{fd.url}{path}", data=raw, headers={"Content-Type": "application/json"}
        ) as resp:
            if resp.status != 200:
                await _check_error(resp)
    assert await fd.sessions_tracked() == 0 or b"{" in raw


async def test_invalid_utf8_names_the_body(fd: FrontDoors) -> None:
    async with fd.http.post(f"{fd.url}/v1/chat/completions", data=b'{"messages": "\xff\xfe"}') as resp:
        body = await _check_error(resp)
    assert resp.status == 400 and body["error"]["param"] == "body"


@FUZZ
@given(session=header_text, body=json_values)
async def test_random_advisories(fd: FrontDoors, session: str, body: Any) -> None:
    path = f"{fd.url}/v1/sessions/{session.replace('/', '_').replace('?', '_').replace('#', '_')}/advice"
    async with fd.http.post(path, data=json.dumps(body)) as resp:
        if resp.status != 200:
            await _check_error(resp)
    async with fd.http.delete(path) as resp:
        if resp.status != 200:
            await _check_error(resp)


@pytest.mark.parametrize("eta", [-1, 1e12, "soon", None, True])
async def test_bad_etas_are_refused_by_name(fd: FrontDoors, eta: object) -> None:
    async with fd.http.post(f"{fd.url}/v1/sessions/s/advice", json={"eta_s": eta}) as resp:
        body = await _check_error(resp)
    assert resp.status == 400 and "eta_s" in body["error"]["message"]
    assert await fd.sessions_tracked() == 0


async def test_unknown_paths_and_methods_get_json_errors(fd: FrontDoors) -> None:
    async with fd.http.get(f"{fd.url}/v1/nothing-here") as resp:
        assert resp.status == 404
        await _check_error(resp)
    async with fd.http.get(f"{fd.url}/v1/chat/completions") as resp:
        assert resp.status == 405
        await _check_error(resp)
