"""OpenTelemetry tracing: one trace per turn, carried across processes in gRPC metadata.

Each service builds its own :class:`Tracing` from flags or the standard ``OTEL_*`` environment
variables and passes it to its servicers (no global provider is installed, so tests can build
several). Export is OTLP/gRPC when an endpoint is configured and off otherwise; spans are sampled
parent-based with a configurable ratio, so a client's decision holds for the whole turn. Context
travels as W3C ``traceparent``/``tracestate`` metadata.

The spans of one turn: ``workloadgen.turn`` (the client's root) → ``scheduler.generate`` →
``nodesched.generate`` → ``engine.generate``. An advisory is a trace of its own
(``workloadgen.advise`` → ``scheduler.advise`` → ``scheduler.prepare`` → ``nodesched.prepare`` →
``nodesched.fetch_kv`` on a peer when the K,V comes from another node), because it arrives seconds
before its turn and may never be followed by one; the ``scheduler.generate`` span of the turn it
served carries a span *link* to it. Attribute keys are the ``ATTR_*`` constants below; session ids
are span attributes, never metric labels.
"""

from __future__ import annotations

import argparse
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

ATTR_SESSION = "symphony.session_id"
ATTR_TURN = "symphony.turn_index"
ATTR_NODE = "symphony.node_id"
ATTR_POLICY = "symphony.policy"
ATTR_REASON = "symphony.route_reason"
ATTR_ATTEMPTS = "symphony.attempts"
ATTR_PROMPT_TOKENS = "symphony.prompt_tokens"
ATTR_COMPLETION_TOKENS = "symphony.completion_tokens"
ATTR_CACHED_TOKENS = "symphony.cached_tokens"
ATTR_RECOMPUTED_TOKENS = "symphony.recomputed_tokens"
ATTR_TRANSFER_S = "symphony.kv_transfer_s"  # K,V load time on the turn's critical path
ATTR_ETA_S = "symphony.eta_s"
ATTR_KV_SOURCE = "symphony.kv_source"
ATTR_READY_S = "symphony.kv_expected_ready_s"
ATTR_ADVICE_REASON = "symphony.advice_reason"

SPAN_NAMES = (
    "workloadgen.turn",
    "scheduler.generate",
    "nodesched.generate",
    "engine.generate",
    "workloadgen.advise",
    "scheduler.advise",
    "scheduler.prepare",
    "nodesched.prepare",
    "nodesched.fetch_kv",
    "scheduler.release",
)


@dataclass(frozen=True)
class TracingConfig:
    endpoint: str = ""  # OTLP/gRPC endpoint, e.g. http://otel-collector:4317; empty = tracing off
    sample_ratio: float = 1.0
    insecure: bool = True

    @classmethod
    def from_env(cls, endpoint: str | None = None, sample_ratio: float | None = None) -> TracingConfig:
        """Flags win over the standard OTEL_* variables (``OTEL_TRACES_EXPORTER=none`` or
        ``OTEL_SDK_DISABLED=true`` turn an environment endpoint off)."""
        env_off = os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none" or (
            os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
        )
        ep = (
            endpoint
            if endpoint is not None
            else ""
            if env_off
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


def sample_ratio(text: str) -> float:
    """argparse type of ``--trace-sample-ratio``: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_tracing_flags(parser: argparse.ArgumentParser) -> None:
    """The same two flags on every Symphony command (the chart sets the OTEL_* variables instead)."""
    g = parser.add_argument_group("tracing")
    g.add_argument(
        "--otlp-endpoint",
        default=None,
        help="OTLP/gRPC collector, e.g. http://collector:4317 (default: $OTEL_EXPORTER_OTLP_ENDPOINT; "
        "empty: tracing off)",
    )
    g.add_argument(
        "--trace-sample-ratio",
        type=sample_ratio,
        default=None,
        help="fraction of turns traced, parent-based (default: $OTEL_TRACES_SAMPLER_ARG or 1)",
    )


class Tracing:
    """A tracer for one service; a no-op tracer when no endpoint is configured."""

    def __init__(
        self, service_name: str, config: TracingConfig, exporter: SpanExporter | None = None
    ) -> None:
        self.enabled = bool(config.endpoint) or exporter is not None
        self._provider: TracerProvider | None = None
        if self.enabled:
            # OTEL_SERVICE_NAME (the chart sets it) wins over the built-in name.
            name = os.environ.get("OTEL_SERVICE_NAME") or service_name
            provider = TracerProvider(
                resource=Resource.create({"service.name": name}),
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

    @classmethod
    def disabled(cls) -> Tracing:
        return cls("symphony", TracingConfig())

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
