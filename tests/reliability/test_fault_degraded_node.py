"""A slow node and a partitioned node: the policies route around them within the lease time.

* Slow: node-1's engine runs 10x slower (``--time-scale 0.1``). Load-aware policies see its queue in
  the status reports and send it fewer turns; every turn still completes.
* Partitioned: node-1 is frozen (SIGSTOP: its heartbeats stop and its sockets go silent, as behind a
  broken link). The scheduler drops it once the lease runs out; its stuck turns are answered
  elsewhere; when it comes back (SIGCONT) it registers again and serves again.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from symphony_cluster.local import LocalStack

from .conftest import Report
from .stackutil import (
    gaps_in_sessions,
    healthy,
    log_tail,
    stack_config,
    summary,
    turn_rows,
    wait_for_state,
    wait_for_turns,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

LEASE_S = 3.0


@pytest.mark.parametrize("policy", ["symphony", "least_loaded"])
async def test_a_slow_node_gets_fewer_turns(tmp_path: Path, figures: Report, policy: str) -> None:
    out = tmp_path / "run"
    stack = LocalStack(
        stack_config(
            out, clients=96, duration_s=16, policy=policy, node_args_by_index={1: ["--time-scale", "0.1"]}
        )
    )
    try:
        await stack.start()
        code = await stack.run_workload()
    finally:
        await stack.stop()
    rows = turn_rows(out)
    assert code == 0, log_tail(out, "workloadgen")
    assert summary(out)["turns"]["failed"] == 0
    assert not gaps_in_sessions(rows)
    settled = [r for r in rows if r["sent"] > LEASE_S]  # after the first reports showed the queue
    slow = sum(1 for r in settled if r["node_id"] == "node-1") / len(settled)
    assert slow < 0.25, f"the slow node still served {slow:.0%} of the turns"
    figures(f"slow node (10x), {policy}", f"{slow:.1%} of {len(settled)} turns went to the slow node")


async def test_a_partitioned_node_is_routed_around_within_the_lease(tmp_path: Path, figures: Report) -> None:
    out = tmp_path / "run"
    stack = LocalStack(stack_config(out, clients=96, duration_s=30, scheduler_args=["--lease", str(LEASE_S)]))
    try:
        await stack.start()
        run = asyncio.ensure_future(stack.run_workload())
        await wait_for_state(
            stack,
            lambda s: (n := healthy(s).get("node-1")) is not None and n.status.load.running_requests >= 4,
            "node-1 is running turns",
        )
        stack.nodes[1].send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        _, dropped_at = await wait_for_state(
            stack, lambda s: "node-1" not in healthy(s), "the scheduler drops node-1"
        )
        # Stay partitioned while the rest of the cluster answers a few hundred turns.
        await wait_for_turns(stack.endpoints.scheduler_http, more=300)
        stack.nodes[1].send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        _, back_at = await wait_for_state(stack, lambda s: "node-1" in healthy(s), "node-1 registers again")
        code = await run
    finally:
        await stack.stop()
    rows = turn_rows(out)
    totals = summary(out)["turns"]
    assert code == 0, log_tail(out, "workloadgen")
    assert totals["failed"] == 0 and totals["cancelled"] == 0, totals
    assert not gaps_in_sessions(rows)
    assert dropped_at - frozen_at <= LEASE_S + 2.0, "dropped later than lease + one heartbeat pass"
    # Back in service: the policy sends node-1 turns again after it rejoined.
    last_sent = max(r["sent"] for r in rows)
    assert any(r["node_id"] == "node-1" and r["sent"] > last_sent - 5 for r in rows)
    stuck = [r for r in rows if r["attempts"] > 1]
    figures(
        f"partitioned node (lease {LEASE_S:g} s)",
        f"dropped {dropped_at - frozen_at:.2f} s after its heartbeats stopped; back "
        f"{back_at - resumed_at:.2f} s after SIGCONT; {len(rows)} turns, 0 failed, {len(stuck)} retried "
        f"by the client, slowest of those e2e {max((r['e2e'] for r in stuck), default=0):.2f} s",
    )
