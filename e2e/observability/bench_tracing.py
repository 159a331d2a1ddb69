"""What tracing costs: the same seeded workload on the local stack with tracing off and on.

Each round starts a scheduler and two sim node schedulers (real processes), runs the workload
generator with a fixed seed, and reads the scheduler's and the nodes' CPU time from /proc before
stopping them. With tracing on, every process exports every span (sample ratio 1) over OTLP to a
counting receiver in this process. Figures are ratios within one run (the machine is shared):

    make bench-observability                  # 2 rounds of each mode
    python e2e/observability/bench_tracing.py --rounds 3 --clients 32 --turns 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # quiet the fork notices of this process's gRPC core

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from symphony_cluster.local import LocalStack, StackConfig
from symphony_cluster.process import Child


class CountingReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC endpoint that only counts the spans it is sent."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)  # type: ignore[no-untyped-call]
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self._lock:
            self.spans += n
        return trace_service_pb2.ExportTraceServiceResponse()


def cpu_seconds(child: Child) -> float:
    """utime + stime of a running child, from /proc (Linux)."""
    assert child.proc is not None
    fields = Path(f"/proc/{child.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    traced: bool
    turns: int
    turns_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    scheduler_cpu_ms_per_turn: float
    nodes_cpu_ms_per_turn: float
    spans_per_turn: float


async def one_round(args: argparse.Namespace, traced: bool, receiver: CountingReceiver, out: Path) -> Round:
    env = {"OTEL_TRACES_SAMPLER_ARG": "1"}
    env |= (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}"}
        if traced
        else {"OTEL_TRACES_EXPORTER": "none"}
    )
    stack = LocalStack(
        StackConfig(
            nodes=2,
            clients=args.clients,
            duration_s=600,
            profile="cpu-tiny/test",
            out_dir=out,
            quiet=True,
            seed=args.seed,
            workload_args=[
                "--time-scale",
                str(args.time_scale),
                "--max-turns",
                str(args.turns),
                "--no-plots",
            ],
            env=env,
        )
    )
    before = receiver.spans
    try:
        await stack.start()
        code = await stack.run_workload()
        if code != 0:
            raise RuntimeError(f"the workload failed (exit {code}); see {out}/logs")
        sched_cpu = cpu_seconds(stack.scheduler)
        nodes_cpu = sum(cpu_seconds(n) for n in stack.nodes)
    finally:
        await stack.stop()  # flushes the services' spans
    summary = json.loads((out / "summary.json").read_text())
    turns = int(summary["turns"]["ok"])
    ttft = summary["latency"]["ttft"]
    return Round(
        traced=traced,
        turns=turns,
        turns_per_s=float(summary["throughput"]["turns_per_s"]),
        ttft_p50_ms=1000 * float(ttft["p50"]),
        ttft_p99_ms=1000 * float(ttft["p99"]),
        scheduler_cpu_ms_per_turn=1000 * sched_cpu / turns,
        nodes_cpu_ms_per_turn=1000 * nodes_cpu / turns,
        spans_per_turn=(receiver.spans - before) / turns,
    )


async def run(args: argparse.Namespace) -> list[Round]:
    receiver = CountingReceiver()
    receiver.server.start()
    rounds: list[Round] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
            for i in range(args.rounds):
                for traced in (False, True):  # interleaved, so drift in machine load hits both
                    r = await one_round(args, traced, receiver, Path(tmp) / f"{i}-{traced}")
                    rounds.append(r)
                    print(
                        f"round {i + 1} tracing {'on ' if traced else 'off'}: {r.turns} turns, "
                        f"{r.turns_per_s:.2f} turns/s, TTFT p50 {r.ttft_p50_ms:.1f} ms p99 {r.ttft_p99_ms:.1f} ms, "
                        f"scheduler CPU {r.scheduler_cpu_ms_per_turn:.2f} ms/turn, "
                        f"nodes CPU {r.nodes_cpu_ms_per_turn:.2f} ms/turn, {r.spans_per_turn:.1f} spans/turn",
                        flush=True,
                    )
    finally:
        receiver.server.stop(None)
    return rounds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--time-scale", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.clients < 1 or args.turns < 1:
        ap.error("--rounds, --clients and --turns must be >= 1")
    rounds = asyncio.run(run(args))

    def median(traced: bool, key: str) -> float:
        return statistics.median(getattr(r, key) for r in rounds if r.traced == traced)

    print("\nmedian over rounds       tracing off   tracing on   on/off")
    for key, label in (
        ("scheduler_cpu_ms_per_turn", "scheduler CPU ms/turn"),
        ("nodes_cpu_ms_per_turn", "nodes CPU ms/turn"),
        ("ttft_p50_ms", "TTFT p50 ms"),
        ("turns_per_s", "turns/s"),
    ):
        off, on = median(False, key), median(True, key)
        print(f"{label:<24} {off:>11.2f} {on:>12.2f} {on / off if off else float('nan'):>8.2f}")
    print(f"spans exported per turn (tracing on): {median(True, 'spans_per_turn'):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
