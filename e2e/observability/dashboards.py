"""Writes the chart's Grafana dashboards (charts/symphony/dashboards/*.json) from one description.

The dashboards are generated, not hand-edited, so that every panel follows the same rules: every
query filters on ``namespace=~"$namespace"`` (and ``node=~"$node"`` where the series has a node),
rates use ``$__rate_interval``, units are set, and the panel says what it shows. ``--check`` fails
when the committed files differ from what this script writes (the tests run it).

    python e2e/observability/dashboards.py            # rewrite the JSON files
    python e2e/observability/dashboards.py --check    # exit 1 if they are stale
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[2] / "charts" / "symphony" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
NODE = 'namespace=~"$namespace",node=~"$node"'
RI = "[$__rate_interval]"


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    exprs: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


def quantiles(metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[tuple[str, str]]:
    group = f"le, {by}" if by else "le"
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{NS}}}{RI})))",
            f"p{round(q * 100)}" + (f" {{{{{by}}}}}" if by else ""),
        )
        for q in qs
    ]


def variables(*, node: bool, slo: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        _query_var("namespace", "Namespace", "label_values(symphony_turns_total, namespace)"),
    ]
    if node:
        out.append(_query_var("node", "Node", f"label_values(symphony_kv_tier_used_bytes{{{NS}}}, node)"))
    if slo:
        # Values are bucket bounds exactly as prometheus_client writes them in `le`.
        out.append(_custom_var("slo_ttft", "TTFT SLO (s)", ["0.25", "0.5", "1.0", "2.0", "4.0"], "1.0"))
        out.append(_custom_var("slo_tpot", "TPOT SLO (s)", ["0.02", "0.03", "0.05", "0.1"], "0.05"))
    return out


def _query_var(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "refresh": 2,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def _custom_var(name: str, label: str, values: list[str], default: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "current": {"selected": True, "text": default, "value": default},
        "options": [{"selected": v == default, "text": v, "value": v} for v in values],
    }


def render(
    uid: str, title: str, description: str, panels: list[Panel], vars_: list[dict[str, Any]]
) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        options: dict[str, Any] = (
            {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
            if p.kind == "stat"
            else {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]}}
        )
        out.append(
            {
                "id": i,
                "type": p.kind,
                "title": p.title,
                "description": p.description,
                "datasource": DS,
                "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height},
                "fieldConfig": {"defaults": {"unit": p.unit, **p.extra}, "overrides": []},
                "options": options,
                "targets": [
                    {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend, "datasource": DS}
                    for j, (expr, legend) in enumerate(p.exprs)
                ],
            }
        )
        x += p.width
        row_h = max(row_h, p.height)
    return {
        "title": title,
        "uid": uid,
        "description": description,
        "tags": ["symphony"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": vars_},
        "panels": out,
    }


def overview() -> dict[str, Any]:
    ok = f'sum(rate(symphony_turns_total{{{NS},outcome="ok"}}{RI}))'
    ttft_n = f"sum(rate(symphony_turn_ttft_seconds_count{{{NS}}}{RI}))"
    tpot_n = f"sum(rate(symphony_turn_tpot_seconds_count{{{NS}}}{RI}))"
    ttft_ok = f'sum(rate(symphony_turn_ttft_seconds_bucket{{{NS},le="$slo_ttft"}}{RI}))'
    tpot_ok = f'sum(rate(symphony_turn_tpot_seconds_bucket{{{NS},le="$slo_tpot"}}{RI}))'
    panels = [
        Panel("Turns/s", "Turns completed per second (scheduler).", [(ok, "turns/s")], "reqps", "stat", 4, 4),
        Panel(
            "Failed turns/s",
            "Turns that ended in an error after every retry.",
            [(f'sum(rate(symphony_turns_total{{{NS},outcome="error"}}{RI}))', "failed/s")],
            "reqps",
            "stat",
            4,
            4,
        ),
        Panel(
            "Goodput (TTFT within SLO)",
            "Turns/s whose time to first token met the TTFT SLO chosen above.",
            [(ttft_ok, "turns/s")],
            "reqps",
            "stat",
            4,
            4,
        ),
        Panel(
            "TTFT SLO attainment",
            "Fraction of turns whose TTFT met the SLO.",
            [(f"{ttft_ok} / {ttft_n}", "TTFT")],
            "percentunit",
            "stat",
            4,
            4,
        ),
        Panel(
            "TPOT SLO attainment",
            "Fraction of multi-token turns whose time per output token met the SLO.",
            [(f"{tpot_ok} / {tpot_n}", "TPOT")],
            "percentunit",
            "stat",
            4,
            4,
        ),
        Panel(
            "Active sessions",
            "Sessions the scheduler tracks.",
            [(f"sum(symphony_sessions_active{{{NS}}})", "sessions")],
            "short",
            "stat",
            4,
            4,
        ),
        Panel(
            "Time to first token",
            "TTFT percentiles, measured at the scheduler.",
            quantiles("symphony_turn_ttft_seconds"),
            "s",
        ),
        Panel(
            "Time per output token",
            "TPOT percentiles: (e2e - TTFT) / (tokens - 1).",
            quantiles("symphony_turn_tpot_seconds"),
            "s",
        ),
        Panel(
            "End-to-end turn latency",
            "E2E percentiles of a turn.",
            quantiles("symphony_turn_e2e_seconds"),
            "s",
        ),
        Panel(
            "Turns/s by turn index",
            "Completed turns per second by turn class (1, 2, 3, 4, 5-8, 9+).",
            [(f"sum by (turn) (rate(symphony_turn_e2e_seconds_count{{{NS}}}{RI}))", "turn {{turn}}")],
            "reqps",
        ),
        Panel(
            "TTFT p95 by turn index",
            "Later turns have longer histories: cache reuse shows here.",
            quantiles("symphony_turn_ttft_seconds", "turn", (0.95,)),
            "s",
        ),
        Panel(
            "TPOT p95 by turn index",
            "Time per output token by turn class.",
            quantiles("symphony_turn_tpot_seconds", "turn", (0.95,)),
            "s",
        ),
        Panel(
            "E2E p95 by turn index",
            "End-to-end latency by turn class.",
            quantiles("symphony_turn_e2e_seconds", "turn", (0.95,)),
            "s",
        ),
        Panel(
            "Goodput against SLO",
            "Turns/s meeting the TTFT SLO, against all turns/s.",
            [(ttft_ok, "within TTFT SLO"), (ttft_n, "all turns")],
            "reqps",
        ),
        Panel(
            "Cached-token ratio",
            "Prompt tokens served from a K,V cache tier over all prompt tokens.",
            [
                (
                    f"sum(rate(symphony_cached_prompt_tokens_total{{{NS}}}{RI})) / "
                    f"sum(rate(symphony_prompt_tokens_total{{{NS}}}{RI}))",
                    "cached / prompt",
                )
            ],
            "percentunit",
        ),
        Panel(
            "Routing fallbacks",
            "Turns that left the cache path, by reason; nonzero node_failed or kv_recomputed deserve a look.",
            [(f"sum by (reason) (rate(symphony_routing_fallbacks_total{{{NS}}}{RI}))", "{{reason}}")],
            "ops",
        ),
        Panel(
            "Node load",
            "Running plus waiting requests per node (scheduler view); the Nodes dashboard has the detail.",
            [(f"max by (node) (symphony_node_load{{{NODE}}})", "{{node}}")],
            "short",
            width=24,
        ),
    ]
    return render(
        "symphony-overview",
        "Symphony / Overview",
        "Throughput, turn latency (TTFT, TPOT, end-to-end) by turn index, goodput against an SLO.",
        panels,
        variables(node=True, slo=True),
    )


def kv_cache() -> dict[str, Any]:
    prompt = f"sum(rate(symphony_prompt_tokens_total{{{NS}}}{RI}))"
    panels = [
        Panel(
            "Cached-token ratio by tier",
            "Share of prompt tokens found in each tier (gpu, host, disk, peer) instead of recomputed.",
            [
                (
                    f"sum by (tier) (rate(symphony_cached_prompt_tokens_total{{{NS}}}{RI})) "
                    f"/ on() group_left() {prompt}",
                    "{{tier}}",
                )
            ],
            "percentunit",
        ),
        Panel(
            "Prompt tokens: cached vs recomputed",
            "Tokens/s of prompts served from cache and prefilled by the engines.",
            [
                (f"sum(rate(symphony_cached_prompt_tokens_total{{{NS}}}{RI}))", "cached"),
                (f"sum(rate(symphony_recomputed_prompt_tokens_total{{{NODE}}}{RI}))", "recomputed"),
            ],
            "short",
        ),
        Panel(
            "Advisory outcomes",
            "used: K,V ready on the chosen node; late: still moving; unused: expired or rerouted; cancelled.",
            [(f"sum by (outcome) (rate(symphony_advisories_total{{{NS}}}{RI}))", "{{outcome}}")],
            "ops",
        ),
        Panel(
            "Routing fallbacks by reason",
            "Turns or orders that fell back from the cache path (node_failed, advice_rerouted, kv_recomputed, prepare_failed).",
            [(f"sum by (reason) (rate(symphony_routing_fallbacks_total{{{NS}}}{RI}))", "{{reason}}")],
            "ops",
        ),
        Panel(
            "Routing decisions by reason",
            "Where the policy sent turns and why.",
            [
                (
                    f"sum by (policy, reason) (rate(symphony_routing_decisions_total{{{NS}}}{RI}))",
                    "{{policy}} {{reason}}",
                )
            ],
            "ops",
        ),
        Panel(
            "Prepare orders by source",
            "K,V promotions started by advisories: local tier, peer node, or recompute warm-up.",
            [(f"sum by (source) (rate(symphony_prepares_total{{{NODE}}}{RI}))", "{{source}}")],
            "ops",
        ),
        Panel(
            "K,V transfers by tier pair",
            "Transfers/s between tiers and nodes (src -> dst).",
            [(f"sum by (src, dst) (rate(symphony_kv_transfers_total{{{NS}}}{RI}))", "{{src}} -> {{dst}}")],
            "ops",
        ),
        Panel(
            "K,V bytes moved by tier pair",
            "Bytes/s of K,V moved between tiers and nodes.",
            [
                (
                    f"sum by (src, dst) (rate(symphony_kv_transfer_bytes_total{{{NS}}}{RI}))",
                    "{{src}} -> {{dst}}",
                )
            ],
            "Bps",
        ),
        Panel(
            "K,V transfer time p95 by tier pair",
            "How long a transfer takes (compare with advisory ETAs: 6-11 s).",
            quantiles("symphony_kv_transfer_seconds", "src, dst", (0.95,)),
            "s",
        ),
        Panel(
            "Tier usage per node",
            "Bytes of K,V held on each tier of each node.",
            [(f"sum by (node, tier) (symphony_kv_tier_used_bytes{{{NODE}}})", "{{node}} {{tier}}")],
            "bytes",
        ),
        Panel(
            "Tier fill per node",
            "Used over capacity of each tier.",
            [
                (
                    f"sum by (node, tier) (symphony_kv_tier_used_bytes{{{NODE}}}) / "
                    f"sum by (node, tier) (symphony_kv_tier_capacity_bytes{{{NODE}}})",
                    "{{node}} {{tier}}",
                )
            ],
            "percentunit",
        ),
    ]
    return render(
        "symphony-kv-cache",
        "Symphony / K,V cache",
        "Is the cache path working: hit ratio by tier, advisory outcomes, fallbacks, transfers, tier usage.",
        panels,
        variables(node=True, slo=False),
    )


def nodes() -> dict[str, Any]:
    panels = [
        Panel(
            "Healthy nodes",
            "Nodes with a live lease at the scheduler.",
            [(f"sum(symphony_nodes_healthy{{{NS}}})", "nodes")],
            "short",
            "stat",
            6,
            4,
        ),
        Panel(
            "Turn retries/s",
            "Turns retried on another node after a failure before the first token.",
            [(f"sum(rate(symphony_turn_retries_total{{{NS}}}{RI}))", "retries/s")],
            "ops",
            "stat",
            6,
            4,
        ),
        Panel(
            "Requests running (all nodes)",
            "The engines' running batches together.",
            [(f"sum(symphony_engine_requests_running{{{NODE}}})", "running")],
            "short",
            "stat",
            6,
            4,
        ),
        Panel(
            "Requests waiting (all nodes)",
            "Requests queued at the engines together.",
            [(f"sum(symphony_engine_requests_waiting{{{NODE}}})", "waiting")],
            "short",
            "stat",
            6,
            4,
        ),
        Panel(
            "Node load (scheduler view)",
            "Running plus waiting requests per node as the scheduler sees it (reports + its own routing).",
            [(f"max by (node) (symphony_node_load{{{NODE}}})", "{{node}}")],
            "short",
        ),
        Panel(
            "Engine queue per node",
            "Running and waiting requests reported by each engine (vLLM: vllm:num_requests_running / waiting).",
            [
                (f"sum by (node) (symphony_engine_requests_running{{{NODE}}})", "{{node}} running"),
                (f"sum by (node) (symphony_engine_requests_waiting{{{NODE}}})", "{{node}} waiting"),
            ],
            "short",
        ),
        Panel(
            "Engine GPU K,V usage",
            "Fraction of the engine's K,V blocks in use (vLLM: vllm:kv_cache_usage_perc).",
            [(f"max by (node) (symphony_engine_kv_usage_ratio{{{NODE}}})", "{{node}}")],
            "percentunit",
        ),
        Panel(
            "Prompt tokens recomputed per node",
            "Tokens/s each engine prefilled because they were not cached.",
            [(f"sum by (node) (rate(symphony_recomputed_prompt_tokens_total{{{NODE}}}{RI}))", "{{node}}")],
            "short",
        ),
        Panel(
            "K,V tier usage per node",
            "Bytes held per tier.",
            [(f"sum by (node, tier) (symphony_kv_tier_used_bytes{{{NODE}}})", "{{node}} {{tier}}")],
            "bytes",
        ),
        Panel(
            "Prepare orders per node",
            "Advisory-driven K,V promotions each node started.",
            [(f"sum by (node) (rate(symphony_prepares_total{{{NODE}}}{RI}))", "{{node}}")],
            "ops",
        ),
    ]
    return render(
        "symphony-nodes",
        "Symphony / Nodes",
        "Per-node load, engine queues and K,V usage (the engine series re-exported by each node scheduler).",
        panels,
        variables(node=True, slo=False),
    )


DASHBOARDS = {"overview.json": overview, "kv-cache.json": kv_cache, "nodes.json": nodes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if the committed files are stale")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2) + "\n"
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(
            f"stale dashboards: {', '.join(stale)}: run python e2e/observability/dashboards.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
