"""The benchmark harness runs end to end on a small load and reports its figures (no timing asserted)."""

from __future__ import annotations

import asyncio
import json
import sys


async def test_bench_reports_its_figures() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "symphony_workloadgen.bench", "--sessions", "40", "--rate", "80",
        "--duration", "1", "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    figures = json.loads(out.decode().strip().splitlines()[-1])
    assert figures["sessions"] == 40 and figures["turns_ok"] > 0 and figures["turns_failed"] == 0
    for key in ("turns_per_s", "lateness_p50_ms", "lateness_p99_ms", "generator_cpu_percent"):
        assert isinstance(figures[key], float)
