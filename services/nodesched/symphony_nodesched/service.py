"""The NodeScheduler gRPC servicer: validates orders, runs them on the engine backend, exports metrics.

It depends on the :class:`~symphony_nodesched.engine.EngineBackend` protocol only; errors raised as
:mod:`symphony.errors` types become gRPC statuses here, at the edge.
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import trace

from symphony.errors import InvalidArgument, NotFound, Unavailable
from symphony.grpcutil import CHANNEL_OPTIONS, translate_errors, translate_stream_errors
from symphony.limits import Limits
from symphony.metrics import NodeMetrics
from symphony.security import Channels
from symphony.tracing import (
    ATTR_CACHED_TOKENS,
    ATTR_COMPLETION_TOKENS,
    ATTR_ETA_S,
    ATTR_KV_SOURCE,
    ATTR_NODE,
    ATTR_PROMPT_TOKENS,
    ATTR_READY_S,
    ATTR_REASON,
    ATTR_RECOMPUTED_TOKENS,
    ATTR_SESSION,
    ATTR_TRANSFER_S,
    ATTR_TURN,
    Tracing,
    extract_context,
    inject_metadata,
)
from symphony.v1 import common_pb2, nodesched_pb2, nodesched_pb2_grpc
from symphony.validation import check_session_id, check_turn
from symphony_nodesched import convert
from symphony_nodesched.engine import (
    EngineBackend,
    EngineResult,
    EngineStatus,
    KvPiece,
    PeerRef,
    TransferRecord,
    TransferReporting,
)

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
TRANSFER_ROUTES = (
    ("gpu", "host"),
    ("host", "gpu"),
    ("gpu", "disk"),
    ("disk", "gpu"),
    ("peer", "gpu"),
    ("gpu", "peer"),
)


class GrpcPeerFetcher:
    """Pulls a session's K,V from a peer node's FetchKv, one channel per peer address."""

    def __init__(self, node_id: str, channels: Channels | None = None) -> None:
        self.node_id = node_id
        self.channels = channels or Channels()  # mTLS between nodes when the process has it
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def fetch(self, peer: PeerRef, session_id: str) -> AsyncIterator[KvPiece]:
        channel = self._channels.get(peer.address)
        if channel is None:
            channel = self.channels.open(peer.address, CHANNEL_OPTIONS)
            self._channels[peer.address] = channel
        stub = nodesched_pb2_grpc.NodeSchedulerStub(channel)
        request = nodesched_pb2.FetchKvRequest(session_id=session_id, requester_node_id=self.node_id)
        try:
            # The current trace (the Prepare that needs the K,V) continues on the peer.
            async for chunk in stub.FetchKv(request, timeout=30.0, metadata=inject_metadata()):
                yield KvPiece(chunk.layer_start, chunk.layer_end, chunk.tokens, chunk.nbytes, chunk.payload)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"peer {peer.node_id}: {err.details()}") from err
            raise Unavailable(f"peer {peer.node_id} at {peer.address}: {err.details()}") from err

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()


class NodeService(nodesched_pb2_grpc.NodeSchedulerServicer):
    def __init__(
        self,
        backend: EngineBackend,
        node_id: str,
        metrics: NodeMetrics,
        fetcher: GrpcPeerFetcher,
        limits: Limits | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.backend = backend
        self.tracing = tracing or Tracing.disabled()
        self.node_id = node_id
        self.metrics = metrics
        self.fetcher = fetcher
        self.limits = limits or Limits()
        self._sequence = itertools.count(1)
        for src, dst in TRANSFER_ROUTES:  # exported at 0 before the first transfer
            metrics.transfers.labels(src=src, dst=dst)
            metrics.transfer_bytes.labels(src=src, dst=dst)
            metrics.transfer_seconds.labels(src=src, dst=dst)
        for source in ("local", "peer", "recompute"):
            metrics.prepares.labels(node=node_id, source=source)
        metrics.recomputed_tokens.labels(node=node_id)
        if isinstance(backend, TransferReporting):
            backend.add_transfer_listener(self._on_transfer)
        self.refresh_metrics()

    def _on_transfer(self, t: TransferRecord) -> None:
        self.metrics.record_transfer(t.src, t.dst, t.nbytes, t.seconds)

    def refresh_metrics(self, status: EngineStatus | None = None) -> EngineStatus:
        """Updates the gauges from the backend's status (called on heartbeats and scrapes)."""
        status = status or self.backend.status(include_sessions=False)
        m, node = self.metrics, self.node_id
        for tier in status.tiers:
            m.tier_used_bytes.labels(node=node, tier=tier.tier).set(tier.used_bytes)
            m.tier_capacity_bytes.labels(node=node, tier=tier.tier).set(tier.capacity_bytes)
        m.engine_running.labels(node=node).set(status.load.running_requests)
        m.engine_waiting.labels(node=node).set(status.load.waiting_requests)
        m.engine_kv_usage.labels(node=node).set(status.load.kv_usage)
        return status

    def node_status(self, include_sessions: bool) -> common_pb2.NodeStatus:
        status = self.refresh_metrics(self.backend.status(include_sessions))
        return convert.node_status(self.node_id, status, next(self._sequence))

    @translate_stream_errors
    async def Generate(
        self, request: nodesched_pb2.NodeGenerateRequest, context: Context
    ) -> AsyncIterator[common_pb2.GenerateResponse]:
        turn = request.turn
        check_turn(turn, self.limits, "turn.")
        rid = turn.request_id or uuid.uuid4().hex
        tracer = self.tracing.tracer
        attributes: dict[str, str | int] = {
            ATTR_SESSION: turn.session_id,
            ATTR_TURN: turn.turn_index,
            ATTR_NODE: self.node_id,
        }
        # Spans are started and ended explicitly: an async generator must not attach contexts.
        span = tracer.start_span(
            "nodesched.generate",
            context=extract_context(context.invocation_metadata()),
            kind=trace.SpanKind.SERVER,
            attributes={**attributes, ATTR_REASON: request.route_reason},
        )
        engine_span = tracer.start_span(
            "engine.generate",
            context=trace.set_span_in_context(span),
            kind=trace.SpanKind.CLIENT,
            attributes={**attributes, "symphony.engine": self.backend.info.kind},
        )
        try:
            stream = self.backend.generate(convert.engine_request(turn, rid))
            async for item in stream:
                if isinstance(item, EngineResult):
                    engine_span.end()
                    self.metrics.recomputed_tokens.labels(node=self.node_id).inc(item.recomputed_tokens)
                    span.set_attributes(
                        {
                            ATTR_PROMPT_TOKENS: item.prompt_tokens,
                            ATTR_COMPLETION_TOKENS: item.completion_tokens,
                            ATTR_CACHED_TOKENS: item.cached_tokens,
                            ATTR_RECOMPUTED_TOKENS: item.recomputed_tokens,
                            ATTR_TRANSFER_S: item.kv_load_s,
                            "symphony.queue_s": item.queue_s,
                        }
                    )
                    yield common_pb2.GenerateResponse(
                        summary=convert.summary(turn, rid, self.node_id, request.route_reason, item)
                    )
                    return
                yield common_pb2.GenerateResponse(
                    delta=common_pb2.TokenDelta(text=item.text, num_tokens=item.num_tokens)
                )
        except Exception as err:
            span.set_status(trace.StatusCode.ERROR, str(err))
            raise
        finally:
            engine_span.end()  # no-op when already ended
            span.end()

    @translate_errors
    async def Prepare(
        self, request: nodesched_pb2.PrepareRequest, context: Context
    ) -> nodesched_pb2.PrepareResponse:
        check_session_id(request.session_id, self.limits)
        source = convert.SOURCE_FROM_PROTO.get(request.source)
        if source is None:
            raise InvalidArgument("source", f"unknown KvSource {request.source}")
        if not math.isfinite(request.eta_s) or request.eta_s < 0:
            raise InvalidArgument("eta_s", f"must be a finite number >= 0, got {request.eta_s}")
        if source == "peer" and not request.peer_address:
            raise InvalidArgument("peer_address", "required when source is KV_SOURCE_PEER")
        if source == "recompute" and not request.messages:
            raise InvalidArgument("messages", "required when source is KV_SOURCE_RECOMPUTE")
        if len(request.messages) > self.limits.max_messages:
            raise InvalidArgument("messages", f"more than {self.limits.max_messages} messages")
        peer = PeerRef(request.peer_node_id, request.peer_address) if request.peer_address else None
        with self.tracing.tracer.start_as_current_span(
            "nodesched.prepare",
            context=extract_context(context.invocation_metadata()),
            kind=trace.SpanKind.SERVER,
            attributes={
                ATTR_SESSION: request.session_id,
                ATTR_NODE: self.node_id,
                ATTR_ETA_S: request.eta_s,
                ATTR_KV_SOURCE: source,
            },
        ) as span:
            outcome = await self.backend.prepare(
                request.session_id,
                source,
                convert.messages_from_proto(list(request.messages)),
                peer,
                request.eta_s,
                self.fetcher,
            )
            span.set_attributes(
                {
                    "symphony.accepted": outcome.accepted,
                    "symphony.kv_source_used": outcome.source,
                    ATTR_READY_S: outcome.expected_ready_s,
                    "symphony.kv_tokens": outcome.tokens,
                }
            )
        if outcome.accepted:
            self.metrics.prepares.labels(node=self.node_id, source=outcome.source).inc()
        return nodesched_pb2.PrepareResponse(
            accepted=outcome.accepted,
            source=convert.SOURCE_TO_PROTO.get(outcome.source, nodesched_pb2.KV_SOURCE_UNSPECIFIED),
            expected_ready_s=outcome.expected_ready_s,
            tokens=outcome.tokens,
        )

    @translate_errors
    async def Release(
        self, request: nodesched_pb2.ReleaseRequest, context: Context
    ) -> nodesched_pb2.ReleaseResponse:
        check_session_id(request.session_id, self.limits)
        freed = await self.backend.release(request.session_id, request.prefetch_only)
        return nodesched_pb2.ReleaseResponse(released=freed > 0, freed_bytes=freed)

    @translate_stream_errors
    async def FetchKv(
        self, request: nodesched_pb2.FetchKvRequest, context: Context
    ) -> AsyncIterator[nodesched_pb2.KvChunk]:
        check_session_id(request.session_id, self.limits)
        span = self.tracing.tracer.start_span(
            "nodesched.fetch_kv",
            context=extract_context(context.invocation_metadata()),
            kind=trace.SpanKind.SERVER,
            attributes={
                ATTR_SESSION: request.session_id,
                ATTR_NODE: self.node_id,
                "symphony.requester_node_id": request.requester_node_id,
            },
        )
        sent = 0
        try:
            async for piece in self.backend.export_kv(request.session_id):
                sent += piece.nbytes
                yield nodesched_pb2.KvChunk(
                    session_id=request.session_id,
                    layer_start=piece.layer_start,
                    layer_end=piece.layer_end,
                    tokens=piece.tokens,
                    nbytes=piece.nbytes,
                    payload=piece.payload,
                )
            # The serving side of a peer migration; its duration is modelled from the network bandwidth.
            gbps = self.backend.info.network_gbps
            seconds = sent / (gbps * 1e9) if gbps > 0 else 0.0
            self.metrics.record_transfer("gpu", "peer", sent, seconds)
            span.set_attributes({"symphony.kv_bytes": sent, ATTR_TRANSFER_S: seconds})
        except Exception as err:
            span.set_status(trace.StatusCode.ERROR, str(err))
            raise
        finally:
            span.end()

    @translate_errors
    async def GetStatus(
        self, request: nodesched_pb2.GetStatusRequest, context: Context
    ) -> common_pb2.NodeStatus:
        return self.node_status(request.include_sessions)
