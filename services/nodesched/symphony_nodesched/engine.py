"""The engine contract the node scheduler owns. Each backend (``sim``, ``vllm``) implements it; the
gRPC service depends only on this module, never on a backend.

A backend runs turns and keeps the node's K,V tiers: the ``sim`` backend through the I/O-free
simulated engine and tier manager, the ``vllm`` backend through the sidecar's OpenAI API and the
project's KV connector store. Engine-level failures are raised as :mod:`symphony.errors` types so
the service can map them to gRPC statuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from symphony.v1 import common_pb2

# Tier names used in metrics labels and dictionaries; the proto enum is used on the wire.
TIERS = ("gpu", "host", "disk")
TIER_TO_PROTO = {
    "gpu": common_pb2.TIER_GPU,
    "host": common_pb2.TIER_HOST,
    "disk": common_pb2.TIER_DISK,
    "peer": common_pb2.TIER_PEER,  # a source of cached tokens, not a tier of this node
}
PROTO_TO_TIER = {v: k for k, v in TIER_TO_PROTO.items()}


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    session_id: str
    turn_index: int
    messages: Sequence[Message]
    max_tokens: int
    ignore_eos: bool = False
    is_last: bool = False
    expected_response: str = ""
    min_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class TokenEvent:
    """Generated text; ``num_tokens`` tokens were produced by one engine step."""

    text: str
    num_tokens: int = 1


@dataclass(frozen=True)
class EngineResult:
    """The last item of a generate stream. Times are in the engine's (possibly scaled) seconds."""

    prompt_tokens: int
    completion_tokens: int
    cached_by_tier: dict[str, int]
    recomputed_tokens: int
    queue_s: float
    kv_load_s: float
    ttft_s: float
    e2e_s: float
    finish_reason: str

    @property
    def cached_tokens(self) -> int:
        return sum(self.cached_by_tier.values())


@dataclass(frozen=True)
class PeerRef:
    node_id: str
    address: str


@dataclass(frozen=True)
class PrepareOutcome:
    accepted: bool
    source: str  # "local" | "peer" | "recompute" | "none"
    expected_ready_s: float
    tokens: int


@dataclass(frozen=True)
class KvPiece:
    """A layer range of a session's K,V, as served to a peer. ``payload`` is empty for ``sim``."""

    layer_start: int
    layer_end: int
    tokens: int
    nbytes: int
    payload: bytes = b""


@dataclass(frozen=True)
class Residency:
    session_id: str
    tokens: int
    tier: str  # fastest tier holding all layers
    gpu_fraction: float
    pinned: bool
    prepared: bool


@dataclass(frozen=True)
class TierUsage:
    tier: str
    capacity_bytes: int
    used_bytes: int


@dataclass(frozen=True)
class EngineLoad:
    running_requests: int = 0
    waiting_requests: int = 0
    running_tokens: int = 0
    waiting_tokens: int = 0
    kv_usage: float = 0.0
    step_time_s: float = 0.0


@dataclass(frozen=True)
class EngineStatus:
    load: EngineLoad
    tiers: list[TierUsage]
    sessions: list[Residency] = field(default_factory=list)


@dataclass(frozen=True)
class EngineInfo:
    """Static facts the node registers with the scheduler."""

    kind: str  # "sim" | "vllm"
    model: str
    profile: str
    kv_bytes_per_token: int
    host_link_gbps: float
    network_gbps: float
    max_num_seqs: int
    tiers: list[TierUsage]


@dataclass(frozen=True)
class TransferRecord:
    """One finished K,V move, for the ``symphony_kv_transfer*`` metrics."""

    src: str  # "gpu" | "host" | "disk" | "peer"
    dst: str
    nbytes: int
    seconds: float


@runtime_checkable
class TransferReporting(Protocol):
    """Optional capability: a backend that moves K,V itself reports each transfer to listeners."""

    def add_transfer_listener(self, listener: Callable[[TransferRecord], None]) -> None: ...


class PeerFetcher(Protocol):
    """How a backend pulls a session's K,V from a peer node (the service provides the gRPC client)."""

    def fetch(self, peer: PeerRef, session_id: str) -> AsyncIterator[KvPiece]: ...


class EngineBackend(Protocol):
    info: EngineInfo

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenEvent | EngineResult]:
        """Runs one turn: yields :class:`TokenEvent` items, then exactly one :class:`EngineResult`."""
        ...

    async def prepare(
        self,
        session_id: str,
        source: str,  # "auto" | "local" | "peer" | "recompute"
        messages: Sequence[Message],
        peer: PeerRef | None,
        eta_s: float,
        fetcher: PeerFetcher,
    ) -> PrepareOutcome: ...

    async def release(self, session_id: str, prefetch_only: bool) -> int:
        """Drops a session's K,V (or only its prefetched part); returns the bytes freed."""
        ...

    def export_kv(self, session_id: str) -> AsyncIterator[KvPiece]:
        """Serves a session's K,V to a peer; raises :class:`symphony.errors.NotFound` if not held."""
        ...

    def status(self, include_sessions: bool) -> EngineStatus: ...
