"""Translation between OpenAI request/response JSON and Symphony turns, with no I/O.

Accepted: the chat and completions fields vLLM accepts that a turn can express (``max_tokens`` /
``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``min_tokens``, ``ignore_eos``,
``stream``, ``stream_options.include_usage``, ``user``). ``n`` other than 1 is refused rather than
silently ignored. The session is the ``x-session-id`` header, else ``user``, else a fresh one-off id;
the turn index is the number of user messages before the last one. ``x-request-id`` names the
request; ``x-session-last: true`` marks the session's last turn, so its K,V is released at once.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from symphony.errors import InvalidArgument
from symphony.v1 import common_pb2

DEFAULT_MAX_TOKENS = 256
DEFAULT_MODEL = "symphony"


def _number(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(key, f"must be a number, got {value!r}")
    return float(value)


def _integer(body: dict[str, Any], key: str, default: int | None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(key, f"must be an integer, got {value!r}")
    return value


def _content(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: only text parts can be served
        texts = []
        for i, part in enumerate(value):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise InvalidArgument(f"{field}[{i}]", "only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    if value is None:
        return ""
    raise InvalidArgument(field, "must be a string or a list of text parts")


def chat_messages(body: dict[str, Any]) -> list[common_pb2.ChatMessage]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidArgument("messages", "must be a list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidArgument(f"messages[{i}]", "must be an object with a string 'role'")
        out.append(
            common_pb2.ChatMessage(
                role=m["role"], content=_content(m.get("content"), f"messages[{i}].content")
            )
        )
    return out


def completion_messages(body: dict[str, Any]) -> list[common_pb2.ChatMessage]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidArgument("prompt", "must be a string (or a list of exactly one string)")
    return [common_pb2.ChatMessage(role="user", content=prompt)]


def build_turn(
    body: dict[str, Any],
    messages: list[common_pb2.ChatMessage],
    session_header: str | None,
    request_id: str | None = None,
    is_last: bool = False,
) -> common_pb2.TurnRequest:
    """The turn an OpenAI request stands for; raises InvalidArgument naming the bad field."""
    n = _integer(body, "n", 1)
    if n != 1:
        raise InvalidArgument("n", "only n=1 is supported")
    max_tokens = _integer(body, "max_completion_tokens", None)
    max_tokens = _integer(body, "max_tokens", max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidArgument("user", "must be a string")
    model = body.get("model", "")
    if not isinstance(model, str):
        raise InvalidArgument("model", "must be a string")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise InvalidArgument("ignore_eos", "must be a boolean")
    session_id = session_header or user or f"anon-{uuid.uuid4().hex}"
    turn = common_pb2.TurnRequest(
        session_id=session_id,
        turn_index=max(0, sum(1 for m in messages if m.role == "user") - 1),
        messages=messages,
        max_tokens=max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS,
        ignore_eos=ignore_eos,
        is_last=is_last,
        model=model,
        request_id=request_id or uuid.uuid4().hex,
    )
    turn.sampling.temperature = _number(body, "temperature", 1.0)
    turn.sampling.top_p = _number(body, "top_p", 1.0)
    turn.sampling.min_tokens = _integer(body, "min_tokens", 0) or 0
    seed = _integer(body, "seed", None)
    if seed is not None:
        if seed < 0:
            raise InvalidArgument("seed", "must be >= 0")
        turn.sampling.seed = seed
    return turn


def stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidArgument("stream", "must be a boolean")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidArgument("stream_options", "must be an object")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise InvalidArgument("stream_options.include_usage", "must be a boolean")
    return stream, include_usage


def usage(summary: common_pb2.TurnSummary) -> dict[str, Any]:
    return {
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "total_tokens": summary.prompt_tokens + summary.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": summary.cached_tokens},
    }


class ResponseShape:
    """Builds the JSON objects of one response, chat or text completion."""

    def __init__(self, chat: bool, model: str, request_id: str) -> None:
        self.chat = chat
        self.model = model or DEFAULT_MODEL
        self.id = ("chatcmpl-" if chat else "cmpl-") + request_id
        self.created = int(time.time())

    def _base(self, chunk: bool) -> dict[str, Any]:
        obj = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def chunk(self, text: str | None, finish_reason: str | None = None, role: bool = False) -> dict[str, Any]:
        out = self._base(chunk=True)
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            out["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        else:
            out["choices"] = [
                {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
            ]
        return out

    def usage_chunk(self, summary: common_pb2.TurnSummary) -> dict[str, Any]:
        out = self._base(chunk=True)
        out["choices"] = []
        out["usage"] = usage(summary)
        return out

    def full(self, text: str, summary: common_pb2.TurnSummary) -> dict[str, Any]:
        out = self._base(chunk=False)
        finish = summary.finish_reason or "stop"
        if self.chat:
            message = {"role": "assistant", "content": text}
            out["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
        else:
            out["choices"] = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
        out["usage"] = usage(summary)
        return out
