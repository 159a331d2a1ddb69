"""Per-turn records and their exact definitions; the summary every report prints.

All times are seconds on the generator's monotonic clock, measured from the start of the run.

* ``lateness = sent - planned``: how late the generator sent a turn against its user model.
* ``ttft = first_token - sent``: the first non-empty delta received (callback mode: the server's
  ``first_token_s``, since the client only sees the complete answer).
* ``e2e = finished - sent``: until the last byte of the turn (the summary / final chunk).
* ``tpot = (e2e - ttft) / (output_tokens - 1)``: undefined for one-token answers.
* ``itl``: the gaps between consecutive deltas received (the first delta excluded).
* ``normalized = e2e / output_tokens`` (the SYMPHONY paper's metric).
* ``output_tokens``: the server's count when it reports one, else the sum of delta token counts.
* ``goodput``: turns per second (of the measured window) that met every SLO given
  (``ttft <= --slo-ttft`` and ``tpot <= --slo-tpot``).

Percentiles are linear-interpolated (numpy's default) over the turns of the measured window: turns
sent after ``--warmup`` that did not fail.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass
class TurnRecord:
    session_id: str
    session_number: int
    turn_index: int
    is_last: bool
    planned: float
    sent: float = float("nan")
    first_token: float = float("nan")
    finished: float = float("nan")
    prompt_chars: int = 0
    answer_chars: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int | None = None
    itl: list[float] = field(default_factory=list)
    attempts: int = 0
    node_id: str = ""
    route_reason: str = ""
    error: str = ""  # empty when the turn succeeded
    cancelled: bool = False  # stopped by Ctrl+C before it finished
    advised: bool = False
    warmup: bool = False

    @property
    def ok(self) -> bool:
        return not self.error and not self.cancelled and self.finished == self.finished

    @property
    def lateness(self) -> float:
        return self.sent - self.planned

    @property
    def ttft(self) -> float:
        return self.first_token - self.sent

    @property
    def e2e(self) -> float:
        return self.finished - self.sent

    @property
    def tpot(self) -> float | None:
        if self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    @property
    def normalized(self) -> float | None:
        return self.e2e / self.output_tokens if self.output_tokens else None

    def as_row(self) -> dict[str, Any]:
        """The flat per-turn record written to turns.jsonl / turns.csv."""
        row = asdict(self)
        row.pop("itl")
        row["itl_mean"] = float(np.mean(self.itl)) if self.itl else None
        row["itl_max"] = max(self.itl) if self.itl else None
        row.update(
            ok=self.ok,
            lateness=_num(self.lateness),
            ttft=_num(self.ttft) if self.ok else None,
            tpot=self.tpot if self.ok else None,
            e2e=_num(self.e2e) if self.ok else None,
            normalized=self.normalized if self.ok else None,
        )
        for key in ("sent", "first_token", "finished"):
            row[key] = _num(row[key])
        return row


def _num(x: float) -> float | None:
    return None if x != x else x


@dataclass(frozen=True)
class Slo:
    ttft_s: float | None = None
    tpot_s: float | None = None

    def met(self, r: TurnRecord) -> bool:
        if self.ttft_s is not None and not r.ttft <= self.ttft_s:
            return False
        tpot = r.tpot
        return self.tpot_s is None or tpot is None or tpot <= self.tpot_s


def stats(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, mean and p50/p90/p99 of a sample (None when empty)."""
    if not values:
        return {"count": 0, "mean": None, **{f"p{p}": None for p in PERCENTILES}}
    arr = np.asarray(values, dtype=float)
    pct = np.percentile(arr, PERCENTILES)
    return {
        "count": len(values),
        "mean": float(arr.mean()),
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
    }


def latency_stats(records: Sequence[TurnRecord]) -> dict[str, dict[str, float | int | None]]:
    ok = [r for r in records if r.ok]
    return {
        "ttft": stats([r.ttft for r in ok]),
        "tpot": stats([t for r in ok if (t := r.tpot) is not None]),
        "itl": stats([g for r in ok for g in r.itl]),
        "e2e": stats([r.e2e for r in ok]),
        "normalized": stats([n for r in ok if (n := r.normalized) is not None]),
    }


def summarize(
    records: Iterable[TurnRecord],
    slo: Slo,
    window_s: float,
    sessions_started: int,
    sessions_finished: int,
) -> dict[str, Any]:
    """The summary JSON (schema in docs/workloadgen.md)."""
    all_records = list(records)
    measured = [r for r in all_records if not r.warmup]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if r.error]
    cancelled = [r for r in measured if r.cancelled]
    by_turn: dict[int, list[TurnRecord]] = defaultdict(list)
    for r in measured:
        by_turn[r.turn_index].append(r)
    good = [r for r in ok if slo.met(r)]
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    reported = [r for r in ok if r.cached_tokens is not None]
    window = max(window_s, 1e-9)
    sent = [r for r in measured if r.sent == r.sent]
    return {
        "turns": {
            "total": len(measured),
            "ok": len(ok),
            "failed": len(failed),
            "cancelled": len(cancelled),
            "warmup_excluded": len(all_records) - len(measured),
            "retried": sum(1 for r in measured if r.attempts > 1),
            "advised": sum(1 for r in measured if r.advised),
        },
        "sessions": {"started": sessions_started, "finished": sessions_finished},
        "window_s": window_s,
        "throughput": {
            "turns_per_s": len(ok) / window,
            "output_tokens_per_s": sum(r.output_tokens for r in ok) / window,
            "goodput_turns_per_s": len(good) / window,
            "slo_attainment": len(good) / len(ok) if ok else None,
        },
        "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s},
        "latency": latency_stats(measured),
        "lateness": stats([r.lateness for r in sent]),
        "cache": {
            "prompt_tokens": prompt_tokens,
            "cached_tokens": sum(r.cached_tokens or 0 for r in reported),
            "cached_ratio": (
                sum(r.cached_tokens or 0 for r in reported) / max(1, sum(r.prompt_tokens for r in reported))
                if reported
                else None
            ),
            "turns_reporting": len(reported),
        },
        "by_turn": {
            str(i): {"turns": len(rs), "failed": sum(1 for r in rs if r.error), **latency_stats(rs)}
            for i, rs in sorted(by_turn.items())
        },
        "errors": _error_counts(failed),
    }


def _error_counts(failed: Sequence[TurnRecord]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in failed:
        counts[r.error.split(":", 1)[0]] += 1
    return dict(sorted(counts.items()))
