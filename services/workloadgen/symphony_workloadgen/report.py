"""Terminal table, per-turn JSONL/CSV records, the summary JSON and PNG plots of a run."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from symphony_workloadgen.metrics import TurnRecord

SCHEMA_VERSION = 1
LATENCY_ROWS = (
    ("TTFT", ("latency", "ttft")),
    ("TPOT", ("latency", "tpot")),
    ("ITL", ("latency", "itl")),
    ("E2E", ("latency", "e2e")),
    ("E2E/token", ("latency", "normalized")),
    ("send lateness", ("lateness",)),
)


def _ms(x: Any) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def _get(summary: dict[str, Any], path: Sequence[str]) -> dict[str, Any]:
    node: Any = summary
    for key in path:
        node = node[key]
    return dict(node)


def table(summary: dict[str, Any]) -> str:
    """The human summary: counts, throughput, then latency percentiles in milliseconds."""
    t = summary["turns"]
    tp = summary["throughput"]
    cache = summary["cache"]
    adv = summary.get("advisories", {})
    lines = [
        f"turns: {t['ok']} ok, {t['failed']} failed, {t['cancelled']} cancelled, "
        f"{t['retried']} retried, {t['warmup_excluded']} warm-up excluded"
        f" | sessions: {summary['sessions']['started']} started, {summary['sessions']['finished']} finished",
        f"window: {summary['window_s']:.1f} s | {tp['turns_per_s']:.2f} turns/s, "
        f"{tp['output_tokens_per_s']:.1f} output tokens/s, goodput {tp['goodput_turns_per_s']:.2f} turns/s"
        + (f" ({tp['slo_attainment'] * 100:.1f}% within SLO)" if tp["slo_attainment"] is not None else ""),
        "cached prompt tokens: "
        + (f"{cache['cached_ratio'] * 100:.1f}%" if cache["cached_ratio"] is not None else "not reported")
        + (
            f" | advisories: {adv.get('sent', 0)} sent, {adv.get('spurious', 0)} spurious, "
            f"{adv.get('failed', 0)} failed"
            if adv
            else ""
        ),
        "",
        f"{'metric (ms)':<16}{'count':>8}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for name, path in LATENCY_ROWS:
        s = _get(summary, path)
        lines.append(
            f"{name:<16}{s['count']:>8}{_ms(s['mean']):>10}{_ms(s['p50']):>10}{_ms(s['p90']):>10}{_ms(s['p99']):>10}"
        )
    by_turn = summary["by_turn"]
    if by_turn:
        lines += [
            "",
            f"{'turn':<6}{'turns':>7}{'failed':>8}{'TTFT p50':>10}{'TTFT p99':>10}{'E2E p50':>10}{'TPOT p50':>10}",
        ]
        for idx, s in list(by_turn.items())[:12]:
            lines.append(
                f"{int(idx) + 1:<6}{s['turns']:>7}{s['failed']:>8}{_ms(s['ttft']['p50']):>10}"
                f"{_ms(s['ttft']['p99']):>10}{_ms(s['e2e']['p50']):>10}{_ms(s['tpot']['p50']):>10}"
            )
    if summary["errors"]:
        lines += ["", "errors: " + ", ".join(f"{k} x{v}" for k, v in summary["errors"].items())]
    return "\n".join(lines)


def write_outputs(
    out: Path, records: Sequence[TurnRecord], summary: dict[str, Any], plots: bool = True
) -> list[Path]:
    """turns.jsonl, turns.csv, summary.json and (optionally) the PNG plots; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.as_row() for r in records]
    written = [out / "turns.jsonl", out / "turns.csv", out / "summary.json"]
    with written[0].open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    with written[1].open("w", newline="") as f:
        fields = list(rows[0]) if rows else list(TurnRecord("", 0, 0, False, 0.0).as_row())
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    written[2].write_text(json.dumps({"schema_version": SCHEMA_VERSION, **summary}, indent=2) + "\n")
    if plots:
        written += plot(out, records)
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot(out: Path, records: Sequence[TurnRecord]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in records if r.ok and not r.warmup]
    files = []

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    series = (
        ("TTFT", [r.ttft for r in ok]),
        ("TPOT", [t for r in ok if (t := r.tpot) is not None]),
        ("E2E", [r.e2e for r in ok]),
    )
    for ax, (name, values) in zip(axes, series, strict=True):
        if values:
            xs = np.sort(np.asarray(values)) * 1000
            ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs))
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of turns")
        ax.set_title(f"{name} CDF")
        ax.grid(alpha=0.3)
    files.append(_save(fig, out / "latency_cdf.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    by_turn: dict[int, list[float]] = {}
    for r in ok:
        by_turn.setdefault(r.turn_index + 1, []).append(r.ttft * 1000)
    idx = sorted(by_turn)
    if idx:
        ax.plot(idx, [float(np.percentile(by_turn[i], 50)) for i in idx], marker="o", label="p50")
        ax.plot(idx, [float(np.percentile(by_turn[i], 99)) for i in idx], marker="o", label="p99")
        ax.legend()
    ax.set_xlabel("turn")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("TTFT by turn index")
    ax.grid(alpha=0.3)
    files.append(_save(fig, out / "ttft_by_turn.png"))

    fig, ax = plt.subplots(figsize=(9, 4))
    if ok:
        ax.scatter([r.sent for r in ok], [r.ttft * 1000 for r in ok], s=3, label="TTFT", alpha=0.5)
        ax.scatter([r.sent for r in ok], [r.e2e * 1000 for r in ok], s=3, label="E2E", alpha=0.5)
        ax.legend()
    ax.set_xlabel("send time (s since start)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("Latency over time")
    ax.grid(alpha=0.3)
    files.append(_save(fig, out / "latency_over_time.png"))
    return files
