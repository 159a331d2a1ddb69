"""``symphony study``: the policy study behind ``docs/results/`` (``make study``).

Three parts, each a grid of seeded scenarios run by :mod:`symphony_cluster.sim.sweep`:

1. capacity: the five policies over a sweep of user counts, on A100 / Llama-3.1-8B and
   A100 / Llama-2-13B, and the most users each policy serves within the SLO;
2. robustness: Symphony with 10% missing and with 60% spurious advisories, against no ablation;
3. sensitivity: the host link and the inter-node network halved and doubled.

Same seed, same numbers: nothing here reads the wall clock except the reported wall time.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from symphony_cluster.sim.figures import SloTarget
from symphony_cluster.sim.report import capacity_table, markdown_table, plot
from symphony_cluster.sim.sweep import POLICIES, Grid, capacity, run_grid
from symphony_nodesched.profile import load_profile
from symphony_workloadgen.dataset import load
from symphony_workloadgen.session import UserModel

CAPACITY_USERS = {
    "a100-80gb/llama-3.1-8b": [256, 512, 1024, 2048, 4096, 8192],
    "a100-80gb/llama-2-13b": [64, 128, 256, 512, 1024, 2048, 4096],
}
QUICK_USERS = {
    "a100-80gb/llama-3.1-8b": [64, 128],
    "a100-80gb/llama-2-13b": [64, 128],
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("study", help="run the policy study and write docs/results/")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--duration", type=float, default=240.0, help="virtual seconds per scenario (default 240)")
    p.add_argument("--warmup", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny grids, to check the pipeline (not for results)")
    p.add_argument("--parts", default="capacity,robustness,sensitivity")
    p.add_argument(
        "--render", action="store_true", help="only rewrite README.md from the folder's results.json"
    )


def _progress(row: dict[str, Any]) -> None:
    print(
        f"  {row['profile']:>24} {row['policy']:>12} {row['users']:>6} users: {row['turns_per_s']:.2f} turns/s, "
        f"TTFT p99 {row['ttft_p99_s'] or float('nan'):.3f} s, norm p50 {1000 * (row['norm_p50_s'] or float('nan')):.1f} ms "
        f"({row['wall_s']:.0f} s wall)",
        file=sys.stderr,
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if args.render:
        saved = json.loads((out / "results.json").read_text())
        (out / "README.md").write_text(render(saved))
        print(f"wrote {out}/README.md from {out}/results.json", file=sys.stderr)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    parts = {p.strip() for p in args.parts.split(",")}
    conversations = load("sharegpt", seed=args.seed).conversations
    slo = SloTarget()
    users_by_profile = QUICK_USERS if args.quick else CAPACITY_USERS
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": "symphony study " + " ".join(sys.argv[2:]),
        "fixed_users": 128 if args.quick else 2048,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "seed": args.seed,
        "slo": vars(slo),
    }

    def grid(
        profile_name: str, policies: list[str], users: list[int], model: UserModel | None = None
    ) -> Grid:
        return Grid(
            profile=load_profile(profile_name),
            policies=policies,
            users=users,
            conversations=conversations,
            user_model=model or UserModel(),
            duration_s=args.duration,
            warmup_s=args.warmup,
            seed=args.seed,
            slo=slo,
        )

    if "capacity" in parts:
        results["capacity"] = {}
        for profile_name, users in users_by_profile.items():
            rows = _capacity_sweep(functools.partial(_one_count, grid, profile_name), users, args.jobs)
            rows.sort(key=lambda r: (POLICIES.index(r["policy"]), r["users"]))
            slug = profile_name.replace("/", "_")
            plot(rows, out / f"capacity_{slug}.png", f"8 × {profile_name}")
            results["capacity"][profile_name] = {"capacity": capacity(rows), "rows": rows}

    base_profile = "a100-80gb/llama-3.1-8b"
    fixed_users: int = results["fixed_users"]
    if "robustness" in parts:
        variants = {
            "no ablation": UserModel(),
            "10% missing advisories": UserModel(advisory_miss_rate=0.10),
            "60% spurious advisories": UserModel(advisory_spurious_rate=0.60),
        }
        rows = []
        for name, model in variants.items():
            (row,) = run_grid(
                grid(base_profile, ["symphony"], [fixed_users], model), jobs=1, progress=_progress
            )
            row["variant"] = name
            rows.append(row)
        results["robustness"] = rows

    if "sensitivity" in parts:
        rows = []
        profile = load_profile(base_profile)
        for what, field in (("host link", "host_link_gbps"), ("network", "network_gbps")):
            for scale in (0.5, 2.0):  # x1 is the capacity sweep's row at the same user count
                varied = profile.model_copy(update={field: getattr(profile, field) * scale})
                g = replace(
                    grid(base_profile, ["sticky", "prefix_aware", "symphony"], [fixed_users]), profile=varied
                )
                for row in run_grid(g, jobs=args.jobs, progress=_progress):
                    row["variant"] = f"{what} ×{scale:g}"
                    rows.append(row)
        results["sensitivity"] = rows

    results["wall_s"] = time.perf_counter() - started
    for section in ("capacity", "robustness", "sensitivity"):
        for row in _rows(results.get(section)):
            row.pop("wall_s", None)  # keep the committed files reproducible: no timings in them
            row.pop("speedup", None)
    (out / "results.json").write_text(
        json.dumps({k: v for k, v in results.items() if k != "wall_s"}, indent=1) + "\n"
    )
    (out / "README.md").write_text(render(results))
    print(f"wrote {out}/README.md and results.json ({results['wall_s']:.0f} s wall)", file=sys.stderr)
    return 0


def render(results: dict[str, Any]) -> str:
    """The study's README.md, from its results.json alone (so ``--render`` can redo it)."""
    slo = results["slo"]
    md = [
        "# Policy study",
        "",
        f"Made by `{results['command']}` (`make study`): {results['duration_s']:.0f} virtual seconds per "
        f"scenario, the first {results['warmup_s']:.0f} s excluded, seed {results['seed']}, 8 engines, real "
        "ShareGPT conversations, users reading at 25 chars/s and typing at 6 chars/s, advisories at typing "
        f"start. SLO: p99 TTFT <= {slo['ttft_p99_s']} s and p50 normalized latency <= "
        f"{slo['norm_p50_s'] * 1000:.0f} ms/token. Each baseline runs on the memory tiers of the system it "
        "stands for (column `tiers`). Definitions of every column: `symphony_cluster/sim/figures.py`.",
        "",
    ]
    for profile_name, section in results.get("capacity", {}).items():
        rows = section["rows"]
        slug = profile_name.replace("/", "_")
        md += [
            f"## Capacity: 8 × {profile_name}",
            "",
            capacity_table(rows),
            markdown_table(rows),
            f"![latency vs users](capacity_{slug}.png)",
            "",
        ]
    fixed_users = results.get("fixed_users", 2048)
    base_profile = "a100-80gb/llama-3.1-8b"
    rows = results.get("robustness", [])
    if rows:
        base = rows[0]
        md += [
            f"## Robustness: symphony, {fixed_users} users, 8 × {base_profile}",
            "",
            "| advisories | turns/s | Δ throughput | TPOT p50 (ms/token) | norm. latency p50 (ms/token) | TTFT p99 (ms) | advisories used / late / unused |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            adv = r["advisories"]
            d = 100 * (r["turns_per_s"] / base["turns_per_s"] - 1) if base["turns_per_s"] else 0.0
            md.append(
                f"| {r['variant']} | {r['turns_per_s']:.2f} | {d:+.1f}% | {1000 * (r['tpot_p50_s'] or 0):.2f} "
                f"| {1000 * (r['norm_p50_s'] or 0):.2f} | {1000 * (r['ttft_p99_s'] or 0):.0f} "
                f"| {adv.get('used', 0)} / {adv.get('late', 0)} / {adv.get('unused', 0)} |"
            )
        md.append("")
    rows = list(results.get("sensitivity", []))
    if rows:
        sweep = results.get("capacity", {}).get(base_profile, {}).get("rows", [])
        policies = {r["policy"] for r in rows}
        same = [
            dict(r, variant="×1 (capacity sweep)")
            for r in sweep
            if r["users"] == fixed_users and r["policy"] in policies
        ]
        md += [
            f"## Sensitivity: {fixed_users} users, 8 × {base_profile}",
            "",
            "| bandwidth | policy | turns/s | TTFT p50 / p99 (ms) | norm. latency p50 (ms/token) | K,V moved (GB) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in [*same, *rows]:
            md.append(
                f"| {r['variant']} | {r['policy']} | {r['turns_per_s']:.2f} | {1000 * (r['ttft_p50_s'] or 0):.1f} / "
                f"{1000 * (r['ttft_p99_s'] or 0):.1f} | {1000 * (r['norm_p50_s'] or 0):.2f} "
                f"| {sum(r['kv_bytes_moved'].values()) / 1e9:.0f} |"
            )
        md.append("")
    return "\n".join(md) + "\n"


def _one_count(
    grid: Callable[[str, list[str], list[int]], Grid], profile: str, policies: list[str], users: int
) -> Grid:
    return grid(profile, policies, [users])


def _capacity_sweep(
    make: Callable[[list[str], int], Grid], users: list[int], jobs: int
) -> list[dict[str, Any]]:
    """Runs the user counts in increasing order; a policy that has missed the SLO runs one more count
    (for the plot) and then stops, since its capacity is already known."""
    rows: list[dict[str, Any]] = []
    misses = dict.fromkeys(POLICIES, 0)
    for u in users:
        active = [p for p in POLICIES if misses[p] < 2]
        if not active:
            break
        for row in run_grid(make(active, u), jobs=jobs, progress=_progress):
            rows.append(row)
            if not row["meets_slo"] or misses[row["policy"]]:
                misses[row["policy"]] += 1
    return rows


def _rows(section: Any) -> list[dict[str, Any]]:
    if isinstance(section, list):
        return section
    if isinstance(section, dict):
        return [r for v in section.values() for r in v["rows"]]
    return []
