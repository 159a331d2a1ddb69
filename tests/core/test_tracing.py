import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from symphony.tracing import Tracing, TracingConfig, extract_context, inject_metadata


def test_context_crosses_metadata_and_parents_the_remote_span() -> None:
    exporter = InMemorySpanExporter()
    client = Tracing("client", TracingConfig(), exporter=exporter)
    server = Tracing("server", TracingConfig(), exporter=exporter)
    with client.tracer.start_as_current_span("turn") as parent:
        metadata = inject_metadata([("x-other", "1")])
    assert ("x-other", "1") in metadata
    assert any(k == "traceparent" for k, _ in metadata)
    with server.tracer.start_as_current_span("route", context=extract_context(metadata)):
        pass
    client.force_flush()
    server.force_flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["route"].parent is not None
    assert spans["route"].parent.span_id == parent.get_span_context().span_id
    assert spans["route"].context.trace_id == spans["turn"].context.trace_id


def test_disabled_without_endpoint() -> None:
    t = Tracing("svc", TracingConfig())
    assert not t.enabled
    with t.tracer.start_as_current_span("x") as span:
        assert not span.get_span_context().is_valid


def test_sample_ratio_is_checked() -> None:
    with pytest.raises(ValueError, match="sample ratio"):
        TracingConfig.from_env(endpoint="", sample_ratio=1.5)
