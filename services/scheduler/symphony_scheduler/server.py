"""Starting and stopping a whole scheduler (gRPC + HTTP) in the running event loop.

``__main__`` calls this for the console script; tests call it to get a real server on port 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from symphony.clock import Clock, MonotonicClock
from symphony.grpcutil import ServerHandle, start_server
from symphony.limits import Limits
from symphony.metrics import SchedulerMetrics
from symphony.security import ApiKeys, Channels, TlsConfig
from symphony.tracing import Tracing, TracingConfig
from symphony.v1 import scheduler_pb2, scheduler_pb2_grpc
from symphony_scheduler.app import SchedulerApp
from symphony_scheduler.core import SchedulerCore
from symphony_scheduler.http import FrontDoor
from symphony_scheduler.policies import default_registry
from symphony_scheduler.router import Router
from symphony_scheduler.service import SchedulerService

log = logging.getLogger(__name__)

SERVICE_NAME = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name


@dataclass
class SchedulerConfig:
    listen: str = "0.0.0.0:50051"
    http_listen: str = "0.0.0.0:8080"
    policy: str = "symphony"
    heartbeat_interval_s: float = 1.0
    lease_s: float = 5.0
    session_ttl_s: float = 900.0
    max_sessions: int = 1_000_000
    limits: Limits = field(default_factory=Limits)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    tls: TlsConfig | None = None  # TLS of the gRPC port and of the channels to nodes (mTLS with a CA)
    api_keys: frozenset[str] = frozenset()  # of the HTTP front door; empty: open


def split_host_port(address: str, flag: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{flag}: expected HOST:PORT, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class RunningScheduler:
    """A started scheduler; ``grpc_port`` and ``http_port`` are the bound ports (useful with port 0)."""

    def __init__(
        self,
        app: SchedulerApp,
        service: SchedulerService,
        grpc: ServerHandle,
        runner: web.AppRunner,
        http_port: int,
    ) -> None:
        self.app = app
        self.service = service
        self.grpc = grpc
        self.runner = runner
        self.grpc_port = grpc.port
        self.http_port = http_port

    async def stop(self) -> None:
        await self.grpc.stop(grace_s=1.0)
        await self.runner.cleanup()
        await self.service.close()
        await self.app.close()


async def start_scheduler(config: SchedulerConfig, clock: Clock | None = None) -> RunningScheduler:
    http_host, http_port = split_host_port(config.http_listen, "--http-listen")
    split_host_port(config.listen, "--listen")
    policy = default_registry().create(config.policy)
    registry = CollectorRegistry()
    metrics = SchedulerMetrics(registry, policy.name)
    core = SchedulerCore(
        policy,
        lease_s=config.lease_s,
        session_ttl_s=config.session_ttl_s,
        metrics=metrics,
        max_sessions=config.max_sessions,
    )
    app = SchedulerApp(
        core,
        clock or MonotonicClock(),
        registry,
        metrics,
        limits=config.limits,
        heartbeat_interval_s=config.heartbeat_interval_s,
        tracing=Tracing("symphony-scheduler", config.tracing),
        channels=Channels(config.tls),
    )
    router = Router(app)
    service = SchedulerService(app, router)
    try:
        handle = await start_server(
            lambda server: scheduler_pb2_grpc.add_SchedulerServicer_to_server(service, server),
            [SERVICE_NAME],
            config.listen,
            max_message_bytes=config.limits.max_grpc_message_bytes,
            credentials=app.channels.server_credentials(),
        )
    except RuntimeError as err:  # grpc reports a port in use this way
        raise OSError(f"--listen {config.listen}: {err}") from None
    runner = web.AppRunner(FrontDoor(app, router, ApiKeys(config.api_keys)).build(), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, http_host, http_port)
        await site.start()
    except OSError:
        await runner.cleanup()
        await handle.stop(0)
        raise
    bound = int(runner.addresses[0][1]) if runner.addresses else http_port
    if clock is None:
        # The expiry timer waits in wall time; a caller that brings its own clock (a test's
        # ManualClock) drives ``app.tick()`` itself, so model time and wall time never mix.
        app.start()
    log.info("scheduler up: policy=%s grpc=%s http=%s:%d", policy.name, handle.port, http_host, bound)
    return RunningScheduler(app, service, handle, runner, bound)
