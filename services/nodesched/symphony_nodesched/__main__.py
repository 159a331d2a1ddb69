"""``symphony-nodesched``: the per-node scheduler process (see docs/nodesched.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from symphony.errors import SymphonyError
from symphony.security import SecurityConfigError, add_tls_flags, tls_from_args
from symphony.tracing import add_tracing_flags
from symphony_nodesched.app import NodeApp
from symphony_nodesched.config import NodeConfig
from symphony_nodesched.profile import profile_names

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="symphony-nodesched", description="Symphony node scheduler: runs turns and manages K,V tiers."
    )
    ap.add_argument("--node-id", required=True, help="unique name of this node")
    ap.add_argument("--listen", default="0.0.0.0:50061", help="gRPC listen address (HOST:PORT)")
    ap.add_argument("--advertise", default="127.0.0.1:50061", help="address the scheduler and peers dial")
    ap.add_argument("--scheduler", default="127.0.0.1:50051", help="the scheduler's gRPC address")
    ap.add_argument("--engine", default="sim", choices=["sim", "vllm"], help="engine backend")
    ap.add_argument(
        "--profile",
        default="a100-80gb/llama-3.1-8b",
        help=f"hardware/model profile: {', '.join(profile_names())}",
    )
    ap.add_argument("--time-scale", type=float, default=1.0, help="modelled seconds per wall second (sim)")
    ap.add_argument("--metrics-listen", default="0.0.0.0:9100", help="HTTP address of /metrics and /healthz")
    ap.add_argument("--vllm-url", default="http://127.0.0.1:8000", help="the vLLM sidecar's URL")
    ap.add_argument("--vllm-control-url", default="http://127.0.0.1:8201", help="KV connector control API")
    ap.add_argument("--vllm-model", default="", help="served model name (default: the sidecar's first)")
    ap.add_argument("--disk-dir", default=None, help="directory of the disk K,V tier (vllm)")
    ap.add_argument("--heartbeat-interval", type=float, default=1.0, help="status report period (s)")
    ap.add_argument("--log-level", default="info", help="debug | info | warning | error")
    add_tracing_flags(ap)
    add_tls_flags(ap)
    return ap


def parse_config(argv: list[str] | None) -> NodeConfig:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        config = NodeConfig(
            node_id=args.node_id,
            listen=args.listen,
            advertise=args.advertise,
            scheduler=args.scheduler,
            engine=args.engine,
            profile=args.profile,
            time_scale=args.time_scale,
            metrics_listen=args.metrics_listen,
            vllm_url=args.vllm_url,
            vllm_control_url=args.vllm_control_url,
            vllm_model=args.vllm_model,
            disk_dir=args.disk_dir,
            heartbeat_interval_s=args.heartbeat_interval,
            log_level=args.log_level,
            otlp_endpoint=args.otlp_endpoint,
            trace_sample_ratio=args.trace_sample_ratio,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            tls_server_name=args.tls_server_name,
        )
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        ap.error(problems)
    try:
        tls_from_args(args)
    except SecurityConfigError as err:
        ap.error(str(err))
    if config.engine == "sim" and config.profile not in profile_names():
        ap.error(f"unknown profile {config.profile!r}; known: {', '.join(profile_names())}")
    return config


async def serve(config: NodeConfig) -> None:
    app = NodeApp(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    try:
        await stop.wait()
        logging.getLogger(__name__).info("shutting down")
    finally:
        await app.stop()


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    logging.basicConfig(level=config.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    try:
        asyncio.run(serve(config))
    except SymphonyError as err:
        print(f"symphony-nodesched: error: {err.message}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"symphony-nodesched: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
