"""The vertical slice as `make run` starts it: real processes, real gRPC on loopback ports."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from symphony_cluster.local import LocalStack, StackConfig, StackError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _config(tmp_path: Path, **kw: object) -> StackConfig:
    base: dict[str, object] = {
        "nodes": 2,
        "clients": 6,
        "duration_s": 90.0,
        "policy": "symphony",
        "profile": "cpu-tiny/test",
        "out_dir": tmp_path / "run",
        "quiet": True,
        "workload_args": ["--time-scale", "20", "--max-turns", "24", "--no-plots"],
    }
    base.update(kw)
    return StackConfig(**base)  # type: ignore[arg-type]


async def test_every_turn_of_every_session_is_answered(tmp_path: Path) -> None:
    stack = LocalStack(_config(tmp_path))
    try:
        await stack.start()
        code = await stack.run_workload()
    finally:
        await stack.stop()
    assert code == 0, (stack.config.out_dir / "logs" / "workloadgen.log").read_text()[-3000:]
    assert not any(c.running for c in stack.children), "no process outlives the stack"

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["turns"]["failed"] == 0
    assert summary["turns"]["ok"] == summary["turns"]["total"] >= 24

    rows = [json.loads(line) for line in (tmp_path / "run" / "turns.jsonl").read_text().splitlines()]
    assert len(rows) >= 24
    sessions = {r["session_id"] for r in rows}
    assert len(sessions) >= 6
    for r in rows:
        assert r["ok"], r
        assert 0 < r["ttft"] <= r["e2e"], r
        assert r["output_tokens"] > 0 and r["prompt_tokens"] > 0, r
        assert r["node_id"] in {"node-0", "node-1"}, r
    # Later turns find their history cached wherever they are routed.
    later = [r for r in rows if r["turn_index"] > 0]
    assert later, "the run should reach second turns"
    assert all(r["cached_tokens"] > 0 for r in later), [r for r in later if not r["cached_tokens"]]


async def test_a_dead_scheduler_ends_the_run_with_a_clear_message(tmp_path: Path) -> None:
    stack = LocalStack(_config(tmp_path, workload_args=["--time-scale", "20", "--no-plots"]))
    try:
        await stack.start()
        stack.scheduler.send_signal(signal.SIGKILL)
        with pytest.raises(StackError, match=r"scheduler was killed by SIGKILL during the run"):
            await stack.run_workload()
    finally:
        await stack.stop()
    assert not any(c.running for c in stack.children)


async def test_a_dead_node_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    stack = LocalStack(
        _config(tmp_path, clients=4, workload_args=["--time-scale", "20", "--max-turns", "12", "--no-plots"])
    )
    try:
        await stack.start()
        stack.nodes[1].send_signal(signal.SIGKILL)
        code = await stack.run_workload()
    finally:
        await stack.stop()
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["turns"]["failed"] == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "turns.jsonl").read_text().splitlines()]
    assert {r["node_id"] for r in rows} == {"node-0"}
