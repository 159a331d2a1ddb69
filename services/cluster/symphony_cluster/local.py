"""The local stack behind ``symphony run`` and the integration tests: real processes on loopback.

One scheduler, N node schedulers (``sim`` engine) and one workload generator run, each a real
process speaking real gRPC. The launcher owns their lifecycle: it waits until every node has
registered, supervises them during the run (a dead node is reported and the run goes on while the
scheduler reroutes around it; a dead scheduler ends the run), and stops them in order on exit or
Ctrl+C, so no process outlives it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from symphony.security import Channels, TlsConfig
from symphony.v1 import scheduler_pb2, scheduler_pb2_grpc
from symphony_cluster.ports import free_ports
from symphony_cluster.process import Child, describe_exit

log = logging.getLogger("symphony.run")


class StackError(RuntimeError):
    """The stack could not start or lost a component it cannot run without."""


@dataclass
class StackConfig:
    nodes: int = 2
    clients: int = 32
    duration_s: float = 60.0
    policy: str = "symphony"
    profile: str = "a100-80gb/llama-3.1-8b"
    time_scale: float = 1.0
    dataset: str = "synthetic"
    seed: int = 0
    out_dir: Path = Path("out/run")
    host: str = "127.0.0.1"
    startup_timeout_s: float = 60.0
    workload_args: list[str] = field(default_factory=list)
    scheduler_args: list[str] = field(default_factory=list)
    node_args: list[str] = field(default_factory=list)
    # Extra flags of one node only, by index (e.g. a 10x slower engine for a fault test); they come
    # after ``node_args``, so a repeated flag overrides the common value.
    node_args_by_index: dict[int, list[str]] = field(default_factory=dict)
    # TLS of every child (and of the launcher's own channel): the same certificate, key and CA for
    # all, so scheduler <-> nodes <-> generator is mutual TLS (see symphony.security).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # extra environment of every child (e.g. OTEL_*)
    quiet: bool = False


@dataclass
class Endpoints:
    scheduler_grpc: int
    scheduler_http: int
    node_grpc: list[int]
    node_metrics: list[int]


def _python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def _tls_args(config: StackConfig) -> list[str]:
    pairs = [("--tls-cert", config.tls_cert), ("--tls-key", config.tls_key), ("--tls-ca", config.tls_ca)]
    return [arg for flag, path in pairs if path is not None for arg in (flag, str(path))]


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        if config.nodes < 1:
            raise ValueError("a stack needs at least one node")
        self.config = config
        ports = free_ports(2 + 2 * config.nodes, config.host)
        self.endpoints = Endpoints(
            scheduler_grpc=ports[0],
            scheduler_http=ports[1],
            node_grpc=ports[2 : 2 + config.nodes],
            node_metrics=ports[2 + config.nodes :],
        )
        self.logs = config.out_dir / "logs"
        self.scheduler = Child(
            "scheduler",
            [
                *_python_module("symphony_scheduler"),
                "--listen",
                f"{config.host}:{self.endpoints.scheduler_grpc}",
                "--http-listen",
                f"{config.host}:{self.endpoints.scheduler_http}",
                "--policy",
                config.policy,
                *_tls_args(config),
                *config.scheduler_args,
            ],
            self.logs / "scheduler.log",
        )
        self.nodes = [
            Child(
                f"node-{i}",
                [
                    *_python_module("symphony_nodesched"),
                    "--node-id",
                    f"node-{i}",
                    "--listen",
                    f"{config.host}:{grpc_port}",
                    "--advertise",
                    f"{config.host}:{grpc_port}",
                    "--scheduler",
                    f"{config.host}:{self.endpoints.scheduler_grpc}",
                    "--engine",
                    "sim",
                    "--profile",
                    config.profile,
                    "--time-scale",
                    str(config.time_scale),
                    "--metrics-listen",
                    f"{config.host}:{metrics_port}",
                    *_tls_args(config),
                    *config.node_args,
                    *config.node_args_by_index.get(i, []),
                ],
                self.logs / f"node-{i}.log",
            )
            for i, (grpc_port, metrics_port) in enumerate(
                zip(self.endpoints.node_grpc, self.endpoints.node_metrics, strict=True)
            )
        ]
        self.workload: Child | None = None
        self._restarting = False
        self.channels = Channels(TlsConfig.from_files(config.tls_cert, config.tls_key, config.tls_ca))

    @property
    def scheduler_address(self) -> str:
        return f"{self.config.host}:{self.endpoints.scheduler_grpc}"

    @property
    def children(self) -> list[Child]:
        return [c for c in [self.workload, *self.nodes, self.scheduler] if c is not None]

    async def start(self) -> None:
        """Starts the scheduler and the nodes and waits until every node has registered."""
        # Every child is started before this process opens a gRPC channel: forking a process whose
        # gRPC threads are running is unsafe. Nodes retry their registration until the scheduler is up.
        await self.scheduler.start(self.config.env)
        for node in self.nodes:
            await node.start(self.config.env)
        deadline = time.monotonic() + self.config.startup_timeout_s
        async with self.channels.open(self.scheduler_address) as channel:
            await self._wait_serving(channel, deadline)
            await self._wait_registered(channel, deadline)

    async def _wait_serving(self, channel: grpc.aio.Channel, deadline: float) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            self._check_alive(starting=True)
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise StackError(
                    f"the scheduler did not become ready in {self.config.startup_timeout_s:.0f} s"
                )
            await asyncio.sleep(0.1)  # polling a process that is starting up; not a test synchronisation

    async def _wait_registered(self, channel: grpc.aio.Channel, deadline: float) -> None:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        want = {f"node-{i}" for i in range(self.config.nodes)}
        while True:
            self._check_alive(starting=True)
            try:
                state = await stub.GetClusterState(scheduler_pb2.GetClusterStateRequest(), timeout=1.0)
                healthy = {n.registration.node_id for n in state.nodes if n.healthy}
                if want <= healthy:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise StackError(
                    f"not every node registered within {self.config.startup_timeout_s:.0f} s "
                    f"(see the logs in {self.logs})"
                )
            await asyncio.sleep(0.1)

    def _check_alive(self, starting: bool) -> None:
        for child in [self.scheduler, *self.nodes]:
            if child.proc is not None and not child.running and not child.expected_exit:
                what = "while starting" if starting else "during the run"
                tail = child.log_tail()
                raise StackError(
                    f"{child.name} {describe_exit(child.proc.returncode)} {what}"
                    + (f"; last lines of {child.log_path}:\n{tail}" if tail else "")
                )

    def workload_argv(self) -> list[str]:
        c = self.config
        return [
            *_python_module("symphony_workloadgen"),
            "--scheduler-ip",
            c.host,
            "--scheduler-port",
            str(self.endpoints.scheduler_grpc),
            "--num-clients",
            str(c.clients),
            "--duration",
            str(c.duration_s),
            "--dataset",
            c.dataset,
            "--seed",
            str(c.seed),
            "--out",
            str(c.out_dir),
            *_tls_args(c),
            *c.workload_args,
        ]

    async def run_workload(self) -> int:
        """Runs the workload generator to completion while supervising the other processes.

        Returns the generator's exit code. Raises :class:`StackError` when the scheduler dies.
        """
        self.workload = Child(
            "workloadgen",
            self.workload_argv(),
            None if not self.config.quiet else self.logs / "workloadgen.log",
        )
        await self.workload.start(self.config.env)
        assert self.workload.proc is not None
        reported: set[str] = set()
        wait_task = asyncio.ensure_future(self.workload.proc.wait())
        try:
            while not wait_task.done():
                await asyncio.wait({wait_task}, timeout=0.5)
                if not self.scheduler.running and not self._restarting:
                    self.workload.send_signal(signal.SIGINT)  # the generator writes its partial report
                    await self.workload.stop(signal.SIGINT, timeout_s=15)
                    self._check_alive(starting=False)
                for node in self.nodes:
                    if node.proc is not None and not node.running and node.name not in reported:
                        reported.add(node.name)
                        log.warning(
                            "%s %s; the scheduler reroutes its turns to the other nodes",
                            node.name,
                            describe_exit(node.proc.returncode),
                        )
                if len(reported) == len(self.nodes):
                    await self.workload.stop(signal.SIGINT, timeout_s=15)
                    raise StackError("every node scheduler has exited; the run cannot go on")
        finally:
            if not wait_task.done():
                wait_task.cancel()
        return self.workload.proc.returncode or 0

    async def restart_scheduler(self, sig: int = signal.SIGKILL) -> None:
        """Kills the scheduler with ``sig`` and starts a fresh one on the same ports (a fault test).

        Returns once the new process is started, not when it is ready: its readiness and the nodes'
        re-registration are what a caller measures. The run under :meth:`run_workload` goes on.
        """
        self._restarting = True
        try:
            old = self.scheduler
            old.expected_exit = True
            old.send_signal(sig)
            if old.proc is not None:
                await old.proc.wait()
            old.close_log()
            self.scheduler = Child(old.name, old.argv, old.log_path)
            await self.scheduler.start(self.config.env)
        finally:
            self._restarting = False

    async def stop(self) -> None:
        """Stops the generator, then the nodes, then the scheduler. Safe to call twice."""
        if self.workload is not None:
            await self.workload.stop(signal.SIGINT, timeout_s=15)
        await asyncio.gather(*(n.stop() for n in self.nodes))
        await self.scheduler.stop()
