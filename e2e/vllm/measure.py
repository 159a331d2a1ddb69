"""The real-engine measurement of `make e2e-vllm`: turn-2 TTFT of multi-turn sessions (about 1.5K
tokens of history) on two real vLLM engines that run Symphony's KV connector, in four conditions:

  (a) no reuse        the engine's prefix cache is reset and the store forgets the session
  (b) prefix cache    the engine still holds turn 1's blocks (its own prefix cache only)
  (c) tier restore    the engine evicted them (prefix cache reset); an advisory's Prepare promoted
                      the session from the store's disk tier to host memory, the connector loads it
  (d) peer migration  turn 2 runs on the other engine; an advisory's Prepare pulled the session's
                      K,V from the first node (export -> import, layer by layer) ahead of the turn
  (c') for reference: as (c) without the Prepare, so the connector reads the disk tier itself

Conditions are interleaved round by round so machine noise hits all four alike; figures are
medians and ratios of one run. Turns go through the node scheduler's `vllm` backend, the code a
node runs. Exit 1 when the restore paths did not restore K,V or did not beat recomputation.
Run with the dev venv: python e2e/vllm/measure.py --a URL --a-control URL --b URL --b-control URL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from symphony_nodesched.backends.vllm import VllmBackend, VllmSettings
from symphony_nodesched.engine import EngineRequest, EngineResult, KvPiece, Message, PeerRef, TokenEvent

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "symphony",
    "moves",
    "session",
    "cache",
    "ahead",
    "of",
    "its",
    "next",
    "turn",
    "user",
    "how",
    "do",
    "sort",
    "list",
    "in",
    "python",
    "assistant",
    "use",
    "sorted",
    "items",
    "multi",
    "chat",
    "sessions",
    "resend",
    "whole",
    "conversation",
    "every",
]
CONDITIONS = ("a_no_reuse", "b_prefix_cache", "c_tier_restore", "d_peer_migration", "c'_disk_no_prefetch")


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


class DirectFetcher:
    """FetchKv without the gRPC hop: the peer backend's export, as the node service would relay it."""

    def __init__(self, peer: VllmBackend) -> None:
        self.peer = peer

    async def fetch(self, peer: PeerRef, session_id: str) -> AsyncIterator[KvPiece]:
        async for piece in self.peer.export_kv(session_id):
            yield piece


async def run_turn(
    backend: VllmBackend, sid: str, turn: int, msgs: list[Message], max_tokens: int
) -> tuple[str, EngineResult]:
    out, res = "", None
    req = EngineRequest(f"{sid}-t{turn}", sid, turn, msgs, max_tokens, ignore_eos=True)
    async for ev in backend.generate(req):
        if isinstance(ev, TokenEvent):
            out += ev.text
        else:
            res = ev
    assert res is not None
    return out, res


async def reset_prefix_cache(http: aiohttp.ClientSession, url: str) -> None:
    """Makes the engine forget every cached block, as memory pressure would (needs VLLM_SERVER_DEV_MODE=1)."""
    for _ in range(50):
        async with http.post(f"{url}/reset_prefix_cache") as resp:
            if resp.status == 404:
                sys.exit("error: /reset_prefix_cache is missing: start vLLM with VLLM_SERVER_DEV_MODE=1")
            if (await resp.json()).get("success"):
                return
        await asyncio.sleep(0.1)  # a request still held blocks; the engine asks callers to retry
    raise RuntimeError(f"{url} refused to reset its prefix cache")


