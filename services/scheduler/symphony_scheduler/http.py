"""The HTTP side of the scheduler: the OpenAI-compatible front door, advisories, metrics, probes.

Errors are OpenAI-style JSON bodies (``symphony.errors.http_error_body``) with a 4xx/5xx status,
so the official ``openai`` client raises them with the message unchanged. A failure after a stream
has started is sent as a final ``data: {"error": ...}`` event, since the status line is gone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from symphony.errors import InvalidArgument, SymphonyError, Unavailable, http_error_body
from symphony.security import ApiKeys, bearer_token
from symphony.tracing import extract_context
from symphony.v1 import common_pb2, scheduler_pb2
from symphony.validation import check_advice, check_session_id, check_turn
from symphony_scheduler.app import SchedulerApp
from symphony_scheduler.openai_api import (
    DEFAULT_MODEL,
    ResponseShape,
    build_turn,
    chat_messages,
    completion_messages,
    stream_flags,
)
from symphony_scheduler.router import Router

log = logging.getLogger(__name__)

LAST_VALUES = {"true": True, "1": True, "false": False, "0": False}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(err: SymphonyError) -> web.Response:
    param = err.field if isinstance(err, InvalidArgument) else None
    headers = {"Retry-After": f"{max(1, round(err.retry_after_s))}"} if isinstance(err, Unavailable) else None
    return web.json_response(
        http_error_body(err.http_status, err.message, param), status=err.http_status, headers=headers
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SymphonyError as err:
        return error_response(err)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        # aiohttp's own refusals (413 body too large, 404, 405) get the same JSON error body.
        return web.json_response(http_error_body(err.status, err.reason), status=err.status)


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidArgument("body", f"malformed JSON: {err}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("body", "must be a JSON object")
    return body


async def _next(
    events: AsyncGenerator[common_pb2.GenerateResponse, None],
) -> common_pb2.GenerateResponse | None:
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


def http_client(request: web.Request) -> str:
    """Who is calling, for per-client limits: the peer's address."""
    return request.remote or "unknown"


