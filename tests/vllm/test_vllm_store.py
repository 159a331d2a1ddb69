"""The connector's tier store: host memory over disk, sessions, peer export/import."""

from __future__ import annotations

from pathlib import Path

import pytest

from symphony_vllm.store import TierStore

LAYERS = 3


def make(tmp: Path, **kw: int) -> TierStore:
    return TierStore(tmp, num_layers=LAYERS, block_size=4, **kw)


def fill(store: TierStore, keys: list[str], size: int = 100) -> None:
    for k in keys:
        for layer in range(LAYERS):
            store.put_layer(k, layer, bytes([len(k) % 256, layer]) * (size // 2))


def test_a_block_is_loadable_only_once_every_layer_is_stored(tmp_path: Path) -> None:
    s = make(tmp_path)
    s.put_layer("k0", 0, b"a")
    s.put_layer("k0", 1, b"b")
    assert not s.has_block("k0")
    s.put_layer("k0", 2, b"c")
    assert s.has_block("k0")
    assert s.get_layer("k0", 1) == b"b"


def test_held_prefix_stops_at_the_first_missing_block(tmp_path: Path) -> None:
    s = make(tmp_path)
    fill(s, ["a", "b", "d"])
    assert s.held_prefix(["a", "b", "c", "d"]) == 2
    assert s.held_prefix(["x", "a"]) == 0


def test_another_process_sees_what_was_stored(tmp_path: Path) -> None:
    fill(make(tmp_path), ["a", "b"])
    other = make(tmp_path, host_capacity_bytes=0)  # the engine's scheduler side
    assert other.held_prefix(["a", "b"]) == 2
    assert other.get_layer("b", 2) == make(tmp_path).get_layer("b", 2)


def test_host_memory_is_bounded_and_misses_fall_back_to_disk(tmp_path: Path) -> None:
    s = make(tmp_path, host_capacity_bytes=250)
    fill(s, ["a", "b"], size=100)
    assert s.stats().host_used_bytes <= 250
    assert not s.in_host("a")  # evicted first (least recently used)
    assert s.get_layer("a", 0) == bytes([1, 0]) * 50  # still served, from disk


def test_demote_frees_host_memory_and_prefetch_brings_it_back(tmp_path: Path) -> None:
    s = make(tmp_path)
    fill(s, ["a", "b"])
    s.record_session("s1", ["a", "b"])
    assert s.session_info("s1").tier == "host"
    assert s.demote("s1") == 2 * LAYERS * 100
    info = s.session_info("s1")
    assert (info.tier, info.tokens, info.host_blocks) == ("disk", 8, 0)
    assert s.held_prefix(["a", "b"]) == 2  # demoted, not lost
    assert s.prefetch("s1") == 2 * LAYERS * 100
    assert s.session_info("s1").tier == "host"


def test_a_session_only_counts_blocks_that_are_held(tmp_path: Path) -> None:
    s = make(tmp_path)
    fill(s, ["a"])
    s.record_session("s1", ["a", "b"])
    assert s.session_keys("s1") == ["a"]


def test_a_late_shorter_record_never_shrinks_a_session(tmp_path: Path) -> None:
    s = make(tmp_path)
    fill(s, ["a", "b", "c"])
    s.record_session("s1", ["a", "b", "c"])
    s.record_session("s1", ["a"])
    assert s.session_keys("s1") == ["a", "b", "c"]


def test_delete_keeps_blocks_another_session_shares(tmp_path: Path) -> None:
    s = make(tmp_path)
    fill(s, ["sys", "x", "y"])
    s.record_session("s1", ["sys", "x"])
    s.record_session("s2", ["sys", "y"])
    freed = s.delete("s1")
    assert freed == LAYERS * 100  # only "x"
    assert s.has_block("sys") and not s.has_block("x")
    assert [i.session_id for i in s.sessions()] == ["s2"]
    with pytest.raises(KeyError):
        s.delete("s1")


def test_the_disk_evicts_least_recently_used_sessions(tmp_path: Path) -> None:
    s = make(tmp_path, disk_capacity_bytes=2 * LAYERS * 100)
    fill(s, ["a"])
    s.record_session("old", ["a"])
    fill(s, ["b"])
    s.record_session("mid", ["b"])
    fill(s, ["c"])
    s.record_session("new", ["c"])
    assert [i.session_id for i in s.sessions()] == ["mid", "new"]
    assert s.stats().disk_used_bytes <= 2 * LAYERS * 100


def test_export_and_import_move_a_session_between_nodes(tmp_path: Path) -> None:
    src, dst = make(tmp_path / "a"), make(tmp_path / "b")
    fill(src, ["a", "b"])
    src.record_session("s1", ["a", "b"])
    for layer in range(LAYERS):
        assert not dst.has_block("a")
        dst.import_layer(src.export_layer("s1", layer))
    assert dst.session_keys("s1") == ["a", "b"]
    assert dst.get_layer("b", 2) == src.get_layer("b", 2)
    assert dst.session_info("s1").tokens == 8


def test_a_layer_can_be_exported_in_chunks_that_import_in_any_order(tmp_path: Path) -> None:
    src, dst = make(tmp_path / "a"), make(tmp_path / "b")
    fill(src, ["a", "b", "c"])
    src.record_session("s1", ["a", "b", "c"])
    frames = [src.export_layer("s1", layer, first, 2) for layer in range(LAYERS) for first in (2, 0)]
    for i, frame in enumerate(frames):
        dst.import_layer(frame)
        if i < len(frames) - 1:
            assert dst.held_prefix(["a", "b", "c"]) < 3
    assert dst.session_keys("s1") == ["a", "b", "c"]
    assert dst.get_layer("c", 1) == src.get_layer("c", 1)


def test_import_rejects_another_geometry_and_garbage(tmp_path: Path) -> None:
    src = TierStore(tmp_path / "a", num_layers=LAYERS, block_size=16)
    fill(src, ["a"])
    src.record_session("s1", ["a"])
    dst = make(tmp_path / "b")
    with pytest.raises(ValueError, match="block_size=16"):
        dst.import_layer(src.export_layer("s1", 0))
    with pytest.raises(ValueError, match="magic"):
        dst.import_layer(b"hello")
    assert dst.sessions() == [] and dst.stats().blocks == 0


def test_bad_layer_numbers_are_refused(tmp_path: Path) -> None:
    s = make(tmp_path)
    with pytest.raises(ValueError, match="layer 3"):
        s.put_layer("a", 3, b"x")


def test_the_footprint_per_token_is_learnt_from_a_block(tmp_path: Path) -> None:
    s = make(tmp_path)
    assert s.kv_bytes_per_token() == 0
    fill(s, ["a"], size=64)
    assert s.kv_bytes_per_token() == 64 * LAYERS // 4


def test_the_pure_modules_import_without_torch_or_vllm() -> None:
    """The node scheduler's image and the dev venv use them without vLLM's dependencies."""
    import subprocess
    import sys

    code = (
        "import sys, symphony_vllm, symphony_vllm.control;"
        "bad = [m for m in ('torch', 'vllm') if m in sys.modules];"
        "missing = [n for n in symphony_vllm.__all__ if not hasattr(symphony_vllm, n)];"
        "sys.exit(f'imported {bad}, missing {missing}' if bad or missing else 0)"
    )
    pkg = str(Path(__file__).resolve().parents[2] / "vllm")
    proc = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": pkg}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
