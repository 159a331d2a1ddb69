"""Shared gRPC plumbing: servers with health and reflection, error translation, channel options."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from symphony.errors import SymphonyError, Unavailable
from symphony.security import RejectMalformed

log = logging.getLogger(__name__)

T = TypeVar("T")

# Keepalive so a dead peer is noticed in seconds, not at the next TCP timeout.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.so_reuseport", 0),
    ]


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], err: SymphonyError) -> None:
    """Ends an RPC with the status of a Symphony error (and retry advice when it is retryable)."""
    if isinstance(err, Unavailable):
        # Trailing metadata: valid whether or not the stream has already sent its headers.
        context.set_trailing_metadata((("retry-after-s", f"{err.retry_after_s:.3f}"),))
    await context.abort(err.grpc_code, err.message)


def translate_errors(
    fn: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """Decorator for unary servicer methods: a :class:`SymphonyError` becomes its gRPC status."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        try:
            return await fn(self, request, context)
        except SymphonyError as err:
            await abort_with(context, err)
            raise AssertionError("unreachable") from err

    return wrapper


def translate_stream_errors(
    fn: Callable[..., AsyncIterator[T]],
) -> Callable[..., AsyncIterator[T]]:
    """Decorator for server-streaming servicer methods."""

    @functools.wraps(fn)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[T]:
        try:
            async for item in fn(self, request, context):
                yield item
        except SymphonyError as err:
            await abort_with(context, err)

    return wrapper


class ServerHandle:
    """A started grpc.aio server with its health servicer, so readiness can be flipped."""

    def __init__(
        self, server: grpc.aio.Server, health_servicer: health_aio.HealthServicer, port: int
    ) -> None:
        self.server = server
        self.health = health_servicer
        self.port = port

    async def set_serving(self, service: str, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set(service, status)

    async def stop(self, grace_s: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start_server(
    register: Callable[[grpc.aio.Server], None],
    service_names: Iterable[str],
    address: str,
    max_message_bytes: int = 64 * 1024 * 1024,
    credentials: grpc.ServerCredentials | None = None,
) -> ServerHandle:
    """Starts a grpc.aio server with health checking and reflection for ``service_names``."""
    # Undecodable bytes get INVALID_ARGUMENT naming the method, on every server of the project.
    server = grpc.aio.server(options=server_options(max_message_bytes), interceptors=[RejectMalformed()])
    register(server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return ServerHandle(server, health_servicer, port)


def retry_after(err: grpc.aio.AioRpcError) -> float | None:
    """The server's retry advice on an UNAVAILABLE error, if it sent one."""
    md = [*(err.trailing_metadata() or ()), *(err.initial_metadata() or ())]
    for key, value in md:
        if key == "retry-after-s":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None
