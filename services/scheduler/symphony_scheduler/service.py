"""The ``symphony.v1.Scheduler`` gRPC servicer: a thin shell over the app's core and router."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context as TraceContext

from symphony.errors import InvalidArgument, SymphonyError
from symphony.grpcutil import CHANNEL_OPTIONS, translate_errors, translate_stream_errors
from symphony.tracing import (
    ATTR_ADVICE_REASON,
    ATTR_ETA_S,
    ATTR_NODE,
    ATTR_SESSION,
    ATTR_TURN,
    extract_context,
)
from symphony.v1 import (
    common_pb2,
    receiver_pb2,
    receiver_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)
from symphony.validation import check_advice, check_turn
from symphony_scheduler.app import SchedulerApp
from symphony_scheduler.router import Router
from symphony_scheduler.state import TIER_PROTO

if TYPE_CHECKING:
    from symphony.v1.receiver_pb2_grpc import ResponseReceiverAsyncStub

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

# Advisories the scheduler will not act on; "deferred" ones are accepted and placed later.
NOT_ACCEPTED = frozenset({"no_nodes", "policy_ignores_advisories"})


def grpc_client(context: Context) -> str:
    """Who is calling, for per-client limits: the peer's host (a port changes per connection)."""
    peer = context.peer() or "unknown"
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]") or rest
    return peer


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, app: SchedulerApp, router: Router) -> None:
        self.app = app
        self.router = router
        self._receivers: dict[str, tuple[grpc.aio.Channel, ResponseReceiverAsyncStub]] = {}
        self._submits: set[asyncio.Task[None]] = set()

    @translate_stream_errors
    async def Generate(
        self, request: common_pb2.TurnRequest, context: Context
    ) -> AsyncIterator[common_pb2.GenerateResponse]:
        check_turn(request, self.app.limits)
        self.app.admit_turn(grpc_client(context), request.session_id)
        streaming = False
        try:
            async for resp in self.router.generate(request, extract_context(context.invocation_metadata())):
                streaming = True
                yield resp
        except SymphonyError as err:
            if not streaming:
                raise
            # Initial metadata is gone once a delta was sent, so no retry hint: just the status.
            await context.abort(err.grpc_code, err.message)

    @translate_errors
    async def Advise(
        self, request: scheduler_pb2.AdviseRequest, context: Context
    ) -> scheduler_pb2.AdviseResponse:
        check_advice(request, self.app.limits)
        self.app.admit_advice(grpc_client(context))
        with self.app.tracing.tracer.start_as_current_span(
            "scheduler.advise",
            context=extract_context(context.invocation_metadata()),
            kind=trace.SpanKind.SERVER,
            attributes={
                ATTR_SESSION: request.session_id,
                ATTR_TURN: request.turn_index,
                ATTR_ETA_S: request.eta_s,
            },
        ) as span:
            decision = self.app.advise(request.session_id, request.eta_s, request.turn_index)
            span.set_attributes({ATTR_NODE: decision.node_id or "", ATTR_ADVICE_REASON: decision.reason})
        return scheduler_pb2.AdviseResponse(
            accepted=decision.reason not in NOT_ACCEPTED,
            node_id=decision.node_id or "",
            reason=decision.reason,
        )

    @translate_errors
    async def CancelAdvice(
        self, request: scheduler_pb2.CancelAdviceRequest, context: Context
    ) -> scheduler_pb2.CancelAdviceResponse:
        if not request.session_id:
            raise InvalidArgument("session_id", "must not be empty")
        had = self.app.core.has_advice(request.session_id)
        self.app.advice_span(request.session_id)  # its trace ends here; no turn will link to it
        self.app.dispatch(self.app.core.cancel_advice(request.session_id, self.app.now()))
        return scheduler_pb2.CancelAdviceResponse(cancelled=had)

    @translate_errors
    async def Submit(
        self, request: scheduler_pb2.SubmitRequest, context: Context
    ) -> scheduler_pb2.SubmitResponse:
        check_turn(request.turn, self.app.limits, prefix="turn.")
        self.app.admit_turn(grpc_client(context), request.turn.session_id)
        if not request.callback_address or ":" not in request.callback_address:
            raise InvalidArgument("callback_address", "must be host:port of a ResponseReceiver")
        turn = common_pb2.TurnRequest()
        turn.CopyFrom(request.turn)
        turn.request_id = turn.request_id or uuid.uuid4().hex
        parent = extract_context(context.invocation_metadata())
        task = asyncio.create_task(self._serve_callback(turn, request.callback_address, parent))
        self._submits.add(task)
        task.add_done_callback(self._submits.discard)
        return scheduler_pb2.SubmitResponse(accepted=True, request_id=turn.request_id)

    async def _serve_callback(
        self, turn: common_pb2.TurnRequest, address: str, parent: TraceContext | None = None
    ) -> None:
        started = self.app.now()
        post = receiver_pb2.PostResponseRequest(
            request_id=turn.request_id, session_id=turn.session_id, turn_index=turn.turn_index
        )
        parts: list[str] = []
        try:
            async for resp in self.router.generate(turn, parent):
                if resp.HasField("delta"):
                    if not parts:
                        post.first_token_s = self.app.now() - started
                    parts.append(resp.delta.text)
                else:
                    post.summary.CopyFrom(resp.summary)
        except SymphonyError as err:
            post.error_code, post.error_message = err.grpc_code.name, err.message
        post.text = "".join(parts)
        try:
            await self._receiver(address).PostResponse(post, timeout=10.0)
        except grpc.aio.AioRpcError as err:
            log.warning("posting turn %s to %s failed: %s", turn.request_id, address, err.details())

    def _receiver(self, address: str) -> ResponseReceiverAsyncStub:
        entry = self._receivers.get(address)
        if entry is None:
            channel = self.app.channels.open(address, CHANNEL_OPTIONS)
            entry = (channel, receiver_pb2_grpc.ResponseReceiverStub(channel))
            self._receivers[address] = entry
        return entry[1]

    @translate_errors
    async def RegisterNode(
        self, request: scheduler_pb2.RegisterNodeRequest, context: Context
    ) -> scheduler_pb2.RegisterNodeResponse:
        self.app.core.register_node(request, self.app.now())
        log.info("node %s registered at %s (%s)", request.node_id, request.address, request.profile)
        return scheduler_pb2.RegisterNodeResponse(
            heartbeat_interval_s=self.app.heartbeat_interval_s, lease_s=self.app.core.lease_s
        )

    @translate_errors
    async def ReportStatus(
        self, request: common_pb2.NodeStatus, context: Context
    ) -> scheduler_pb2.ReportStatusResponse:
        self.app.core.node_status(request, self.app.now())
        return scheduler_pb2.ReportStatusResponse(heartbeat_interval_s=self.app.heartbeat_interval_s)

    @translate_errors
    async def GetClusterState(
        self, request: scheduler_pb2.GetClusterStateRequest, context: Context
    ) -> scheduler_pb2.ClusterState:
        core, now = self.app.core, self.app.now()
        state = scheduler_pb2.ClusterState(policy=core.policy.name, sessions_tracked=len(core.sessions))
        for node in core.nodes.values():
            info = state.nodes.add(
                registration=node.registration,
                last_seen_s_ago=now - node.last_seen,
                healthy=now - node.last_seen <= core.lease_s,
            )
            info.status.node_id = node.node_id
            info.status.load.CopyFrom(node.load)
            info.status.tiers.extend(node.tiers)
            info.status.sequence = node.sequence
        if request.include_sessions:
            for rec in core.sessions_snapshot(limit=10_000):
                best = rec.best_location()
                state.sessions.add(
                    session_id=rec.session_id,
                    node_id=best[0] if best else "",
                    tier=TIER_PROTO[best[1].tier] if best else common_pb2.TIER_UNSPECIFIED,
                    tokens=best[1].tokens if best else 0,
                    advised_node_id=(rec.advice.node_id or "") if rec.advice else "",
                    turns=rec.turns,
                )
        return state

    async def close(self) -> None:
        for task in list(self._submits):
            task.cancel()
        await asyncio.gather(*self._submits, return_exceptions=True)
        for channel, _ in self._receivers.values():
            await channel.close(None)
        self._receivers.clear()
