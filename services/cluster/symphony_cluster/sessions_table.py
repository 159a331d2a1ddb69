"""The per-session view `symphony run` prints at the end: every session and its turns' latency."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def session_table(turns_jsonl: Path, max_turn_columns: int = 6) -> str:
    """One line per session: its turns' TTFT and E2E in ms (``x`` marks a failed turn)."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in turns_jsonl.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[r["session_id"]].append(r)
    if not rows:
        return "no turns were sent\n"
    lines = [f"{'session':<20} {'turns':>5}  TTFT/E2E per turn (ms)"]
    for sid, turns in sorted(rows.items(), key=lambda kv: kv[1][0]["session_number"]):
        turns.sort(key=lambda r: r["turn_index"])
        cells = [
            f"{r['ttft'] * 1000:.0f}/{r['e2e'] * 1000:.0f}" if r["ok"] else "x"
            for r in turns[:max_turn_columns]
        ]
        more = f" +{len(turns) - max_turn_columns}" if len(turns) > max_turn_columns else ""
        lines.append(f"{sid:<20} {len(turns):>5}  " + "  ".join(cells) + more)
    return "\n".join(lines) + "\n"
