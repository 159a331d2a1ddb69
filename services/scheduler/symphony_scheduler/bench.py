"""``make bench-scheduler``: how many decisions the scheduler makes per second, and what it adds.

Part 1 (the core, one thread = one core): advisory + routing decisions per second, per-call
latency, and the cost of applying one heartbeat, with 1k / 10k / 100k tracked sessions on 8 nodes.
Part 2 (the live process): a scheduler subprocess in front of fake nodes that answer instantly;
turns are sent open-loop at a fixed rate, once straight to a node and once through the scheduler,
and the difference of the latency percentiles is what the scheduler adds. Figures only: nothing
here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc

from symphony.v1 import common_pb2, nodesched_pb2, nodesched_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from symphony_scheduler.core import SchedulerCore
from symphony_scheduler.fakes import FakeBehaviour, FakeNode
from symphony_scheduler.policies import default_registry

if TYPE_CHECKING:
    from symphony.v1.nodesched_pb2_grpc import NodeSchedulerAsyncStub
    from symphony.v1.scheduler_pb2_grpc import SchedulerAsyncStub

NODES = 8


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_core(policy: str, sessions: int) -> SchedulerCore:
    core = SchedulerCore(default_registry().create(policy), lease_s=1e9, session_ttl_s=1e9)
    for i in range(NODES):
        core.register_node(
            scheduler_pb2.RegisterNodeRequest(
                node_id=f"n{i}", address=f"10.0.0.{i}:50061", kv_bytes_per_token=131_072, max_num_seqs=256
            ),
            0.0,
        )
    statuses = [common_pb2.NodeStatus(node_id=f"n{i}", sequence=1) for i in range(NODES)]
    for s in range(sessions):
        statuses[s % NODES].sessions.add(
            session_id=f"s{s}", tokens=2000, tier=common_pb2.TIER_HOST if s % 3 else common_pb2.TIER_GPU
        )
    for st in statuses:
        core.node_status(st, 0.0)
    return core


def bench_core(policy: str, sessions: int, decisions: int) -> dict[str, float]:
    core = build_core(policy, sessions)
    rng = random.Random(1)
    msgs = [common_pb2.ChatMessage(role="user", content="x" * 800) for _ in range(4)]
    route_lat: list[float] = []
    advise_lat: list[float] = []
    now = 1.0
    start = time.perf_counter()
    done = 0
    while done < decisions:
        sid = f"s{rng.randrange(sessions)}"
        now += 0.001
        t0 = time.perf_counter()
        core.advise(sid, 1.0, 1, now)  # within the decision lead: placed at once
        t1 = time.perf_counter()
        decision = core.route(
            common_pb2.TurnRequest(session_id=sid, turn_index=1, messages=msgs, max_tokens=64), now
        )
        t2 = time.perf_counter()
        core.turn_finished(
            common_pb2.TurnSummary(
                session_id=sid, node_id=decision.node_id, prompt_tokens=820, completion_tokens=64
            ),
            False,
            now,
        )
        advise_lat.append(t1 - t0)
        route_lat.append(t2 - t1)
        done += 2
    elapsed = time.perf_counter() - start
    status = common_pb2.NodeStatus(node_id="n0", sequence=2)
    for s in range(0, sessions, NODES):
        status.sessions.add(session_id=f"s{s}", tokens=2100, tier=common_pb2.TIER_GPU)
    t0 = time.perf_counter()
    core.node_status(status, now)
    heartbeat_s = time.perf_counter() - t0
    return {
        "decisions_per_s": done / elapsed,
        "advise_p50_us": pct(advise_lat, 0.5) * 1e6,
        "route_p50_us": pct(route_lat, 0.5) * 1e6,
        "route_p99_us": pct(route_lat, 0.99) * 1e6,
        "heartbeat_ms": heartbeat_s * 1e3,
    }


async def paced(
    rate: float, seconds: float, send: Callable[[int], Awaitable[None]]
) -> tuple[list[float], int]:
    """Open-loop load: starts a turn every 1/rate s regardless of completions.

    Returns the latencies of the turns that succeeded and the number that failed.
    """
    latencies: list[float] = []
    failed = 0
    tasks: list[asyncio.Task[None]] = []

    async def timed(i: int) -> None:
        nonlocal failed
        t0 = time.perf_counter()
        try:
            await send(i)
        except grpc.aio.AioRpcError:
            failed += 1
            return
        latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the offered load, not synchronisation
        tasks.append(asyncio.create_task(timed(i)))
    await asyncio.gather(*tasks)
    return latencies, failed


async def bench_live(rates: list[float], seconds: float) -> list[dict[str, float]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "symphony_scheduler",
        "--listen=127.0.0.1:0",
        "--http-listen=127.0.0.1:0",
        "--policy=symphony",
        "--lease=600",
        "--log-level=warning",
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 30)
    match = re.search(rb"grpc port (\d+)", line)
    if match is None:
        proc.kill()
        raise RuntimeError(f"scheduler did not start: {line!r}")
    address = f"127.0.0.1:{int(match.group(1))}"
    nodes = [await FakeNode.start(f"n{i}", address, FakeBehaviour(deltas=1)) for i in range(2)]
    sched_ch = grpc.aio.insecure_channel(address)
    node_ch = grpc.aio.insecure_channel(nodes[0].address)
    sched: SchedulerAsyncStub = scheduler_pb2_grpc.SchedulerStub(sched_ch)
    node: NodeSchedulerAsyncStub = nodesched_pb2_grpc.NodeSchedulerStub(node_ch)
    msgs = [common_pb2.ChatMessage(role="user", content="hello " * 50)]

    def turn(i: int) -> common_pb2.TurnRequest:
        return common_pb2.TurnRequest(session_id=f"s{i % 1000}", turn_index=0, messages=msgs, max_tokens=4)

    async def direct(i: int) -> None:
        async for _ in node.Generate(nodesched_pb2.NodeGenerateRequest(turn=turn(i))):
            pass

    async def via(i: int) -> None:
        if i % 2 == 0:
            await sched.Advise(scheduler_pb2.AdviseRequest(session_id=f"s{i % 1000}", eta_s=1.0))
        async for _ in sched.Generate(turn(i)):
            pass

    results = []

    async def worker(w: int, n: int) -> None:
        for i in range(n):
            async for _ in sched.Generate(turn(w * 1000 + i)):
                pass

    try:
        await paced(100, 0.5, via)  # warm up channels and code paths
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w, 100) for w in range(32)))
        results.append({"capacity": 3200 / (time.perf_counter() - t0)})
        for rate in rates:
            d, d_failed = await paced(rate, seconds, direct)
            v, v_failed = await paced(rate, seconds, via)
            results.append(
                {
                    "rate": rate,
                    "direct_p50_ms": pct(d, 0.5) * 1e3,
                    "direct_p99_ms": pct(d, 0.99) * 1e3,
                    "via_p50_ms": pct(v, 0.5) * 1e3,
                    "via_p99_ms": pct(v, 0.99) * 1e3,
                    "mean_via_ms": statistics.fmean(v) * 1e3,
                    "failed": d_failed + v_failed,
                }
            )
    finally:
        await sched_ch.close(None)
        await node_ch.close(None)
        for n in nodes:
            await n.stop()
        proc.terminate()
        await proc.wait()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m symphony_scheduler.bench", description=__doc__)
    p.add_argument("--policy", default="symphony", choices=default_registry().names())
    p.add_argument("--decisions", type=int, default=100_000)
    p.add_argument("--sessions", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    p.add_argument(
        "--rates", type=float, nargs="+", default=[100.0, 300.0, 1000.0], help="turns/s offered (live)"
    )
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--skip-live", action="store_true")
    args = p.parse_args(argv)
    print(f"core, policy={args.policy}, {NODES} nodes, {args.decisions} decisions (advise + route) per row")
    print(
        f"{'sessions':>9} {'decisions/s':>12} {'advise p50 us':>14} {'route p50 us':>13} {'route p99 us':>13} {'heartbeat ms':>13}"
    )
    for n in args.sessions:
        r = bench_core(args.policy, n, args.decisions)
        print(
            f"{n:>9} {r['decisions_per_s']:>12.0f} {r['advise_p50_us']:>14.1f} {r['route_p50_us']:>13.1f} "
            f"{r['route_p99_us']:>13.1f} {r['heartbeat_ms']:>13.2f}"
        )
    if not args.skip_live:
        print(
            f"\nlive: scheduler process + 2 fake nodes answering at once; {args.seconds:.0f} s per rate, open loop"
        )
        print("(the load generator and the fake nodes share the machine: at high rates they saturate first,")
        print(" which the 'direct' column shows)")
        print(
            f"{'turns/s':>8} {'direct p50':>11} {'direct p99':>11} {'via p50':>9} {'via p99':>9} {'added p50':>10} {'added p99':>10}  (ms)"
        )
        capacity, *rows = asyncio.run(bench_live(args.rates, args.seconds))
        print(f"closed loop, 32 concurrent clients: {capacity['capacity']:.0f} turns/s through the scheduler")
        for r in rows:
            print(
                f"{r['rate']:>8.0f} {r['direct_p50_ms']:>11.2f} {r['direct_p99_ms']:>11.2f} {r['via_p50_ms']:>9.2f} "
                f"{r['via_p99_ms']:>9.2f} {r['via_p50_ms'] - r['direct_p50_ms']:>10.2f} "
                f"{r['via_p99_ms'] - r['direct_p99_ms']:>10.2f} {r['failed']:>7.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
