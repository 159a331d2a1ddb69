"""``symphony-workloadgen``: N concurrent chat users against the Symphony scheduler or any
OpenAI-compatible server. Exit 0 when no turn failed, 1 when some did, 2 on bad usage."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from symphony.cliargs import non_negative, port, positive
from symphony.security import Channels, add_tls_flags, tls_from_args
from symphony.tracing import Tracing, TracingConfig, add_tracing_flags
from symphony_workloadgen.clients.base import Target, TargetError
from symphony_workloadgen.dataset import DatasetError, Distribution, SyntheticSpec, load
from symphony_workloadgen.metrics import Slo, summarize
from symphony_workloadgen.report import table, write_outputs
from symphony_workloadgen.runner import Progress, RunConfig, Runner, RunResult
from symphony_workloadgen.session import SessionPlanner
from symphony_workloadgen.usermodel_args import add_user_model_arguments, user_model_from_args

log = logging.getLogger("symphony_workloadgen")


def _max_tokens(text: str) -> int | None:
    if text == "dataset":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'dataset' or a number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _dist(name: str) -> Any:
    def parse(text: str) -> Distribution:
        try:
            return Distribution.parse(text, name)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _target(text: str) -> str:
    if text == "symphony" or text.startswith(("openai://", "http://", "https://")):
        return text
    raise argparse.ArgumentTypeError(f"expected 'symphony' or openai://host:port, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="symphony-workloadgen",
        description="Simulates concurrent chat users (reading and typing times, advisories) and measures "
        "TTFT, TPOT, ITL and end-to-end latency per turn.",
    )
    g = p.add_argument_group("target")
    g.add_argument("--scheduler-ip", default="localhost", help="scheduler host (default: localhost)")
    g.add_argument("--scheduler-port", type=port, default=50051, help="scheduler gRPC port (default: 50051)")
    g.add_argument(
        "--target",
        type=_target,
        default="symphony",
        help="'symphony' (gRPC to --scheduler-ip:--scheduler-port) or openai://host:port for any "
        "OpenAI-compatible server (default: symphony)",
    )
    g.add_argument("--model", default="", help="model name for an OpenAI target (default: its first model)")
    g.add_argument(
        "--api-key",
        default=os.environ.get("SYMPHONY_API_KEY", ""),
        help="bearer token for an OpenAI target (default: $SYMPHONY_API_KEY; never written out)",
    )
    g.add_argument(
        "--response-mode",
        choices=("stream", "callback"),
        default="stream",
        help="stream: the streaming Generate RPC; callback: Submit + the ResponseReceiver server (default: stream)",
    )
    g.add_argument(
        "--receiver-port",
        "--reciever-port",
        dest="receiver_port",
        type=port,
        default=50050,
        help="port of the ResponseReceiver server in callback mode (default: 50050)",
    )
    g.add_argument(
        "--connect-timeout",
        type=positive(float),
        default=10.0,
        help="seconds to wait for the scheduler at start before giving up (default: 10)",
    )
    g.add_argument(
        "--channels", type=positive(int), default=2, help="gRPC connections to the scheduler (default: 2)"
    )
    g.add_argument(
        "--callback-host", default="", help="address the scheduler posts responses to (default: auto)"
    )

    g = p.add_argument_group("workload")
    g.add_argument(
        "--num-clients", type=positive(int), default=256, help="sessions kept active (default: 256)"
    )
    g.add_argument(
        "--dataset",
        default="synthetic",
        help="synthetic, sharegpt, or a ShareGPT-style JSON file (default: synthetic)",
    )
    g.add_argument(
        "--dataset-limit", type=positive(int), default=None, help="load at most this many conversations"
    )
    g.add_argument("--synthetic-conversations", type=positive(int), default=1000, help="(default: 1000)")
    g.add_argument(
        "--synthetic-turns",
        type=_dist("synthetic-turns"),
        default=Distribution("uniform", 2, 6),
        help="turns per conversation: N, A-B or normal:MEAN:STD (default: 2-6)",
    )
    g.add_argument(
        "--synthetic-prompt-chars",
        type=_dist("synthetic-prompt-chars"),
        default=Distribution("uniform", 40, 120),
        help="prompt length in characters (default: 40-120)",
    )
    g.add_argument(
        "--synthetic-answer-chars",
        type=_dist("synthetic-answer-chars"),
        default=Distribution("uniform", 100, 400),
        help="answer length in characters (default: 100-400)",
    )
    g.add_argument(
        "--max-turns-per-session", type=positive(int), default=None, help="cut conversations to N turns"
    )
    add_user_model_arguments(g)
    g.add_argument("--seed", type=int, default=0, help="makes sessions and timings reproducible (default: 0)")
    g.add_argument(
        "--max-tokens",
        type=_max_tokens,
        default=None,
        metavar="dataset|N",
        help="output length: the dataset answer's (with ignore_eos) or N (default: dataset)",
    )
    g.add_argument(
        "--ignore-eos", action="store_true", help="with a numeric --max-tokens, generate exactly N"
    )
    g.add_argument(
        "--history",
        choices=("dataset", "live"),
        default="dataset",
        help="answers carried in later turns' history (default: dataset)",
    )

    g = p.add_argument_group("run control")
    g.add_argument("--duration", type=positive(float), default=None, help="stop sending after SECONDS")
    g.add_argument("--max-turns", type=positive(int), default=None, help="stop sending after N turns")
    g.add_argument(
        "--warmup", type=non_negative, default=0.0, help="leave turns sent in the first SECONDS out"
    )
    g.add_argument(
        "--max-sessions",
        type=positive(int),
        default=None,
        help="start at most N sessions, then end when they are done (default: the dataset's size "
        "when neither --duration nor --max-turns is given, else no limit)",
    )
    g.add_argument(
        "--ramp-up",
        type=non_negative,
        default=0.0,
        help="start the first sessions spread over SECONDS (default: 0)",
    )
    g.add_argument("--retries", type=int, default=3, help="retries of an UNAVAILABLE turn (default: 3)")
    g.add_argument("--turn-timeout", type=positive(float), default=600.0, help="seconds (default: 600)")
    g.add_argument(
        "--drain-timeout",
        type=non_negative,
        default=30.0,
        help="on stop, seconds to let in-flight turns finish (default: 30)",
    )
    g.add_argument("--slo-ttft", type=positive(float), default=None, help="TTFT SLO in seconds, for goodput")
    g.add_argument("--slo-tpot", type=positive(float), default=None, help="TPOT SLO in seconds, for goodput")

    add_tls_flags(p)

    g = p.add_argument_group("output")
    g.add_argument(
        "--out", type=Path, default=None, help="directory for turns.jsonl/csv, summary.json, plots"
    )
    g.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    g.add_argument("--progress-interval", type=positive(float), default=1.0, help="seconds (default: 1)")
    g.add_argument("--quiet", action="store_true", help="no progress line")
    g.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    add_tracing_flags(p)
    return p


def make_target(args: argparse.Namespace, tracing: Tracing | None = None) -> Target:
    from symphony_workloadgen.clients.callback import CallbackTarget, local_address_towards
    from symphony_workloadgen.clients.openai_http import OpenAIHttpTarget
    from symphony_workloadgen.clients.symphony_grpc import SymphonyGrpcTarget

    if args.target != "symphony":
        if args.response_mode == "callback":
            raise ValueError("--response-mode callback needs the Symphony target")
        url = (
            "http://" + args.target.removeprefix("openai://")
            if args.target.startswith("openai://")
            else args.target
        )
        return OpenAIHttpTarget(url, args.model, args.api_key)
    address = f"{args.scheduler_ip}:{args.scheduler_port}"
    if args.response_mode == "callback":
        host = args.callback_host or local_address_towards(args.scheduler_ip, args.scheduler_port)
        target = CallbackTarget(
            address, f"0.0.0.0:{args.receiver_port}", f"{host}:{args.receiver_port}", channels=args.channels
        )
        target.connect_timeout_s = args.connect_timeout
        target.tracing = tracing or target.tracing
        target.tls = Channels(tls_from_args(args))
        return target
    return SymphonyGrpcTarget(
        address,
        channels=args.channels,
        connect_timeout_s=args.connect_timeout,
        tracing=tracing,
        tls=Channels(tls_from_args(args)),
    )


def _print_progress(p: Progress) -> None:
    ttft = (
        f"TTFT p50 {p.ttft_p50 * 1000:.0f} ms p99 {p.ttft_p99 * 1000:.0f} ms"
        if p.ttft_p50 is not None and p.ttft_p99 is not None
        else "TTFT -"
    )
    line = (
        f"[{p.t:7.1f}s] sessions {p.active_sessions} | in flight {p.in_flight} | "
        f"done {p.turns_done} | failed {p.turns_failed} | {ttft}"
    )
    end = "\r" if sys.stderr.isatty() else "\n"
    sys.stderr.write(line + end)
    sys.stderr.flush()


async def run(
    args: argparse.Namespace, target: Target, planner: SessionPlanner, config: RunConfig
) -> RunResult:
    await target.start()
    runner = Runner(target, planner, config, None if args.quiet else _print_progress, args.progress_interval)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stop)
    try:
        return await runner.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await target.close()
        if not args.quiet and sys.stderr.isatty():
            sys.stderr.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.retries < 0:
        parser.error("argument --retries: must be >= 0")
    try:
        model = user_model_from_args(args)
        config = RunConfig(
            num_clients=args.num_clients,
            duration_s=args.duration,
            max_turns=args.max_turns,
            warmup_s=args.warmup,
            retries=args.retries,
            max_tokens=args.max_tokens,
            ignore_eos=args.ignore_eos,
            history=args.history,
            turn_timeout_s=args.turn_timeout,
            drain_timeout_s=args.drain_timeout,
            ramp_up_s=args.ramp_up,
            max_sessions=args.max_sessions,
        )
        tracing = Tracing(
            "symphony-workloadgen", TracingConfig.from_env(args.otlp_endpoint, args.trace_sample_ratio)
        )
        target = make_target(args, tracing)
    except ValueError as err:
        parser.error(str(err))
    spec = SyntheticSpec(
        conversations=args.synthetic_conversations,
        turns=args.synthetic_turns,
        prompt_chars=args.synthetic_prompt_chars,
        answer_chars=args.synthetic_answer_chars,
    )
    try:
        dataset = load(args.dataset, seed=args.seed, spec=spec, limit=args.dataset_limit)
    except DatasetError as err:
        print(f"symphony-workloadgen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("symphony-workloadgen: interrupted while loading the dataset", file=sys.stderr)
        return 0
    log.info(dataset.describe())
    if config.max_sessions is None and config.duration_s is None and config.max_turns is None:
        # Like the original: without a time or turn limit, play every conversation once, then stop.
        config = dataclasses.replace(config, max_sessions=dataset.kept)
    planner = SessionPlanner(
        dataset.conversations,
        model,
        seed=args.seed,
        max_turns_per_session=args.max_turns_per_session,
        id_prefix=f"wg-{uuid.uuid4().hex[:8]}-",
    )
    try:
        result = asyncio.run(run(args, target, planner, config))
    except KeyboardInterrupt:  # before the run's own handlers were installed
        print("symphony-workloadgen: interrupted before the run started", file=sys.stderr)
        return 0
    except TargetError as err:
        print(f"symphony-workloadgen: error: cannot use the target: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"symphony-workloadgen: error: {err}", file=sys.stderr)
        return 1
    finally:
        tracing.shutdown()  # exports the spans still queued
    summary = build_summary(args, result, dataset.as_dict())
    print(table(summary))
    if args.out is not None:
        files = write_outputs(args.out, result.records, summary, plots=not args.no_plots)
        log.info("wrote %s", ", ".join(str(f) for f in files))
    failed = summary["turns"]["failed"]
    if failed:
        print(f"{failed} turn(s) failed", file=sys.stderr)
        return 1
    return 0


def build_summary(args: argparse.Namespace, result: RunResult, dataset: dict[str, Any]) -> dict[str, Any]:
    summary = summarize(
        result.records,
        Slo(args.slo_ttft, args.slo_tpot),
        window_s=result.window_s,
        sessions_started=result.sessions_started,
        sessions_finished=result.sessions_finished,
    )
    summary["advisories"] = {
        "sent": result.advisories_sent,
        "spurious": result.spurious_sent,
        "failed": result.advisories_failed,
        "cancelled_at_stop": result.advisories_cancelled,
    }
    summary["run"] = {
        "duration_s": result.duration_s,
        "interrupted": result.interrupted,
        "generator_cpu_s": result.cpu_s,
        "generator_cpu_percent": 100 * result.cpu_s / result.duration_s if result.duration_s else None,
        "target": args.target
        if args.target != "symphony"
        else f"symphony://{args.scheduler_ip}:{args.scheduler_port}",
        "response_mode": args.response_mode,
    }
    summary["dataset"] = dataset
    settings = {k: ("<redacted>" if k == "api_key" and v else v) for k, v in vars(args).items()}
    summary["config"] = json.loads(json.dumps(settings, default=str))
    return summary


if __name__ == "__main__":
    sys.exit(main())
