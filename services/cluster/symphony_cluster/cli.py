"""``symphony``: the project's command line.

``symphony run`` starts a local stack of real processes (scheduler, node schedulers on the built-in
simulated engine, a workload generator) and prints per-turn latency; ``symphony simulate`` runs the
same components in virtual time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from symphony.cliargs import positive
from symphony_cluster.local import LocalStack, StackConfig, StackError
from symphony_cluster.sessions_table import session_table
from symphony_cluster.sim import command as simulate_command
from symphony_cluster.sim import study

log = logging.getLogger("symphony")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symphony", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="start a local stack and run a workload against it",
        description="Start the scheduler, NODES node schedulers (sim engine) and a workload generator "
        "on loopback; print live progress and a per-turn latency summary; stop everything on exit or Ctrl+C.",
    )
    run.add_argument("--nodes", type=positive(int), default=2, help="node schedulers to start (default 2)")
    run.add_argument(
        "--clients", type=positive(int), default=32, help="concurrent chat sessions (default 32)"
    )
    run.add_argument(
        "--duration", type=positive(float), default=60.0, help="seconds of workload (default 60)"
    )
    run.add_argument(
        "--policy",
        default="symphony",
        help="routing policy: round_robin, least_loaded, sticky, prefix_aware, symphony (default symphony)",
    )
    run.add_argument("--profile", default="a100-80gb/llama-3.1-8b", help="simulated engine profile")
    run.add_argument(
        "--time-scale", type=positive(float), default=1.0, help="run modelled engine time this much faster"
    )
    run.add_argument("--dataset", default="synthetic", help="synthetic, sharegpt, or a ShareGPT JSON file")
    run.add_argument("--seed", type=int, default=0, help="seed of the workload (default 0)")
    run.add_argument("--out", type=Path, default=None, help="output folder (default out/run-<time>)")
    run.add_argument(
        "workload_args",
        nargs=argparse.REMAINDER,
        help="after --, extra flags for the workload generator (see symphony-workloadgen --help)",
    )
    simulate_command.add_parser(sub)
    study.add_parser(sub)
    return parser


async def _run(args: argparse.Namespace) -> int:
    out = args.out or Path("out") / time.strftime("run-%Y%m%d-%H%M%S")
    extra = [a for a in args.workload_args if a != "--"]
    config = StackConfig(
        nodes=args.nodes,
        clients=args.clients,
        duration_s=args.duration,
        policy=args.policy,
        profile=args.profile,
        time_scale=args.time_scale,
        dataset=args.dataset,
        seed=args.seed,
        out_dir=out,
        workload_args=extra,
    )
    stack = LocalStack(config)
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()

    def on_signal() -> None:
        if interrupted.is_set():
            return
        interrupted.set()
        print("\nstopping: waiting for in-flight turns, then shutting the stack down…", file=sys.stderr)
        if stack.workload is not None:
            stack.workload.send_signal(signal.SIGINT)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        print(
            f"starting scheduler (policy {config.policy}) and {config.nodes} node schedulers "
            f"(sim, {config.profile}); logs in {stack.logs}",
            file=sys.stderr,
        )
        start = asyncio.ensure_future(stack.start())
        stop_wait = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if interrupted.is_set():
            start.cancel()
            return 130
        stop_wait.cancel()
        start.result()
        print(
            f"stack ready: scheduler at {stack.scheduler_address}, HTTP on port {stack.endpoints.scheduler_http}",
            file=sys.stderr,
        )
        code = await stack.run_workload()
        if interrupted.is_set():
            return 130
        turns = out / "turns.jsonl"
        if turns.exists():
            print("\nper session:")
            print(session_table(turns))
        if code == 0:
            print(f"run complete: per-turn records and plots in {out}", file=sys.stderr)
        return code
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        await stack.stop()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return asyncio.run(_run(args))
    if args.command == "simulate":
        return simulate_command.run(args)
    if args.command == "study":
        return study.run(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
