"""One connected trace per turn, through the real processes: workload generator → scheduler →
node scheduler → engine, exported over OTLP to a receiver the test owns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from symphony_cluster.local import LocalStack, StackConfig

from .otlp import OtlpReceiver, ReceivedSpan

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ATTR_TURN = "symphony.turn_index"
TURN_CHAIN = ("workloadgen.turn", "scheduler.generate", "nodesched.generate", "engine.generate")


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = OtlpReceiver()
    await r.start()
    yield r
    await r.stop()


def _turn_traces(spans: list[ReceivedSpan]) -> dict[str, dict[str, ReceivedSpan]]:
    by_trace: dict[str, dict[str, ReceivedSpan]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, {})[s.name] = s
    return {t: names for t, names in by_trace.items() if "workloadgen.turn" in names}


def _complete(spans: list[ReceivedSpan], turns: int) -> bool:
    traces = _turn_traces(spans)
    return sum(all(n in names for n in TURN_CHAIN) for names in traces.values()) >= turns


async def test_a_turn_is_one_connected_trace_across_the_processes(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    stack = LocalStack(
        StackConfig(
            nodes=2,
            clients=1,
            duration_s=60,
            profile="cpu-tiny/test",
            out_dir=tmp_path / "run",
            quiet=True,
            workload_args=["--time-scale", "50", "--max-turns", "2", "--no-plots"],
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_SAMPLER_ARG": "1"},
        )
    )
    try:
        await stack.start()
        assert await stack.run_workload() == 0
    finally:
        await stack.stop()  # every process flushes its spans on a clean exit
    await receiver.wait_for(lambda spans: _complete(spans, 2), timeout_s=30)

    traces = sorted(
        _turn_traces(receiver.spans).values(), key=lambda n: int(n["workloadgen.turn"].attributes[ATTR_TURN])
    )
    assert len(traces) == 2, "one trace per turn"
    for index, names in enumerate(traces):
        client, sched, node, engine = (names[n] for n in TURN_CHAIN)
        # One chain of parents from the client's root span down to the engine call.
        assert client.parent_span_id == ""
        assert sched.parent_span_id == client.span_id
        assert node.parent_span_id == sched.span_id
        assert engine.parent_span_id == node.span_id
        assert (client.service, sched.service, node.service) == (
            "symphony-workloadgen",
            "symphony-scheduler",
            "symphony-nodesched",
        )
        session = client.attributes["symphony.session_id"]
        for span in (client, sched, node, engine):
            assert span.attributes["symphony.session_id"] == session
            assert span.attributes[ATTR_TURN] == index
        assert sched.attributes["symphony.node_id"] == node.attributes["symphony.node_id"]
        assert sched.attributes["symphony.route_reason"] == node.attributes["symphony.route_reason"] != ""
        assert sched.attributes["symphony.policy"] == "symphony"
        for key in ("symphony.cached_tokens", "symphony.recomputed_tokens", "symphony.kv_transfer_s"):
            assert key in node.attributes and key in sched.attributes
        assert node.attributes["symphony.prompt_tokens"] == (
            node.attributes["symphony.cached_tokens"] + node.attributes["symphony.recomputed_tokens"]
        )
    # The second turn reuses the first turn's K,V, so it recomputes less than its whole prompt.
    second = traces[1]["nodesched.generate"].attributes
    assert second["symphony.cached_tokens"] > 0

    # The advisory sent while the user typed the second turn is a trace of its own, linked from
    # the scheduler span of the turn it served.
    advise = [s for s in receiver.spans if s.name == "scheduler.advise" and s.attributes[ATTR_TURN] == 1]
    assert len(advise) == 1
    assert advise[0].parent_span_id != "", "the scheduler's advise span continues the client's"
    assert (advise[0].trace_id, advise[0].span_id) in traces[1]["scheduler.generate"].links
