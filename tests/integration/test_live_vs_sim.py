"""The simulator runs the shipped objects: one small seeded scenario, live and in virtual time,
makes the same routing decisions and the same turn latencies within a stated tolerance.

Tolerance: the live stack adds real gRPC hops, Python scheduling and heartbeat phase, which the
simulator models only as a fixed hop, and a shared CI machine adds jitter. So the median relative
difference of end-to-end latency over the turns must stay within 10%, and each turn within
20% + 100 ms (TTFT within 150 ms); token counts and routing must match exactly. The turns here last
0.3-1.5 s, so a simulator that mis-modelled decode or prefill would fail by far more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from symphony_cluster.local import LocalStack, StackConfig
from symphony_cluster.sim.vcluster import Scenario, VirtualCluster
from symphony_nodesched.profile import load_profile
from symphony_workloadgen.dataset import load
from symphony_workloadgen.session import UserModel

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

SEED, USERS, TURNS, SCALE = 7, 3, 9, 4.0
PROFILE = "a100-80gb/llama-3.1-8b"


@pytest.mark.parametrize("policy", ["symphony", "round_robin"])
async def test_live_and_simulated_runs_agree(tmp_path: Path, policy: str) -> None:
    stack = LocalStack(
        StackConfig(
            nodes=2,
            clients=USERS,
            duration_s=120,
            policy=policy,
            profile=PROFILE,
            seed=SEED,
            out_dir=tmp_path / "live",
            quiet=True,
            workload_args=["--time-scale", str(SCALE), "--max-turns", str(TURNS), "--no-plots"],
        )
    )
    try:
        await stack.start()
        assert await stack.run_workload() == 0
    finally:
        await stack.stop()
    live = {
        (r["session_number"], r["turn_index"]): r
        for r in map(json.loads, (tmp_path / "live" / "turns.jsonl").read_text().splitlines())
    }

    outcome = VirtualCluster(
        Scenario(
            profile=load_profile(PROFILE),
            policy=policy,
            users=USERS,
            conversations=load("synthetic", seed=SEED).conversations,
            user_model=UserModel(time_scale=SCALE),
            nodes=2,
            duration_s=60,
            warmup_s=0,
            seed=SEED,
        )
    ).run()
    sim = {(r.session_number, r.turn_index): r for r in outcome.records}

    common = sorted(set(live) & set(sim))
    assert len(common) >= TURNS - USERS, (sorted(live), sorted(sim))
    for key in common:
        lv, sv = live[key], sim[key]
        assert lv["node_id"] == sv.node_id, (
            f"turn {key}: live routed to {lv['node_id']}, simulated to {sv.node_id}"
        )
        assert lv["output_tokens"] == sv.output_tokens
        assert lv["prompt_tokens"] == sv.prompt_tokens
        assert abs(lv["e2e"] - sv.e2e) <= 0.20 * sv.e2e + 0.100, (key, lv["e2e"], sv.e2e)
        assert abs(lv["ttft"] - sv.ttft) <= 0.150, (key, lv["ttft"], sv.ttft)
    relative = sorted(abs(live[k]["e2e"] - sim[k].e2e) / sim[k].e2e for k in common)
    assert relative[len(relative) // 2] <= 0.10, relative
