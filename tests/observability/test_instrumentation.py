"""Metric definitions, fallback counting and tracing configuration, without processes."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from symphony.metrics import (
    FALLBACK_REASONS,
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    NodeMetrics,
    SchedulerMetrics,
    turn_label,
)
from symphony.tracing import TracingConfig
from symphony.v1 import common_pb2, scheduler_pb2
from symphony_nodesched.__main__ import parse_config
from symphony_scheduler.__main__ import parser as scheduler_parser
from symphony_scheduler.commands import PrepareCommand
from symphony_scheduler.core import SchedulerCore
from symphony_scheduler.nodes import NodeClients
from symphony_scheduler.policies import default_registry
from symphony_workloadgen.__main__ import build_parser as workloadgen_parser

from .promql import design_metric_names


def _exposition() -> str:
    """The series a scheduler and a node expose once a turn has run (they share no registry in
    production; one here so that one text holds both)."""
    registry = CollectorRegistry()
    sched = SchedulerMetrics(registry, "symphony")
    node = NodeMetrics(registry, "node-0")
    node.record_transfer("host", "gpu", 1024, 0.01)
    node.tier_used_bytes.labels(node="node-0", tier="gpu").set(4096)
    sched.observe_turn(0, 0.2, 1.0, 9, 100, {"gpu": 64})
    sched.node_load.labels(node="node-0").set(1)
    sched.routing_decisions.labels(policy="symphony", reason="kv_gpu").inc()
    return generate_latest(registry).decode()


def test_every_design_metric_is_exported_with_help_text() -> None:
    text = _exposition()
    for name in design_metric_names():
        assert f"\n{name}{{" in text or f"\n{name} " in text or f"\n{name}_count" in text, name
    helps = [line for line in text.splitlines() if line.startswith("# HELP symphony_")]
    assert helps and all(len(line.split(" ", 3)[3]) > 10 for line in helps)


def test_latency_buckets_span_llm_latencies() -> None:
    assert (TTFT_BUCKETS[0], TTFT_BUCKETS[-1]) == (0.01, 60.0)
    assert (TPOT_BUCKETS[0], TPOT_BUCKETS[-1]) == (0.001, 1.0)
    assert list(TTFT_BUCKETS) == sorted(TTFT_BUCKETS) and list(TPOT_BUCKETS) == sorted(TPOT_BUCKETS)


def test_turn_label_is_bounded_to_six_classes() -> None:
    assert {turn_label(i) for i in range(1000)} == {"1", "2", "3", "4", "5-8", "9+"}
    assert [turn_label(i) for i in (0, 3, 4, 7, 8)] == ["1", "4", "5-8", "5-8", "9+"]


def test_fallback_reasons_are_exported_at_zero_and_unknown_reasons_refused() -> None:
    registry = CollectorRegistry()
    metrics = SchedulerMetrics(registry, "symphony")
    for reason in FALLBACK_REASONS:
        assert registry.get_sample_value("symphony_routing_fallbacks_total", {"reason": reason}) == 0
    with pytest.raises(ValueError, match="unknown fallback reason"):
        metrics.fallback("because")


def _core(policy: str, registry: CollectorRegistry) -> SchedulerCore:
    core = SchedulerCore(default_registry().create(policy), metrics=SchedulerMetrics(registry, policy))
    for i, node_id in enumerate(("a", "b")):
        core.register_node(
            scheduler_pb2.RegisterNodeRequest(node_id=node_id, address=f"127.0.0.1:{7000 + i}"), now=0.0
        )
    return core


def _turn(index: int) -> common_pb2.TurnRequest:
    return common_pb2.TurnRequest(
        session_id="s", turn_index=index, messages=[common_pb2.ChatMessage(role="user", content="x" * 400)]
    )


def test_a_turn_sent_away_from_its_kv_counts_as_kv_recomputed() -> None:
    registry = CollectorRegistry()
    core = _core("round_robin", registry)
    first = core.route(_turn(0), 1.0)
    core.turn_finished(
        common_pb2.TurnSummary(session_id="s", node_id=first.node_id, prompt_tokens=100, completion_tokens=8),
        False,
        2.0,
    )
    second = core.route(_turn(1), 3.0)
    assert second.node_id != first.node_id  # round robin ignores where the K,V is
    assert registry.get_sample_value("symphony_routing_fallbacks_total", {"reason": "kv_recomputed"}) == 1


async def test_a_failed_prepare_order_counts_as_prepare_failed() -> None:
    registry = CollectorRegistry()
    clients = NodeClients(rpc_timeout_s=5.0, metrics=SchedulerMetrics(registry, "symphony"))
    order = PrepareCommand(
        node_id="gone",
        session_id="s",
        source="recompute",
        peer_node_id="",
        peer_address="",
        eta_s=1.0,
        messages=[],
        expected_tokens=0,
    )
    try:
        await clients.execute(order, "127.0.0.1:1")  # nothing listens on port 1: refused at once
    finally:
        await clients.close_all()
    assert registry.get_sample_value("symphony_routing_fallbacks_total", {"reason": "prepare_failed"}) == 1


def test_flags_win_over_the_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert TracingConfig.from_env() == TracingConfig(endpoint="http://collector:4317", sample_ratio=0.25)
    assert TracingConfig.from_env("", 1.0) == TracingConfig(endpoint="", sample_ratio=1.0)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")  # what the chart sets when tracing is off
    assert TracingConfig.from_env().endpoint == ""
    assert TracingConfig.from_env("http://other:4317").endpoint == "http://other:4317"


def test_every_command_takes_the_tracing_flags() -> None:
    flags = ["--otlp-endpoint", "http://c:4317", "--trace-sample-ratio", "0.5"]
    args = scheduler_parser().parse_args(flags)
    assert (args.otlp_endpoint, args.trace_sample_ratio) == ("http://c:4317", 0.5)
    node = parse_config(["--node-id", "n", *flags])
    assert (node.otlp_endpoint, node.trace_sample_ratio) == ("http://c:4317", 0.5)
    args = workloadgen_parser().parse_args(flags)
    assert (args.otlp_endpoint, args.trace_sample_ratio) == ("http://c:4317", 0.5)


def test_a_bad_sample_ratio_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        scheduler_parser().parse_args(["--trace-sample-ratio", "2"])
    assert exit_.value.code == 2
    assert "--trace-sample-ratio: must be in [0, 1], got 2" in capsys.readouterr().err


def test_a_turn_served_where_its_advisory_moved_the_kv_is_no_fallback() -> None:
    registry = CollectorRegistry()
    core = _core("symphony", registry)
    first = core.route(_turn(0), 1.0)
    core.turn_finished(
        common_pb2.TurnSummary(session_id="s", node_id=first.node_id, prompt_tokens=100, completion_tokens=8),
        False,
        2.0,
    )
    # The holder is swamped, so the advisory moves the K,V to the idle node ahead of the turn.
    busy = common_pb2.NodeStatus(
        node_id=first.node_id,
        load=common_pb2.NodeLoad(running_requests=200, waiting_requests=100, waiting_tokens=200_000),
    )
    busy.sessions.add(session_id="s", tokens=108, tier=common_pb2.TIER_GPU)
    core.node_status(busy, 2.5)
    advice = core.advise("s", 0.0, 1, 3.0)
    assert advice.node_id != first.node_id and advice.reason == "kv_peer"
    decision = core.route(_turn(1), 3.1)
    assert (decision.node_id, decision.reason) == (advice.node_id, "advised")
    assert registry.get_sample_value("symphony_routing_fallbacks_total", {"reason": "kv_recomputed"}) == 0
