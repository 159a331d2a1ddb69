"""The simulated engine's vLLM behaviours, driven in virtual time."""

import pytest

from symphony.errors import InvalidArgument
from symphony.tokens import prompt_token_count, text_token_ids
from symphony_nodesched.engine import EngineRequest, EngineResult, Message
from symphony_nodesched.events import Finished, FirstToken, NodeEvent, Tokens
from symphony_nodesched.fakes import drive
from symphony_nodesched.profile import Profile, load_profile
from symphony_nodesched.simnode import SimNode

TINY = load_profile("cpu-tiny/test")


def tiny(**changes: object) -> Profile:
    return TINY.model_copy(update=changes)


def user(chars: int, text: str = "abcd") -> list[Message]:
    return [Message("user", (text * (chars // len(text) + 1))[:chars])]


def finished(events: list[NodeEvent]) -> dict[str, EngineResult]:
    return {e.request_id: e.result for e in events if isinstance(e, Finished)}


def text_of(events: list[NodeEvent], rid: str) -> str:
    return "".join(e.text for e in events if isinstance(e, FirstToken | Tokens) and e.request_id == rid)


def run(node: SimNode, *reqs: EngineRequest, now: float = 0.0) -> tuple[list[NodeEvent], float]:
    for r in reqs:
        node.submit(r, now)
    return drive(node, now, lambda evs: sum(isinstance(e, Finished) for e in evs) >= len(reqs))


def test_output_is_the_expected_response_token_by_token() -> None:
    node = SimNode(TINY, "n")
    answer = "Paged attention keeps K,V in blocks."
    events, _ = run(node, EngineRequest("r", "s", 0, user(300), 100, expected_response=answer))
    assert text_of(events, "r") == answer
    result = finished(events)["r"]
    assert result.completion_tokens == len(text_token_ids(answer))
    assert result.finish_reason == "stop"
    deltas = [e for e in events if isinstance(e, FirstToken | Tokens)]
    assert all(d.num_tokens == 1 for d in deltas)
    assert [d.t for d in deltas] == sorted(d.t for d in deltas)  # streamed with real timing
    assert deltas[0].t < deltas[-1].t


def test_max_tokens_caps_and_ignore_eos_pads() -> None:
    node = SimNode(TINY, "n")
    answer = "x" * 40  # 10 tokens
    events, _ = run(
        node,
        EngineRequest("cap", "a", 0, user(100), 4, expected_response=answer),
        EngineRequest("pad", "b", 0, user(100), 25, ignore_eos=True, expected_response=answer),
        EngineRequest("fill", "c", 0, user(100), 7),
    )
    res = finished(events)
    assert (res["cap"].completion_tokens, res["cap"].finish_reason) == (4, "length")
    assert text_of(events, "cap") == answer[:16]
    assert (res["pad"].completion_tokens, res["pad"].finish_reason) == (25, "length")
    assert text_of(events, "pad").startswith(answer)
    assert res["fill"].completion_tokens == 7


def test_batches_respect_max_num_seqs_and_token_budget() -> None:
    p = tiny(max_num_seqs=8, max_num_batched_tokens=256)
    node = SimNode(p, "n")
    for i in range(20):
        node.submit(EngineRequest(f"r{i}", f"s{i}", 0, user(400), 30), 0.0)
    now, done, widest = 0.0, 0, 0
    while done < 20:
        step = node.engine.step
        assert step is not None
        assert len(step.batch) <= 8
        assert sum(n for _, n in step.batch) <= 256
        widest = max(widest, len(step.batch))
        now = step.end
        done += sum(isinstance(e, Finished) for e in node.advance(now))
    assert widest == 8  # continuous batching fills the batch


def test_long_prompt_is_prefilled_in_chunks() -> None:
    p = tiny(max_num_batched_tokens=512)
    node = SimNode(p, "n")
    msgs = user(4 * 2000)
    n = prompt_token_count(msgs)
    node.submit(EngineRequest("r", "s", 0, msgs, 2), 0.0)
    chunks: list[int] = []
    while node.engine.step is not None:
        chunks.extend(k for _, k in node.engine.step.batch)
        node.advance(node.engine.step.end)
    assert chunks[: -(-n // 512)] == [512] * (n // 512) + ([n % 512] if n % 512 else [])


def test_a_decode_rides_along_with_a_prefill_chunk() -> None:
    p = tiny(max_num_batched_tokens=512)
    node = SimNode(p, "n")
    node.submit(EngineRequest("short", "a", 0, user(100), 50), 0.0)
    _, now = drive(node, 0.0, lambda evs: any(isinstance(e, FirstToken) for e in evs))
    node.submit(EngineRequest("long", "b", 0, user(4 * 3000), 2), now)
    in_flight = node.engine.step  # the decode step that started before "long" arrived
    assert in_flight is not None
    node.advance(in_flight.end)
    step = node.engine.step
    assert step is not None
    sizes = {r.req.request_id: k for r, k in step.batch}
    assert sizes["short"] == 1 and sizes["long"] == 511  # chunked prefill shares the budget


def test_prefix_hit_is_block_aligned_and_leaves_one_token_to_compute() -> None:
    node = SimNode(TINY, "n")
    msgs = user(4 * 317)
    n = prompt_token_count(msgs)
    assert n % 16 != 0
    events, now = run(node, EngineRequest("t0", "s", 0, msgs, 8, expected_response="An answer here."))
    answer = text_of(events, "t0")
    nxt = [*msgs, Message("assistant", answer), Message("user", "and then?")]
    events, now = run(node, EngineRequest("t1", "s", 1, nxt, 4), now=now)
    r1 = finished(events)["t1"]
    assert r1.cached_by_tier["gpu"] % 16 == 0
    assert r1.cached_tokens >= (n // 16) * 16  # the whole first prompt's blocks were reused
    assert r1.recomputed_tokens == r1.prompt_tokens - r1.cached_tokens
    # The same prompt again: everything is cached but the hit stops at n-1, rounded down to a block.
    aligned = user(4 * (16 * 20 - 8))  # 320 tokens with the 8 of overhead: exactly 20 blocks
    assert prompt_token_count(aligned) == 320
    _, now = run(node, EngineRequest("a0", "x", 0, aligned, 1), now=now)
    events, _ = run(node, EngineRequest("a1", "x", 1, aligned, 1), now=now)
    assert finished(events)["a1"].cached_tokens == 304


def test_other_sessions_do_not_share_a_cache_entry() -> None:
    node = SimNode(TINY, "n")
    _, now = run(node, EngineRequest("a", "s1", 0, user(400), 2))
    events, _ = run(node, EngineRequest("b", "s2", 0, user(400), 2), now=now)
    assert finished(events)["b"].cached_tokens == 0


def test_preemption_when_blocks_run_out_and_everyone_still_finishes() -> None:
    p = tiny(gpu_kv_tokens=16 * 40, max_num_batched_tokens=4096, max_model_len=640)
    node = SimNode(p, "n")
    reqs = [
        EngineRequest(f"r{i}", f"s{i}", 0, user(4 * 100), 150, expected_response="word " * 200)
        for i in range(4)
    ]
    events, _ = run(node, *reqs)
    assert node.engine.preemptions > 0
    res = finished(events)
    assert len(res) == 4
    for i in range(4):
        assert res[f"r{i}"].completion_tokens == 150
        assert text_of(events, f"r{i}") == ("word " * 200)[: 150 * 4]
    node.tiers.check_invariants()


def test_turn_too_long_for_the_model_is_refused() -> None:
    node = SimNode(tiny(max_model_len=1000), "n")
    with pytest.raises(InvalidArgument, match=r"max_tokens: .* over the model's context of 1000"):
        node.submit(EngineRequest("r", "s", 0, user(4 * 900), 200), 0.0)
    with pytest.raises(InvalidArgument, match="messages: prompt of 1008 tokens"):
        node.submit(EngineRequest("r", "s", 0, user(4 * 1000), 1), 0.0)
    assert node.engine.requests == {}
