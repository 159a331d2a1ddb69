"""The node's K,V tier manager: per-session entries on GPU / host / disk with per-layer residency.

No I/O and no clock: every method that moves time takes ``now``; the live node and the virtual-time
simulator drive the same object.

Model (the decisions, so the rest of the code can rely on them):

- Memory is counted in *block-layers*: one paged block (``block_size`` tokens) of one layer. An
  entry of ``tokens`` tokens occupies ``ceil(tokens / block_size)`` blocks on each layer.
- Each layer of an entry has one *fastest* tier: GPU, host, disk or (while a peer fetch is in
  flight) the peer. GPU and host are exclusive; the disk holds a full write-behind copy (or nothing),
  so a layer whose fastest tier is the disk is only there.
- Promotion (a Prepare, or a request that hits K,V off the GPU) reserves GPU space for the missing
  layers at once and copies them lowest layer first over the shared links (:mod:`links`); host
  layers travel the host link, disk layers the disk link, peer layers the network link.
- Eviction (memory pressure) takes the least recently used *unpinned* entry and demotes its top
  layers first, to host memory (the GPU space is freed at the decision, as vLLM's asynchronous
  offload stores do; the copy occupies the host link). When host memory is full, LRU host layers
  that have a write-behind disk copy move there for free; a layer that cannot reach host goes to
  its own disk copy (free) — the write-behind is what makes these demotions free. Without any copy
  to fall back on, LRU entries are dropped (their sessions are recomputed if they return).
- After a turn the entry stays on the GPU and a write-behind copy is queued to the disk in the
  background; growing the entry (a new turn) makes the copy stale and frees it.
- Running requests pin their entry: a pinned entry is never demoted. Prefetched (prepared) entries
  are reclaimable at once by running requests; a Prepare only reclaims idle, non-prepared entries.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

from symphony_nodesched.events import TransferDone
from symphony_nodesched.links import BACKGROUND, PREFETCH, URGENT, Job, Link
from symphony_nodesched.profile import Profile

GPU, HOST, DISK, PEER = 0, 1, 2, 3
TIER_NAMES = {GPU: "gpu", HOST: "host", DISK: "disk", PEER: "peer"}
NO_COPY, WRITING, COPY = 0, 1, 2


@dataclass(eq=False)
class Entry:
    """One session's K,V on this node."""

    key: str
    num_layers: int
    tokens: int = 0
    block_hashes: list[int] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    inflight: set[int] = field(default_factory=set)
    disk: int = NO_COPY
    pinned: bool = False
    prepared: bool = False
    prepared_from: str = ""  # "local" | "peer" | "recompute": what release(prefetch_only) undoes
    epoch: int = 0  # bumps when the contents change: stale write-behind jobs are cancelled
    promo_epoch: int = 0  # bumps when in-flight promotions are cancelled

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = [GPU] * self.num_layers

    def gpu_layers(self) -> int:
        return self.layers.count(GPU)

    def on_gpu(self) -> bool:
        return self.layers.count(GPU) == self.num_layers

    def slowest_tier(self) -> int:
        return max(self.layers) if self.layers else GPU


@dataclass(eq=False)
class _Group:
    """The per-layer jobs of one logical transfer, reported as one TransferDone."""

    key: str
    src: str
    dst: str
    pending: int = 0
    nbytes: int = 0
    first_start: float = float("inf")
    last_end: float = 0.0
    on_done: str = ""  # "copy" marks a write-behind complete


