"""Configurable input limits, enforced at every front door (gRPC and HTTP) before any state changes.

Size limits are checked per request (``symphony.validation``). Two limits are per *client* — the
peer's host as the front door sees it (clients behind one proxy share it) — and need memory: :class:`AdvisoryRate` (a token
bucket per client) and :class:`SessionQuota` (the sessions a client has open). Both take ``now``
from the caller, so tests drive them with a clock they control. Breaking either is
``ResourceExhausted`` (gRPC RESOURCE_EXHAUSTED, HTTP 429).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from symphony.errors import ResourceExhausted


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_session_id_len: int = Field(256, gt=0, description="Longest accepted session id, in characters.")
    max_messages: int = Field(1024, gt=0, description="Most messages (history length) one turn may carry.")
    max_prompt_chars: int = Field(2_000_000, gt=0, description="Most characters of conversation per turn.")
    max_tokens: int = Field(131_072, gt=0, description="Largest max_tokens a turn may ask for.")
    max_eta_s: float = Field(3600.0, gt=0, description="Largest advisory ETA, in seconds.")
    max_grpc_message_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Largest request: a gRPC message or an HTTP body, in bytes."
    )
    max_sessions_per_client: int = Field(0, ge=0, description="Open sessions per client (0: no limit).")
    max_advisories_per_s: float = Field(
        0.0, ge=0, description="Advisories per second per client (0: no limit)."
    )
    advisory_burst: int = Field(
        0, ge=0, description="Advisories a client may send at once (0: one second's worth)."
    )


class AdvisoryRate:
    """A token bucket per client: ``max_advisories_per_s`` refill, ``advisory_burst`` capacity."""

    def __init__(self, limits: Limits, max_clients: int = 100_000) -> None:
        self.rate = limits.max_advisories_per_s
        self.burst = float(limits.advisory_burst or max(1.0, self.rate))
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def admit(self, client: str, now: float) -> None:
        if self.rate <= 0:
            return
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            raise ResourceExhausted(
                f"advisories: more than {self.rate:g}/s from client {client!r}; retry in "
                f"{(1.0 - tokens) / self.rate:.2f} s"
            )
        self._buckets[client] = (tokens - 1.0, now)
        while len(self._buckets) > self.max_clients:  # the least recently seen clients go first
            self._buckets.popitem(last=False)


@dataclass
class _Open:
    client: str
    last_seen: float


class SessionQuota:
    """Open sessions per client. A session closes with its last turn or after ``idle_s`` unused."""

    def __init__(self, limits: Limits, idle_s: float = 900.0) -> None:
        self.limit = limits.max_sessions_per_client
        self.idle_s = idle_s
        self._open: OrderedDict[str, _Open] = OrderedDict()  # least recently seen first
        self._count: dict[str, int] = {}

    def admit(self, client: str, session_id: str, now: float) -> None:
        """Records that ``client`` uses ``session_id``; refuses a new one beyond the limit."""
        if self.limit <= 0:
            return
        self._expire(now)
        entry = self._open.get(session_id)
        if entry is not None:
            entry.last_seen = now
            self._open.move_to_end(session_id)
            return
        if self._count.get(client, 0) >= self.limit:
            raise ResourceExhausted(
                f"sessions: client {client!r} already has {self.limit} open sessions (the limit); "
                "end one (is_last / x-session-last) or wait for it to idle out"
            )
        self._open[session_id] = _Open(client, now)
        self._count[client] = self._count.get(client, 0) + 1

    def close(self, session_id: str) -> None:
        entry = self._open.pop(session_id, None)
        if entry is not None:
            self._drop(entry.client)

    def open_sessions(self, client: str) -> int:
        return self._count.get(client, 0)

    def _expire(self, now: float) -> None:
        while self._open:
            sid, entry = next(iter(self._open.items()))
            if now - entry.last_seen <= self.idle_s:
                return
            del self._open[sid]
            self._drop(entry.client)

    def _drop(self, client: str) -> None:
        left = self._count.get(client, 0) - 1
        if left > 0:
            self._count[client] = left
        else:
            self._count.pop(client, None)
