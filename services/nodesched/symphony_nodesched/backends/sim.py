"""The live ``sim`` backend: a :class:`SimNode` driven by an asyncio task on a scaled monotonic clock.

The task sleeps until the node's next event (a step end or a transfer end) or until an order wakes
it, then ``advance``s the node and hands each token to the stream of its request. With
``--time-scale 10`` modelled time runs 10x faster than the wall clock; every reported duration is in
modelled seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import replace

from symphony.clock import MonotonicClock
from symphony.errors import NotFound, SymphonyError, Unavailable
from symphony_nodesched.config import NodeConfig
from symphony_nodesched.engine import (
    EngineInfo,
    EngineRequest,
    EngineResult,
    EngineStatus,
    KvPiece,
    Message,
    PeerFetcher,
    PeerRef,
    PrepareOutcome,
    TokenEvent,
    TransferRecord,
)
from symphony_nodesched.events import Finished, FirstToken, NodeEvent, Tokens, TransferDone
from symphony_nodesched.profile import Profile, load_profile
from symphony_nodesched.simnode import SimNode

log = logging.getLogger(__name__)


class SimBackend:
    def __init__(self, profile: Profile, node_id: str, clock: MonotonicClock) -> None:
        self.node = SimNode(profile, node_id)
        self.clock = clock
        self.info: EngineInfo = self.node.info
        self._streams: dict[str, asyncio.Queue[NodeEvent | None]] = {}  # None: the backend closed
        self._listeners: list[Callable[[TransferRecord], None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._ids = itertools.count()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sim-engine")

    async def close(self) -> None:
        # Cooperative stop: cancelling a task inside wait_for can be swallowed on Python 3.11 when
        # the awaited event fires at the same moment, which would leave the loop running.
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        for queue in self._streams.values():
            queue.put_nowait(None)

    def add_transfer_listener(self, listener: Callable[[TransferRecord], None]) -> None:
        self._listeners.append(listener)

    # ---- the clock loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            self._sync()
            t = self.node.next_event_time()
            timeout = None if t is None else max(0.0, self.clock.wall_seconds(t - self.clock.now()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _sync(self) -> float:
        """Brings the node up to the present and delivers what happened; returns now."""
        now = self.clock.now()
        for ev in self.node.advance(now):
            if isinstance(ev, TransferDone):
                record = TransferRecord(ev.src, ev.dst, ev.nbytes, ev.seconds)
                for listener in self._listeners:
                    listener(record)
                continue
            queue = self._streams.get(ev.request_id)
            if queue is not None:
                queue.put_nowait(ev)
        return now

    def _check_running(self) -> None:
        if self._task is None or self._task.done() or self._closing:
            raise Unavailable("the engine is not running")

    # ---- EngineBackend --------------------------------------------------------------------------
    async def generate(self, request: EngineRequest) -> AsyncGenerator[TokenEvent | EngineResult, None]:
        self._check_running()
        rid = request.request_id or f"sim-{next(self._ids)}"
        queue: asyncio.Queue[NodeEvent | None] = asyncio.Queue()
        now = self._sync()
        self.node.submit(request if request.request_id else _with_id(request, rid), now)
        self._streams[rid] = queue
        self._wake.set()
        finished = False
        try:
            while True:
                ev = await queue.get()
                if ev is None:
                    raise Unavailable("the node is shutting down", retry_after_s=0.0)
                if isinstance(ev, FirstToken | Tokens):
                    yield TokenEvent(ev.text, ev.num_tokens)
                elif isinstance(ev, Finished):
                    finished = True
                    yield ev.result
                    return
        finally:
            self._streams.pop(rid, None)
            if not finished:
                with contextlib.suppress(NotFound):
                    self.node.abort(rid, self.clock.now())
                self._wake.set()

    async def prepare(
        self,
        session_id: str,
        source: str,
        messages: Sequence[Message],
        peer: PeerRef | None,
        eta_s: float,
        fetcher: PeerFetcher,
    ) -> PrepareOutcome:
        self._check_running()
        peer_tokens = 0
        if peer is not None and source in ("auto", "peer") and self.node.tiers.get(session_id) is None:
            try:
                async for piece in fetcher.fetch(peer, session_id):
                    peer_tokens = max(peer_tokens, piece.tokens)
            except SymphonyError as err:
                log.info("peer %s has no K,V for %s: %s", peer.node_id, session_id, err.message)
        outcome = self.node.prepare(
            session_id, source, messages, None, eta_s, self._sync(), peer_tokens=peer_tokens
        )
        self._wake.set()
        return outcome

    async def release(self, session_id: str, prefetch_only: bool) -> int:
        freed = self.node.release(session_id, prefetch_only, self._sync())
        self._wake.set()
        return freed

    async def export_kv(self, session_id: str) -> AsyncGenerator[KvPiece, None]:
        self._sync()
        pieces = self.node.kv_pieces(session_id)
        if not pieces:
            raise NotFound(f"no K,V for session {session_id!r} on this node")
        for piece in pieces:
            yield piece

    def status(self, include_sessions: bool) -> EngineStatus:
        self._sync()
        return self.node.status(include_sessions)


def _with_id(request: EngineRequest, rid: str) -> EngineRequest:
    return replace(request, request_id=rid)


def create(config: NodeConfig) -> SimBackend:
    """Entry point of the backend registry (``--engine sim``)."""
    return SimBackend(load_profile(config.profile), config.node_id, MonotonicClock(config.time_scale))
