"""The real stack: a scheduler process with ``--policy symphony`` and two real sim node schedulers."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import grpc
import pytest

from symphony.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

if TYPE_CHECKING:
    from symphony.v1.scheduler_pb2_grpc import SchedulerAsyncStub

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WAIT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveStack:
    def __init__(self, grpc_port: int, http_port: int) -> None:
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.http = f"http://127.0.0.1:{http_port}"
        self.procs: list[asyncio.subprocess.Process] = []


@pytest.fixture
async def live() -> AsyncIterator[LiveStack]:
    stack = LiveStack(free_port(), free_port())
    sched = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "symphony_scheduler",
        f"--listen={stack.grpc_address}",
        f"--http-listen=127.0.0.1:{stack.http.rsplit(':', 1)[1]}",
        "--policy=symphony",
        "--heartbeat-interval=0.5",
        stderr=asyncio.subprocess.PIPE,
    )
    stack.procs.append(sched)
    for i in range(2):
        port = free_port()
        stack.procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "symphony_nodesched",
                f"--node-id=node-{i}",
                f"--listen=127.0.0.1:{port}",
                f"--advertise=127.0.0.1:{port}",
                f"--scheduler={stack.grpc_address}",
                "--engine=sim",
                "--profile=cpu-tiny/test",
                f"--metrics-listen=127.0.0.1:{free_port()}",
                "--heartbeat-interval=0.5",
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    assert sched.stderr is not None
    registered = 0
    while registered < 2:  # the scheduler logs each registration: wait on that event
        line = await asyncio.wait_for(sched.stderr.readline(), WAIT)
        assert line, "scheduler exited"
        registered += b"registered at" in line

    async def drain() -> None:
        assert sched.stderr is not None
        async for _ in sched.stderr:
            pass

    drainer = asyncio.create_task(drain())
    try:
        yield stack
    finally:
        for proc in stack.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), WAIT) for p in stack.procs]
        await drainer
    assert codes == [0, 0, 0]  # every process shut down cleanly


async def converse(stub: SchedulerAsyncStub, session: str, turns: int) -> list[common_pb2.TurnSummary]:
    messages = [common_pb2.ChatMessage(role="user", content=f"{session}: tell me about caches " * 8)]
    out = []
    for index in range(turns):
        advice = await stub.Advise(
            scheduler_pb2.AdviseRequest(session_id=session, eta_s=0.5, turn_index=index)
        )
        assert advice.accepted, advice
        turn = common_pb2.TurnRequest(session_id=session, turn_index=index, messages=messages, max_tokens=12)
        answer = ""
        async for resp in stub.Generate(turn, timeout=WAIT):
            if resp.HasField("delta"):
                answer += resp.delta.text
            else:
                out.append(resp.summary)
        messages += [
            common_pb2.ChatMessage(role="assistant", content=answer),
            common_pb2.ChatMessage(role="user", content="and what else? " * 4),
        ]
    return out


async def test_symphony_policy_routes_advised_turns_on_real_sim_nodes(live: LiveStack) -> None:
    async with grpc.aio.insecure_channel(live.grpc_address) as channel:
        stub: SchedulerAsyncStub = scheduler_pb2_grpc.SchedulerStub(channel)
        results = await asyncio.gather(*(converse(stub, f"s{i}", 3) for i in range(4)))
    summaries = [s for conv in results for s in conv]
    assert len(summaries) == 12
    assert {s.route_reason for s in summaries} == {"advised"}
    # Later turns find the K,V their advisory placed: most of the prompt is not recomputed.
    later = [s for s in summaries if s.turn_index > 0]
    assert all(s.cached_tokens > s.prompt_tokens // 2 for s in later), later
    async with aiohttp.ClientSession() as http, http.get(live.http + "/metrics") as r:
        body = await r.text()
    assert 'symphony_routing_decisions_total{policy="symphony",reason="advised"} 12.0' in body
    used = float(body.split('symphony_advisories_total{outcome="used"} ')[1].split()[0])
    late = float(body.split('symphony_advisories_total{outcome="late"} ')[1].split()[0])
    assert used + late == 12 and used > 0
