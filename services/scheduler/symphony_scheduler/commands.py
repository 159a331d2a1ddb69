"""Decisions the scheduler core hands to its shell: orders for nodes and the routing results.

The core never talks to a node; it returns these values and the asyncio shell (or the virtual-time
simulator) carries them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from symphony.v1 import common_pb2


@dataclass(frozen=True)
class PrepareCommand:
    """Move ``session_id``'s K,V toward the GPU of ``node_id`` before its next turn."""

    node_id: str
    session_id: str
    source: str  # "auto" | "local" | "peer" | "recompute"
    peer_node_id: str
    peer_address: str
    eta_s: float
    messages: Sequence[common_pb2.ChatMessage] = ()
    expected_tokens: int = 0


@dataclass(frozen=True)
class ReleaseCommand:
    """Drop ``session_id``'s K,V from ``node_id`` (only the prefetched copy when ``prefetch_only``)."""

    node_id: str
    session_id: str
    prefetch_only: bool


Command = PrepareCommand | ReleaseCommand


@dataclass(frozen=True)
class RouteDecision:
    node_id: str
    reason: str
    commands: list[Command] = field(default_factory=list)


@dataclass(frozen=True)
class AdviceDecision:
    node_id: str | None
    reason: str
    commands: list[Command] = field(default_factory=list)
