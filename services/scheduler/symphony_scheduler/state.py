"""The scheduler's picture of the cluster: nodes (registration, load, residency) and sessions.

Plain records, mutated only by :class:`symphony_scheduler.core.SchedulerCore`; policies read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from symphony.v1 import common_pb2, scheduler_pb2

TIER_NAMES = {common_pb2.TIER_GPU: "gpu", common_pb2.TIER_HOST: "host", common_pb2.TIER_DISK: "disk"}
TIER_PROTO = {name: tier for tier, name in TIER_NAMES.items()}


@dataclass
class KvLocation:
    """Where a session's K,V sits on one node."""

    tier: str  # "gpu" | "host" | "disk"
    tokens: int
    prepared: bool = False


@dataclass
class Advice:
    """A pending advisory: the turn is expected at ``issued_at + eta_s``."""

    issued_at: float
    eta_s: float
    turn_index: int
    expires_at: float
    node_id: str | None  # the node the policy chose (None: not chosen yet, or the policy ignores it)
    reason: str
    source: str = ""  # the Prepare source ordered, "" when none was
    seq: int = 0  # identifies this advisory in the core's timers
    decide_at: float = 0.0  # when a deferred advisory gets placed


@dataclass
class SessionRecord:
    session_id: str
    last_seen: float
    turns: int = 0
    tokens: int = 0  # tokens of K,V the last finished turn left (prompt + answer)
    locations: dict[str, KvLocation] = field(default_factory=dict)
    transcript: Sequence[common_pb2.ChatMessage] = ()  # last turn's messages + its answer
    advice: Advice | None = None
    home_node: str | None = None  # the node that served the last turn
    active_node: str | None = None  # the node serving a turn right now
    active_advised: bool = False  # that turn went to the node its advisory chose

    def best_location(self, exclude: str | None = None) -> tuple[str, KvLocation] | None:
        """The node holding the most tokens on the fastest tier (ties: fastest tier)."""
        best: tuple[str, KvLocation] | None = None
        for node_id, loc in self.locations.items():
            if node_id == exclude:
                continue
            if best is None or (loc.tokens, -TIER_RANK[loc.tier]) > (
                best[1].tokens,
                -TIER_RANK[best[1].tier],
            ):
                best = (node_id, loc)
        return best


TIER_RANK = {"gpu": 0, "host": 1, "disk": 2}


@dataclass
class NodeRecord:
    """A registered node: its static facts, its last report and the scheduler's own fresh counts."""

    registration: scheduler_pb2.RegisterNodeRequest
    last_seen: float
    load: common_pb2.NodeLoad = field(default_factory=common_pb2.NodeLoad)
    tiers: list[common_pb2.TierCapacity] = field(default_factory=list)
    sequence: int = 0
    inflight: int = 0  # turns this scheduler routed here that have not finished
    since_report: int = 0  # turns routed minus turns finished since the last report
    advised: int = 0  # pending advisories that chose this node: turns on their way
    inflight_tokens: int = 0  # their prompt tokens
    sessions: set[str] = field(default_factory=set)  # sessions whose K,V it reported holding

    @property
    def node_id(self) -> str:
        return self.registration.node_id

    @property
    def address(self) -> str:
        return self.registration.address

    @property
    def max_num_seqs(self) -> int:
        return self.registration.max_num_seqs or 256

    @property
    def requests(self) -> int:
        """Requests on the node: its last report, corrected by what was routed and finished since."""
        reported = self.load.running_requests + self.load.waiting_requests
        return max(0, reported + self.since_report)

    @property
    def load_fraction(self) -> float:
        """Requests per batch slot, clamped to [0, 1]: the load term every scorer shares."""
        return min(1.0, self.requests / self.max_num_seqs)
