"""The figures of one simulated scenario, with the definitions the report states.

* throughput: turns finished per second of the measured window (after warm-up);
* TTFT, TPOT, normalized latency (E2E per output token, the paper's metric): percentiles over the
  measured turns, with the workload generator's exact definitions (``symphony_workloadgen.metrics``);
* cached-token ratio by tier: prompt tokens served from each tier / all prompt tokens;
* load imbalance: max / median of the nodes' running+waiting requests, sampled every heartbeat and
  averaged over the measured window;
* meets_slo: p99 TTFT <= ``slo.ttft_p99_s`` and p50 normalized latency <= ``slo.norm_p50_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from symphony_cluster.sim.vcluster import SYSTEM_TIERS, SimOutcome
from symphony_workloadgen.metrics import Slo, summarize


@dataclass(frozen=True)
class SloTarget:
    ttft_p99_s: float = 2.0
    norm_p50_s: float = 0.025


def figures(outcome: SimOutcome, slo: SloTarget) -> dict[str, Any]:
    sc = outcome.scenario
    window = max(sc.duration_s - sc.warmup_s, 1e-9)
    summ = summarize(
        outcome.records, Slo(ttft_s=None), window, outcome.sessions_started, outcome.sessions_finished
    )
    lat = summ["latency"]
    prompt = summ["cache"]["prompt_tokens"]
    ttft_p99, norm_p50 = lat["ttft"]["p99"], lat["normalized"]["p50"]
    meets = (
        ttft_p99 is not None
        and norm_p50 is not None
        and ttft_p99 <= slo.ttft_p99_s
        and norm_p50 <= slo.norm_p50_s
    )
    samples = outcome.imbalance_samples
    return {
        "policy": sc.policy,
        "users": sc.users,
        "nodes": sc.nodes,
        "profile": sc.profile.name,
        "tiers": SYSTEM_TIERS.get(sc.policy, "gpu+host+disk") if sc.tiers == "auto" else sc.tiers,
        "turns": summ["turns"]["ok"],
        "turns_per_s": summ["throughput"]["turns_per_s"],
        "ttft_p50_s": lat["ttft"]["p50"],
        "ttft_p99_s": ttft_p99,
        "tpot_p50_s": lat["tpot"]["p50"],
        "tpot_p99_s": lat["tpot"]["p99"],
        "norm_p50_s": norm_p50,
        "norm_p99_s": lat["normalized"]["p99"],
        "cached_ratio": summ["cache"]["cached_ratio"],
        "cached_ratio_by_tier": {t: n / prompt for t, n in sorted(outcome.cached_by_tier.items())}
        if prompt
        else {},
        "recomputed_tokens": outcome.recomputed_tokens,
        "kv_bytes_moved": dict(sorted(outcome.transfer_bytes.items())),
        "imbalance": sum(samples) / len(samples) if samples else None,
        "route_reasons": dict(sorted(outcome.route_reasons.items())),
        "advisories": dict(sorted(outcome.advice_outcomes.items())),
        "sessions_cut_by_context": outcome.sessions_cut_by_context,
        "ttft_by_turn_p50_s": {k: v["ttft"]["p50"] for k, v in summ["by_turn"].items()},
        "meets_slo": meets,
    }
