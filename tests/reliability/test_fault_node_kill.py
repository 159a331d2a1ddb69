"""A node scheduler SIGKILLed mid-run under 256 sessions: no turn is lost.

Turns on the dead node that had not produced a token are routed again by the scheduler; turns that
had fail with UNAVAILABLE, which the generator retries (the request carries the whole history, so
another node answers it). The figure: the latency the failure added to the turns it hit.
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
    percentile,
    stack_config,
    summary,
    turn_rows,
    wait_for_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_killing_a_node_mid_run_loses_no_turn(tmp_path: Path, figures: Report) -> None:
    out = tmp_path / "run"
    stack = LocalStack(stack_config(out, clients=256, duration_s=24))
    try:
        await stack.start()
        run = asyncio.ensure_future(stack.run_workload())
        # Kill node-1 while it is busy: its last report shows requests running and sessions held.
        await wait_for_state(
            stack,
            lambda s: (
                (n := healthy(s).get("node-1")) is not None
                and n.status.load.running_requests >= 8
                and s.sessions_tracked >= 200
            ),
            "node-1 is running turns of a full load",
        )
        stack.nodes[1].send_signal(signal.SIGKILL)
        kill_t = time.monotonic()
        _, dropped_at = await wait_for_state(
            stack, lambda s: "node-1" not in healthy(s), "the scheduler drops node-1"
        )
        code = await run
    finally:
        await stack.stop()

    rows = turn_rows(out)
    totals = summary(out)["turns"]
    assert code == 0, log_tail(out, "workloadgen")
    assert totals["failed"] == 0 and totals["cancelled"] == 0, totals
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]][:3]
    assert not gaps_in_sessions(rows), "a session skipped a turn"
    # node-1's last answer marks the kill on the generator's clock; every later answer is node-0's.
    killed_at = max(r["finished"] for r in rows if r["node_id"] == "node-1")
    after = [r for r in rows if r["sent"] > killed_at + 1.0]
    assert after and {r["node_id"] for r in after} == {"node-0"}
    # The failure did hit turns in flight (otherwise this test proved nothing).
    retried = [r for r in rows if r["attempts"] > 1]
    in_flight = [r for r in rows if r["sent"] <= killed_at < r["finished"]]
    assert retried, "no turn was in flight on the killed node"

    base = percentile([r["e2e"] for r in rows if r["attempts"] == 1 and r["sent"] > killed_at + 1.0], 50)
    added = [r["e2e"] - base for r in retried]
    figures(
        "node SIGKILL, 256 sessions",
        f"{len(rows)} turns, 0 failed; {len(in_flight)} in flight at the kill, {len(retried)} retried by "
        f"the client; added e2e latency of retried turns p50 {percentile(added, 50) * 1000:.0f} ms, "
        f"max {max(added) * 1000:.0f} ms (unaffected e2e p50 {base * 1000:.0f} ms); node dropped by the scheduler "
        f"{dropped_at - kill_t:.2f} s after the kill",
    )
