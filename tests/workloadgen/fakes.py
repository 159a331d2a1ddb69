"""Fakes the tests own: a Symphony scheduler on loopback that records arrivals and streams the
expected response, and a minimal OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web

from symphony.grpcutil import ServerHandle, start_server
from symphony.tokens import count_text_tokens
from symphony.v1 import common_pb2, receiver_pb2, receiver_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class Arrival:
    t: float  # loop.time() when the request arrived
    session_id: str
    turn_index: int
    request: Any


@dataclass
class FakeScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """Answers every turn at once with its ``expected_response`` in ``chunks`` deltas, then a summary."""

    chunks: int = 3
    unavailable_first: int = 0  # the first N Generate calls fail with UNAVAILABLE
    fail_turns: frozenset[int] = frozenset()  # turn indices answered with INVALID_ARGUMENT
    turns: list[Arrival] = field(default_factory=list)
    advisories: list[Arrival] = field(default_factory=list)
    cancels: list[Arrival] = field(default_factory=list)
    on_turn: Callable[[Arrival], None] | None = None
    hold: asyncio.Event | None = None  # when set, turns wait for it before answering
    answer: Callable[[str], str] = lambda expected: expected  # the text streamed for a turn
    started: asyncio.Event = field(default_factory=asyncio.Event)
    _calls: int = 0

    def _arrive(self, turn: common_pb2.TurnRequest) -> Arrival:
        a = Arrival(asyncio.get_running_loop().time(), turn.session_id, turn.turn_index, turn)
        self.turns.append(a)
        self._calls += 1
        if self.on_turn is not None:
            self.on_turn(a)
        self.started.set()
        return a

    def _summary(self, turn: common_pb2.TurnRequest) -> common_pb2.TurnSummary:
        prompt = sum(len(m.content) for m in turn.messages) // 4
        return common_pb2.TurnSummary(
            request_id=turn.request_id,
            session_id=turn.session_id,
            turn_index=turn.turn_index,
            node_id="fake-node",
            prompt_tokens=prompt,
            completion_tokens=max(1, count_text_tokens(turn.expected_response)),
            cached_tokens=prompt // 2,
            route_reason="fake",
            attempts=1,
        )

    async def Generate(
        self, request: common_pb2.TurnRequest, context: Context
    ) -> AsyncIterator[common_pb2.GenerateResponse]:
        self._arrive(request)
        if self._calls <= self.unavailable_first:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no node yet")
        if request.turn_index in self.fail_turns:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "turn rejected by the fake")
        if self.hold is not None:
            await self.hold.wait()
        text = self.answer(request.expected_response)
        step = max(1, -(-len(text) // self.chunks))
        for i in range(0, len(text), step):
            piece = text[i : i + step]
            yield common_pb2.GenerateResponse(
                delta=common_pb2.TokenDelta(text=piece, num_tokens=count_text_tokens(piece))
            )
        yield common_pb2.GenerateResponse(summary=self._summary(request))

    async def Advise(
        self, request: scheduler_pb2.AdviseRequest, context: Context
    ) -> scheduler_pb2.AdviseResponse:
        self.advisories.append(
            Arrival(asyncio.get_running_loop().time(), request.session_id, request.turn_index, request)
        )
        return scheduler_pb2.AdviseResponse(accepted=True, node_id="fake-node", reason="fake")

    async def CancelAdvice(
        self, request: scheduler_pb2.CancelAdviceRequest, context: Context
    ) -> scheduler_pb2.CancelAdviceResponse:
        self.cancels.append(Arrival(asyncio.get_running_loop().time(), request.session_id, -1, request))
        return scheduler_pb2.CancelAdviceResponse(cancelled=True)

    async def RegisterNode(
        self, request: scheduler_pb2.RegisterNodeRequest, context: Context
    ) -> scheduler_pb2.RegisterNodeResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fake has no nodes")
        raise AssertionError("unreachable")

    async def ReportStatus(
        self, request: common_pb2.NodeStatus, context: Context
    ) -> scheduler_pb2.ReportStatusResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fake has no nodes")
        raise AssertionError("unreachable")

    async def GetClusterState(
        self, request: scheduler_pb2.GetClusterStateRequest, context: Context
    ) -> scheduler_pb2.ClusterState:
        return scheduler_pb2.ClusterState(policy="fake")

    async def Submit(
        self, request: scheduler_pb2.SubmitRequest, context: Context
    ) -> scheduler_pb2.SubmitResponse:
        """Callback mode: accept at once, post the response to the client's ResponseReceiver."""
        self._arrive(request.turn)
        asyncio.get_running_loop().create_task(self._post(request))
        return scheduler_pb2.SubmitResponse(accepted=True, request_id=request.turn.request_id)

    async def _post(self, request: scheduler_pb2.SubmitRequest) -> None:
        turn = request.turn
        post = receiver_pb2.PostResponseRequest(
            request_id=turn.request_id,
            session_id=turn.session_id,
            turn_index=turn.turn_index,
            text=turn.expected_response,
            summary=self._summary(turn),
            first_token_s=0.001,
        )
        if turn.turn_index in self.fail_turns:
            post = receiver_pb2.PostResponseRequest(
                request_id=turn.request_id,
                error_code="INVALID_ARGUMENT",
                error_message="rejected by the fake",
            )
        async with grpc.aio.insecure_channel(request.callback_address) as channel:
            await receiver_pb2_grpc.ResponseReceiverStub(channel).PostResponse(post)


async def start_fake_scheduler(fake: FakeScheduler) -> ServerHandle:
    return await start_server(
        lambda s: scheduler_pb2_grpc.add_SchedulerServicer_to_server(fake, s),
        ["symphony.v1.Scheduler"],
        "127.0.0.1:0",
    )


@dataclass
class FakeOpenAI:
    """``/v1/models``, streaming ``/v1/chat/completions`` echoing a canned answer, and the advice API."""

    answer: str = "hello there, this is the fake model speaking"
    requests: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)
    advice: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    status: int = 200

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/sessions/{sid}/advice", self.advise)
        app.router.add_delete("/v1/sessions/{sid}/advice", self.advise)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def advise(self, request: web.Request) -> web.Response:
        body = await request.json() if request.method == "POST" else None
        self.advice.append((request.method, request.match_info["sid"], body))
        return web.json_response({"accepted": True})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((body, dict(request.headers)))
        if self.status != 200:
            return web.json_response(
                {"error": {"message": "the fake is overloaded", "code": self.status}}, status=self.status
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        words = self.answer.split(" ")
        for i, w in enumerate(words):
            chunk = {"choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w}}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {
            "prompt_tokens": 100,
            "completion_tokens": len(words),
            "prompt_tokens_details": {"cached_tokens": 64},
        }
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
