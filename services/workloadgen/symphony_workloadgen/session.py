"""The user model: which conversation a session plays, how fast its user reads and types, and when it
advises. I/O-free and seeded, so the asyncio runner and ``symphony simulate`` plan identical sessions.

Timing (the original generator's model, all waits divided by ``time_scale``):

* turn 0 is sent ``typing_s(0)`` after the session starts;
* turn i > 0 is sent ``reading_s(i) + typing_s(i)`` after the answer of turn i-1 has arrived, where
  ``reading_s(i) = chars of the previous answer / read_speed`` and ``typing_s(i) = prompt chars /
  type_speed``;
* the advisory of turn i (unless missed) is sent when typing starts, i.e. ``typing_s(i)`` before the
  send, with ``eta_s = typing_s(i)`` (scaled, so the ETA matches the wait the server will see);
* a spurious advisory (a draft the user abandons) is sent, after the answer of turn i, half-way
  through the reading time with the ETA of a typing time; no turn follows at that time.

Every random draw of session ``k`` comes from its own generator seeded with ``(seed, k)``, so a session
is the same whatever order sessions finish in, and the same seed gives the same run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from symphony_workloadgen.dataset import Conversation


@dataclass(frozen=True)
class UserModel:
    read_speed: float = 25.0  # chars/s
    read_speed_std: float = 0.0  # per-session normal draw when > 0
    type_speed: float = 6.0  # chars/s
    type_speed_std: float = 0.0
    min_speed: float = 1.0  # floor of the per-session draws, chars/s
    time_scale: float = 1.0  # every human wait is divided by this
    advisories: bool = True
    advisory_miss_rate: float = 0.0
    advisory_spurious_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("read_speed", "type_speed", "min_speed", "time_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('_', '-')} must be > 0")
        for name in ("read_speed_std", "type_speed_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0")
        for name in ("advisory_miss_rate", "advisory_spurious_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name.replace('_', '-')} must be in [0, 1]")


@dataclass(frozen=True)
class PlannedTurn:
    index: int
    prompt: str
    expected_answer: str
    is_last: bool
    typing_s: float  # scaled
    advise: bool  # an advisory is sent at typing start
    spurious_after: bool  # a spurious advisory follows this turn's answer


@dataclass(frozen=True)
class SessionPlan:
    number: int  # 0-based order in which sessions start
    session_id: str
    conversation: Conversation
    read_speed: float
    type_speed: float
    time_scale: float
    turns: tuple[PlannedTurn, ...]

    def reading_s(self, previous_answer_chars: int) -> float:
        """Scaled reading time of a previous answer."""
        return previous_answer_chars / self.read_speed / self.time_scale

    def wait_s(self, turn_index: int, previous_answer_chars: int) -> float:
        """Scaled delay from the previous answer (or the session start) to the send of ``turn_index``."""
        typing = self.turns[turn_index].typing_s
        return typing if turn_index == 0 else self.reading_s(previous_answer_chars) + typing

    def advisory_lead_s(self, turn_index: int) -> float:
        """How long before the send the advisory goes out (= its ETA)."""
        return self.turns[turn_index].typing_s

    def spurious_eta_s(self, turn_index: int) -> float:
        """ETA of the spurious advisory that follows turn ``turn_index``: the next prompt's typing time."""
        nxt = min(turn_index + 1, len(self.turns) - 1)
        return self.turns[nxt].typing_s


class SessionPlanner:
    """Hands out sessions in order; session ``k`` plays conversation ``order[k % n]``."""

    def __init__(
        self,
        conversations: Sequence[Conversation],
        model: UserModel,
        seed: int = 0,
        shuffle: bool = True,
        max_turns_per_session: int | None = None,
        id_prefix: str = "",
    ) -> None:
        if not conversations:
            raise ValueError("no conversations to play")
        self._conversations = conversations
        self._model = model
        self._seed = seed
        self._order = list(range(len(conversations)))
        if shuffle:
            random.Random(f"order-{seed}").shuffle(self._order)
        self._max_turns = max_turns_per_session
        self._prefix = id_prefix or f"s{seed}-"
        self._next = 0

    @property
    def model(self) -> UserModel:
        return self._model

    @property
    def sessions_planned(self) -> int:
        return self._next

    def next_session(self) -> SessionPlan:
        plan = self.plan(self._next)
        self._next += 1
        return plan

    def plan(self, number: int) -> SessionPlan:
        m = self._model
        rng = random.Random(f"session-{self._seed}-{number}")
        conv = self._conversations[self._order[number % len(self._order)]]
        read = _speed(rng, m.read_speed, m.read_speed_std, m.min_speed)
        typ = _speed(rng, m.type_speed, m.type_speed_std, m.min_speed)
        source = conv.turns[: self._max_turns] if self._max_turns else conv.turns
        turns = []
        for i, t in enumerate(source):
            miss = rng.random() < m.advisory_miss_rate
            spurious = rng.random() < m.advisory_spurious_rate
            turns.append(
                PlannedTurn(
                    index=i,
                    prompt=t.prompt,
                    expected_answer=t.answer,
                    is_last=i == len(source) - 1,
                    typing_s=len(t.prompt) / typ / m.time_scale,
                    advise=m.advisories and not miss,
                    spurious_after=m.advisories and spurious,
                )
            )
        return SessionPlan(
            number=number,
            session_id=f"{self._prefix}{number:06d}",
            conversation=conv,
            read_speed=read,
            type_speed=typ,
            time_scale=m.time_scale,
            turns=tuple(turns),
        )


def _speed(rng: random.Random, mean: float, std: float, floor: float) -> float:
    draw = rng.gauss(mean, std)  # drawn even when std == 0, so the stream of draws never shifts
    return max(floor, draw) if std > 0 else mean
