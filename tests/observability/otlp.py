"""An OTLP/gRPC trace receiver of the tests' own: the collector's TraceService on a loopback port,
keeping every span it is sent so that a test can assert on whole traces.

It serves from its own threads (a synchronous gRPC server), not from the test's event loop: a
service running in the test's process flushes its spans with a blocking export on shutdown, which
a receiver on the same loop could never answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


def _value(v: common_pb2.AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind is not None else None


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for rs in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in rs.resource.attributes}
            service = str(attrs.get("service.name", ""))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.receiver.add(
                        ReceivedSpan(
                            service=service,
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        self._server: grpc.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, span: ReceivedSpan) -> None:
        with self._changed:
            self.spans.append(span)
            self._changed.notify_all()

    async def start(self) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(self), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.stop(None).wait)

    async def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout_s: float) -> None:
        """Returns once ``predicate(spans)`` holds, woken by each export (no polling).
        Raises TimeoutError naming the spans received so far."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: predicate(list(self.spans)), timeout_s)

        if not await asyncio.to_thread(wait):
            got = sorted(f"{s.service}:{s.name}" for s in self.spans)
            raise TimeoutError(f"spans received in {timeout_s} s: {got}")
