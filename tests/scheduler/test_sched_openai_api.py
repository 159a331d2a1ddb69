"""OpenAI JSON <-> turn translation, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from symphony.errors import InvalidArgument
from symphony.v1 import common_pb2
from symphony_scheduler.openai_api import (
    ResponseShape,
    build_turn,
    chat_messages,
    completion_messages,
    stream_flags,
)


def test_chat_request_becomes_a_turn_with_session_index_and_sampling() -> None:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ],
        "max_completion_tokens": 9,
        "temperature": 0.5,
        "seed": 7,
        "min_tokens": 2,
        "ignore_eos": True,
    }
    turn = build_turn(body, chat_messages(body), "sess", "rid", is_last=True)
    assert (turn.session_id, turn.turn_index, turn.max_tokens, turn.request_id) == ("sess", 1, 9, "rid")
    assert turn.messages[1].content == "hi there" and turn.is_last and turn.ignore_eos
    assert (turn.sampling.temperature, turn.sampling.seed, turn.sampling.min_tokens) == (0.5, 7, 2)


def test_user_field_names_the_session_when_no_header() -> None:
    body = {"prompt": ["once"], "user": "u1"}
    turn = build_turn(body, completion_messages(body), None)
    assert turn.session_id == "u1" and turn.messages[0].content == "once" and turn.max_tokens == 256


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]"),
        ({"messages": [], "n": 3}, "n"),
        ({"messages": [], "max_tokens": "ten"}, "max_tokens"),
        ({"messages": [], "temperature": "hot"}, "temperature"),
        ({"messages": [], "seed": -1}, "seed"),
        ({"messages": [], "ignore_eos": "yes"}, "ignore_eos"),
    ],
)
def test_bad_fields_are_named(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        build_turn(body, chat_messages(body), "s")
    assert err.value.field == field


def test_stream_flags_and_prompt_shapes_are_checked() -> None:
    assert stream_flags({"stream": True, "stream_options": {"include_usage": True}}) == (True, True)
    with pytest.raises(InvalidArgument, match=r"stream_options\.include_usage"):
        stream_flags({"stream": True, "stream_options": {"include_usage": "yes"}})
    with pytest.raises(InvalidArgument, match="prompt"):
        completion_messages({"prompt": ["a", "b"]})


def test_response_shapes_carry_cached_tokens() -> None:
    summary = common_pb2.TurnSummary(
        prompt_tokens=10, completion_tokens=3, cached_tokens=8, finish_reason="length"
    )
    full = ResponseShape(True, "m", "r1").full("abc", summary)
    assert full["id"] == "chatcmpl-r1" and full["choices"][0]["message"]["content"] == "abc"
    assert full["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 8},
    }
    chunk = ResponseShape(False, "", "r2").chunk("x", "stop")
    assert chunk["object"] == "text_completion" and chunk["choices"][0]["text"] == "x"
