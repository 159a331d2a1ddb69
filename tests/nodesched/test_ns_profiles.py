from pathlib import Path

import pytest

from symphony.errors import InvalidArgument
from symphony_nodesched import validate
from symphony_nodesched.costmodel import CostModel
from symphony_nodesched.profile import load_profile, load_profile_file, profile_names

CONTRACT_PROFILES = {
    "a100-80gb/llama-3.1-8b",
    "h100-80gb/llama-3.1-8b",
    "h200/llama-3.1-8b",
    "a100-80gb/llama-2-13b",
    "cpu-tiny/test",
}


def test_every_contract_profile_ships_and_loads() -> None:
    assert set(profile_names()) >= CONTRACT_PROFILES
    for name in profile_names():
        p = load_profile(name)
        assert p.name == name
        assert p.kv_bytes_per_token % p.num_layers == 0  # whole bytes per layer


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match="cpu-tiny/test"):
        load_profile("tpu/llama")


def test_unknown_profile_key_is_rejected(tmp_path: Path) -> None:
    src = Path(str(validate.__file__)).parent / "profiles" / "cpu-tiny__test.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(src.read_text() + "gpu_kv_tokns: 5\n")
    with pytest.raises(InvalidArgument, match="gpu_kv_tokns"):
        load_profile_file(bad)


@pytest.mark.parametrize("point", validate.POINTS, ids=lambda p: p.name)
def test_sim_reproduces_calibration_within_ten_percent(point: validate.Point) -> None:
    measured = point.measure(load_profile(validate.H100_8B))
    assert abs(validate.error(measured, point.published)) <= validate.TOLERANCE, measured


def test_validate_report_passes_and_prints_a_row_per_point(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == len(validate.POINTS)
    assert "FAIL" not in out


def test_loading_kv_beats_recomputing_it_as_calibrated() -> None:
    # CALIBRATION.md: 8K tokens of Llama-3.1-8B, H100 ≈ 35 ms to load vs ≈ 215 ms to recompute.
    p = load_profile(validate.H100_8B)
    load_s = 8192 * p.kv_bytes_per_token / (p.host_link_gbps * 1e9)
    recompute_s = CostModel(p).prefill_s(8192)
    assert 0.9 * 0.0228 < load_s < 1.1 * 0.0228
    assert 4 < recompute_s / load_s < 12


def test_tiny_profile_is_fast() -> None:
    # A few-hundred-token turn must take milliseconds of modelled time, so live tests stay quick.
    cost = CostModel(load_profile("cpu-tiny/test"))
    assert cost.prefill_s(400) + 100 * cost.step_s([], [500]) < 0.02


def test_a_host_tier_hit_is_several_times_faster_than_prefilling_again() -> None:
    # CALIBRATION.md, H100: 10K tokens from the CPU tier ≈ 40 ms against ≈ 260 ms of prefill.
    p = load_profile(validate.H100_8B)
    host, cold = validate.host_hit_ttft_s(p, 10_000), validate.ttft_s(p, 10_000)
    assert 5 < cold / host < 10
