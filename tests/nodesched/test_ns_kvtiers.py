"""The K,V tier manager: LRU demotion, write-behind, layer-wise promotion, cooperative reclaim."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symphony_nodesched.events import TransferDone
from symphony_nodesched.kvtiers import COPY, DISK, GPU, HOST, NO_COPY, Entry, TierManager
from symphony_nodesched.profile import load_profile

TINY = load_profile("cpu-tiny/test")  # 4 layers, 1024 GPU blocks of 16 tokens


def idle_entry(tiers: TierManager, key: str, tokens: int, now: float = 0.0) -> Entry:
    """An entry as a finished turn leaves it: on the GPU, unpinned, write-behind queued."""
    e = tiers.acquire(key)
    assert tiers.grow(e, tokens, now)
    tiers.unpin(e, now, keep=True)
    return e


def test_pressure_demotes_the_least_recently_used_session_top_layers_first() -> None:
    tiers = TierManager(TINY)
    a = idle_entry(tiers, "a", 4096)
    b = idle_entry(tiers, "b", 4096)
    c = tiers.acquire("c")
    assert tiers.grow(c, 9216, 0.0)  # 64 blocks more than is free: one layer of "a" must go
    assert a.layers == [GPU, GPU, GPU, HOST]
    assert b.layers == [GPU] * 4
    assert c.on_gpu() and c.pinned
    tiers.check_invariants()
    moved = tiers.advance(1.0)
    assert any(d.src == "gpu" and d.dst == "host" and d.session_id == "a" for d in moved)


def test_write_behind_copy_makes_demotion_free() -> None:
    tiers = TierManager(TINY.model_copy(update={"host_kv_bytes": 0}))  # no host tier: disk or nothing
    a = idle_entry(tiers, "a", 4096)
    done = tiers.advance(10.0)  # let the background write-behind finish
    assert a.disk == COPY
    assert [(d.src, d.dst, d.session_id) for d in done] == [("gpu", "disk", "a")]
    assert done[0].nbytes == 4096 * TINY.kv_bytes_per_token
    b = idle_entry(tiers, "b", 4096)  # more recently used than "a"
    c = tiers.acquire("c")
    assert tiers.grow(c, 16384 - 4096 - 4096 + 1024, 10.0)
    assert a.layers == [GPU, GPU, GPU, DISK]  # LRU, and free: no copy made
    assert b.on_gpu()
    assert tiers.links["host"].active is None
    tiers.check_invariants()


def test_host_overflow_moves_copied_layers_to_disk_for_free() -> None:
    small_host = TINY.model_copy(update={"host_kv_bytes": 2048 * TINY.kv_bytes_per_token})
    tiers = TierManager(small_host)
    a = idle_entry(tiers, "a", 2048)
    tiers.advance(10.0)
    hog = tiers.acquire("hog")
    assert tiers.grow(hog, 16384, 10.0)  # "a" goes to host (a copy on the host link)
    tiers.unpin(hog, 10.0, keep=False)
    assert a.layers == [HOST] * 4 and a.disk == COPY
    b = idle_entry(tiers, "b", 2048, now=10.0)
    hog = tiers.acquire("hog")
    assert tiers.grow(hog, 16384, 10.0)  # "b" needs the host: "a" moves to its disk copy for free
    assert a.layers == [DISK] * 4
    assert b.layers == [HOST] * 4
    tiers.check_invariants()


def all_on_host(tiers: TierManager, *keys: str) -> list[Entry]:
    entries = [idle_entry(tiers, k, 2048) for k in keys]
    hog = tiers.acquire("hog")
    assert tiers.grow(hog, 16384, 0.0)  # takes the whole GPU: every idle layer leaves it
    tiers.unpin(hog, 0.0, keep=False)
    for e in entries:
        assert e.layers == [HOST] * 4
    return entries


def test_prepare_promotes_lower_layers_first_and_interleaves_sessions() -> None:
    tiers = TierManager(TINY)
    a, b = all_on_host(tiers, "a", "b")
    link = tiers.links["host"]
    while link.active is not None:  # drain the demotion copies
        tiers.advance(link.active.end)
    now = 1.0
    assert tiers.prepare_local(a, now) > 0
    assert tiers.prepare_local(b, now) > 0
    order: list[tuple[str, int]] = []
    while link.active is not None:
        order.append((link.active.key, link.active.layer))
        tiers.advance(link.active.end)
        if order[-1] == ("a", 0):
            assert a.layers == [GPU, HOST, HOST, HOST]  # the lowest layer lands first
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)]
    assert a.on_gpu() and b.on_gpu() and a.prepared and b.prepared
    tiers.check_invariants()


def test_prefetched_kv_yields_to_running_requests_but_not_to_other_prefetches() -> None:
    tiers = TierManager(TINY)
    (a,) = all_on_host(tiers, "a")
    tiers.advance(10.0)
    tiers.prepare_local(a, 10.0)
    tiers.advance(20.0)
    assert a.on_gpu() and a.prepared
    filler = tiers.acquire("filler")
    assert tiers.grow(filler, 16384 - 2048, 20.0)  # exactly fills the rest of the GPU
    tiers.unpin(filler, 20.0, keep=True)
    # Another Prepare may push out the idle, non-prepared filler but never the prepared "a".
    ready = tiers.prepare_remote("b", 2048, [], 20.0)
    assert ready > 0 and a.on_gpu()
    assert tiers.entries["filler"].gpu_layers() < 4
    # A running request takes what it needs, prefetched or not.
    run = tiers.acquire("run")
    assert tiers.grow(run, 16384, 20.0)
    assert a.gpu_layers() == 0 and run.on_gpu()
    tiers.check_invariants()


def test_release_prefetch_only_returns_a_local_prepare_to_its_tier() -> None:
    tiers = TierManager(TINY)
    (a,) = all_on_host(tiers, "a")
    tiers.advance(10.0)
    tiers.prepare_local(a, 10.0)
    tiers.advance(20.0)
    freed = tiers.release("a", prefetch_only=True, now=20.0)
    assert freed == 2048 * TINY.kv_bytes_per_token
    assert "a" in tiers.entries and a.gpu_layers() == 0
    assert tiers.release("a", prefetch_only=False, now=20.0) > 0
    assert "a" not in tiers.entries
    tiers.check_invariants()


def test_a_peer_fetch_is_reported_as_one_transfer() -> None:
    tiers = TierManager(TINY)
    tiers.prepare_remote("p", 1000, [], 0.0)
    done: list[TransferDone] = tiers.advance(1.0)
    assert [(d.src, d.dst) for d in done] == [("peer", "gpu")]
    blocks = -(-1000 // 16)
    assert done[0].nbytes == blocks * 16 * TINY.kv_bytes_per_token
    assert done[0].seconds == pytest.approx(done[0].nbytes / (TINY.network_gbps * 1e9))


SMALL = TINY.model_copy(
    update={"gpu_kv_tokens": 16 * 64, "host_kv_bytes": 16 * 1024 * 96, "disk_kv_bytes": 16 * 1024 * 160}
)
KEYS = st.sampled_from(["s0", "s1", "s2", "s3", "s4"])
OPS = st.one_of(
    st.tuples(st.just("run"), KEYS, st.integers(1, 700)),
    st.tuples(st.just("finish"), KEYS, st.booleans()),
    st.tuples(st.just("prepare"), KEYS, st.integers(0, 1)),
    st.tuples(st.just("peer"), KEYS, st.integers(1, 900)),
    st.tuples(st.just("release"), KEYS, st.booleans()),
    st.tuples(st.just("advance"), KEYS, st.integers(0, 3)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=60))
def test_invariants_hold_under_random_operations(ops: list[tuple[str, str, int]]) -> None:
    tiers = TierManager(SMALL)
    now = 0.0
    for op, key, arg in ops:
        # What running requests (pinned, fully on the GPU) hold before the operation.
        running = {k: (e.tokens, list(e.layers)) for k, e in tiers.entries.items() if e.pinned and e.on_gpu()}
        e = tiers.get(key)
        if op == "run":
            if e is None or not e.pinned:
                e = tiers.acquire(key)
                if not e.on_gpu() and not tiers.load(e, now):  # a hit off the GPU: load it first
                    tiers.truncate(e, 0)
            if e.on_gpu() and not e.inflight and not tiers.grow(e, max(e.tokens, arg), now):
                tiers.unpin(e, now, keep=True)
        elif op == "finish" and e is not None and e.pinned:
            tiers.unpin(e, now, keep=bool(arg))
        elif op == "prepare" and e is not None and e.tokens:
            tiers.prepare_local(e, now)
        elif op == "peer" and (e is None or not e.pinned):
            tiers.prepare_remote(key, arg, [], now)
        elif op == "release":
            tiers.release(key, prefetch_only=bool(arg), now=now)
        elif op == "advance":
            now += arg * 0.002  # long enough for write-behind copies to complete
            tiers.advance(now)
        tiers.check_invariants()
        for k, (tokens, layers) in running.items():
            if k == key and op in ("run", "finish"):
                continue  # the request itself may grow or end
            # Nothing else — another request, a prefetch, a release, time — takes its K,V.
            assert k in tiers.entries and tiers.entries[k].tokens == tokens
            assert tiers.entries[k].layers == layers
        for x in tiers.entries.values():
            assert x.tokens > 0 or x.pinned, "an absent session is still counted"


def test_preparing_what_is_already_on_the_gpu_leaves_nothing_to_release() -> None:
    tiers = TierManager(TINY)
    a = idle_entry(tiers, "a", 1024)
    assert tiers.prepare_local(a, 0.0) == 0.0
    assert not a.prepared
    assert tiers.release("a", prefetch_only=True, now=0.0) == 0
    assert a.on_gpu()


def test_without_host_and_disk_tiers_eviction_just_drops_like_plain_vllm() -> None:
    tiers = TierManager(TINY.model_copy(update={"host_kv_bytes": 0, "disk_kv_bytes": 0}))
    a = idle_entry(tiers, "a", 8192)
    b = idle_entry(tiers, "b", 4096)
    assert a.disk == NO_COPY and not tiers.advance(10.0)  # nowhere to write behind
    c = tiers.acquire("c")
    assert tiers.grow(c, 16384 - 4096, 10.0)
    assert "a" not in tiers.entries and b.on_gpu()
    assert tiers.used[HOST] == tiers.used[DISK] == 0
    tiers.check_invariants()