# Probes and Prometheus scrape without a key; everything under /v1/ needs one when keys are set.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def api_key_middleware(keys: ApiKeys) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            key = bearer_token(request.headers.get("Authorization"), request.headers.get("x-api-key"))
            if not keys.valid(key):
                problem = "a valid API key is required" if key else "an API key is required"
                return web.json_response(
                    http_error_body(401, f"{problem} (Authorization: Bearer KEY, or x-api-key: KEY)"),
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    return check


class FrontDoor:
    def __init__(self, app: SchedulerApp, router: Router, api_keys: ApiKeys | None = None) -> None:
        self.app = app
        self.router = router
        self.api_keys = api_keys or ApiKeys(frozenset())

    def build(self) -> web.Application:
        middlewares = [errors_middleware]
        if self.api_keys.enabled:
            middlewares.insert(0, api_key_middleware(self.api_keys))
        web_app = web.Application(
            middlewares=middlewares, client_max_size=self.app.limits.max_grpc_message_bytes
        )
        web_app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat_completions),
                web.post("/v1/completions", self.completions),
                web.get("/v1/models", self.models),
                web.post("/v1/sessions/{session_id}/advice", self.advise),
                web.delete("/v1/sessions/{session_id}/advice", self.cancel_advice),
                web.get("/metrics", self.metrics),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
            ]
        )
        return web_app

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        return await self._serve(request, body, self._turn(request, body, chat_messages(body)), True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        return await self._serve(request, body, self._turn(request, body, completion_messages(body)), False)

    def _turn(
        self, request: web.Request, body: dict[str, Any], messages: list[common_pb2.ChatMessage]
    ) -> common_pb2.TurnRequest:
        request_id = request.headers.get("x-request-id")
        if request_id is not None and not 0 < len(request_id) <= 256:
            raise InvalidArgument("x-request-id", "must be 1 to 256 characters")
        last = request.headers.get("x-session-last", "false").lower()
        if last not in LAST_VALUES:
            raise InvalidArgument("x-session-last", "must be true or false")
        return build_turn(body, messages, self._session(request), request_id, LAST_VALUES[last])

    def _session(self, request: web.Request) -> str | None:
        session = request.headers.get("x-session-id")
        if session is not None:
            check_session_id(session, self.app.limits, "x-session-id")
        return session

    async def _serve(
        self, request: web.Request, body: dict[str, Any], turn: common_pb2.TurnRequest, chat: bool
    ) -> web.StreamResponse:
        stream, include_usage = stream_flags(body)
        check_turn(turn, self.app.limits)
        self.app.admit_turn(http_client(request), turn.session_id)
        shape = ResponseShape(chat, turn.model or self._model(), turn.request_id)
        events = self.router.generate(turn, extract_context(request.headers))
        if not stream:
            parts: list[str] = []
            summary = common_pb2.TurnSummary()
            try:
                async for item in events:
                    if item.HasField("delta"):
                        parts.append(item.delta.text)
                    else:
                        summary = item.summary
            finally:
                await events.aclose()
            return web.json_response(shape.full("".join(parts), summary))
        # Route before committing to a 200, so "no node" and bad input still get a real status.
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(obj: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(obj)}\n\n".encode())

        try:
            if chat:
                await send(shape.chunk(None, role=True))
            resp: common_pb2.GenerateResponse | None = first
            while resp is not None:
                if resp.HasField("delta"):
                    await send(shape.chunk(resp.delta.text))
                else:
                    await send(shape.chunk(None if chat else "", resp.summary.finish_reason or "stop"))
                    if include_usage:
                        await send(shape.usage_chunk(resp.summary))
                resp = await _next(events)
        except SymphonyError as err:
            await send(http_error_body(err.http_status, err.message))
        finally:
            await events.aclose()  # a client that went away aborts the turn on its node
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _model(self) -> str:
        for node in self.app.core.nodes.values():
            if node.registration.model:
                return node.registration.model
        return DEFAULT_MODEL

    async def models(self, request: web.Request) -> web.Response:
        names = sorted({n.registration.model for n in self.app.core.nodes.values() if n.registration.model})
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "symphony"}
            for m in names or [DEFAULT_MODEL]
        ]
        return web.json_response({"object": "list", "data": data})

    async def advise(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        eta = body.get("eta_s")
        if isinstance(eta, bool) or not isinstance(eta, int | float):
            raise InvalidArgument("eta_s", "is required and must be a number of seconds")
        turn_index = body.get("turn_index", 0)
        if isinstance(turn_index, bool) or not isinstance(turn_index, int):
            raise InvalidArgument("turn_index", "must be an integer")
        chars = body.get("expected_prompt_chars", 0)
        if isinstance(chars, bool) or not isinstance(chars, int) or not 0 <= chars < 2**32:
            raise InvalidArgument("expected_prompt_chars", "must be a non-negative integer")
        req = scheduler_pb2.AdviseRequest(
            session_id=request.match_info["session_id"],
            eta_s=float(eta),
            turn_index=turn_index,
            expected_prompt_chars=chars,
        )
        check_advice(req, self.app.limits)
        self.app.admit_advice(http_client(request))
        decision = self.app.advise(req.session_id, req.eta_s, req.turn_index)
        return web.json_response(
            {
                "accepted": decision.node_id is not None,
                "node_id": decision.node_id or "",
                "reason": decision.reason,
            }
        )

    async def cancel_advice(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        check_session_id(session_id, self.app.limits)
        had = self.app.core.has_advice(session_id)
        self.app.dispatch(self.app.core.cancel_advice(session_id, self.app.now()))
        return web.json_response({"cancelled": had})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.app.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        nodes = len(self.app.core.nodes)
        if nodes == 0:
            return web.json_response(
                {"status": "not ready", "reason": "no node is registered", "nodes": 0}, status=503
            )
        return web.json_response({"status": "ready", "nodes": nodes})
