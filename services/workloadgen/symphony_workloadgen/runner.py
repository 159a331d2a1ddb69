"""The asyncio driver: exactly N sessions active, one timer loop over a heap of planned actions.

A single loop (not one sleeping task per session) pops every action that is due — an advisory, a
spurious advisory or a turn send — and starts it; a finished turn pushes its session's next actions,
or replaces the session at once when it ended. That keeps 10,000 sessions cheap and the send lateness
(actual - planned) small. Times are seconds since the start of the run on the loop's monotonic clock.

Stopping: :meth:`Runner.stop` once stops new sends and lets in-flight turns finish (up to
``drain_timeout_s``); a second call cancels them. The records collected so far are always returned.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import logging
import resource
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from symphony.tokens import count_text_tokens
from symphony_workloadgen.clients.base import Delta, Done, Target, TargetError, TurnCall
from symphony_workloadgen.metrics import TurnRecord
from symphony_workloadgen.session import PlannedTurn, SessionPlan, SessionPlanner

log = logging.getLogger(__name__)

FREEZE_EVERY = 1000  # turns between gc.freeze() calls


@dataclass(frozen=True)
class RunConfig:
    num_clients: int
    duration_s: float | None = None  # no new turn is sent after this
    max_turns: int | None = None  # no new turn is sent once this many were sent
    warmup_s: float = 0.0  # turns sent before this are recorded but left out of the summary
    retries: int = 3  # retries of a turn failing with a retryable (UNAVAILABLE) error
    retry_backoff_s: float = 0.25  # doubled at each retry, or the server's retry-after advice
    max_tokens: int | None = None  # None: the dataset answer's length, with ignore_eos
    ignore_eos: bool = False  # with a fixed max_tokens
    history: str = "dataset"  # "dataset" answers or the "live" model output in later turns
    turn_timeout_s: float = 600.0
    drain_timeout_s: float = 30.0
    ramp_up_s: float = 0.0  # the first N sessions start evenly spread over this time, not all at 0
    max_sessions: int | None = None  # no session starts after this many; the run ends when they are done

    def __post_init__(self) -> None:
        if self.num_clients < 1:
            raise ValueError("num-clients must be >= 1")
        if self.history not in ("dataset", "live"):
            raise ValueError("history must be 'dataset' or 'live'")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max-tokens must be >= 1 or 'dataset'")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.ramp_up_s < 0:
            raise ValueError("ramp-up must be >= 0")
        if self.max_sessions is not None and self.max_sessions < 1:
            raise ValueError("max-sessions must be >= 1")


class Action(IntEnum):
    ADVISE = 0
    SPURIOUS = 1
    SEND = 2


@dataclass
class _Session:
    plan: SessionPlan
    start: float
    history: list[tuple[str, str]] = field(default_factory=list)
    advice_pending: bool = False


@dataclass
class Progress:
    t: float
    active_sessions: int
    in_flight: int
    turns_done: int
    turns_failed: int
    ttft_p50: float | None
    ttft_p99: float | None
    sending: bool  # False once the run stopped sending (duration, max turns or a stop)


@dataclass
class RunResult:
    records: list[TurnRecord]
    duration_s: float
    sessions_started: int
    sessions_finished: int
    interrupted: bool
    advisories_sent: int
    advisories_failed: int
    spurious_sent: int
    advisories_cancelled: int
    cpu_s: float
    warmup_s: float

    @property
    def window_s(self) -> float:
        return max(0.0, self.duration_s - self.warmup_s)


class Runner:
    def __init__(
        self,
        target: Target,
        planner: SessionPlanner,
        config: RunConfig,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval_s: float = 1.0,
    ) -> None:
        self.target = target
        self.planner = planner
        self.config = config
        self._on_progress = on_progress
        self._progress_interval = progress_interval_s
        self._heap: list[tuple[float, int, Action, _Session, int]] = []
        self._seq = 0
        self._records: list[TurnRecord] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._turn_tasks: set[asyncio.Task[None]] = set()
        self._sessions: dict[str, _Session] = {}
        self._recent_ttft: deque[float] = deque(maxlen=2000)
        self._sent = 0
        self._done = 0
        self._failed = 0
        self._sessions_finished = 0
        self._adv_sent = 0
        self._adv_failed = 0
        self._spurious = 0
        self._adv_cancelled = 0
        self._stopping = False
        self._closing = False
        self._hard_stop = asyncio.Event()
        self._interrupted = False
        self._waiter: asyncio.Future[None] | None = None
        self._sleep_until = float("inf")
        self._t0 = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- time -----------------------------------------------------------------------------------
    @property
    def origin(self) -> float:
        """The loop time (``loop.time()``) that is t = 0 of the run's records."""
        return self._t0

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time() - self._t0

    # --- control --------------------------------------------------------------------------------
    def stop(self) -> None:
        """First call: stop sending and drain. Second call: cancel the turns in flight."""
        self._interrupted = True
        if self._stopping:
            self._hard_stop.set()
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _push(self, t: float, action: Action, session: _Session, turn_index: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, action, session, turn_index))
        if t < self._sleep_until:
            self._wake()

    # --- run ------------------------------------------------------------------------------------
    async def run(self) -> RunResult:
        self._loop = asyncio.get_running_loop()
        cpu0 = _cpu_s()
        self._t0 = self._loop.time()
        progress = asyncio.create_task(self._progress_loop()) if self._on_progress else None
        n = self.config.num_clients
        if self.config.max_sessions is not None:
            n = min(n, self.config.max_sessions)
        for k in range(n):
            self._start_session(self.config.ramp_up_s * k / n)
        gc.freeze()
        try:
            await self._timer_loop()
            await self._drain()
        finally:
            if progress is not None:
                progress.cancel()
                await asyncio.gather(progress, return_exceptions=True)
            await self._cancel_pending_advice()
            self._closing = True
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        gc.unfreeze()
        end = self.now()
        return RunResult(
            records=self._records,
            duration_s=end,
            sessions_started=self.planner.sessions_planned,
            sessions_finished=self._sessions_finished,
            interrupted=self._interrupted,
            advisories_sent=self._adv_sent,
            advisories_failed=self._adv_failed,
            spurious_sent=self._spurious,
            advisories_cancelled=self._adv_cancelled,
            cpu_s=_cpu_s() - cpu0,
            warmup_s=self.config.warmup_s,
        )

    def _sending_over(self, now: float) -> bool:
        c = self.config
        return (
            self._stopping
            or (c.duration_s is not None and now >= c.duration_s)
            or (c.max_turns is not None and self._sent >= c.max_turns)
        )

    async def _timer_loop(self) -> None:
        assert self._loop is not None
        loop = self._loop
        heap = self._heap
        while True:
            now = self.now()
            if self._sending_over(now) or not self._sessions:
                return
            while heap and heap[0][0] <= now:
                t, _, action, sess, idx = heapq.heappop(heap)
                self._dispatch(t, action, sess, idx)
                if self._sending_over(now):
                    return
            deadline = heap[0][0] if heap else float("inf")
            if self.config.duration_s is not None:
                deadline = min(deadline, self.config.duration_s)
            self._waiter = loop.create_future()
            self._sleep_until = deadline
            handle = loop.call_at(self._t0 + deadline, self._wake) if deadline != float("inf") else None
            try:
                await self._waiter
            finally:
                self._sleep_until = float("-inf")
                if handle is not None:
                    handle.cancel()

    def _dispatch(self, planned: float, action: Action, sess: _Session, idx: int) -> None:
        if action is Action.SEND:
            self._sent += 1
            if self._sent % FREEZE_EVERY == 0:
                # Records and sessions live until the end of the run; moving them out of the cyclic
                # collector's view (O(1)) keeps full collections from pausing the loop for 100 ms.
                gc.freeze()
            sess.advice_pending = False
            task = asyncio.create_task(self._turn(sess, sess.plan.turns[idx], planned))
            self._turn_tasks.add(task)
            task.add_done_callback(self._turn_tasks.discard)
        else:
            turn = sess.plan.turns[idx]
            if action is Action.ADVISE:
                eta = sess.plan.advisory_lead_s(idx)
                sess.advice_pending = True
            else:
                eta = sess.plan.spurious_eta_s(idx)
                self._spurious += 1
            real = action is Action.ADVISE
            self._background(self._advise(sess.plan.session_id, eta, turn.index, len(turn.prompt), real))

    def _background(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _advise(
        self, session_id: str, eta: float, turn_index: int, prompt_chars: int, real: bool
    ) -> None:
        """``advisories_sent`` counts the real advisories the target acknowledged (one cut off by the
        end of the run was never delivered)."""
        try:
            await self.target.advise(session_id, eta, turn_index, prompt_chars)
            if real:
                self._adv_sent += 1
        except TargetError as err:
            if self._closing:
                return  # cut off by the end of the run, not a failure of the target
            self._adv_failed += 1
            if self._adv_failed == 1:
                log.warning("advisory failed (further failures only counted): %s", err)

    def _start_session(self, now: float) -> None:
        plan = self.planner.next_session()
        sess = _Session(plan=plan, start=now)
        self._sessions[plan.session_id] = sess
        self._schedule_turn(sess, 0, now, 0)

    def _schedule_turn(self, sess: _Session, idx: int, base: float, previous_answer_chars: int) -> None:
        plan = sess.plan
        send = base + plan.wait_s(idx, previous_answer_chars)
        if plan.turns[idx].advise:
            self._push(send - plan.advisory_lead_s(idx), Action.ADVISE, sess, idx)
        self._push(send, Action.SEND, sess, idx)

    # --- one turn -------------------------------------------------------------------------------
    def _call(self, sess: _Session, turn: PlannedTurn) -> TurnCall:
        c = self.config
        if c.max_tokens is None:
            max_tokens, ignore_eos = max(1, count_text_tokens(turn.expected_answer)), True
        else:
            max_tokens, ignore_eos = c.max_tokens, c.ignore_eos
        return TurnCall(
            session_id=sess.plan.session_id,
            turn_index=turn.index,
            messages=(*sess.history, ("user", turn.prompt)),
            max_tokens=max_tokens,
            ignore_eos=ignore_eos,
            is_last=turn.is_last,
            expected_response=turn.expected_answer,
            request_id=uuid.uuid4().hex,
        )

    async def _turn(self, sess: _Session, turn: PlannedTurn, planned: float) -> None:
        call = self._call(sess, turn)
        rec = TurnRecord(
            session_id=call.session_id,
            session_number=sess.plan.number,
            turn_index=turn.index,
            is_last=turn.is_last,
            planned=planned,
            prompt_chars=sum(len(c) for _, c in call.messages),
            advised=turn.advise,
        )
        self._records.append(rec)
        rec.sent = self.now()
        rec.warmup = rec.sent < self.config.warmup_s
        text: list[str] = []
        try:
            await self._attempts(call, rec, text)
        except asyncio.CancelledError:
            rec.cancelled = True
            raise
        finally:
            if rec.error:
                self._failed += 1
        if rec.ok:
            self._done += 1
            self._recent_ttft.append(rec.ttft)
        if rec.cancelled or self._hard_stop.is_set():
            return
        answer = "".join(text)
        rec.answer_chars = len(answer)
        if rec.ok and not turn.is_last:
            shown = answer if self.config.history == "live" else turn.expected_answer
            sess.history.extend((("user", turn.prompt), ("assistant", shown)))
            if turn.spurious_after:
                half = sess.plan.reading_s(len(shown)) / 2
                self._push(rec.finished + half, Action.SPURIOUS, sess, turn.index)
            self._schedule_turn(sess, turn.index + 1, rec.finished, len(shown))
            return
        # The session ended (last turn, or a failed turn): replace it at once.
        if turn.spurious_after and rec.ok:
            half = sess.plan.reading_s(len(turn.expected_answer)) / 2
            self._push(rec.finished + half, Action.SPURIOUS, sess, turn.index)
        self._sessions.pop(sess.plan.session_id, None)
        self._sessions_finished += 1
        if not self._sending_over(self.now()) and self._may_start_session():
            self._start_session(rec.finished if rec.ok else self.now())
        elif not self._sessions:
            self._wake()  # every session is done: the timer loop can end the run

    def _may_start_session(self) -> bool:
        limit = self.config.max_sessions
        return limit is None or self.planner.sessions_planned < limit

    async def _attempts(self, call: TurnCall, rec: TurnRecord, text: list[str]) -> None:
        c = self.config
        backoff = c.retry_backoff_s
        for attempt in range(1, c.retries + 2):
            rec.attempts = attempt
            text.clear()
            rec.itl.clear()
            rec.first_token = float("nan")
            streamed = 0
            last = float("nan")
            try:
                async with asyncio.timeout(c.turn_timeout_s):
                    async for ev in self.target.run_turn(call, self.now):
                        if isinstance(ev, Delta):
                            if rec.first_token != rec.first_token:
                                rec.first_token = ev.t
                            else:
                                rec.itl.append(ev.t - last)
                            last = ev.t
                            text.append(ev.text)
                            streamed += ev.num_tokens
                        elif isinstance(ev, Done):
                            self._finish(rec, ev, streamed)
                return
            except TargetError as err:
                if err.retryable and attempt <= c.retries and not self._stopping:
                    await asyncio.sleep(err.retry_after_s or backoff)  # a backoff, not synchronisation
                    backoff *= 2
                    continue
                rec.error = str(err)
                return
            except TimeoutError:
                rec.error = f"DEADLINE_EXCEEDED: no complete answer within {c.turn_timeout_s:g} s"
                return

    @staticmethod
    def _finish(rec: TurnRecord, ev: Done, streamed: int) -> None:
        rec.finished = ev.t
        if ev.server_first_token_s is not None:
            rec.first_token = rec.sent + ev.server_first_token_s
        elif rec.first_token != rec.first_token:
            rec.first_token = ev.t  # an empty answer: the first byte is the end
        rec.output_tokens = ev.output_tokens if ev.output_tokens else streamed
        rec.prompt_tokens = ev.prompt_tokens or 0
        rec.cached_tokens = ev.cached_tokens
        rec.node_id = ev.node_id
        rec.route_reason = ev.route_reason

    # --- shutdown and progress ------------------------------------------------------------------
    async def _drain(self) -> None:
        if not self._turn_tasks:
            return
        pending = set(self._turn_tasks)
        hard = asyncio.ensure_future(self._hard_stop.wait())
        try:
            await asyncio.wait(
                [*pending, hard], timeout=self.config.drain_timeout_s, return_when="FIRST_COMPLETED"
            )
            while not hard.done() and (pending := {t for t in pending if not t.done()}):
                await asyncio.wait(
                    [*pending, hard], timeout=self.config.drain_timeout_s, return_when="FIRST_COMPLETED"
                )
        finally:
            hard.cancel()
        leftover = [t for t in self._turn_tasks if not t.done()]
        for t in leftover:
            t.cancel()
        if leftover:
            self._interrupted = True
            await asyncio.gather(*leftover, return_exceptions=True)

    async def _cancel_pending_advice(self) -> None:
        """Advisories whose turn will now never come are withdrawn, so the scheduler frees the K,V."""
        pending = [s.plan.session_id for s in self._sessions.values() if s.advice_pending]
        if not pending:
            return
        results = await asyncio.gather(
            *(asyncio.wait_for(self.target.cancel_advice(sid), 2.0) for sid in pending),
            return_exceptions=True,
        )
        self._adv_cancelled += sum(1 for r in results if r is None)

    def progress(self) -> Progress:
        ttft = sorted(self._recent_ttft)
        return Progress(
            t=self.now(),
            active_sessions=len(self._sessions),
            in_flight=len(self._turn_tasks),
            turns_done=self._done,
            turns_failed=self._failed,
            ttft_p50=ttft[len(ttft) // 2] if ttft else None,
            ttft_p99=ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))] if ttft else None,
            sending=not self._sending_over(self.now()),
        )

    async def _progress_loop(self) -> None:
        assert self._on_progress is not None
        while True:
            await asyncio.sleep(self._progress_interval)  # periodic display, not synchronisation
            self._on_progress(self.progress())


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
