"""``symphony-scheduler``: the global scheduler process (gRPC on --listen, HTTP on --http-listen)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from pydantic import ValidationError

from symphony.errors import SymphonyError
from symphony.limits import Limits
from symphony.security import SecurityConfigError, add_tls_flags, load_api_keys, tls_from_args
from symphony.tracing import TracingConfig, add_tracing_flags
from symphony_scheduler.policies import default_registry
from symphony_scheduler.server import SchedulerConfig, split_host_port, start_scheduler

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def address(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            split_host_port(text, flag)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="symphony-scheduler", description="Symphony's global scheduler.")
    p.add_argument("--listen", default="0.0.0.0:50051", type=address("--listen"), help="gRPC HOST:PORT")
    p.add_argument(
        "--http-listen",
        default="0.0.0.0:8080",
        type=address("--http-listen"),
        help="HTTP HOST:PORT (OpenAI API, /metrics)",
    )
    p.add_argument("--policy", default="symphony", choices=default_registry().names())
    p.add_argument("--heartbeat-interval", type=positive, default=1.0, help="seconds between node reports")
    p.add_argument(
        "--lease", type=positive, default=5.0, help="seconds without a report before a node is dropped"
    )
    p.add_argument(
        "--session-ttl", type=positive, default=900.0, help="seconds before an idle session is forgotten"
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        default=1_000_000,
        help="sessions tracked at most (least recently active dropped)",
    )
    p.add_argument("--max-messages", type=int, default=Limits().max_messages, help="most messages per turn")
    p.add_argument("--max-prompt-chars", type=int, default=Limits().max_prompt_chars)
    p.add_argument("--max-tokens", type=int, default=Limits().max_tokens, help="largest max_tokens of a turn")
    p.add_argument("--max-eta", type=positive, default=Limits().max_eta_s, help="largest advisory ETA (s)")
    p.add_argument(
        "--max-message-bytes", type=int, default=Limits().max_grpc_message_bytes, help="gRPC receive limit"
    )
    p.add_argument(
        "--max-sessions-per-client", type=int, default=0, help="open sessions per client (0: no limit)"
    )
    p.add_argument(
        "--max-advisories-per-s", type=float, default=0.0, help="advisories/s per client (0: no limit)"
    )
    p.add_argument("--advisory-burst", type=int, default=0, help="advisory burst per client (0: 1 s worth)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--api-key-file",
        default=None,
        help="API keys of the HTTP front door, one per line (also: SYMPHONY_API_KEYS, comma separated); "
        "without any, the front door is open",
    )
    add_tracing_flags(p)
    add_tls_flags(p)
    return p


async def run(config: SchedulerConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = await start_scheduler(config)
    print(
        f"symphony-scheduler: grpc port {running.grpc_port}, http port {running.http_port}",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    logging.getLogger("symphony_scheduler").info("shutting down")
    await running.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.max_messages <= 0 or args.max_prompt_chars <= 0 or args.max_sessions <= 0:
        parser().error("--max-messages, --max-prompt-chars and --max-sessions must be > 0")
    try:
        limits = Limits(
            max_messages=args.max_messages,
            max_prompt_chars=args.max_prompt_chars,
            max_tokens=args.max_tokens,
            max_eta_s=args.max_eta,
            max_grpc_message_bytes=args.max_message_bytes,
            max_sessions_per_client=args.max_sessions_per_client,
            max_advisories_per_s=args.max_advisories_per_s,
            advisory_burst=args.advisory_burst,
        )
    except ValidationError as err:
        parser().error("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in err.errors()))
    try:
        tls = tls_from_args(args)
        api_keys = load_api_keys(args.api_key_file)
    except SecurityConfigError as err:
        parser().error(str(err))
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    config = SchedulerConfig(
        listen=args.listen,
        http_listen=args.http_listen,
        policy=args.policy,
        heartbeat_interval_s=args.heartbeat_interval,
        lease_s=args.lease,
        session_ttl_s=args.session_ttl,
        max_sessions=args.max_sessions,
        limits=limits,
        tracing=TracingConfig.from_env(args.otlp_endpoint, args.trace_sample_ratio),
        tls=tls,
        api_keys=api_keys,
    )
    try:
        return asyncio.run(run(config))
    except (OSError, SymphonyError) as err:
        print(f"symphony-scheduler: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
