"""Any OpenAI-compatible server (a bare vLLM, or Symphony's HTTP front door): streaming chat
completions with the session id in the ``x-session-id`` header.

Advisories go to ``POST /v1/sessions/{id}/advice`` (``DELETE`` cancels), which Symphony's front door
serves; a plain vLLM answers 404 there, so run baselines with ``--no-advisories``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp

from symphony_workloadgen.clients.base import Clock, Delta, Done, TargetError, TurnCall, TurnEvent

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


class OpenAIHttpTarget:
    def __init__(self, base_url: str, model: str = "", api_key: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("target not started")
        return self._session

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        first = await self._first_model()  # also checks that the server is reachable
        self.model = self.model or first

    async def _first_model(self) -> str:
        try:
            async with self.http.get(f"{self.base_url}/v1/models") as resp:
                body = await _json_or_error(resp)
        except aiohttp.ClientError as err:
            await self.close()
            raise TargetError("UNAVAILABLE", f"{self.base_url}/v1/models: {err}") from None
        data = body.get("data") if isinstance(body, dict) else None
        if not data or not isinstance(data, list) or not isinstance(data[0], dict) or "id" not in data[0]:
            if self.model:
                return self.model
            await self.close()
            raise TargetError("PROTOCOL", f"{self.base_url}/v1/models lists no model; pass --model")
        return str(data[0]["id"])

    async def advise(self, session_id: str, eta_s: float, turn_index: int, prompt_chars: int) -> None:
        body = {"eta_s": eta_s, "turn_index": turn_index, "expected_prompt_chars": prompt_chars}
        await self._call("POST", f"/v1/sessions/{quote(session_id, safe='')}/advice", body)

    async def cancel_advice(self, session_id: str) -> None:
        await self._call("DELETE", f"/v1/sessions/{quote(session_id, safe='')}/advice", None)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> None:
        try:
            async with self.http.request(method, self.base_url + path, json=body) as resp:
                await _json_or_error(resp)
        except aiohttp.ClientError as err:
            raise TargetError("UNAVAILABLE", str(err), retryable=True) from None

    async def run_turn(self, call: TurnCall, clock: Clock) -> AsyncIterator[TurnEvent]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": r, "content": c} for r, c in call.messages],
            "max_tokens": call.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if call.ignore_eos:
            body["ignore_eos"] = True
        headers = {"x-session-id": call.session_id, "x-request-id": call.request_id}
        usage: dict[str, Any] = {}
        tokens = 0
        try:
            async with self.http.post(
                f"{self.base_url}/v1/chat/completions", json=body, headers=headers
            ) as resp:
                if resp.status != 200:
                    await _json_or_error(resp)
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        err = chunk["error"]
                        raise TargetError(
                            "SERVER_ERROR", str(err.get("message", err) if isinstance(err, dict) else err)
                        )
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            tokens += 1
                            yield Delta(clock(), text, 1)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
        except aiohttp.ClientError as err:
            raise TargetError("UNAVAILABLE", str(err) or type(err).__name__, retryable=True) from None
        except json.JSONDecodeError as err:
            raise TargetError("PROTOCOL", f"a stream chunk is not JSON: {err}") from None
        details = usage.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        yield Done(
            t=clock(),
            output_tokens=int(usage.get("completion_tokens", tokens)),
            prompt_tokens=int(usage["prompt_tokens"]) if "prompt_tokens" in usage else None,
            cached_tokens=int(cached) if cached is not None else None,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _json_or_error(resp: aiohttp.ClientResponse) -> Any:
    """The JSON body of a 2xx answer; a :class:`TargetError` carrying the server's message otherwise."""
    text = await resp.text()
    if resp.status >= 400:
        message = text[:500]
        try:
            err = json.loads(text).get("error")
            if isinstance(err, dict) and "message" in err:
                message = str(err["message"])
            elif isinstance(err, str):
                message = err
        except (ValueError, AttributeError):
            pass
        raise TargetError(f"HTTP_{resp.status}", message, retryable=resp.status in RETRYABLE_STATUS)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
