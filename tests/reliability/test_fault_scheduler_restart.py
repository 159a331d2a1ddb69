"""The scheduler SIGKILLed and restarted mid-run: nodes re-register, the session map is rebuilt from
their status reports, and the generator's turns resume (UNAVAILABLE is retried with backoff).

The figures: how long until the new scheduler serves with every node registered, and how long the
clients saw no answer at all.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from symphony_cluster.local import LocalStack

from .conftest import Report
from .stackutil import gaps_in_sessions, healthy, log_tail, stack_config, summary, turn_rows, wait_for_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_a_restarted_scheduler_recovers_and_loses_no_turn(tmp_path: Path, figures: Report) -> None:
    out = tmp_path / "run"
    # Retries cover the outage: 0.25 s doubling, capped by what the scheduler advises.
    stack = LocalStack(stack_config(out, clients=128, duration_s=24, workload_args=["--retries", "8"]))
    try:
        await stack.start()
        run = asyncio.ensure_future(stack.run_workload())
        before, _ = await wait_for_state(
            stack,
            lambda s: sum(1 for x in s.sessions if x.node_id and x.tokens) >= 64,
            "sessions have K,V on the nodes",
            include_sessions=True,
        )
        held = {x.session_id: x.node_id for x in before.sessions if x.node_id and x.tokens}
        killed_at = time.monotonic()
        await stack.restart_scheduler()
        _, recovered_at = await wait_for_state(
            stack,
            lambda s: set(healthy(s)) == {"node-0", "node-1"},
            "both nodes registered with the new scheduler",
            include_sessions=True,
        )
        # The first status reports rebuild the map: sessions held before the restart are known again,
        # on the node that holds them.
        rebuilt, rebuilt_at = await wait_for_state(
            stack,
            lambda s: sum(1 for x in s.sessions if held.get(x.session_id) == x.node_id) >= len(held) // 2,
            "the session map knows where the earlier sessions' K,V lives",
            include_sessions=True,
        )
        code = await run
    finally:
        await stack.stop()

    rows = turn_rows(out)
    totals = summary(out)["turns"]
    assert code == 0, log_tail(out, "workloadgen")
    assert totals["failed"] == 0 and totals["cancelled"] == 0, totals
    assert not gaps_in_sessions(rows), "a session skipped a turn"
    retried = [r for r in rows if r["attempts"] > 1]
    assert retried, "the restart should have interrupted some turns"
    # The clients' outage: the longest stretch with no turn finishing.
    ends = sorted(r["finished"] for r in rows)
    outage = max(b - a for a, b in itertools.pairwise(ends))
    known = sum(1 for x in rebuilt.sessions if held.get(x.session_id) == x.node_id)
    figures(
        "scheduler SIGKILL + restart, 128 sessions",
        f"serving with both nodes registered {recovered_at - killed_at:.2f} s after the kill; "
        f"{known}/{len(held)} earlier sessions located again {rebuilt_at - killed_at:.2f} s after it; "
        f"longest time with no turn finishing {outage:.2f} s; {len(rows)} turns, 0 failed, "
        f"{len(retried)} retried",
    )
