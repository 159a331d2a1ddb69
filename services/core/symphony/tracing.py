"""OpenTelemetry tracing: one trace per turn, carried across processes in gRPC metadata.

Each service builds its own :class:`Tracing` from flags or the standard ``OTEL_*`` environment
variables and passes it to its servicers (no global provider is installed, so tests can build
several). Export is OTLP/gRPC when an endpoint is configured and off otherwise; spans are sampled
parent-based with a configurable ratio, so a client's decision holds for the whole turn. Context
travels as W3C ``traceparent``/``tracestate`` metadata.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class TracingConfig:
    endpoint: str = ""  # OTLP/gRPC endpoint, e.g. http://otel-collector:4317; empty = tracing off
    sample_ratio: float = 1.0
    insecure: bool = True

    @classmethod
    def from_env(cls, endpoint: str | None = None, sample_ratio: float | None = None) -> TracingConfig:
        """Flags win over the standard OTEL_* variables."""
        ep = (
            endpoint
            if endpoint is not None
            else os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        )
        ratio = sample_ratio
        if ratio is None:
            try:
                ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
            except ValueError:
                ratio = 1.0
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"trace sample ratio must be in [0, 1], got {ratio}")
        return cls(endpoint=ep, sample_ratio=ratio)


class Tracing:
    """A tracer for one service; a no-op tracer when no endpoint is configured."""

    def __init__(
        self, service_name: str, config: TracingConfig, exporter: SpanExporter | None = None
    ) -> None:
        self.enabled = bool(config.endpoint) or exporter is not None
        self._provider: TracerProvider | None = None
        if self.enabled:
            provider = TracerProvider(
                resource=Resource.create({"service.name": service_name}),
                sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
            )
            if exporter is None:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter(endpoint=config.endpoint, insecure=config.insecure)
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
            self._provider = provider
            self.tracer: trace.Tracer = provider.get_tracer("symphony")
        else:
            self.tracer = trace.NoOpTracer()

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    def force_flush(self) -> None:
        if self._provider is not None:
            self._provider.force_flush()


def inject_metadata(
    metadata: Sequence[tuple[str, str]] = (), context: Context | None = None
) -> list[tuple[str, str]]:
    """gRPC metadata carrying the current (or given) span context as W3C trace context."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return [*metadata, *carrier.items()]


def extract_context(metadata: Iterable[tuple[str, str | bytes]] | Mapping[str, str] | None) -> Context:
    """The remote parent context from incoming gRPC metadata (an empty context if absent)."""
    carrier: dict[str, str] = {}
    if metadata is not None:
        items = metadata.items() if isinstance(metadata, Mapping) else metadata
        for key, value in items:
            if isinstance(value, str):
                carrier[key.lower()] = value
    return _PROPAGATOR.extract(carrier)
