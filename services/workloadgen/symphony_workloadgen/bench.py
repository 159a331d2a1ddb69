"""``make bench-workloadgen``: how hard one generator process can drive, against a no-op scheduler.

The no-op scheduler runs in a child process (so its CPU is not the generator's) and answers every
turn with one delta and a summary. The generator plays ``--sessions`` synthetic sessions with the
time scale that makes them send ``--rate`` turns/s, and the benchmark prints the achieved turns/s,
the send lateness (actual - planned send time) p50/p99 and the generator's own CPU use
(``resource.getrusage``: user + system time over the run, 100% = one core).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np

from symphony.grpcutil import start_server
from symphony.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from symphony_workloadgen.clients.base import Clock, Delta, Done, Target, TurnCall, TurnEvent
from symphony_workloadgen.clients.symphony_grpc import SymphonyGrpcTarget
from symphony_workloadgen.dataset import SyntheticSpec, synthetic
from symphony_workloadgen.runner import RunConfig, Runner
from symphony_workloadgen.session import SessionPlanner, UserModel

Context = grpc.aio.ServicerContext[Any, Any]


class NoopScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """Answers at once: one delta, one summary. Advisories are accepted and forgotten."""

    async def Generate(
        self, request: common_pb2.TurnRequest, context: Context
    ) -> AsyncIterator[common_pb2.GenerateResponse]:
        yield common_pb2.GenerateResponse(delta=common_pb2.TokenDelta(text="ok", num_tokens=1))
        yield common_pb2.GenerateResponse(
            summary=common_pb2.TurnSummary(
                request_id=request.request_id, session_id=request.session_id, completion_tokens=1
            )
        )

    async def Advise(
        self, request: scheduler_pb2.AdviseRequest, context: Context
    ) -> scheduler_pb2.AdviseResponse:
        return scheduler_pb2.AdviseResponse(accepted=True)

    async def CancelAdvice(
        self, request: scheduler_pb2.CancelAdviceRequest, context: Context
    ) -> scheduler_pb2.CancelAdviceResponse:
        return scheduler_pb2.CancelAdviceResponse(cancelled=True)

    async def Submit(
        self, request: scheduler_pb2.SubmitRequest, context: Context
    ) -> scheduler_pb2.SubmitResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the no-op scheduler streams only")
        raise AssertionError("unreachable")

    async def RegisterNode(
        self, request: scheduler_pb2.RegisterNodeRequest, context: Context
    ) -> scheduler_pb2.RegisterNodeResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no nodes")
        raise AssertionError("unreachable")

    async def ReportStatus(
        self, request: common_pb2.NodeStatus, context: Context
    ) -> scheduler_pb2.ReportStatusResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no nodes")
        raise AssertionError("unreachable")

    async def GetClusterState(
        self, request: scheduler_pb2.GetClusterStateRequest, context: Context
    ) -> scheduler_pb2.ClusterState:
        return scheduler_pb2.ClusterState(policy="noop")


class InProcessTarget:
    """No sockets: answers on the next loop iteration. Isolates the runner's own cost from gRPC's."""

    async def start(self) -> None:
        return None

    async def advise(self, session_id: str, eta_s: float, turn_index: int, prompt_chars: int) -> None:
        return None

    async def cancel_advice(self, session_id: str) -> None:
        return None

    async def run_turn(self, call: TurnCall, clock: Clock) -> AsyncIterator[TurnEvent]:
        await asyncio.sleep(0)
        yield Delta(clock(), "ok", 1)
        yield Done(clock(), output_tokens=1)

    async def close(self) -> None:
        return None


async def serve() -> None:
    server = await start_server(
        lambda s: scheduler_pb2_grpc.add_SchedulerServicer_to_server(NoopScheduler(), s),
        ["symphony.v1.Scheduler"],
        "127.0.0.1:0",
    )
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await server.stop(0)


def mean_wait_s(planner: SessionPlanner, sample: int = 2000) -> float:
    """Mean unscaled wait between a session's turns (typing, plus reading after the first turn)."""
    waits = []
    for n in range(sample):
        plan = planner.plan(n)
        prev = 0
        for t in plan.turns:
            waits.append(plan.wait_s(t.index, prev) * plan.time_scale)
            prev = len(t.expected_answer)
    return float(np.mean(waits))


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    server = None
    if not args.in_process:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "symphony_workloadgen.bench", "--serve",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert server.stdout is not None
        port = int((await server.stdout.readline()).decode())
    dataset = synthetic(SyntheticSpec(), seed=args.seed).conversations
    mean_wait = mean_wait_s(SessionPlanner(dataset, UserModel(), seed=args.seed))
    scale = args.time_scale or args.rate * mean_wait / args.sessions
    cycle = mean_wait / scale  # wall seconds between two turns of one session
    # Sessions start spread over one cycle, and the window opens once every session has cycled
    # at least once, so the figures describe the steady state rather than the start-up burst.
    ramp = cycle if args.ramp_up is None else args.ramp_up
    warmup = ramp + cycle if args.warmup is None else args.warmup
    model = UserModel(time_scale=scale, advisories=not args.no_advisories)
    planner = SessionPlanner(dataset, model, seed=args.seed)
    target: Target = (
        InProcessTarget()
        if server is None
        else SymphonyGrpcTarget(f"127.0.0.1:{port}", channels=args.channels)
    )
    await target.start()
    config = RunConfig(
        num_clients=args.sessions, duration_s=warmup + args.duration, warmup_s=warmup, ramp_up_s=ramp
    )
    try:
        result = await Runner(target, planner, config).run()
    finally:
        await target.close()
        if server is not None and server.stdin is not None:
            server.stdin.close()
            await server.wait()
    measured = [r for r in result.records if not r.warmup]
    late = np.asarray([r.lateness for r in measured]) * 1000
    ok = [r for r in measured if r.ok]
    return {
        "target": "in-process (no gRPC)" if server is None else "no-op scheduler over gRPC",
        "sessions": args.sessions,
        "time_scale": round(scale, 3),
        "advisories": not args.no_advisories,
        "warmup_s": round(warmup, 3),
        "window_s": round(args.duration, 3),
        "turns_sent": len(measured),
        "turns_ok": len(ok),
        "turns_failed": sum(1 for r in measured if r.error),
        "turns_per_s": round(len(measured) / args.duration, 1),
        "advisories_per_s": round(result.advisories_sent / result.duration_s, 1),
        "lateness_p50_ms": round(float(np.percentile(late, 50)), 3) if len(late) else None,
        "lateness_p99_ms": round(float(np.percentile(late, 99)), 3) if len(late) else None,
        "lateness_max_ms": round(float(late.max()), 3) if len(late) else None,
        "ttft_p50_ms": round(float(np.percentile([r.ttft for r in ok], 50)) * 1000, 3) if ok else None,
        "generator_cpu_percent": round(100 * result.cpu_s / result.duration_s, 1),
        "server_cpu_percent": round(100 * _children_cpu_s() / result.duration_s, 1),
        "errors": sorted({r.error for r in measured if r.error})[:3],
        "cpus": os.cpu_count(),
        # Other processes compete for the same cores: lateness is only meaningful when this is low.
        "load_average_1m": f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
    }


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m symphony_workloadgen.bench", description=__doc__)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sessions", type=int, default=10_000, help="concurrent sessions (default: 10000)")
    p.add_argument("--rate", type=float, default=2000.0, help="turns/s to plan for (default: 2000)")
    p.add_argument("--time-scale", type=float, default=None, help="override the computed time scale")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds (default: 20)")
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds left out (default: ramp-up + one cycle)"
    )
    p.add_argument(
        "--ramp-up", type=float, default=None, help="seconds to start the sessions over (default: one cycle)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, default=4, help="gRPC connections to the scheduler (default: 4)")
    p.add_argument("--no-advisories", action="store_true", help="turns only")
    p.add_argument("--in-process", action="store_true", help="no server: measure the runner alone")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = p.parse_args(argv)
    if args.serve:
        asyncio.run(serve())
        return 0
    if args.sessions < 1 or args.rate <= 0 or args.duration <= 0 or args.channels < 1:
        p.error("--sessions, --rate, --duration and --channels must be positive")
    figures = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(figures))
    else:
        print("bench-workloadgen: one generator process against a no-op scheduler")
        for key, value in figures.items():
            print(f"  {key:<24}{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
