"""Exact metric definitions and the report files, on hand-built records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from symphony_workloadgen.metrics import Slo, TurnRecord, summarize
from symphony_workloadgen.report import table, write_outputs


def rec(turn: int, sent: float, first: float, done: float, tokens: int, **kw: object) -> TurnRecord:
    r = TurnRecord(
        f"s{turn}", 0, turn, False, planned=sent - 0.002, sent=sent, first_token=first, finished=done
    )
    r.output_tokens = tokens
    r.itl = [0.01] * max(0, tokens - 1)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_definitions() -> None:
    r = rec(0, sent=10.0, first=10.5, done=12.5, tokens=5)
    assert r.ttft == pytest.approx(0.5)
    assert r.e2e == pytest.approx(2.5)
    assert r.tpot == pytest.approx((2.5 - 0.5) / 4)
    assert r.normalized == pytest.approx(2.5 / 5)
    assert r.lateness == pytest.approx(0.002)
    assert rec(0, 0.0, 0.1, 0.1, tokens=1).tpot is None


def test_summary_goodput_warmup_cache_and_per_turn() -> None:
    records = [
        rec(0, 1.0, 1.1, 2.0, 10, prompt_tokens=100, cached_tokens=0),
        rec(1, 2.0, 2.5, 3.0, 10, prompt_tokens=200, cached_tokens=150),
        rec(1, 3.0, 3.05, 3.2, 10, prompt_tokens=100, cached_tokens=50),
        rec(0, 0.1, 0.2, 0.3, 10, warmup=True),
        rec(0, 4.0, 4.1, 4.2, 10, error="UNAVAILABLE: down"),
    ]
    s = summarize(records, Slo(ttft_s=0.2), window_s=10.0, sessions_started=3, sessions_finished=1)
    assert s["turns"] == {
        "total": 4, "ok": 3, "failed": 1, "cancelled": 0, "warmup_excluded": 1, "retried": 0, "advised": 0
    }  # fmt: skip
    assert s["throughput"]["turns_per_s"] == pytest.approx(0.3)
    assert s["throughput"]["goodput_turns_per_s"] == pytest.approx(0.2)  # the 0.5 s TTFT misses the SLO
    assert s["cache"]["cached_ratio"] == pytest.approx(200 / 400)
    assert s["latency"]["ttft"]["p50"] == pytest.approx(0.1)
    assert s["by_turn"]["1"]["turns"] == 2 and s["by_turn"]["1"]["ttft"]["mean"] == pytest.approx(0.275)
    assert s["errors"] == {"UNAVAILABLE": 1}
    text = table(s)
    assert "3 ok, 1 failed" in text and "UNAVAILABLE x1" in text and "50.0%" in text


def test_outputs(tmp_path: Path) -> None:
    records = [rec(0, 1.0, 1.1, 2.0, 10), rec(1, 2.0, 2.5, 3.0, 3)]
    s = summarize(records, Slo(), window_s=5.0, sessions_started=1, sessions_finished=0)
    files = write_outputs(tmp_path, records, s, plots=False)
    assert [f.name for f in files] == ["turns.jsonl", "turns.csv", "summary.json"]
    rows = [json.loads(x) for x in (tmp_path / "turns.jsonl").read_text().splitlines()]
    assert rows[1]["ttft"] == pytest.approx(0.5) and rows[1]["tpot"] == pytest.approx(0.25)
    with (tmp_path / "turns.csv").open() as f:
        assert [r["turn_index"] for r in csv.DictReader(f)] == ["0", "1"]
    assert json.loads((tmp_path / "summary.json").read_text())["schema_version"] == 1
