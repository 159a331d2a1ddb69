"""The ``symphony-scheduler`` process itself: flags, live stack with ``--policy symphony``, signals."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import grpc
import pytest

from symphony.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from symphony_scheduler.fakes import FakeNode

if TYPE_CHECKING:
    from symphony.v1.scheduler_pb2_grpc import SchedulerAsyncStub

pytestmark = pytest.mark.integration
WAIT = 20.0
PORTS = re.compile(rb"grpc port (\d+), http port (\d+)")


def test_bad_flag_prints_usage_without_traceback() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "symphony_scheduler", "--lease", "-3"],
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    assert out.returncode == 2
    assert b"--lease: must be > 0" in out.stderr and b"Traceback" not in out.stderr


def test_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flags in (
            [f"--listen=127.0.0.1:{port}", "--http-listen=127.0.0.1:0"],
            ["--listen=127.0.0.1:0", f"--http-listen=127.0.0.1:{port}"],
        ):
            out = subprocess.run(
                [sys.executable, "-m", "symphony_scheduler", *flags],
                capture_output=True,
                timeout=WAIT,
                check=False,
            )
            assert out.returncode == 1 and b"Traceback" not in out.stderr
            assert str(port).encode() in out.stderr


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process, grpc_port: int, http_port: int) -> None:
        self.proc = proc
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.http = f"http://127.0.0.1:{http_port}"
        self.log: list[bytes] = []


@pytest.fixture
async def scheduler() -> AsyncIterator[Proc]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "symphony_scheduler",
        "--listen=127.0.0.1:0",
        "--http-listen=127.0.0.1:0",
        "--policy=symphony",
        "--heartbeat-interval=0.5",
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[bytes] = []
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), WAIT)
        assert line, b"".join(lines).decode()
        lines.append(line)
        match = PORTS.search(line)
        if match:
            break
    p = Proc(proc, int(match.group(1)), int(match.group(2)))
    p.log = lines

    async def drain() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            p.log.append(line)

    drainer = asyncio.create_task(drain())
    yield p
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    await drainer


async def test_live_stack_routes_advised_turns_and_shows_them_in_metrics(scheduler: Proc) -> None:
    nodes = [await FakeNode.start(n, scheduler.grpc_address) for n in ("node-0", "node-1")]
    channel = grpc.aio.insecure_channel(scheduler.grpc_address)
    stub: SchedulerAsyncStub = scheduler_pb2_grpc.SchedulerStub(channel)
    try:
        for session in ("s1", "s2", "s3"):
            messages = [common_pb2.ChatMessage(role="user", content=f"hello from {session}")]
            for index in range(2):
                advice = await stub.Advise(
                    scheduler_pb2.AdviseRequest(session_id=session, eta_s=2.0, turn_index=index)
                )
                assert advice.accepted
                t = common_pb2.TurnRequest(
                    session_id=session, turn_index=index, messages=messages, max_tokens=4
                )
                answer = ""
                async for resp in stub.Generate(t, timeout=WAIT):
                    if resp.HasField("delta"):
                        answer += resp.delta.text
                    else:
                        assert resp.summary.route_reason == "advised"
                        assert resp.summary.node_id == advice.node_id
                messages += [
                    common_pb2.ChatMessage(role="assistant", content=answer),
                    common_pb2.ChatMessage(role="user", content="and then?"),
                ]
        async with aiohttp.ClientSession() as http, http.get(scheduler.http + "/metrics") as r:
            body = await r.text()
        assert 'symphony_routing_decisions_total{policy="symphony",reason="advised"} 6.0' in body
        assert 'symphony_advisories_total{outcome="used"} 6.0' in body
        assert "symphony_sessions_active 3.0" in body
        assert 'symphony_turn_ttft_seconds_count{turn="2"} 3.0' in body
    finally:
        await channel.close(None)
        for node in nodes:
            await node.stop()
    scheduler.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(scheduler.proc.wait(), WAIT) == 0
    log = b"".join(scheduler.log)
    assert b"node node-0 registered" in log and b"Traceback" not in log
