"""The protocol every target implements: advise, cancel an advisory, run a turn as timed events.

The runner never imports a concrete target; the CLI picks one from ``--target`` / ``--response-mode``.
Targets stamp each event with the clock the runner gives them, so all times share one time line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]


@dataclass(frozen=True)
class TurnCall:
    session_id: str
    turn_index: int
    messages: tuple[tuple[str, str], ...]  # (role, content), ending with the user's prompt
    max_tokens: int
    ignore_eos: bool
    is_last: bool
    expected_response: str
    request_id: str


@dataclass(frozen=True)
class Delta:
    t: float
    text: str
    num_tokens: int


@dataclass(frozen=True)
class Done:
    t: float
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    node_id: str = ""
    route_reason: str = ""
    server_first_token_s: float | None = None  # callback mode: server-side submit -> first token


TurnEvent = Delta | Done


class TargetError(Exception):
    """A failed call. ``retryable`` marks UNAVAILABLE-like failures the runner retries with backoff."""

    def __init__(self, code: str, message: str, retryable: bool = False, retry_after_s: float | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Target(Protocol):
    async def start(self) -> None:
        """Opens connections (and, in callback mode, the receiver server)."""

    async def advise(self, session_id: str, eta_s: float, turn_index: int, prompt_chars: int) -> None: ...

    async def cancel_advice(self, session_id: str) -> None: ...

    def run_turn(self, call: TurnCall, clock: Clock) -> AsyncIterator[TurnEvent]:
        """Deltas as they arrive, then exactly one :class:`Done`; raises :class:`TargetError`."""
        ...

    async def close(self) -> None: ...
