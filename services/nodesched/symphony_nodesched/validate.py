"""``make validate-sim``: the sim engine against CALIBRATION.md's H100 / Llama-3.1-8B measurements.

Each point runs the real :class:`SimNode` (scheduler, chunked prefill, cost model) in virtual time
and compares one figure with the published value; ±10% passes. Exit status 1 when a point fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from symphony_nodesched.engine import EngineRequest, Message
from symphony_nodesched.events import Finished, FirstToken, NodeEvent, Tokens
from symphony_nodesched.profile import Profile, load_profile
from symphony_nodesched.simnode import SimNode

TOLERANCE = 0.10
PROMPT_OVERHEAD = 8  # one user message header + the generation prompt (symphony.tokens)


@dataclass(frozen=True)
class Point:
    name: str
    unit: str
    published: float
    measure: Callable[[Profile], float]


def prompt_of(tokens: int) -> list[Message]:
    """A one-message conversation of exactly ``tokens`` prompt tokens."""
    return [Message("user", "abcd" * (tokens - PROMPT_OVERHEAD))]


def run_all(node: SimNode, until_finished: int) -> list[NodeEvent]:
    events: list[NodeEvent] = []
    finished = 0
    while finished < until_finished:
        t = node.next_event_time()
        if t is None:
            raise RuntimeError("the simulated node stalled")
        for ev in node.advance(t):
            events.append(ev)
            finished += isinstance(ev, Finished)
    return events


def ttft_s(profile: Profile, tokens: int) -> float:
    node = SimNode(profile, "validate")
    node.submit(EngineRequest("r", "s", 0, prompt_of(tokens), 1), 0.0)
    first = next(e for e in run_all(node, 1) if isinstance(e, FirstToken))
    return first.t


def prefill_throughput(profile: Profile, tokens: int = 512, requests: int = 1024) -> float:
    """Tokens/s of many concurrent single-token requests (the '10,000 concurrent prefills' run)."""
    node = SimNode(profile, "validate")
    for i in range(requests):
        node.submit(EngineRequest(f"r{i}", f"s{i}", 0, prompt_of(tokens), 1), 0.0)
    end = max(e.t for e in run_all(node, requests) if isinstance(e, Finished))
    return tokens * requests / end


def itl_s(profile: Profile, context: int, tokens: int = 33) -> float:
    """Mean inter-token latency of one request decoding alone at ``context`` tokens."""
    node = SimNode(profile, "validate")
    node.submit(EngineRequest("r", "s", 0, prompt_of(context), tokens, ignore_eos=True), 0.0)
    times = [e.t for e in run_all(node, 1) if isinstance(e, FirstToken | Tokens)]
    return (times[-1] - times[0]) / (len(times) - 1)


def host_hit_ttft_s(profile: Profile, tokens: int) -> float:
    """TTFT of a prompt whose K,V (all but the n-1 cap) waits in host memory.

    The GPU capacity is shrunk so that one other turn pushes the session to host; capacity does not
    enter the step-time model, so the figure is the profile's."""
    small = profile.model_copy(update={"gpu_kv_tokens": tokens + 8192})
    node, msgs = SimNode(small, "validate"), prompt_of(tokens)
    node.submit(EngineRequest("r0", "s", 0, msgs, 1), 0.0)
    now = max(e.t for e in run_all(node, 1))
    hog = prompt_of(small.gpu_kv_tokens - 64)
    node.submit(EngineRequest("hog", "hog", 0, hog, 1, is_last=True), now)
    now = max(e.t for e in run_all(node, 1)) + 60.0  # let the demotion copies finish
    node.advance(now)
    node.submit(EngineRequest("r1", "s", 1, msgs, 1), now)
    first = next(e for e in run_all(node, 1) if isinstance(e, FirstToken))
    return first.t - now


H100_8B = "h100-80gb/llama-3.1-8b"
POINTS = [
    Point("TTFT 10K tokens", "s", 0.26, lambda p: ttft_s(p, 10_000)),
    Point("TTFT 20K tokens", "s", 0.64, lambda p: ttft_s(p, 20_000)),
    Point("TTFT 50K tokens", "s", 2.29, lambda p: ttft_s(p, 50_000)),
    Point("TTFT 100K tokens", "s", 6.85, lambda p: ttft_s(p, 100_000)),
    Point("512-token prefill throughput", "tok/s", 43_000, prefill_throughput),
    Point("batch-1 ITL at 1K context", "ms", 6.44 + 4.37e-5 * 1_000, lambda p: 1000 * itl_s(p, 1_000)),
    Point("batch-1 ITL at 131K context", "ms", 6.44 + 4.37e-5 * 131_000, lambda p: 1000 * itl_s(p, 131_000)),
]


# Reported, not gated: the model charges no per-request API overhead (CALIBRATION.md: ~5 ms) and
# uses the 47 GB/s DMA figure where the measurement implies ~43 GB/s effective.
INFO_POINTS = [
    Point("CPU-tier hit TTFT 10K", "s", 0.040, lambda p: host_hit_ttft_s(p, 10_000)),
    Point("CPU-tier hit TTFT 50K", "s", 0.160, lambda p: host_hit_ttft_s(p, 50_000)),
    Point("CPU-tier hit TTFT 100K", "s", 0.310, lambda p: host_hit_ttft_s(p, 100_000)),
]


def error(measured: float, published: float) -> float:
    return (measured - published) / published


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="validate-sim", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=H100_8B, help="profile to check (the table is measured on H100)")
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    print(f"sim engine vs CALIBRATION.md ({profile.name}), tolerance ±{TOLERANCE:.0%}")
    print(f"{'point':<32} {'published':>16} {'sim':>16} {'error':>8}  result")
    failed = 0
    for point in POINTS:
        measured = point.measure(profile)
        err = error(measured, point.published)
        ok = abs(err) <= TOLERANCE
        failed += not ok
        print(
            f"{point.name:<32} {point.published:>10.4g} {point.unit:<5} {measured:>10.4g} {point.unit:<5}"
            f" {err:>+7.1%}  {'PASS' if ok else 'FAIL'}"
        )
    for point in INFO_POINTS:
        measured = point.measure(profile)
        print(
            f"{point.name:<32} {point.published:>10.4g} {point.unit:<5} {measured:>10.4g} {point.unit:<5}"
            f" {error(measured, point.published):>+7.1%}  info"
        )
    print(
        f"{len(POINTS) - failed}/{len(POINTS)} gated points within ±{TOLERANCE:.0%} (info rows are not gated)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
