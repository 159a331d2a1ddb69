"""The live ``sim`` backend: the asyncio shell around SimNode."""

import asyncio

import pytest

from symphony.clock import MonotonicClock
from symphony.errors import InvalidArgument, NotFound, Unavailable
from symphony_nodesched.backends import create_backend
from symphony_nodesched.backends.sim import SimBackend
from symphony_nodesched.config import NodeConfig
from symphony_nodesched.engine import (
    EngineRequest,
    EngineResult,
    Message,
    PeerRef,
    TokenEvent,
    TransferRecord,
)
from symphony_nodesched.kvtiers import DISK
from symphony_nodesched.profile import load_profile

TINY = load_profile("cpu-tiny/test")
MSGS = [Message("user", "Tell me about tiers. " * 30)]


class NoPeers:
    async def fetch(self, peer: PeerRef, session_id: str):  # type: ignore[no-untyped-def]
        raise NotFound("no peers here")
        yield  # pragma: no cover


async def test_generate_streams_tokens_then_one_result() -> None:
    backend = SimBackend(TINY, "n", MonotonicClock(scale=10.0))
    await backend.start()
    try:
        items = [
            i
            async for i in backend.generate(EngineRequest("r", "s", 0, MSGS, 12, expected_response="Tiers!"))
        ]
    finally:
        await backend.close()
    assert "".join(i.text for i in items if isinstance(i, TokenEvent)) == "Tiers!"
    assert isinstance(items[-1], EngineResult) and items[-1].completion_tokens == 2
    assert sum(isinstance(i, EngineResult) for i in items) == 1


async def test_a_client_that_goes_away_frees_its_request() -> None:
    backend = SimBackend(TINY, "n", MonotonicClock())
    await backend.start()
    try:
        stream = backend.generate(EngineRequest("r", "s", 0, MSGS, 5000, ignore_eos=True))
        first = await anext(stream)
        assert isinstance(first, TokenEvent)
        await stream.aclose()
        assert backend.node.engine.requests == {}
        assert backend.status(False).load.running_requests == 0
        # What it computed stays cached for the session's next turn.
        assert backend.node.tiers.entries["s"].tokens > 0
    finally:
        await backend.close()


async def test_bad_turn_leaves_nothing_behind() -> None:
    backend = SimBackend(TINY.model_copy(update={"max_model_len": 500}), "n", MonotonicClock())
    await backend.start()
    try:
        with pytest.raises(InvalidArgument):
            [i async for i in backend.generate(EngineRequest("r", "s", 0, MSGS, 400))]
        assert backend.node.engine.requests == {} and backend.node.tiers.entries == {}
    finally:
        await backend.close()


async def test_transfers_reach_listeners_and_release_frees() -> None:
    backend = SimBackend(TINY, "n", MonotonicClock(scale=100.0))
    seen: list[TransferRecord] = []
    written = asyncio.Event()

    def listener(record: TransferRecord) -> None:
        seen.append(record)
        written.set()

    backend.add_transfer_listener(listener)
    await backend.start()
    try:
        [i async for i in backend.generate(EngineRequest("r", "s", 0, MSGS, 4))]
        await asyncio.wait_for(written.wait(), 10)  # the background write-behind to disk
        assert [(r.src, r.dst) for r in seen] == [("gpu", "disk")]
        assert seen[0].nbytes == backend.node.tiers.entry_bytes(backend.node.tiers.entries["s"], DISK)
        out = await backend.prepare("s", "peer", MSGS, PeerRef("m", "127.0.0.1:1"), 1.0, NoPeers())
        assert out.source == "local"  # it already holds the session: nothing to fetch
        pieces = [p async for p in backend.export_kv("s")]
        assert pieces and pieces[-1].layer_end == TINY.num_layers
        assert await backend.release("s", prefetch_only=False) > 0
        with pytest.raises(NotFound):
            [p async for p in backend.export_kv("s")]
    finally:
        await backend.close()


def test_registry_builds_the_sim_backend_and_rejects_unknown_engines() -> None:
    backend = create_backend(NodeConfig(node_id="n", profile="cpu-tiny/test"))
    assert isinstance(backend, SimBackend) and backend.info.kind == "sim"
    assert backend.info.profile == "cpu-tiny/test"
    with pytest.raises(InvalidArgument, match="unknown engine"):
        create_backend(NodeConfig(node_id="n", engine="tpu"))


async def test_closing_ends_open_streams_with_unavailable() -> None:
    backend = SimBackend(TINY, "n", MonotonicClock())
    await backend.start()
    stream = backend.generate(EngineRequest("r", "s", 0, MSGS, 10_000, ignore_eos=True))
    assert isinstance(await anext(stream), TokenEvent)
    await backend.close()
    with pytest.raises(Unavailable, match="shutting down"):
        async for _ in stream:
            pass