class TierManager:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.num_layers = profile.num_layers
        self.block_size = profile.block_size
        self.unit_bytes = profile.block_size * profile.kv_bytes_per_token_layer
        self.capacity = {
            GPU: profile.gpu_kv_blocks * profile.num_layers,
            HOST: profile.host_kv_bytes // self.unit_bytes,
            DISK: profile.disk_kv_bytes // self.unit_bytes,
        }
        self.used = {GPU: 0, HOST: 0, DISK: 0}
        self.entries: OrderedDict[str, Entry] = OrderedDict()  # LRU order: least recent first
        self.links = {
            "host": Link("host", profile.host_link_gbps),
            "disk_read": Link("disk_read", profile.disk_read_gbps, profile.disk_latency_s),
            "disk_write": Link("disk_write", profile.disk_write_gbps, profile.disk_latency_s),
            "net": Link("net", profile.network_gbps),
        }
        self._done: list[TransferDone] = []
        self._seq = itertools.count()

    # ---- accounting -------------------------------------------------------------------------
    def blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _units(self, e: Entry) -> tuple[int, int, int]:
        b = self.blocks(e.tokens)
        g = e.layers.count(GPU) + len(e.inflight)
        h = e.layers.count(HOST)
        d = self.num_layers if e.disk != NO_COPY else 0
        return b * g, b * h, b * d

    def _apply(self, before: tuple[int, int, int], e: Entry) -> None:
        after = self._units(e)
        for tier, old, new in zip((GPU, HOST, DISK), before, after, strict=True):
            self.used[tier] += new - old

    def free(self, tier: int) -> int:
        return self.capacity[tier] - self.used[tier]

    def used_bytes(self, tier: int) -> int:
        return self.used[tier] * self.unit_bytes

    def capacity_bytes(self, tier: int) -> int:
        return self.capacity[tier] * self.unit_bytes

    def entry_bytes(self, e: Entry, tier: int) -> int:
        return self._units(e)[tier] * self.unit_bytes

    def touch(self, e: Entry) -> None:
        self.entries.move_to_end(e.key)

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    # ---- engine-facing ----------------------------------------------------------------------
    def acquire(self, key: str) -> Entry:
        """Pins the entry of ``key`` for a request (creating an empty one); it is never demoted."""
        e = self.entries.get(key)
        if e is None:
            e = Entry(key, self.num_layers)
            self.entries[key] = e
        e.pinned = True
        e.prepared = False
        self.touch(e)
        return e

    def truncate(self, e: Entry, tokens: int) -> None:
        """Keeps only the first ``tokens`` tokens (the part of the cache a new prompt shares)."""
        if tokens >= e.tokens:
            return
        before = self._units(e)
        e.tokens = tokens
        del e.block_hashes[tokens // self.block_size :]
        e.epoch += 1
        if e.disk == WRITING:
            e.disk = NO_COPY
        if tokens == 0:
            e.layers = [GPU] * self.num_layers
            e.inflight.clear()
            e.promo_epoch += 1
            e.disk = NO_COPY
        self._apply(before, e)

    def grow(self, e: Entry, tokens: int, now: float) -> bool:
        """Allocates GPU blocks so ``e`` (all layers on GPU) holds ``tokens``; False when memory is out."""
        assert e.on_gpu() and not e.inflight, "grow needs the whole entry on the GPU"
        if tokens == e.tokens:
            return True
        need = (self.blocks(tokens) - self.blocks(e.tokens)) * self.num_layers
        if need == 0 and e.disk == NO_COPY:  # the common decode step: room left in the last block
            e.tokens = tokens
            e.epoch += 1
            return True
        if need > self.free(GPU) and not self._reclaim_gpu(need, now, exclude=e.key, take_prepared=True):
            return False
        before = self._units(e)
        if tokens != e.tokens:
            e.tokens = tokens
            e.epoch += 1
            e.disk = NO_COPY  # the write-behind copy no longer matches
        self._apply(before, e)
        return True

    def load(self, e: Entry, now: float) -> bool:
        """Starts urgent promotion of every layer of ``e`` that is off the GPU (request waiting on it).

        Returns False when the GPU cannot hold it even after reclaiming idle K,V."""
        missing = [i for i, t in enumerate(e.layers) if t != GPU and i not in e.inflight]
        need = self.blocks(e.tokens) * len(missing)
        if need > self.free(GPU) and not self._reclaim_gpu(need, now, exclude=e.key, take_prepared=True):
            return False
        self._promote(e, missing, URGENT, now)
        return True

    def unpin(self, e: Entry, now: float, keep: bool) -> None:
        """A request is done with ``e``: keep it cached (and write it behind to disk) or drop it."""
        e.pinned = False
        if not keep or e.tokens == 0:
            self.drop(e.key)
            return
        self.touch(e)
        self._write_behind(e, now)

    # ---- node-facing (Prepare / Release) ------------------------------------------------------
    def prepare_local(self, e: Entry, now: float) -> float:
        """Promotes ``e`` toward the GPU, lowest layers first, as far as idle memory allows.

        Returns the estimated seconds until it is fully on the GPU (inf if it does not fit)."""
        self.touch(e)
        if e.pinned:
            return 0.0
        missing = [i for i, t in enumerate(e.layers) if t != GPU and i not in e.inflight]
        per_layer = self.blocks(e.tokens)
        fits = len(missing)
        if per_layer and fits:
            short = per_layer * fits - self.free(GPU)
            if short > 0:
                self._reclaim_gpu(short + self.free(GPU), now, exclude=e.key, take_prepared=False)
            fits = min(fits, self.free(GPU) // per_layer)
        if missing and not e.prepared:  # already on the GPU: nothing for a Release to undo
            e.prepared, e.prepared_from = True, "local"
        self._promote(e, missing[:fits], PREFETCH, now)
        if fits < len(missing):
            return float("inf")
        return self.ready_estimate(e)

    def prepare_remote(
        self, key: str, tokens: int, block_hashes: list[int], now: float, src: str = "peer"
    ) -> float:
        """Creates ``key`` from a peer's copy and fetches it over the network, lowest layers first.

        Returns the estimated seconds until ready (inf when the GPU cannot hold it)."""
        need = self.blocks(tokens) * self.num_layers
        old = self.entries.get(key)
        if old is not None:
            if old.pinned:
                return 0.0
            self.drop(key)
        if need > self.free(GPU) and not self._reclaim_gpu(need, now, exclude=key, take_prepared=False):
            return float("inf")
        e = Entry(key, self.num_layers, tokens=tokens, block_hashes=list(block_hashes))
        e.layers = [PEER] * self.num_layers
        e.prepared, e.prepared_from = True, src
        self.entries[key] = e
        self._promote(e, list(range(self.num_layers)), PREFETCH, now)
        return self.ready_estimate(e)

    def ready_estimate(self, e: Entry) -> float:
        pending = [t for i, t in enumerate(e.layers) if t != GPU]
        if not pending and not e.inflight:
            return 0.0
        return max(self.links[self._link_for(t)].backlog_s() for t in (pending or [HOST]))

    def release(self, key: str, prefetch_only: bool, now: float) -> int:
        """Drops ``key`` (or only what a Prepare promoted); returns the bytes freed on all tiers."""
        e = self.entries.get(key)
        if e is None:
            return 0
        if e.pinned:
            return 0  # a running request owns it; its turn decides (is_last drops it)
        if not prefetch_only:
            freed = sum(self._units(e)) * self.unit_bytes
            self.drop(key)
            return freed
        if not e.prepared:
            return 0
        e.prepared = False
        if e.prepared_from != "local":
            # Fetched or recomputed for this Prepare: the prefetched copy is all there is.
            freed = sum(self._units(e)) * self.unit_bytes
            self.drop(key)
            return freed
        before = self.used[GPU]
        self._cancel_inflight(e)
        if e.disk == COPY:  # the prefetched layers are still on disk: dropping them is free
            units = self._units(e)
            e.layers = [DISK if t == GPU else t for t in e.layers]
            self._apply(units, e)
            return (before - self.used[GPU]) * self.unit_bytes
        for layer in reversed(range(self.num_layers)):
            if e.key in self.entries and e.layers[layer] == GPU:
                self._demote_layer(e, layer, now)
        return (before - self.used[GPU]) * self.unit_bytes

    def drop(self, key: str) -> None:
        e = self.entries.pop(key, None)
        if e is None:
            return
        before = self._units(e)
        e.tokens = 0
        e.inflight.clear()
        e.disk = NO_COPY
        e.epoch += 1
        e.promo_epoch += 1
        self._apply(before, e)

    # ---- time ---------------------------------------------------------------------------------
    def next_event_time(self) -> float | None:
        times = [t for link in self.links.values() if (t := link.next_event_time()) is not None]
        return min(times) if times else None

    def advance(self, now: float) -> list[TransferDone]:
        """Completes every layer copy that ends at or before ``now``."""
        while True:
            t = self.next_event_time()
            if t is None or t > now:
                break
            for link in self.links.values():
                if link.next_event_time() == t:
                    for job in link.pop_finished(t, self._valid):
                        self._complete(job)
        done, self._done = self._done, []
        return sorted(done, key=lambda d: d.t)

    # ---- internals ------------------------------------------------------------------------------
    @staticmethod
    def _link_for(tier: int) -> str:
        return {HOST: "host", DISK: "disk_read", PEER: "net"}.get(tier, "host")

    def _new_group(self, e: Entry, src: str, dst: str, jobs: int, on_done: str = "") -> _Group:
        return _Group(e.key, src, dst, pending=jobs, on_done=on_done)

    def _promote(self, e: Entry, layers: list[int], priority: int, now: float) -> None:
        """Reserves GPU space for ``layers`` and queues their copies (lowest first)."""
        if not layers:
            return
        before = self._units(e)
        groups: dict[int, _Group] = {}
        jobs: list[tuple[str, Job]] = []
        nbytes = self.blocks(e.tokens) * self.unit_bytes
        for layer in sorted(layers):
            tier = e.layers[layer]
            if tier not in groups:
                count = sum(1 for x in layers if e.layers[x] == tier)
                groups[tier] = self._new_group(e, TIER_NAMES[tier], "gpu", count)
            e.inflight.add(layer)
            job = Job(e.key, TIER_NAMES[tier], "gpu", layer, nbytes, priority, groups[tier], e.promo_epoch)
            jobs.append((self._link_for(tier), job))
        self._apply(before, e)
        for link, job in jobs:
            self.links[link].enqueue(job, now, self._valid)

    def _valid(self, job: Job) -> bool:
        """Whether a queued or finished job still matters; a cancelled one is counted off its group."""
        e = self.entries.get(job.key)
        if job.dst == "gpu":
            ok = e is not None and e.promo_epoch == job.epoch and job.layer in e.inflight
        elif job.dst == "disk":
            ok = e is not None and e.epoch == job.epoch and e.disk == WRITING
        else:
            ok = True  # demotion: its memory effect already happened; the copy occupies the link
        if not ok:
            self._job_finished(job, moved=False)
        return ok

    def _complete(self, job: Job) -> None:
        if not self._valid(job):
            return
        e = self.entries.get(job.key)
        if job.dst == "gpu" and e is not None:
            before = self._units(e)
            e.inflight.discard(job.layer)
            e.layers[job.layer] = GPU
            self._apply(before, e)
        self._job_finished(job, moved=True)

    def _job_finished(self, job: Job, moved: bool) -> None:
        g = job.group
        assert isinstance(g, _Group)
        g.pending -= 1
        if moved:
            g.nbytes += job.nbytes
            g.first_start = min(g.first_start, job.start)
            g.last_end = max(g.last_end, job.end)
        if g.pending == 0:
            if g.on_done == "copy":
                e = self.entries.get(g.key)
                if e is not None and e.epoch == job.epoch and e.disk == WRITING and moved:
                    e.disk = COPY
            if g.nbytes:
                self._done.append(
                    TransferDone(g.key, g.src, g.dst, g.nbytes, g.last_end - g.first_start, g.last_end)
                )

    def _write_behind(self, e: Entry, now: float) -> None:
        if e.disk != NO_COPY or e.tokens == 0:
            return
        need = self.blocks(e.tokens) * self.num_layers
        if need > self.free(DISK) and not self._reclaim_disk(need, exclude=e.key):
            return  # best effort: without room the entry simply has no disk copy
        before = self._units(e)
        e.disk = WRITING
        self._apply(before, e)
        group = self._new_group(e, "gpu", "disk", self.num_layers, on_done="copy")
        nbytes = self.blocks(e.tokens) * self.unit_bytes
        for layer in range(self.num_layers):
            job = Job(e.key, "gpu", "disk", layer, nbytes, BACKGROUND, group, e.epoch)
            self.links["disk_write"].enqueue(job, now, self._valid)

    def _cancel_inflight(self, e: Entry) -> None:
        if not e.inflight:
            return
        before = self._units(e)
        e.inflight.clear()
        e.promo_epoch += 1
        self._apply(before, e)

    def _reclaim_gpu(self, need: int, now: float, exclude: str, take_prepared: bool) -> bool:
        """Frees GPU block-layers from LRU unpinned entries, top layers first, until ``need`` fit."""
        for key in list(self.entries):
            if self.free(GPU) >= need:
                return True
            e = self.entries.get(key)
            if e is None or key == exclude or e.pinned or (e.prepared and not take_prepared):
                continue
            if e.inflight:
                self._cancel_inflight(e)
                if any(t == PEER for t in e.layers):
                    self.drop(key)  # a half-fetched peer copy is useless
                    continue
            for layer in reversed(range(self.num_layers)):
                if self.free(GPU) >= need or key not in self.entries:
                    break
                if e.layers[layer] == GPU:
                    self._demote_layer(e, layer, now)
        return self.free(GPU) >= need

    def _demote_layer(self, e: Entry, layer: int, now: float) -> None:
        """Moves one GPU layer down: to host (a copy on the host link) while host memory lasts, else
        to its write-behind disk copy (free), else the entry is dropped."""
        before = self._units(e)
        need = self.blocks(e.tokens)
        to_host = need <= self.free(HOST) or self._reclaim_host(need, exclude=e.key, drop=False)
        if not to_host and e.disk == COPY:
            e.layers[layer] = DISK  # the write-behind copy made this demotion free
            self._apply(before, e)
            return
        if not to_host and not self._reclaim_host(need, exclude=e.key, drop=True):
            self.drop(e.key)  # nowhere to keep it: the session will be recomputed if it returns
            return
        e.layers[layer] = HOST
        self._apply(before, e)
        group = self._new_group(e, "gpu", "host", 1)
        job = Job(e.key, "gpu", "host", layer, need * self.unit_bytes, BACKGROUND, group, e.epoch)
        self.links["host"].enqueue(job, now, self._valid)

    def _reclaim_host(self, need: int, exclude: str, drop: bool) -> bool:
        """Frees host memory, LRU first: host layers with a disk copy move there for free; with
        ``drop``, idle entries that have no disk copy are dropped."""
        for key in list(self.entries):
            if self.free(HOST) >= need:
                return True
            e = self.entries[key]
            if key == exclude or HOST not in e.layers:
                continue
            if e.disk == COPY:
                before = self._units(e)
                e.layers = [DISK if t == HOST else t for t in e.layers]
                self._apply(before, e)
            elif drop and not e.pinned and not e.inflight:
                self.drop(key)
        return self.free(HOST) >= need

    def _reclaim_disk(self, need: int, exclude: str) -> bool:
        for key in list(self.entries):
            if self.free(DISK) >= need:
                return True
            e = self.entries[key]
            if key == exclude or e.disk == NO_COPY:
                continue
            if all(t in (GPU, HOST) for t in e.layers) or e.disk == WRITING:
                before = self._units(e)
                e.disk = NO_COPY
                e.epoch += 1
                self._apply(before, e)
            elif not e.pinned and not e.inflight:
                self.drop(key)
        return self.free(DISK) >= need

    def check_invariants(self) -> None:
        """Raises AssertionError when the bookkeeping is inconsistent (used by tests and debug runs)."""
        totals = {GPU: 0, HOST: 0, DISK: 0}
        for key, e in self.entries.items():
            assert key == e.key
            g, h, d = self._units(e)
            totals[GPU] += g
            totals[HOST] += h
            totals[DISK] += d
            assert all(e.layers[i] != GPU for i in e.inflight), f"{key}: in-flight layer already on GPU"
            if any(t == DISK for t in e.layers):
                assert e.disk == COPY, f"{key}: layer on disk without a disk copy"
            if e.pinned and not e.inflight:
                assert e.on_gpu(), f"{key}: pinned entry not on the GPU"
        for tier in (GPU, HOST, DISK):
            assert totals[tier] == self.used[tier], f"tier {TIER_NAMES[tier]} usage drifted"
            assert 0 <= self.used[tier] <= self.capacity[tier], f"tier {TIER_NAMES[tier]} over capacity"
