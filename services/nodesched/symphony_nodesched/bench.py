"""``make bench-nodesched``: figures of the node scheduler, printed, never asserted.

1. What a tier is worth: the TTFT of a follow-up turn on an 8K-token conversation when its K,V is on
   the GPU, on host memory, on disk (a node without a host tier), prefetched from a peer by a Prepare, or gone (recompute), in
   modelled milliseconds (CALIBRATION.md: A100 ≈ 55 ms load vs ≈ 680 ms recompute for 8K tokens).
2. How fast the simulated node runs: engine steps and modelled seconds per wall second for many
   concurrent sessions (what bounds ``symphony simulate``).
"""

from __future__ import annotations

import argparse
import sys
import time

from symphony.tokens import prompt_token_count
from symphony_nodesched.engine import EngineRequest, Message
from symphony_nodesched.events import Finished, FirstToken, NodeEvent
from symphony_nodesched.profile import Profile, load_profile
from symphony_nodesched.simnode import SimNode

ANSWER = "A thoughtful answer. " * 20


def _conversation(tokens: int) -> list[Message]:
    return [Message("user", "abcd" * (tokens - 8))]


def _until_finished(node: SimNode, now: float, n: int) -> tuple[list[NodeEvent], float]:
    events: list[NodeEvent] = []
    done = 0
    while done < n:
        t = node.next_event_time()
        if t is None:
            raise RuntimeError("the simulated node stalled")
        now = max(now, t)
        new = node.advance(now)
        done += sum(isinstance(e, Finished) for e in new)
        events.extend(new)
    return events, now


def _turn(node: SimNode, now: float, rid: str, msgs: list[Message], max_tokens: int) -> tuple[float, float]:
    """Runs one turn to its end; returns (ttft_s, now)."""
    node.submit(EngineRequest(rid, "s", 0, msgs, max_tokens, expected_response=ANSWER), now)
    start = now
    events, now = _until_finished(node, now, 1)
    first = next(e.t for e in events if isinstance(e, FirstToken))
    return first - start, now


def _evict_to(node: SimNode, tier: str, now: float) -> float:
    """Pushes session "s" off the GPU with another session's long turn (and, for disk, off host)."""
    now += 60.0  # the write-behind copy to disk finishes in the background
    node.advance(now)
    p, out = node.profile, 2048
    n = -(-p.gpu_kv_tokens // (p.max_model_len - out - 64))  # hogs that together fill the GPU
    each = (p.gpu_kv_tokens - 64) // n - out
    for i in range(n):
        hog = EngineRequest(f"hog{i}", f"hog{i}", 0, _conversation(each), out, ignore_eos=True, is_last=True)
        node.submit(hog, now)
    _, now = _until_finished(node, now, n)
    return now


def tier_ttfts(profile: Profile, context: int) -> dict[str, float]:
    first = _conversation(context)
    out: dict[str, float] = {}
    for case in ("gpu", "host", "disk", "peer prepare", "recompute"):
        # For the disk case the host tier is left out, so that demotion lands on the disk copy.
        p = profile.model_copy(update={"host_kv_bytes": 0}) if case == "disk" else profile
        node, now = SimNode(p, "n"), 0.0
        _, now = _turn(node, now, "t0", first, 16)
        nxt = [*first, Message("assistant", ANSWER[: 16 * 4]), Message("user", "Go on.")]
        if case in ("host", "disk"):
            now = _evict_to(node, case, now)
        elif case == "peer prepare":
            other = SimNode(profile, "m")
            other.prepare("s", "peer", [], node, 5.0, now)
            node, now = other, now + 5.0  # the advisory came 5 s ahead
            node.advance(now)
        elif case == "recompute":
            node.release("s", prefetch_only=False, now=now)
        out[case], now = _turn(node, now, "t1", nxt, 4)
    return out


def engine_speed(profile: Profile, sessions: int, turns: int) -> tuple[int, float, float]:
    """(steps, modelled seconds, wall seconds) for ``sessions`` sessions of ``turns`` turns each."""
    node, now = SimNode(profile, "n"), 0.0
    wall = time.perf_counter()
    msgs = {i: _conversation(500 + 37 * (i % 50)) for i in range(sessions)}
    for t in range(turns):
        for i in range(sessions):
            node.submit(EngineRequest(f"r{t}-{i}", f"s{i}", t, msgs[i], 200, expected_response=ANSWER), now)
        _, now = _until_finished(node, now, sessions)
        for i in range(sessions):
            msgs[i] = [*msgs[i], Message("assistant", ANSWER[: 200 * 4]), Message("user", "More.")]
    return node.engine.steps, now, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench-nodesched", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="a100-80gb/llama-3.1-8b")
    ap.add_argument("--context", type=int, default=8192, help="conversation tokens of the tier figure")
    ap.add_argument("--sessions", type=int, default=256)
    ap.add_argument("--turns", type=int, default=3)
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    print(f"follow-up turn TTFT, {args.context}-token conversation, {profile.name} (modelled ms)", flush=True)
    ttfts = tier_ttfts(profile, args.context)
    base = ttfts["recompute"]
    for case, ttft in ttfts.items():
        print(f"  K,V {case:<14} {1000 * ttft:>9.1f} ms   {base / ttft:>5.1f}x faster than recompute")
    tokens = prompt_token_count(_conversation(args.context))
    print(f"  ({tokens} prompt tokens; K,V {tokens * profile.kv_bytes_per_token / 1e9:.2f} GB)")
    steps, modelled, wall = engine_speed(profile, args.sessions, args.turns)
    print(
        f"simulated node speed, {args.sessions} concurrent sessions x {args.turns} turns: "
        f"{steps} steps in {wall:.2f} s wall = {steps / wall:,.0f} steps/s, "
        f"{modelled / wall:,.1f} modelled s per wall s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
