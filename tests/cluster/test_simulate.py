"""The virtual-time cluster: seeded, faithful to the generator's user model, and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from symphony_cluster.cli import main
from symphony_cluster.sim.figures import SloTarget, figures
from symphony_cluster.sim.sweep import capacity
from symphony_cluster.sim.vcluster import Scenario, VirtualCluster, node_profile
from symphony_nodesched.profile import load_profile
from symphony_workloadgen.dataset import load
from symphony_workloadgen.session import UserModel

PROFILE = load_profile("a100-80gb/llama-3.1-8b")
CONVERSATIONS = load("synthetic", seed=3).conversations


def _scenario(policy: str = "symphony", users: int = 12, **kw: object) -> Scenario:
    base: dict[str, object] = {
        "profile": PROFILE,
        "policy": policy,
        "users": users,
        "conversations": CONVERSATIONS,
        "user_model": UserModel(time_scale=5.0),
        "nodes": 3,
        "duration_s": 60.0,
        "warmup_s": 10.0,
        "seed": 3,
    }
    base.update(kw)
    return Scenario(**base)  # type: ignore[arg-type]


def test_same_seed_same_figures() -> None:
    a = figures(VirtualCluster(_scenario()).run(), SloTarget())
    b = figures(VirtualCluster(_scenario()).run(), SloTarget())
    assert a == b
    assert a["turns"] > 20


def test_exactly_users_sessions_stay_active_and_later_turns_hit_the_cache() -> None:
    out = VirtualCluster(_scenario(users=9)).run()
    assert out.sessions_started - out.sessions_finished == 9
    later = [r for r in out.records if r.turn_index > 0 and r.ok]
    assert later and all((r.cached_tokens or 0) > 0 for r in later)
    assert out.advice_outcomes["used"] > 0


def test_turns_follow_the_user_model() -> None:
    """Turn 0 goes out after the typing time; turn i after reading the answer and typing."""
    out = VirtualCluster(_scenario(users=4, warmup_s=0.0)).run()
    by_key = {(r.session_number, r.turn_index): r for r in out.records}
    first = by_key[(0, 0)]
    assert first.sent == pytest.approx(first.planned)
    second = by_key.get((0, 1))
    assert second is not None and second.sent >= first.finished


def test_plain_vllm_baselines_have_no_host_or_disk_tier() -> None:
    rr = node_profile(PROFILE, "auto", "round_robin")
    assert (rr.host_kv_bytes, rr.disk_kv_bytes) == (0, 0)
    sticky = node_profile(PROFILE, "auto", "sticky")
    assert sticky.host_kv_bytes > 0 and sticky.disk_kv_bytes == 0
    assert node_profile(PROFILE, "auto", "symphony") == PROFILE
    with pytest.raises(ValueError, match="unknown tiers"):
        node_profile(PROFILE, "tape", "symphony")


def test_capacity_stops_at_the_first_miss() -> None:
    rows = [
        {"policy": "a", "users": 64, "meets_slo": True},
        {"policy": "a", "users": 128, "meets_slo": False},
        {"policy": "a", "users": 256, "meets_slo": True},
        {"policy": "b", "users": 64, "meets_slo": False},
    ]
    assert capacity(rows) == {"a": 64, "b": None}


def test_cli_writes_table_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "simulate",
            "--dataset",
            "synthetic",
            "--users",
            "4,8",
            "--policies",
            "round_robin,symphony",
            "--nodes",
            "2",
            "--duration",
            "40",
            "--warmup",
            "5",
            "--jobs",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| round_robin | gpu | 4 |" in printed and "| symphony | gpu+host+disk | 8 |" in printed
    data = json.loads((tmp_path / "results.json").read_text())
    assert {(r["policy"], r["users"]) for r in data["rows"]} == {
        ("round_robin", 4),
        ("round_robin", 8),
        ("symphony", 4),
        ("symphony", 8),
    }
    assert (tmp_path / "latency.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--duration", "10", "--warmup", "20"], "--duration: must exceed --warmup"),
        (["--profile", "tpu/none"], "unknown profile"),
        (["--dataset", "/nonexistent.json"], "nonexistent.json"),
    ],
)
def test_cli_bad_input_is_a_clear_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_an_unknown_policy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--policies", "fastest"])
    assert exc.value.code == 2
    assert "unknown policy" in capsys.readouterr().err


def test_capacity_table_marks_lower_bounds() -> None:
    from symphony_cluster.sim.report import capacity_table

    rows = [
        {"policy": "round_robin", "users": 64, "meets_slo": True},
        {"policy": "round_robin", "users": 128, "meets_slo": False},
        {"policy": "symphony", "users": 64, "meets_slo": True},
        {"policy": "symphony", "users": 128, "meets_slo": True},
    ]
    table = capacity_table(rows)
    assert "| round_robin | 64 | 1.00× |" in table
    assert "| symphony | ≥ 128 | ≥ 2.00× |" in table
