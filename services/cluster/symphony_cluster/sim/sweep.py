"""Runs a grid of scenarios (policies x user counts), in parallel worker processes when asked.

Each scenario is independent and seeded, so the grid's figures do not depend on the number of
workers or the order they finish in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from symphony_cluster.sim.figures import SloTarget, figures
from symphony_cluster.sim.vcluster import Scenario, VirtualCluster
from symphony_nodesched.profile import Profile
from symphony_workloadgen.dataset import Conversation
from symphony_workloadgen.session import UserModel

POLICIES = ("round_robin", "least_loaded", "sticky", "prefix_aware", "symphony")


@dataclass(frozen=True)
class Grid:
    profile: Profile
    policies: Sequence[str]
    users: Sequence[int]
    conversations: Sequence[Conversation]
    user_model: UserModel = field(default_factory=UserModel)
    nodes: int = 8
    duration_s: float = 600.0
    warmup_s: float = 60.0
    seed: int = 0
    slo: SloTarget = field(default_factory=SloTarget)
    tiers: str = "auto"

    def scenarios(self) -> list[Scenario]:
        base = Scenario(
            profile=self.profile,
            policy=self.policies[0],
            users=self.users[0],
            conversations=self.conversations,
            user_model=self.user_model,
            nodes=self.nodes,
            duration_s=self.duration_s,
            warmup_s=self.warmup_s,
            seed=self.seed,
            tiers=self.tiers,
        )
        return [replace(base, policy=p, users=u) for p in self.policies for u in self.users]


def run_one(scenario: Scenario, slo: SloTarget) -> dict[str, Any]:
    started = time.perf_counter()
    outcome = VirtualCluster(scenario).run()
    row = figures(outcome, slo)
    wall = time.perf_counter() - started
    row["wall_s"] = wall
    row["speedup"] = scenario.duration_s / wall if wall > 0 else None
    row["events"] = outcome.events_processed
    return row


def run_grid(
    grid: Grid, jobs: int = 1, progress: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    scenarios = grid.scenarios()
    rows: list[dict[str, Any]] = []
    if jobs <= 1:
        for sc in scenarios:
            rows.append(run_one(sc, grid.slo))
            if progress:
                progress(rows[-1])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_one, sc, grid.slo) for sc in scenarios]
            for fut in futures:
                rows.append(fut.result())
                if progress:
                    progress(rows[-1])
    return rows


def capacity(rows: Sequence[dict[str, Any]]) -> dict[str, int | None]:
    """Per policy: the most users of the sweep at which the SLO still held (None: not even the fewest).

    Counting stops at the first user count that misses the SLO, so a lucky pass at a higher load
    does not inflate the capacity.
    """
    result: dict[str, int | None] = {}
    for policy in dict.fromkeys(r["policy"] for r in rows):
        best: int | None = None
        for r in sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["users"]):
            if not r["meets_slo"]:
                break
            best = r["users"]
        result[policy] = best
    return result
