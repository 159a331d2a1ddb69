"""A running node scheduler: backend + gRPC service + HTTP metrics + registration, started and
stopped as one object (the CLI runs it; tests start it on loopback port 0)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry

from symphony.grpcutil import CHANNEL_OPTIONS, ServerHandle, start_server
from symphony.metrics import NodeMetrics
from symphony.security import Channels, TlsConfig
from symphony.tracing import Tracing, TracingConfig
from symphony.v1 import nodesched_pb2, nodesched_pb2_grpc, scheduler_pb2_grpc
from symphony_nodesched import convert
from symphony_nodesched.backends import create_backend
from symphony_nodesched.config import NodeConfig
from symphony_nodesched.engine import EngineBackend
from symphony_nodesched.httpserver import make_app, start_http
from symphony_nodesched.registration import Registrar
from symphony_nodesched.service import GrpcPeerFetcher, NodeService

log = logging.getLogger(__name__)
SERVICE_NAME = nodesched_pb2.DESCRIPTOR.services_by_name["NodeScheduler"].full_name


class NodeApp:
    def __init__(self, config: NodeConfig, backend: EngineBackend | None = None) -> None:
        self.config = config
        self.registry = CollectorRegistry()
        self.metrics = NodeMetrics(self.registry, config.node_id)
        self.tracing = Tracing(
            "symphony-nodesched", TracingConfig.from_env(config.otlp_endpoint, config.trace_sample_ratio)
        )
        self.backend = backend if backend is not None else create_backend(config)
        self.channels = Channels(
            TlsConfig.from_files(config.tls_cert, config.tls_key, config.tls_ca, config.tls_server_name)
        )
        self.fetcher = GrpcPeerFetcher(config.node_id, self.channels)
        self.service: NodeService | None = None
        self.grpc: ServerHandle | None = None
        self.http: web.AppRunner | None = None
        self.http_port = 0
        self.registrar: Registrar | None = None
        self._stop = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._reg_task: asyncio.Task[None] | None = None

    @property
    def grpc_port(self) -> int:
        return self.grpc.port if self.grpc else 0

    async def start(self) -> None:
        """Starts the backend, the servers and registration. An advertised port 0 (tests bind port 0)
        is replaced by the port the gRPC server actually got."""
        await self.backend.start()
        service = NodeService(
            self.backend, self.config.node_id, self.metrics, self.fetcher, tracing=self.tracing
        )
        self.service = service
        self.grpc = await start_server(
            lambda server: nodesched_pb2_grpc.add_NodeSchedulerServicer_to_server(service, server),
            [SERVICE_NAME],
            self.config.listen,
            credentials=self.channels.server_credentials(),
        )
        self.http, self.http_port = await start_http(
            make_app(self.registry, service.refresh_metrics), self.config.metrics_listen
        )
        self._channel = self.channels.open(self.config.scheduler, CHANNEL_OPTIONS)
        host, _, port = self.config.advertise.rpartition(":")
        address = f"{host}:{self.grpc.port}" if port == "0" else self.config.advertise
        self.registrar = Registrar(
            scheduler_pb2_grpc.SchedulerStub(self._channel),
            convert.registration(self.config.node_id, address, self.backend.info),
            lambda: service.node_status(include_sessions=True),
            interval_s=self.config.heartbeat_interval_s,
        )
        self._reg_task = asyncio.create_task(self.registrar.run(self._stop), name="registration")
        log.info(
            "node %s serving gRPC on port %d, metrics on port %d, engine %s (%s)",
            self.config.node_id,
            self.grpc.port,
            self.http_port,
            self.config.engine,
            self.backend.info.profile,
        )

    async def stop(self) -> None:
        self._stop.set()
        if self._reg_task is not None:
            # The loop notices the stop event at once; an RPC in flight is cut short after a second.
            _, pending = await asyncio.wait({self._reg_task}, timeout=1.0)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reg_task
        if self.grpc is not None:
            await self.grpc.stop(grace_s=1.0)
        if self.http is not None:
            await self.http.cleanup()
        await self.fetcher.close()
        if self._channel is not None:
            await self._channel.close(None)
        await self.backend.close()
        self.tracing.shutdown()
