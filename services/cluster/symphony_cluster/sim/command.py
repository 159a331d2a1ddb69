"""``symphony simulate``: the command line of the virtual-time cluster."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from symphony.errors import InvalidArgument
from symphony_cluster.sim.figures import SloTarget
from symphony_cluster.sim.report import capacity_table, markdown_table, plot, write_json
from symphony_cluster.sim.sweep import POLICIES, Grid, run_grid
from symphony_cluster.sim.vcluster import TIER_CHOICES
from symphony_nodesched.profile import Profile, load_profile
from symphony_workloadgen.dataset import DatasetError, load
from symphony_workloadgen.usermodel_args import add_user_model_arguments, user_model_from_args


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of whole numbers, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"user counts must be > 0, got {text!r}")
    return sorted(set(values))


def _policy_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown policy {unknown or text!r}; choose from {', '.join(POLICIES)}"
        )
    return names


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="run the cluster in virtual time and compare policies",
        description="Run workload sessions, the scheduler's policy, the node schedulers' tier managers and "
        "the sim engines in one process on a virtual clock (the shipped classes, no sockets, no sleeping), "
        "and print per-policy figures.",
    )
    p.add_argument(
        "--profile", default="a100-80gb/llama-3.1-8b", help="engine profile (default a100-80gb/llama-3.1-8b)"
    )
    p.add_argument("--nodes", type=int, default=8, help="engines (default 8)")
    p.add_argument(
        "--users", type=_int_list, default=[256], help="concurrent users, a comma list to sweep (default 256)"
    )
    p.add_argument(
        "--policies", type=_policy_list, default=list(POLICIES), help="comma list (default: all five)"
    )
    p.add_argument(
        "--dataset", default="sharegpt", help="sharegpt (default), synthetic, or a ShareGPT JSON file"
    )
    p.add_argument("--dataset-limit", type=int, default=None, help="use only the first N conversations")
    p.add_argument("--duration", type=float, default=300.0, help="virtual seconds per scenario (default 300)")
    p.add_argument(
        "--warmup", type=float, default=60.0, help="virtual seconds excluded from figures (default 60)"
    )
    p.add_argument("--seed", type=int, default=0)
    add_user_model_arguments(p, time_scale=False)
    p.add_argument(
        "--host-link-scale", type=float, default=1.0, help="multiply the profile's host-link bandwidth"
    )
    p.add_argument(
        "--network-scale", type=float, default=1.0, help="multiply the profile's inter-node bandwidth"
    )
    p.add_argument("--slo-ttft-p99", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument(
        "--slo-norm-p50", type=float, default=0.025, help="seconds per output token (default 0.025)"
    )
    p.add_argument(
        "--tiers",
        choices=TIER_CHOICES,
        default="auto",
        help="memory tiers of every node; auto (default): those of the system each policy stands for "
        "(round_robin, least_loaded: gpu; sticky: gpu+host; prefix_aware, symphony: gpu+host+disk)",
    )
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPUs)")
    p.add_argument(
        "--out", type=Path, default=None, help="write results.json, results.md and latency.png here"
    )


def build_grid(args: argparse.Namespace) -> tuple[Grid, str]:
    if args.nodes < 1:
        raise InvalidArgument("--nodes", "must be >= 1")
    if args.duration <= args.warmup:
        raise InvalidArgument("--duration", f"must exceed --warmup ({args.warmup} s)")
    profile: Profile = load_profile(args.profile)
    if args.host_link_scale != 1.0 or args.network_scale != 1.0:
        if args.host_link_scale <= 0 or args.network_scale <= 0:
            raise InvalidArgument("--host-link-scale/--network-scale", "must be > 0")
        profile = profile.model_copy(
            update={
                "host_link_gbps": profile.host_link_gbps * args.host_link_scale,
                "network_gbps": profile.network_gbps * args.network_scale,
            }
        )
    try:
        model = user_model_from_args(args)
    except ValueError as err:
        raise InvalidArgument("user model", str(err)) from None
    report = load(args.dataset, seed=args.seed, limit=args.dataset_limit)
    grid = Grid(
        profile=profile,
        policies=args.policies,
        users=args.users,
        conversations=report.conversations,
        user_model=model,
        nodes=args.nodes,
        duration_s=args.duration,
        warmup_s=args.warmup,
        seed=args.seed,
        slo=SloTarget(args.slo_ttft_p99, args.slo_norm_p50),
        tiers=args.tiers,
    )
    return grid, report.describe()


def run(args: argparse.Namespace) -> int:
    try:
        grid, dataset_note = build_grid(args)
    except (InvalidArgument, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = len(grid.policies) * len(grid.users)
    print(
        f"simulating {n} scenario(s): {grid.nodes} × {grid.profile.name}, {grid.duration_s:.0f} virtual s each "
        f"({grid.warmup_s:.0f} s warm-up); {dataset_note}",
        file=sys.stderr,
    )
    started = time.perf_counter()

    def progress(row: dict[str, Any]) -> None:
        print(
            f"  {row['policy']:>12} {row['users']:>6} users: {row['turns_per_s']:.2f} turns/s, "
            f"TTFT p99 {row['ttft_p99_s'] or float('nan'):.3f} s ({row['wall_s']:.1f} s wall, "
            f"{row['speedup']:.0f}× real time)",
            file=sys.stderr,
        )

    rows = run_grid(grid, jobs=max(1, min(args.jobs, n)), progress=progress)
    rows.sort(key=lambda r: (grid.policies.index(r["policy"]), r["users"]))
    table = markdown_table(rows)
    caps = capacity_table(rows)
    print(table)
    print(
        f"Capacity at the SLO (p99 TTFT <= {grid.slo.ttft_p99_s} s, p50 normalized latency <= "
        f"{grid.slo.norm_p50_s * 1000:.0f} ms/token):\n"
    )
    print(caps)
    print(f"({time.perf_counter() - started:.1f} s wall)", file=sys.stderr)
    if args.out is not None:
        meta = {
            "profile": grid.profile.model_dump(),
            "nodes": grid.nodes,
            "duration_s": grid.duration_s,
            "warmup_s": grid.warmup_s,
            "seed": grid.seed,
            "dataset": dataset_note,
            "user_model": vars(grid.user_model),
            "slo": vars(grid.slo),
            "command": "symphony simulate " + " ".join(sys.argv[2:]),
        }
        write_json(rows, meta, args.out / "results.json")
        (args.out / "results.md").write_text(table + "\n" + caps)
        plot(rows, args.out / "latency.png", f"{grid.nodes} × {grid.profile.name}")
        print(f"wrote {args.out}/results.json, results.md, latency.png", file=sys.stderr)
    return 0
