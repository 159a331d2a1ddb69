"""Helpers of the fault tests: stack configs, the generator's records, and waiting on the scheduler.

Waiting polls the scheduler's own state (``GetClusterState``), the same way the launcher waits for
a stack to come up; nothing sleeps in place of a condition.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families

from symphony.v1 import scheduler_pb2, scheduler_pb2_grpc
from symphony_cluster.local import LocalStack, StackConfig

from .certs import make_identity

PROFILE = "a100-80gb/llama-3.1-8b"


def stack_config(out: Path, clients: int, duration_s: float, **kw: Any) -> StackConfig:
    """A two-node stack on mutual TLS (a fresh CA per test) whose generator runs ``clients``
    sessions at 20x human speed."""
    extra = kw.pop("workload_args", [])
    pki = make_identity(out.parent / "pki", "cluster")
    base: dict[str, Any] = {
        "nodes": 2,
        "clients": clients,
        "duration_s": duration_s,
        "policy": "symphony",
        "profile": PROFILE,
        "out_dir": out,
        "quiet": True,
        "workload_args": ["--time-scale", "20", "--ramp-up", "2", "--no-plots", "--quiet", *extra],
        "tls_cert": pki.cert,
        "tls_key": pki.key,
        "tls_ca": pki.ca,
    }
    base.update(kw)
    return StackConfig(**base)


def turn_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


def log_tail(out: Path, name: str, chars: int = 3000) -> str:
    path = out / "logs" / f"{name}.log"
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def gaps_in_sessions(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Sessions whose recorded turns are not 0, 1, 2, ... without a hole: a turn silently lost."""
    by_session: dict[str, list[int]] = {}
    for r in rows:
        by_session.setdefault(r["session_id"], []).append(r["turn_index"])
    return [s for s, idx in by_session.items() if sorted(idx) != list(range(len(idx)))]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def cluster_state(
    stack: LocalStack, include_sessions: bool = False, timeout_s: float = 2.0
) -> scheduler_pb2.ClusterState | None:
    """The scheduler's view (over the stack's own TLS settings), or None while it is unreachable."""
    async with stack.channels.open(stack.scheduler_address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        try:
            return await stub.GetClusterState(
                scheduler_pb2.GetClusterStateRequest(include_sessions=include_sessions), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return None


async def wait_for_state(
    stack: LocalStack,
    ok: Callable[[scheduler_pb2.ClusterState], bool],
    what: str,
    timeout_s: float = 60.0,
    include_sessions: bool = False,
) -> tuple[scheduler_pb2.ClusterState, float]:
    """Polls the scheduler until ``ok(state)``; returns the state and the monotonic time it held."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = await cluster_state(stack, include_sessions)
        if state is not None and ok(state):
            return state, time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {what}")
        await asyncio.sleep(0.05)  # polling the scheduler's state, the condition itself


def healthy(state: scheduler_pb2.ClusterState) -> dict[str, scheduler_pb2.NodeInfo]:
    return {n.registration.node_id: n for n in state.nodes if n.healthy}


async def turns_answered(http_port: int, host: str = "127.0.0.1") -> float:
    """The scheduler's count of answered turns, from its own /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{http_port}/metrics") as resp:
        text = await resp.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "symphony_turns_total" and sample.labels.get("outcome") == "ok"
    )


async def wait_for_turns(http_port: int, more: int, timeout_s: float = 60.0) -> None:
    """Waits until the scheduler has answered ``more`` turns beyond its count now."""
    target = await turns_answered(http_port) + more
    deadline = time.monotonic() + timeout_s
    while await turns_answered(http_port) < target:
        if time.monotonic() > deadline:
            raise AssertionError(f"the scheduler did not answer {more} turns within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)  # polling the scheduler's counter, the condition itself
