"""Registration with the global scheduler and the heartbeat loop (ReportStatus with full NodeStatus).

The node registers, then reports its status every heartbeat interval (the scheduler's answer may
change the interval). A NOT_FOUND answer means the scheduler forgot the node (restart, expired
lease): it registers again. While the scheduler is unreachable it retries with capped exponential
backoff, so starting the nodes before the scheduler is fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from symphony.v1 import common_pb2, scheduler_pb2

if TYPE_CHECKING:
    from symphony.v1.scheduler_pb2_grpc import SchedulerAsyncStub

log = logging.getLogger(__name__)


class Registrar:
    def __init__(
        self,
        stub: SchedulerAsyncStub,
        registration: scheduler_pb2.RegisterNodeRequest,
        status: Callable[[], common_pb2.NodeStatus],
        interval_s: float = 1.0,
        backoff_max_s: float = 5.0,
        rpc_timeout_s: float = 5.0,
    ) -> None:
        self.stub = stub
        self.registration = registration
        self.status = status
        self.interval_s = interval_s
        self.backoff_max_s = backoff_max_s
        self.rpc_timeout_s = rpc_timeout_s
        self.registered = asyncio.Event()
        self.registrations = 0
        self.reports = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Registers and heartbeats until ``stop`` is set."""
        backoff = 0.1
        while not stop.is_set():
            try:
                if not self.registered.is_set():
                    await self._register()
                else:
                    await self._report()
                backoff = 0.1
                delay = self.interval_s
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    log.warning(
                        "scheduler does not know node %s: registering again", self.registration.node_id
                    )
                    self.registered.clear()
                    delay = 0.0
                else:
                    log.warning("scheduler unreachable (%s); retrying in %.1fs", err.code().name, backoff)
                    delay, backoff = backoff, min(backoff * 2, self.backoff_max_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _register(self) -> None:
        resp = await self.stub.RegisterNode(self.registration, timeout=self.rpc_timeout_s)
        if resp.heartbeat_interval_s > 0:
            self.interval_s = resp.heartbeat_interval_s
        self.registrations += 1
        self.registered.set()
        log.info("registered node %s with the scheduler", self.registration.node_id)

    async def _report(self) -> None:
        resp = await self.stub.ReportStatus(self.status(), timeout=self.rpc_timeout_s)
        if resp.heartbeat_interval_s > 0:
            self.interval_s = resp.heartbeat_interval_s
        self.reports += 1
