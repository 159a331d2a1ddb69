"""SimNode's event API, driven the way the virtual-time simulator drives it (a clock we own)."""

from symphony.clock import ManualClock
from symphony_nodesched.engine import EngineRequest, EngineResult, Message
from symphony_nodesched.events import Finished, FirstToken, NodeEvent, Tokens, TransferDone
from symphony_nodesched.profile import load_profile
from symphony_nodesched.simnode import SimNode

TINY = load_profile("cpu-tiny/test")


def run_turn(node: SimNode, clock: ManualClock, req: EngineRequest) -> tuple[EngineResult, list[NodeEvent]]:
    node.advance(clock.now())
    node.submit(req, clock.now())
    seen: list[NodeEvent] = []
    while True:
        t = node.next_event_time()
        assert t is not None, "the node stalled with a turn in flight"
        clock.set(max(t, clock.now()))
        for ev in node.advance(clock.now()):
            seen.append(ev)
            if isinstance(ev, Finished) and ev.request_id == req.request_id:
                return ev.result, seen


def transcript(chars: int) -> list[Message]:
    return [
        Message("system", "Be brief."),
        Message("user", ("why is the sky blue? " * (chars // 21 + 1))[:chars]),
    ]


def answer_of(events: list[NodeEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, FirstToken | Tokens))


def test_events_come_in_time_order_and_the_clock_only_moves_forward() -> None:
    node, clock = SimNode(TINY, "n"), ManualClock()
    result, events = run_turn(node, clock, EngineRequest("r", "s", 0, transcript(1200), 20))
    times = [e.t for e in events]
    assert times == sorted(times)
    assert isinstance(events[0], FirstToken)
    assert result.ttft_s == events[0].t
    assert result.e2e_s == clock.now()
    assert 0 < result.ttft_s < result.e2e_s < 0.05  # a few ms of modelled time on the tiny profile
    assert node.next_event_time() is not None  # the write-behind to disk still runs in the background


def test_second_turn_hits_the_gpu_cache_and_status_shows_residency() -> None:
    node, clock = SimNode(TINY, "n"), ManualClock()
    msgs = transcript(1200)
    first, events = run_turn(node, clock, EngineRequest("t0", "s", 0, msgs, 30))
    nxt = [*msgs, Message("assistant", answer_of(events)), Message("user", "go on")]
    second, _ = run_turn(node, clock, EngineRequest("t1", "s", 1, nxt, 10))
    assert first.cached_tokens == 0
    assert second.cached_by_tier.get("gpu", 0) >= first.prompt_tokens - 16
    status = node.status(include_sessions=True)
    (res,) = status.sessions
    assert res.session_id == "s" and res.tier == "gpu" and res.gpu_fraction == 1.0
    assert res.tokens >= second.prompt_tokens
    gpu = next(t for t in status.tiers if t.tier == "gpu")
    assert gpu.used_bytes >= res.tokens * TINY.kv_bytes_per_token


def test_is_last_turn_frees_the_session() -> None:
    node, clock = SimNode(TINY, "n"), ManualClock()
    run_turn(node, clock, EngineRequest("t0", "s", 0, transcript(800), 5, is_last=True))
    assert node.status(include_sessions=True).sessions == []
    assert all(t.used_bytes == 0 for t in node.status(False).tiers)


def push_to_host(node: SimNode, clock: ManualClock) -> None:
    """Another session's long turn takes the whole GPU, demoting idle sessions."""
    hog = [Message("user", "z" * 4 * (TINY.gpu_kv_tokens - 200))]
    run_turn(node, clock, EngineRequest("hog", "hog", 0, hog, 1, is_last=True))


def test_a_turn_whose_kv_is_on_host_waits_for_the_load() -> None:
    node, clock = SimNode(TINY, "n"), ManualClock()
    msgs = transcript(2000)
    _, events = run_turn(node, clock, EngineRequest("t0", "s", 0, msgs, 20))
    push_to_host(node, clock)
    (res,) = [r for r in node.status(True).sessions if r.session_id == "s"]
    assert res.gpu_fraction < 1.0
    nxt = [*msgs, Message("assistant", answer_of(events)), Message("user", "more")]
    result, seen = run_turn(node, clock, EngineRequest("t1", "s", 1, nxt, 5))
    assert result.kv_load_s > 0
    assert set(result.cached_by_tier) & {"host", "disk"}
    assert any(isinstance(e, TransferDone) and e.dst == "gpu" for e in seen)


def test_prepare_local_brings_kv_back_before_the_turn() -> None:
    node, clock = SimNode(TINY, "n"), ManualClock()
    msgs = transcript(2000)
    _, events = run_turn(node, clock, EngineRequest("t0", "s", 0, msgs, 20))
    push_to_host(node, clock)
    outcome = node.prepare("s", "auto", [], None, eta_s=1.0, now=clock.now())
    assert outcome.accepted and outcome.source == "local" and outcome.expected_ready_s > 0
    clock.advance(1.0)  # the user types for a second
    node.advance(clock.now())
    (res,) = [r for r in node.status(True).sessions if r.session_id == "s"]
    assert res.prepared and res.gpu_fraction == 1.0
    nxt = [*msgs, Message("assistant", answer_of(events)), Message("user", "more")]
    result, _ = run_turn(node, clock, EngineRequest("t1", "s", 1, nxt, 5))
    assert result.kv_load_s == 0 and result.cached_by_tier.get("gpu", 0) > 0


def test_prepare_from_a_peer_node_then_serve_the_turn_there() -> None:
    a, b, clock = SimNode(TINY, "a"), SimNode(TINY, "b"), ManualClock()
    msgs = transcript(2000)
    _, events = run_turn(a, clock, EngineRequest("t0", "s", 0, msgs, 20))
    outcome = b.prepare("s", "peer", [], a, eta_s=1.0, now=clock.now())
    assert outcome.accepted and outcome.source == "peer"
    assert outcome.tokens == a.tiers.entries["s"].tokens
    clock.advance(1.0)
    moved = [e for e in b.advance(clock.now()) if isinstance(e, TransferDone)]
    assert [(m.src, m.dst) for m in moved] == [("peer", "gpu")]
    nxt = [*msgs, Message("assistant", answer_of(events)), Message("user", "more")]
    result, _ = run_turn(b, clock, EngineRequest("t1", "s", 1, nxt, 5))
    assert result.cached_tokens >= outcome.tokens - 16


def test_prepare_by_recompute_is_engine_work_that_the_next_turn_reuses() -> None:
    node, clock = SimNode(TINY, "n"), ManualClock()
    msgs = [*transcript(2000), Message("assistant", "Rayleigh scattering.")]
    outcome = node.prepare("s", "auto", msgs, None, eta_s=1.0, now=clock.now())
    assert outcome.accepted and outcome.source == "recompute"
    assert node.engine.has_work()  # the warm-up prefill is real engine work
    clock.advance(1.0)
    node.advance(clock.now())
    (res,) = node.status(True).sessions
    assert res.prepared
    result, _ = run_turn(node, clock, EngineRequest("t1", "s", 1, [*msgs, Message("user", "why?")], 5))
    assert result.cached_tokens >= result.prompt_tokens - 32


def test_release_and_unknown_sessions() -> None:
    node, clock = SimNode(TINY, "n"), ManualClock()
    run_turn(node, clock, EngineRequest("t0", "s", 0, transcript(800), 5))
    assert node.prepare("other", "local", [], None, 0.0, clock.now()).accepted is False
    assert node.release("s", prefetch_only=False, now=clock.now()) > 0
    assert node.release("s", prefetch_only=False, now=clock.now()) == 0
    assert node.kv_pieces("s") == []


def test_a_turn_arriving_during_its_warm_up_waits_for_it_instead_of_recomputing() -> None:
    node, clock = SimNode(TINY, "n"), ManualClock()
    msgs = [*transcript(12000), Message("assistant", "Rayleigh scattering.")]  # > 1 step
    assert node.prepare("s", "recompute", msgs, None, eta_s=0.0, now=clock.now()).accepted
    assert node.prepare("s", "recompute", msgs, None, eta_s=0.0, now=clock.now()).accepted
    result, _ = run_turn(node, clock, EngineRequest("t1", "s", 1, [*msgs, Message("user", "why?")], 5))
    assert result.cached_tokens >= result.prompt_tokens - 32  # the warm-up's K,V, not a second prefill
    assert result.queue_s > 0  # it waited for the warm-up
    warm_up = result.cached_tokens
    assert node.engine.prefilled_tokens < warm_up + 64  # one warm-up prefill, no second copy of it
