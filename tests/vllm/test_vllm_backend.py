"""The ``vllm`` engine backend against a fake vLLM sidecar (aiohttp, real loopback HTTP) and the
connector's real control server and store. The fake plays the engine: it streams chat completions
with usage, serves ``/metrics``, and saves K,V blocks into the store the way the connector would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from symphony.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from symphony_nodesched.backends.vllm import VllmBackend, VllmSettings, create, parse_metrics
from symphony_nodesched.engine import (
    EngineRequest,
    EngineResult,
    KvPiece,
    Message,
    PeerRef,
    TokenEvent,
    TransferRecord,
)
from symphony_vllm.control import ControlServer
from symphony_vllm.store import TierStore

METRICS = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 400.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 100.0
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="4",num_gpu_blocks="1000"} 1.0
"""


class FakeVllm:
    """A scripted sidecar: ``cached`` tokens reported per turn, ``fail`` an HTTP status to answer."""

    def __init__(self, store: TierStore) -> None:
        self.store = store
        self.bodies: list[dict[str, Any]] = []
        self.cached = 0
        self.loaded_from_host = 0
        self.fail: int | None = None
        self.break_stream = False
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=METRICS, content_type="text/plain")

    def save_session(self, session_id: str, messages: Sequence[dict[str, str]]) -> int:
        """What the connector does after a prefill: one block per message, every layer."""
        keys = [f"{session_id}-{i}" for i in range(len(messages))]
        for k in keys:
            for layer in range(self.store.num_layers):
                self.store.put_layer(k, layer, b"\x01" * 16)
        self.store.record_session(session_id, keys)
        return len(keys) * self.store.block_size

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if self.fail is not None:
            return web.json_response(
                {"error": {"message": "prompt is too long", "code": self.fail}}, status=self.fail
            )
        params = body.get("kv_transfer_params") or {}
        prompt = self.save_session(params["symphony_session_id"], body["messages"])
        if self.loaded_from_host and "symphony_request_id" in params:
            self.store.note_request(
                params["symphony_request_id"], host_tokens=self.loaded_from_host, load_s=0.01
            )
        usage = {
            "prompt_tokens": prompt + 3,
            "completion_tokens": body["max_tokens"],
            "prompt_tokens_details": {"cached_tokens": self.cached},
        }
        if not body.get("stream"):
            return web.json_response({"choices": [{"message": {"content": "x"}}], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(body["max_tokens"]):
            chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if self.break_stream:
                assert request.transport is not None
                request.transport.close()
                return resp
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        await resp.write(f"data: {json.dumps(done)}\n\n".encode())
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp


class Node:
    def __init__(self, root: Path) -> None:
        self.store = TierStore(root, num_layers=2, block_size=4)
        self.control = ControlServer(self.store)
        self.fake = FakeVllm(self.store)
        self.backend: VllmBackend | None = None

    async def start(self) -> VllmBackend:
        self.control.start()
        await self.fake.start()
        self.backend = VllmBackend(
            VllmSettings(
                url=f"http://127.0.0.1:{self.fake.port}",
                control_url=f"http://127.0.0.1:{self.control.port}",
                poll_interval_s=3600,
            )
        )
        await self.backend.start()
        return self.backend

    async def stop(self) -> None:
        if self.backend is not None:
            await self.backend.close()
        await self.fake.stop()
        self.control.stop()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(tmp_path / "a")
    await n.start()
    yield n
    await n.stop()


def turn(session: str = "s1", max_tokens: int = 3) -> EngineRequest:
    return EngineRequest(
        request_id="r1",
        session_id=session,
        turn_index=1,
        messages=[Message("user", "hi"), Message("assistant", "hello"), Message("user", "more")],
        max_tokens=max_tokens,
        ignore_eos=True,
    )


async def run(backend: VllmBackend, req: EngineRequest) -> tuple[str, EngineResult]:
    text, result = "", None
    async for ev in backend.generate(req):
        if isinstance(ev, TokenEvent):
            text += ev.text
        else:
            result = ev
    assert result is not None
    return text, result


class PeerFetch:
    """The node service's FetchKv client, short-circuited to another backend's export."""

    def __init__(self, peers: dict[str, VllmBackend]) -> None:
        self.peers = peers

    async def fetch(self, peer: PeerRef, session_id: str) -> AsyncIterator[KvPiece]:
        async for piece in self.peers[peer.node_id].export_kv(session_id):
            yield piece


async def test_a_turn_streams_text_and_reports_where_cached_tokens_came_from(node: Node) -> None:
    node.fake.cached, node.fake.loaded_from_host = 8, 4
    assert node.backend is not None
    text, res = await run(node.backend, turn())
    assert text == "t0 t1 t2 "
    assert (res.prompt_tokens, res.completion_tokens, res.finish_reason) == (15, 3, "length")
    assert res.cached_by_tier == {"gpu": 4, "host": 4}
    assert res.recomputed_tokens == 7
    assert res.kv_load_s == pytest.approx(0.01)
    assert 0 < res.ttft_s <= res.e2e_s
    sent = node.fake.bodies[-1]
    assert sent["stream_options"] == {"include_usage": True} and sent["ignore_eos"] is True
    assert sent["model"] == "tiny"
    assert sent["kv_transfer_params"]["symphony_session_id"] == "s1"


@pytest.mark.parametrize(
    ("status", "error"), [(400, InvalidArgument), (429, ResourceExhausted), (503, Unavailable)]
)
async def test_engine_errors_map_to_symphony_errors(node: Node, status: int, error: type[Exception]) -> None:
    node.fake.fail = status
    assert node.backend is not None
    with pytest.raises(error, match="prompt is too long"):
        await run(node.backend, turn())


async def test_a_broken_stream_is_unavailable_not_a_short_answer(node: Node) -> None:
    node.fake.break_stream = True
    assert node.backend is not None
    with pytest.raises(Unavailable):
        await run(node.backend, turn())


async def test_an_unreachable_sidecar_fails_start_with_a_clear_error(tmp_path: Path) -> None:
    backend = VllmBackend(VllmSettings(url="http://127.0.0.1:9", control_url=None, startup_timeout_s=0.0))
    with pytest.raises(Unavailable, match="not ready"):
        await backend.start()


async def test_status_reports_engine_load_and_store_residency(node: Node) -> None:
    assert node.backend is not None
    await run(node.backend, turn())
    await node.backend._poll_once()
    st = node.backend.status(include_sessions=True)
    assert (st.load.running_requests, st.load.waiting_requests, st.load.kv_usage) == (3, 2, 0.25)
    assert [(s.session_id, s.tokens, s.tier) for s in st.sessions] == [("s1", 12, "host")]
    tiers = {t.tier: t for t in st.tiers}
    assert tiers["host"].used_bytes == tiers["disk"].used_bytes == 3 * 2 * 16
    assert node.backend.info.kv_bytes_per_token == 16 * 2 // 4
    assert node.backend.prefix_cache_hit_rate == pytest.approx(0.25)


async def test_prepare_prefers_the_local_store_and_promotes_it_to_host_memory(node: Node) -> None:
    assert node.backend is not None
    await run(node.backend, turn())
    await node.backend.release("s1", prefetch_only=True)
    assert node.store.session_info("s1").tier == "disk"
    out = await node.backend.prepare("s1", "auto", [], None, 5.0, PeerFetch({}))
    assert (out.accepted, out.source, out.tokens) == (True, "local", 12)
    assert node.store.session_info("s1").tier == "host"
    assert len(node.fake.bodies) == 1  # no warm-up was needed


async def test_prepare_without_stored_kv_warms_the_engine_up_with_one_token(node: Node) -> None:
    assert node.backend is not None
    msgs = [Message("user", "hi"), Message("assistant", "hello")]
    out = await node.backend.prepare("s9", "auto", msgs, None, 5.0, PeerFetch({}))
    assert (out.source, out.tokens) == ("recompute", 11)
    warm = node.fake.bodies[-1]
    assert warm["max_tokens"] == 1 and not warm.get("stream")
    assert warm["messages"][-1] == {"role": "assistant", "content": "hello"}
    await node.backend._poll_once()
    assert [s.prepared for s in node.backend.status(True).sessions] == [True]


async def test_prepare_from_a_peer_migrates_the_session(node: Node, tmp_path: Path) -> None:
    peer = Node(tmp_path / "b")
    peer_backend = await peer.start()
    try:
        await run(peer_backend, turn("s7"))
        assert node.backend is not None
        moves: list[TransferRecord] = []
        node.backend.add_transfer_listener(moves.append)
        out = await node.backend.prepare(
            "s7", "peer", [], PeerRef("b", "x:1"), 5.0, PeerFetch({"b": peer_backend})
        )
        assert (out.source, out.tokens) == ("peer", 12)
        assert node.store.session_keys("s7") == peer.store.session_keys("s7")
        assert node.store.get_layer("s7-2", 1) == peer.store.get_layer("s7-2", 1)
        assert node.fake.bodies == []
        assert [(m.src, m.dst) for m in moves] == [("peer", "host")] and moves[0].nbytes > 3 * 2 * 16
        # The next turn's restored tokens are the peer's, not this node's own tiers'.
        node.fake.cached, node.fake.loaded_from_host = 12, 12
        _, res = await run(node.backend, turn("s7"))
        assert res.cached_by_tier == {"peer": 12}
    finally:
        await peer.stop()


async def test_large_sessions_are_exported_in_frames_under_the_message_limit(tmp_path: Path) -> None:
    node = Node(tmp_path / "big")
    backend = await node.start()
    backend.settings = replace(backend.settings, export_frame_bytes=40)  # 2 blocks (16 B) per frame
    try:
        await run(backend, turn("s5"))  # 3 blocks x 2 layers
        pieces = [p async for p in backend.export_kv("s5")]
        assert [(p.layer_start, p.tokens) for p in pieces] == [(0, 12), (0, 12), (1, 12), (1, 12)]
        other = TierStore(tmp_path / "dst", num_layers=2, block_size=4)
        for p in pieces:
            other.import_layer(p.payload)
        assert other.session_keys("s5") == node.store.session_keys("s5")
    finally:
        await node.stop()


async def test_a_peer_without_the_session_falls_back_to_a_warm_up(node: Node, tmp_path: Path) -> None:
    peer = Node(tmp_path / "b")
    peer_backend = await peer.start()
    try:
        assert node.backend is not None
        out = await node.backend.prepare(
            "s8", "peer", [Message("user", "hi")], PeerRef("b", "x:1"), 5.0, PeerFetch({"b": peer_backend})
        )
        assert out.source == "recompute"
    finally:
        await peer.stop()


async def test_export_of_an_unknown_session_is_not_found(node: Node) -> None:
    assert node.backend is not None
    with pytest.raises(NotFound, match="nope"):
        async for _ in node.backend.export_kv("nope"):
            pass


async def test_release_frees_the_session_and_is_idempotent(node: Node) -> None:
    assert node.backend is not None
    await run(node.backend, turn())
    assert await node.backend.release("s1", prefetch_only=False) == 3 * 2 * 16
    assert await node.backend.release("s1", prefetch_only=False) == 0
    assert node.store.sessions() == []


async def test_bad_prepare_source_is_rejected(node: Node) -> None:
    assert node.backend is not None
    with pytest.raises(InvalidArgument, match="source"):
        await node.backend.prepare("s1", "teleport", [], None, 1.0, PeerFetch({}))


def test_metrics_parsing_tolerates_missing_series() -> None:
    m = parse_metrics("# nothing here\n")
    assert (m.running, m.waiting, m.kv_usage) == (0, 0, 0.0)


def test_create_reads_the_node_config() -> None:
    class Cfg:
        vllm_url = "http://127.0.0.1:8000"
        profile = "a100-80gb/llama-3.1-8b"
        vllm_control_url = ""

    b = create(Cfg())
    assert b.settings.control_url is None and b.info.kind == "vllm"