async def measure(args: argparse.Namespace) -> int:
    a = VllmBackend(VllmSettings(url=args.a, control_url=args.a_control, poll_interval_s=3600))
    b = VllmBackend(VllmSettings(url=args.b, control_url=args.b_control, poll_interval_s=3600))
    await a.start()
    await b.start()
    rng = random.Random(args.seed)
    ttft: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    cached: dict[str, list[dict[str, int]]] = {c: [] for c in CONDITIONS}
    prompt_tokens: list[int] = []
    same_answer = 0
    try:
        async with aiohttp.ClientSession() as http:
            for rnd in range(args.sessions):
                for cond in CONDITIONS:
                    sid = f"{cond}-{rnd}"
                    msgs = [
                        Message("system", "You are a helpful assistant."),
                        Message("user", text(rng, args.words)),
                    ]
                    answer, _ = await run_turn(a, sid, 0, msgs, args.answer_tokens)
                    msgs = [*msgs, Message("assistant", answer), Message("user", text(rng, args.words // 3))]
                    serve = a
                    if cond == "a_no_reuse":
                        await reset_prefix_cache(http, args.a)
                        await a.release(sid, prefetch_only=False)
                    elif cond == "c_tier_restore":
                        await reset_prefix_cache(http, args.a)
                        await a.release(sid, prefetch_only=True)  # host -> disk only
                        out = await a.prepare(sid, "local", msgs[:-1], None, 5.0, DirectFetcher(b))
                        assert out.source == "local", out
                    elif cond == "c'_disk_no_prefetch":
                        await reset_prefix_cache(http, args.a)
                        await a.release(sid, prefetch_only=True)
                    elif cond == "d_peer_migration":
                        serve = b
                        out = await b.prepare(
                            sid, "peer", msgs[:-1], PeerRef("a", args.a), 5.0, DirectFetcher(a)
                        )
                        assert out.source == "peer", out
                    answer2, res = await run_turn(serve, sid, 1, msgs, args.answer_tokens)
                    ttft[cond].append(res.ttft_s)
                    cached[cond].append(res.cached_by_tier)
                    prompt_tokens.append(res.prompt_tokens)
                    if cond == "c_tier_restore":
                        # Correctness: the same prompt recomputed from scratch gives the same greedy answer.
                        await reset_prefix_cache(http, args.a)
                        await a.release(sid, prefetch_only=False)
                        again, res2 = await run_turn(a, sid + "-check", 1, msgs, args.answer_tokens)
                        same_answer += int(again == answer2 and res2.cached_tokens == 0)
                print(
                    f"round {rnd + 1}/{args.sessions}: "
                    + "  ".join(f"{c.split('_')[0]}={ttft[c][-1] * 1000:.0f}ms" for c in CONDITIONS),
                    flush=True,
                )
    finally:
        await a.close()
        await b.close()

    med = {c: statistics.median(v) for c, v in ttft.items()}
    print(
        f"\nturn-2 TTFT medians over {args.sessions} sessions each (prompt {min(prompt_tokens)}-{max(prompt_tokens)} tokens):"
    )
    for c in CONDITIONS:
        tiers = cached[c][len(cached[c]) // 2]
        label, name = c.split("_", 1)
        print(
            f"  ({label}) {name:<18} {med[c] * 1000:8.1f} ms   cached by tier (a typical turn): {tiers or 'none'}"
        )
    ratios = {
        "a/b": med["a_no_reuse"] / med["b_prefix_cache"],
        "a/c": med["a_no_reuse"] / med["c_tier_restore"],
        "a/d": med["a_no_reuse"] / med["d_peer_migration"],
        "c/b": med["c_tier_restore"] / med["b_prefix_cache"],
        "d/b": med["d_peer_migration"] / med["b_prefix_cache"],
    }
    print("  ratios: " + "  ".join(f"{k}={v:.2f}" for k, v in ratios.items()))
    print(f"  restored turns answer exactly as a recomputation: {same_answer}/{args.sessions}")
    if args.out:
        write_json(args.out, {"ttft_s": ttft, "median_s": med, "ratios": ratios, "cached": cached})

    problems = []
    if any(c.get("host", 0) + c.get("disk", 0) == 0 for c in cached["c_tier_restore"]):
        problems.append("(c) a turn found nothing restored from the host/disk tier")
    if any(c.get("disk", 0) == 0 for c in cached["c'_disk_no_prefetch"]):
        problems.append("(c') a turn found nothing restored from the disk tier")
    if any(c.get("peer", 0) == 0 for c in cached["d_peer_migration"]):
        problems.append("(d) a turn found nothing of the migrated K,V")
    if any(c for c in cached["a_no_reuse"]):
        problems.append("(a) a turn reused K,V although nothing should be cached")
    for c in ("c_tier_restore", "d_peer_migration"):
        if not med[c] < med["a_no_reuse"]:
            problems.append(f"({c[0]}) median TTFT is not below no-reuse")
    if same_answer * 2 < args.sessions:
        problems.append("restored K,V changed the model's answers (wrong blocks loaded?)")
    for p in problems:
        print(f"FAIL: {p}")
    return 1 if problems else 0


def write_json(path: str, doc: object) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--a", required=True, help="engine A's OpenAI URL")
    p.add_argument("--a-control", required=True, help="engine A's connector control URL")
    p.add_argument("--b", required=True, help="engine B's OpenAI URL")
    p.add_argument("--b-control", required=True, help="engine B's connector control URL")
    p.add_argument("--sessions", type=int, default=8, help="sessions per condition")
    p.add_argument("--words", type=int, default=900, help="words of turn 1's user message")
    p.add_argument("--answer-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="write the figures as JSON here")
    return asyncio.run(measure(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
