import json
from pathlib import Path

from symphony_cluster.sessions_table import session_table


def _row(sid: str, n: int, turn: int, ok: bool = True) -> dict[str, object]:
    return {"session_id": sid, "session_number": n, "turn_index": turn, "ok": ok, "ttft": 0.02, "e2e": 0.5}


def test_every_session_gets_a_line_in_start_order(tmp_path: Path) -> None:
    p = tmp_path / "turns.jsonl"
    rows = [_row("b", 1, 0), _row("a", 0, 1), _row("a", 0, 0), _row("b", 1, 1, ok=False)]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    lines = session_table(p).splitlines()
    assert lines[1].split()[:4] == ["a", "2", "20/500", "20/500"]
    assert lines[2].split()[:4] == ["b", "2", "20/500", "x"]


def test_empty_run_says_so(tmp_path: Path) -> None:
    p = tmp_path / "turns.jsonl"
    p.write_text("")
    assert session_table(p) == "no turns were sent\n"
