"""The simulated vLLM engine: continuous batching over a paged, prefix-cached K,V store.

Behaviour follows vLLM V1's scheduler (CALIBRATION.md, "vLLM behaviour"):

- Every step has a token budget (``max_num_batched_tokens``) and at most ``max_num_seqs``
  sequences. Running requests are served first (a decode takes 1 token, a prefill a chunk of what
  the budget leaves: chunked prefill), then waiting requests in arrival order.
- K,V lives in 16-token blocks. A new request reuses the longest run of its session's cached full
  blocks (chained block hashes), capped at n−1 tokens so that at least one token is computed.
- When a running request cannot get a block, the most recently admitted running request is
  preempted (recompute: its K,V is released to the idle cache and it goes back to the head of the
  queue; if the cache still holds its blocks when it returns, they are hits).
- A request whose cached K,V is partly on host/disk (or still arriving from a peer) waits until
  every layer is on the GPU. vLLM's layer-wise connector can overlap that load with the first
  prefill step; the model does not credit the overlap (at most one step's compute), so its load
  times are slightly pessimistic.
- Step time comes from :class:`~symphony_nodesched.costmodel.CostModel`; a step's tokens appear at
  its end.

The engine is I/O-free: ``submit``/``start_step``/``finish_step`` take ``now``.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from symphony.errors import InvalidArgument, NotFound
from symphony.tokens import prompt_token_ids, text_token_ids
from symphony_nodesched.blockhash import common_blocks, extend_block_hashes
from symphony_nodesched.costmodel import CostModel
from symphony_nodesched.engine import EngineLoad, EngineRequest, EngineResult
from symphony_nodesched.events import Finished, FirstToken, NodeEvent, Tokens
from symphony_nodesched.kvtiers import GPU, TIER_NAMES, Entry, TierManager
from symphony_nodesched.output import planned_output
from symphony_nodesched.profile import Profile

# Joins a session id and a request id into the key of a request-private K,V entry (a second,
# concurrent request of a session that is already running); such entries are dropped at the end.
PRIVATE_KEY_SEP = "\x00"


@dataclass(eq=False)
class _Request:
    req: EngineRequest
    arrival: float
    prompt_len: int
    all_ids: list[int]
    out_chunks: list[str]
    finish_reason: str
    warmup: bool = False
    key: str = ""
    entry: Entry | None = None
    hashes: list[int] = field(default_factory=list)
    num_computed: int = 0
    num_output: int = 0
    cached_by_tier: dict[str, int] | None = None
    first_scheduled: float | None = None
    load_started: float | None = None
    load_s: float = 0.0
    first_token_t: float | None = None
    aborted: bool = False


@dataclass
class _Step:
    start: float
    end: float
    batch: list[tuple[_Request, int]]


class SimEngine:
    def __init__(self, profile: Profile, tiers: TierManager, cost: CostModel) -> None:
        self.p = profile
        self.tiers = tiers
        self.cost = cost
        self.waiting: deque[_Request] = deque()
        self.loading: list[_Request] = []
        self.ready: deque[_Request] = deque()  # loaded from a slower tier, admitted next
        self.running: list[_Request] = []
        self.requests: dict[str, _Request] = {}
        self.step: _Step | None = None
        self.step_time_ema = 0.0
        self.preemptions = 0
        self.steps = 0
        self.prefilled_tokens = 0  # prompt (and recomputed) tokens the engine has computed
        self._warmup_ids = itertools.count()
        # A turn that arrives while its session's warm-up prefill (Prepare by recompute) is still
        # queued or running waits for it instead of recomputing the same prefix a second time.
        self.warmups: dict[str, _Request] = {}
        self.deferred: dict[str, list[_Request]] = {}

    # ---- requests ---------------------------------------------------------------------------------
    def submit(self, req: EngineRequest, now: float) -> None:
        if req.request_id in self.requests:
            raise InvalidArgument("request_id", f"{req.request_id!r} is already running on this node")
        ids = prompt_token_ids(req.messages)
        chunks, reason = planned_output(req)
        if len(ids) + req.max_tokens > self.p.max_model_len:  # vLLM checks the request, not the answer
            field_name = "messages" if len(ids) >= self.p.max_model_len else "max_tokens"
            raise InvalidArgument(
                field_name,
                f"prompt of {len(ids)} tokens plus max_tokens {req.max_tokens} is over the model's "
                f"context of {self.p.max_model_len} tokens",
            )
        self._check_fits(len(ids) + len(chunks), "messages")
        r = _Request(req, now, len(ids), ids, chunks, reason)
        extend_block_hashes(r.hashes, ids, self.p.block_size)
        self.requests[req.request_id] = r
        self.waiting.append(r)

    def submit_warmup(self, session_id: str, token_ids: list[int], now: float) -> None:
        """A prefill-only request that leaves the session's K,V cached (a Prepare by recompute)."""
        self._check_fits(len(token_ids) + 1, "messages")
        req = EngineRequest(f"warmup-{next(self._warmup_ids)}", session_id, 0, (), 1)
        r = _Request(req, now, len(token_ids), list(token_ids), [], "length", warmup=True)
        extend_block_hashes(r.hashes, token_ids, self.p.block_size)
        if session_id in self.warmups:
            return  # one warm-up per session is enough
        self.requests[req.request_id] = r
        self.warmups[session_id] = r
        self.waiting.append(r)

    def _check_fits(self, tokens: int, field_name: str) -> None:
        if tokens > self.p.max_model_len:
            raise InvalidArgument(
                field_name, f"{tokens} tokens are over the model's context of {self.p.max_model_len} tokens"
            )
        if self.tiers.blocks(tokens) > self.p.gpu_kv_blocks:
            raise InvalidArgument(field_name, f"{tokens} tokens exceed the node's GPU K,V capacity")

    def abort(self, request_id: str, now: float) -> None:
        r = self.requests.pop(request_id, None)
        if r is None:
            raise NotFound(f"request {request_id!r} is not running on this node")
        r.aborted = True
        for queue in (self.waiting, self.ready):
            if r in queue:
                queue.remove(r)
        if r in self.loading:
            self.loading.remove(r)
        waiters = self.deferred.get(r.req.session_id, [])
        if r in waiters:
            waiters.remove(r)
        if r in self.running:
            self.running.remove(r)
        self._release(r, now, keep=True)
        if r.warmup:
            self._end_warmup(r)

    # ---- scheduling ----------------------------------------------------------------------------------
    def next_event_time(self) -> float | None:
        return self.step.end if self.step else None

    def has_work(self) -> bool:
        return bool(self.waiting or self.ready or self.running)

    def on_tiers_changed(self, now: float) -> None:
        """Moves requests whose K,V finished loading to the ready queue."""
        still: list[_Request] = []
        for r in self.loading:
            assert r.entry is not None
            if r.entry.on_gpu() and not r.entry.inflight:
                assert r.load_started is not None
                r.load_s = now - r.load_started
                self.ready.append(r)
            else:
                still.append(r)
        self.loading = still

    def start_step(self, now: float) -> bool:
        """Schedules and starts one step if the engine is idle and has runnable work."""
        if self.step is not None:
            return False
        batch = self._schedule(now)
        if not batch:
            return False
        prefill: list[tuple[int, int]] = []
        decode: list[int] = []
        for r, n in batch:
            if r.first_scheduled is None:
                r.first_scheduled = now
            if r.num_output > 0 and n == 1 and r.num_computed == len(r.all_ids) - 1:
                decode.append(r.num_computed)
            else:
                prefill.append((n, r.num_computed))
                self.prefilled_tokens += n
        dt = self.cost.step_s(prefill, decode)
        self.step = _Step(now, now + dt, batch)
        self.steps += 1
        self.step_time_ema = dt if self.steps == 1 else 0.9 * self.step_time_ema + 0.1 * dt
        return True

    def _schedule(self, now: float) -> list[tuple[_Request, int]]:
        budget = self.p.max_num_batched_tokens
        batch: list[tuple[_Request, int]] = []
        i = 0
        while i < len(self.running) and budget > 0:
            r = self.running[i]
            n = min(len(r.all_ids) - r.num_computed, budget)
            assert r.entry is not None
            preempted_self = False
            while not self.tiers.grow(r.entry, r.num_computed + n, now):
                victim = self.running.pop()
                self._preempt(victim, now)
                if victim is r:
                    preempted_self = True
                    break
            if preempted_self:
                break
            batch.append((r, n))
            budget -= n
            i += 1
        if len(batch) < len(self.running):
            return batch  # out of budget: no admissions this step
        while budget > 0 and len(self.running) < self.p.max_num_seqs:
            nxt = self._next_admissible(now)
            if nxt is None:
                break
            assert nxt.entry is not None
            n = min(len(nxt.all_ids) - nxt.num_computed, budget)
            if not self.tiers.grow(nxt.entry, nxt.num_computed + n, now):
                self._unadmit(nxt)
                break
            (self.ready if nxt in self.ready else self.waiting).remove(nxt)
            self.running.append(nxt)
            batch.append((nxt, n))
            budget -= n
        return batch

    def _next_admissible(self, now: float) -> _Request | None:
        """The next request to admit (loaded ones first, then FCFS), starting loads on the way."""
        if self.ready:
            return self.ready[0]
        while self.waiting:
            r = self.waiting[0]
            sid = r.req.session_id
            if not r.warmup and sid in self.warmups and r.entry is None:
                self.deferred.setdefault(sid, []).append(self.waiting.popleft())
                continue
            if self._admit(r, now):
                return r
            self.waiting.popleft()  # went to the loading list
        return None

    def _admit(self, r: _Request, now: float) -> bool:
        """Pins the request's K,V entry and takes its prefix-cache hit (block-aligned, <= n-1).

        Returns False when the request must first wait for its K,V to load (it joins ``loading``)."""
        if r.entry is not None:
            return True
        sid = r.req.session_id
        if not r.key:
            holder = self.tiers.get(sid)
            r.key = (
                sid if holder is None or not holder.pinned else f"{sid}{PRIVATE_KEY_SEP}{r.req.request_id}"
            )
        e = self.tiers.acquire(r.key)
        bs = self.p.block_size
        hit_blocks = common_blocks(e.block_hashes, r.hashes)
        hit = min(hit_blocks * bs, e.tokens, (len(r.all_ids) - 1) // bs * bs)
        self.tiers.truncate(e, hit)
        r.entry = e
        r.num_computed = hit
        if r.cached_by_tier is None:
            tier = TIER_NAMES[e.slowest_tier()] if hit else "gpu"
            r.cached_by_tier = {tier: hit} if hit else {}
        if e.on_gpu() and not e.inflight:
            return True
        if e.inflight and all(t == GPU or i in e.inflight for i, t in enumerate(e.layers)):
            pass  # a Prepare is already bringing every missing layer
        elif not self.tiers.load(e, now):
            self.tiers.truncate(e, 0)  # cannot make room: recompute instead of loading
            r.num_computed = 0
            r.cached_by_tier = {}
            return True
        r.load_started = now
        self.loading.append(r)
        return False

    def _end_warmup(self, r: _Request) -> None:
        sid = r.req.session_id
        if self.warmups.get(sid) is r:
            del self.warmups[sid]
        self.waiting.extendleft(reversed(self.deferred.pop(sid, [])))

    def _unadmit(self, r: _Request) -> None:
        """Gives back the entry of a request that could not get memory; it retries from scratch."""
        e, r.entry = r.entry, None
        assert e is not None
        e.pinned = False
        if e.tokens == 0 or r.key != r.req.session_id:
            self.tiers.drop(e.key)
        if r in self.ready:
            self.ready.remove(r)
            self.waiting.appendleft(r)

    def _preempt(self, r: _Request, now: float) -> None:
        self.preemptions += 1
        self._release(r, now, keep=True, write_behind=False)
        r.num_computed = 0
        self.waiting.appendleft(r)

    def _release(self, r: _Request, now: float, keep: bool, write_behind: bool = True) -> None:
        e, r.entry = r.entry, None
        if e is None:
            return
        e.block_hashes = r.hashes[: r.num_computed // self.p.block_size]
        if e.tokens > r.num_computed:
            self.tiers.truncate(e, r.num_computed)
        ephemeral = r.key != r.req.session_id
        if write_behind:
            self.tiers.unpin(e, now, keep=keep and not ephemeral)
        else:
            e.pinned = False
            if ephemeral or not keep:
                self.tiers.drop(e.key)

    # ---- step completion --------------------------------------------------------------------------
    def finish_step(self, now: float) -> list[NodeEvent]:
        """Applies the step ending at ``now`` (tokens appear), then starts the next one."""
        step, self.step = self.step, None
        assert step is not None and step.end <= now
        t = step.end
        events: list[NodeEvent] = []
        for r, n in step.batch:
            if r.aborted:  # preemption happens only between steps, so only an abort removes one
                continue
            r.num_computed += n
            extend_block_hashes(r.hashes, r.all_ids, self.p.block_size, upto=r.num_computed)
            if r.num_computed < len(r.all_ids):
                continue  # a prefill chunk: no token yet
            if r.warmup:
                self._finish(r, t)
                continue
            text = r.out_chunks[r.num_output]
            r.num_output += 1
            r.all_ids.extend(text_token_ids(text))
            if r.first_token_t is None:
                r.first_token_t = t
                events.append(FirstToken(r.req.request_id, text, 1, t))
            else:
                events.append(Tokens(r.req.request_id, text, 1, t))
            if r.num_output >= len(r.out_chunks):
                events.append(self._finish(r, t))
        self.start_step(t)
        return events

    def _finish(self, r: _Request, t: float) -> Finished:
        self.running.remove(r)
        self.requests.pop(r.req.request_id, None)
        if r.warmup:
            self._end_warmup(r)
        e = r.entry
        keep = not r.req.is_last
        self._release(r, t, keep=keep)
        if r.warmup and e is not None and e.key in self.tiers.entries:
            e.prepared, e.prepared_from = True, "recompute"
        cached = r.cached_by_tier or {}
        first = r.first_token_t if r.first_token_t is not None else t
        started = r.first_scheduled if r.first_scheduled is not None else t
        result = EngineResult(
            prompt_tokens=r.prompt_len,
            completion_tokens=r.num_output,
            cached_by_tier=dict(cached),
            recomputed_tokens=r.prompt_len - sum(cached.values()),
            queue_s=max(0.0, started - r.arrival - r.load_s),
            kv_load_s=r.load_s,
            ttft_s=first - r.arrival,
            e2e_s=t - r.arrival,
            finish_reason=r.finish_reason,
        )
        return Finished(r.req.request_id, result, t)

    # ---- status --------------------------------------------------------------------------------------
    def load(self) -> EngineLoad:
        waiting = [
            *self.waiting,
            *self.loading,
            *self.ready,
            *(r for rs in self.deferred.values() for r in rs),
        ]
        return EngineLoad(
            running_requests=len(self.running),
            waiting_requests=len(waiting),
            running_tokens=sum(r.num_computed for r in self.running),
            waiting_tokens=sum(len(r.all_ids) - r.num_computed for r in waiting),
            kv_usage=self.tiers.used[GPU] / self.tiers.capacity[GPU],
            step_time_s=self.step_time_ema,
        )
