"""What a :class:`~symphony_nodesched.simnode.SimNode` reports from ``advance(now)``.

Times ``t`` are on the node's model time line (the clock the caller drives).
"""

from __future__ import annotations

from dataclasses import dataclass

from symphony_nodesched.engine import EngineResult


@dataclass(frozen=True)
class FirstToken:
    request_id: str
    text: str
    num_tokens: int
    t: float


@dataclass(frozen=True)
class Tokens:
    request_id: str
    text: str
    num_tokens: int
    t: float


@dataclass(frozen=True)
class Finished:
    request_id: str
    result: EngineResult
    t: float


@dataclass(frozen=True)
class TransferDone:
    """A logical K,V move (all layers of one session) finished; ``seconds`` is first start to last end."""

    session_id: str
    src: str  # "gpu" | "host" | "disk" | "peer"
    dst: str
    nbytes: int
    seconds: float
    t: float


NodeEvent = FirstToken | Tokens | Finished | TransferDone
