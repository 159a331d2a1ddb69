"""The simulator's outputs: a Markdown table, a JSON file and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from symphony_cluster.sim.sweep import capacity


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1000:.1f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        "| policy | tiers | users | turns/s | TTFT p50 / p99 (ms) | TPOT p50 / p99 (ms) | norm. latency p50 / p99 (ms/token) "
        "| cached (gpu / host / disk / peer) | recomputed tokens | K,V moved (GB) | imbalance | SLO |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|\n"
    )
    lines = []
    for r in rows:
        tiers = r["cached_ratio_by_tier"]
        cached = " / ".join(_pct(tiers.get(t, 0.0)) for t in ("gpu", "host", "disk", "peer"))
        moved = _gb(sum(r["kv_bytes_moved"].values()))
        imb = "—" if r["imbalance"] is None else f"{r['imbalance']:.2f}"
        lines.append(
            f"| {r['policy']} | {r['tiers']} | {r['users']} | {r['turns_per_s']:.2f} | {_ms(r['ttft_p50_s'])} / {_ms(r['ttft_p99_s'])} "
            f"| {_ms(r['tpot_p50_s'])} / {_ms(r['tpot_p99_s'])} | {_ms(r['norm_p50_s'])} / {_ms(r['norm_p99_s'])} "
            f"| {cached} | {r['recomputed_tokens']:,} | {moved} | {imb} | {'yes' if r['meets_slo'] else 'no'} |"
        )
    return header + "\n".join(lines) + "\n"


def capacity_table(rows: Sequence[dict[str, Any]], baseline: str = "round_robin") -> str:
    """Users each policy serves within the SLO; "≥ N" when it still met the SLO at the sweep's top."""
    cap = capacity(rows)
    top = {p: max(r["users"] for r in rows if r["policy"] == p) for p in cap}
    base = cap.get(baseline)
    out = ["| policy | users at the SLO | vs " + baseline + " |", "|---|---:|---:|"]
    for policy, users in cap.items():
        bound = "≥ " if users is not None and users == top[policy] else ""
        base_bounded = base is not None and base == top.get(baseline)
        ratio = "—" if not users or not base or base_bounded else f"{bound}{users / base:.2f}×"
        shown = f"{bound}{users}" if users is not None else "< " + str(min(r["users"] for r in rows))
        out.append(f"| {policy} | {shown} | {ratio} |")
    return "\n".join(out) + "\n"


def write_json(rows: Sequence[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"meta": meta, "capacity": capacity(rows), "rows": list(rows)}, indent=1) + "\n"
    )


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Latency vs users per policy, and TTFT by turn index at the largest user count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    for policy in policies:
        rs = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["users"])
        users = [r["users"] for r in rs]
        axes[0].plot(users, [1000 * (r["norm_p50_s"] or float("nan")) for r in rs], marker="o", label=policy)
        axes[1].plot(users, [r["ttft_p99_s"] or float("nan") for r in rs], marker="o", label=policy)
        last = rs[-1]["ttft_by_turn_p50_s"]
        turns = sorted(int(k) for k in last)[:12]
        axes[2].plot(
            [t + 1 for t in turns],
            [1000 * (last[str(t)] or float("nan")) for t in turns],
            marker=".",
            label=policy,
        )
    axes[0].set(
        xlabel="concurrent users", ylabel="normalized latency p50 (ms/token)", xscale="log", yscale="log"
    )
    axes[1].set(xlabel="concurrent users", ylabel="TTFT p99 (s)", xscale="log", yscale="log")
    axes[2].set(xlabel="turn", ylabel=f"TTFT p50 (ms) at {max(r['users'] for r in rows)} users", yscale="log")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
