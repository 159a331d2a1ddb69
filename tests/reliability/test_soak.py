"""Soak: 512 sessions for 30 minutes of user time, compressed 10x (human waits and the simulated
engine run at the same scale, so the load is the load of the real half hour) — about 3 minutes.

Holds: the resident memory of the scheduler and of every node stays flat (within 10% between the
end of the warm-up and the end of the run), the scheduler tracks no more sessions than are open,
and once the sessions end it forgets them (nothing grows with sessions that are gone). The workload
generator keeps every turn's record for its report by design; its growth is reported, not held.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest

from symphony_cluster.local import LocalStack

from .conftest import Report
from .stackutil import cluster_state, log_tail, stack_config, summary, wait_for_state

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SCALE = 10.0
USER_TIME_S = 30 * 60
SESSIONS = 512
SESSION_TTL_S = 20.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def test_soak_memory_flat_and_sessions_forgotten(tmp_path: Path, figures: Report) -> None:
    out = tmp_path / "run"
    wall_s = USER_TIME_S / SCALE
    stack = LocalStack(
        stack_config(
            out,
            clients=SESSIONS,
            duration_s=wall_s,
            time_scale=SCALE,
            scheduler_args=["--session-ttl", str(SESSION_TTL_S)],
            workload_args=["--time-scale", str(SCALE), "--ramp-up", "10", "--max-tokens", "64"],
        )
    )
    samples: list[tuple[float, dict[str, int], int]] = []
    try:
        await stack.start()
        run = asyncio.ensure_future(stack.run_workload())
        t0 = time.monotonic()
        while not run.done():
            procs = {c.name: c.proc.pid for c in stack.children if c.proc is not None and c.running}
            state = await cluster_state(stack)
            rss = {name: rss_bytes(pid) for name, pid in procs.items()}
            samples.append((time.monotonic() - t0, rss, state.sessions_tracked if state else -1))
            await asyncio.wait({run}, timeout=5.0)  # a sampling period; ends early when the run does
        code = run.result()
        # Sessions cut by the end of the run idle out: the scheduler forgets every one of them.
        _, forgotten_at = await wait_for_state(
            stack, lambda s: s.sessions_tracked == 0, "no session is tracked", timeout_s=90
        )
        forgotten_after = forgotten_at - (t0 + samples[-1][0])
    finally:
        await stack.stop()

    assert code == 0, log_tail(out, "workloadgen")
    totals = summary(out)["turns"]
    assert totals["failed"] == 0, totals
    warm = [s for s in samples if s[0] >= wall_s / 3]
    assert len(warm) >= 5, "too few samples after the warm-up"
    growth: dict[str, float] = {}
    for name in ("scheduler", *(f"node-{i}" for i in range(2)), "workloadgen"):
        series = [s[1][name] for s in warm if name in s[1]]
        # Medians of three samples at each end, so one sample taken mid-collection does not decide.
        growth[name] = statistics.median(series[-3:]) / statistics.median(series[:3]) - 1
    for name in ("scheduler", "node-0", "node-1"):
        assert growth[name] <= 0.10, f"{name} grew {growth[name]:.1%} after the warm-up"
    tracked = [s[2] for s in samples if s[2] >= 0]
    assert max(tracked) <= SESSIONS * 1.1, f"tracked sessions reached {max(tracked)} with {SESSIONS} open"
    figures(
        f"soak, {SESSIONS} sessions, {USER_TIME_S / 60:.0f} min of user time at {SCALE:g}x",
        f"{totals['total']} turns, 0 failed; RSS growth after warm-up: "
        + ", ".join(f"{n} {g:+.1%}" for n, g in growth.items())
        + f" (end: scheduler {warm[-1][1]['scheduler'] / 2**20:.0f} MiB); tracked sessions max "
        f"{max(tracked)}; all forgotten {max(0.0, forgotten_after):.0f} s after the run (TTL {SESSION_TTL_S:g} s)",
    )
