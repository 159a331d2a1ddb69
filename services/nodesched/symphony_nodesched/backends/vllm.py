"""The ``vllm`` engine backend: a vLLM sidecar's OpenAI API plus Symphony's KV connector store.

Turns stream from ``/v1/chat/completions`` (usage with ``prompt_tokens_details.cached_tokens``;
start vLLM with ``--enable-prompt-tokens-details``). Each request names its session in
``kv_transfer_params`` so the connector (``symphony_vllm.connector``) files its blocks per session.
Load comes from the sidecar's ``/metrics``; residency from the connector's control API. Both are
polled in the background because :meth:`status` is synchronous.

Prepare, in order of preference: the session's blocks are in this node's store → prefetch them to
host memory (``local``); a peer holds them → pull them over FetchKv and import them (``peer``);
else a ``max_tokens=1`` warm-up of the transcript makes the engine compute, and the connector save,
its K,V (``recompute``). Without a connector (no control URL) only the warm-up is possible.

Engine errors become :mod:`symphony.errors`: 400 → InvalidArgument, 429 → ResourceExhausted,
unreachable/5xx/timeouts → Unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from symphony.errors import InvalidArgument, NotFound, ResourceExhausted, SymphonyError, Unavailable
from symphony_nodesched.engine import (
    EngineInfo,
    EngineLoad,
    EngineRequest,
    EngineResult,
    EngineStatus,
    KvPiece,
    Message,
    PeerFetcher,
    PeerRef,
    PrepareOutcome,
    Residency,
    TierUsage,
    TokenEvent,
    TransferRecord,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VllmSettings:
    url: str = "http://127.0.0.1:8000"
    control_url: str | None = "http://127.0.0.1:8201"  # the connector's control API; None: no connector
    model: str | None = None  # served model name; None: the sidecar's first model
    profile: str = "vllm"
    max_num_seqs: int = 256
    host_link_gbps: float = 25.0
    network_gbps: float = 12.5
    poll_interval_s: float = 1.0
    startup_timeout_s: float = 300.0
    request_timeout_s: float = 600.0
    export_frame_bytes: int = 8 << 20  # K,V bytes per FetchKv message (gRPC allows 64 MiB here)


class VllmNodeConfig(Protocol):
    """The fields of the node scheduler's NodeConfig this backend reads."""

    @property
    def vllm_url(self) -> str: ...

    @property
    def profile(self) -> str: ...


def create(config: VllmNodeConfig) -> VllmBackend:
    """Entry point of the backend registry (``--engine vllm``)."""
    control = getattr(config, "vllm_control_url", VllmSettings.control_url)
    return VllmBackend(
        VllmSettings(
            url=config.vllm_url,
            control_url=control or None,
            model=getattr(config, "vllm_model", None) or None,
            profile=config.profile,
        )
    )


@dataclass(frozen=True)
class SidecarMetrics:
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prefix_cache_hits: float = 0.0
    prefix_cache_queries: float = 0.0
    gpu_blocks: int = 0
    block_size: int = 0


def parse_metrics(text: str) -> SidecarMetrics:
    """Reads the ``vllm:*`` series the node reports (summed over engines/models)."""
    vals: dict[str, float] = {}
    gpu_blocks = block_size = 0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            vals[s.name] = vals.get(s.name, 0.0) + s.value
            if s.name == "vllm:cache_config_info":
                gpu_blocks = int(float(s.labels.get("num_gpu_blocks", "0") or 0))
                block_size = int(float(s.labels.get("block_size", "0") or 0))
    return SidecarMetrics(
        running=int(vals.get("vllm:num_requests_running", 0)),
        waiting=int(vals.get("vllm:num_requests_waiting", 0)),
        kv_usage=vals.get("vllm:kv_cache_usage_perc", vals.get("vllm:gpu_cache_usage_perc", 0.0)),
        prefix_cache_hits=vals.get("vllm:prefix_cache_hits_total", vals.get("vllm:prefix_cache_hits", 0.0)),
        prefix_cache_queries=vals.get(
            "vllm:prefix_cache_queries_total", vals.get("vllm:prefix_cache_queries", 0.0)
        ),
        gpu_blocks=gpu_blocks,
        block_size=block_size,
    )


def error_from_http(status: int, body: str, what: str) -> SymphonyError:
    try:
        doc = json.loads(body)
        err = doc.get("error", doc) if isinstance(doc, dict) else {}
        message = str(err.get("message", body)) if isinstance(err, dict) else body
    except json.JSONDecodeError:
        message = body
    message = message.strip()[:500] or f"HTTP {status}"
    if status in (400, 413, 422):
        return InvalidArgument("request", f"the engine rejected {what}: {message}")
    if status == 404:
        return InvalidArgument("model", f"the engine does not serve it: {message}")
    if status == 429:
        return ResourceExhausted(f"the engine is overloaded: {message}")
    return Unavailable(f"the engine failed {what} (HTTP {status}): {message}", retry_after_s=1.0)


class VllmBackend:
    def __init__(self, settings: VllmSettings) -> None:
        self.settings = settings
        self._url = settings.url.rstrip("/")
        self._control = settings.control_url.rstrip("/") if settings.control_url else None
        self._http: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        self._model = settings.model or ""
        self._metrics = SidecarMetrics()
        self._store_info: dict[str, Any] = {}
        self._sessions: list[dict[str, Any]] = []
        self._prepared: set[str] = set()
        self._running: dict[str, str] = {}  # request id -> session id
        self._from_peer: set[str] = set()  # sessions whose stored K,V was imported from a peer
        self._listeners: list[Callable[[TransferRecord], None]] = []
        self.info = EngineInfo(
            kind="vllm",
            model=self._model,
            profile=settings.profile,
            kv_bytes_per_token=0,
            host_link_gbps=settings.host_link_gbps,
            network_gbps=settings.network_gbps,
            max_num_seqs=settings.max_num_seqs,
            tiers=[],
        )

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Waits for the sidecar to serve (it takes minutes to load a model), then learns the model
        and the store geometry."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        deadline = time.monotonic() + self.settings.startup_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                models = await self._get_json(f"{self._url}/v1/models")
                data = models.get("data") or []
                if not self._model:
                    if not data:
                        raise Unavailable("the vLLM sidecar serves no model")
                    self._model = str(data[0]["id"])
                break
            except (Unavailable, aiohttp.ClientError) as e:
                last = e
                await asyncio.sleep(1.0)  # polling an external process that is still loading
        else:
            await self.close()
            raise Unavailable(
                f"vLLM sidecar at {self._url} not ready after {self.settings.startup_timeout_s:.0f} s: {last}"
            )
        await self._poll_once()
        self._poller = asyncio.create_task(self._poll_forever(), name="vllm-status-poll")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def add_transfer_listener(self, listener: Callable[[TransferRecord], None]) -> None:
        self._listeners.append(listener)

    def _transfer(self, src: str, dst: str, nbytes: int, seconds: float) -> None:
        if nbytes > 0:
            for listener in self._listeners:
                listener(TransferRecord(src, dst, nbytes, seconds))

    @property
    def prefix_cache_hit_rate(self) -> float:
        m = self._metrics
        return m.prefix_cache_hits / m.prefix_cache_queries if m.prefix_cache_queries else 0.0

    # ---- HTTP helpers ---------------------------------------------------------------------------
    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise Unavailable("the vllm backend is not started")
        return self._http

    async def _request(
        self, method: str, url: str, what: str, *, json_body: Any = None, data: bytes | None = None
    ) -> tuple[int, bytes]:
        try:
            async with self._session().request(
                method,
                url,
                json=json_body,
                data=data,
                timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout_s),
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Unavailable(f"cannot reach {url} for {what}: {e or type(e).__name__}") from None

    async def _get_json(self, url: str) -> dict[str, Any]:
        status, body = await self._request("GET", url, "a status read")
        if status != 200:
            raise error_from_http(status, body.decode(errors="replace"), "a status read")
        doc = json.loads(body)
        return doc if isinstance(doc, dict) else {}

    async def _control_call(self, method: str, path: str, data: bytes | None = None) -> dict[str, Any] | None:
        """A control API call; None when the session is not held (404)."""
        if self._control is None:
            return None
        status, body = await self._request(
            method, f"{self._control}{path}", f"store {method} {path}", data=data
        )
        if status == 404:
            return None
        if status != 200:
            raise error_from_http(status, body.decode(errors="replace"), f"store {method} {path}")
        doc = json.loads(body)
        return doc if isinstance(doc, dict) else {}

    # ---- status ---------------------------------------------------------------------------------
    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self._poll_once()
            except (SymphonyError, ValueError) as e:
                log.warning("vllm status poll failed: %s", e)

    async def _poll_once(self) -> None:
        status, body = await self._request("GET", f"{self._url}/metrics", "a metrics read")
        if status == 200:
            self._metrics = parse_metrics(body.decode(errors="replace"))
        if self._control is not None:
            self._store_info = await self._get_json(f"{self._control}/v1/info")
            self._sessions = list((await self._get_json(f"{self._control}/v1/sessions")).get("sessions", []))
        self.info = replace(
            self.info,
            model=self._model,
            kv_bytes_per_token=int(self._store_info.get("kv_bytes_per_token", 0)),
            tiers=self._tiers(),
        )

    def _tiers(self) -> list[TierUsage]:
        m, s = self._metrics, self._store_info
        gpu_cap = m.gpu_blocks * m.block_size * int(s.get("kv_bytes_per_token", 0))
        tiers = [TierUsage("gpu", gpu_cap, int(gpu_cap * m.kv_usage))]
        if s:
            tiers.append(TierUsage("host", int(s["host_capacity_bytes"]), int(s["host_used_bytes"])))
            tiers.append(TierUsage("disk", int(s["disk_capacity_bytes"]), int(s["disk_used_bytes"])))
        return tiers

    def status(self, include_sessions: bool) -> EngineStatus:
        m = self._metrics
        load = EngineLoad(running_requests=m.running, waiting_requests=m.waiting, kv_usage=m.kv_usage)
        sessions: list[Residency] = []
        if include_sessions:
            pinned = set(self._running.values())
            sessions = [
                Residency(
                    session_id=str(d["session_id"]),
                    tokens=int(d["tokens"]),
                    tier=str(d["tier"]),
                    gpu_fraction=0.0,  # the engine's own prefix cache is not observable per session
                    pinned=str(d["session_id"]) in pinned,
                    prepared=str(d["session_id"]) in self._prepared,
                )
                for d in self._sessions
            ]
        return EngineStatus(load=load, tiers=self._tiers(), sessions=sessions)

    # ---- turns ----------------------------------------------------------------------------------
    def _body(self, request: EngineRequest, tag: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": request.temperature,
            "top_p": request.top_p,
            "ignore_eos": request.ignore_eos,
            "kv_transfer_params": {"symphony_session_id": request.session_id, "symphony_request_id": tag},
        }
        if request.min_tokens:
            body["min_tokens"] = request.min_tokens
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenEvent | EngineResult]:
        tag = f"{request.request_id or 'req'}-{uuid.uuid4().hex[:8]}"
        url = f"{self._url}/v1/chat/completions"
        t0 = time.perf_counter()
        ttft: float | None = None
        usage: dict[str, Any] = {}
        finish = "length"
        self._running[tag] = request.session_id
        self._prepared.discard(request.session_id)
        try:
            async with self._session().post(
                url,
                json=self._body(request, tag),
                timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout_s),
            ) as resp:
                if resp.status != 200:
                    raise error_from_http(resp.status, await resp.text(), "the turn")
                async for raw in resp.content:
                    line = raw.decode(errors="replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        err = chunk["error"]
                        raise error_from_http(int(err.get("code", 500) or 500), json.dumps(chunk), "the turn")
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if choice.get("finish_reason"):
                            finish = str(choice["finish_reason"])
                        if text:
                            if ttft is None:
                                ttft = time.perf_counter() - t0
                            yield TokenEvent(text=text, num_tokens=1)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Unavailable(
                f"the vLLM sidecar at {self._url} failed mid-turn: {e or type(e).__name__}"
            ) from None
        finally:
            self._running.pop(tag, None)
        e2e = time.perf_counter() - t0
        if not usage:
            raise Unavailable(
                "the vLLM sidecar ended the stream without usage (is stream_options supported?)"
            )
        prompt = int(usage.get("prompt_tokens", 0))
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        by_tier, load_s = await self._cached_by_tier(tag, cached)
        per_token = self.info.kv_bytes_per_token
        for tier in ("host", "disk"):
            self._transfer(tier, "gpu", by_tier.get(tier, 0) * per_token, load_s)
        if request.session_id in self._from_peer:
            # The store's copy came from a peer ahead of this turn: count it as the peer's.
            self._from_peer.discard(request.session_id)
            moved = by_tier.pop("host", 0) + by_tier.pop("disk", 0)
            if moved:
                by_tier["peer"] = moved
        yield EngineResult(
            prompt_tokens=prompt,
            completion_tokens=int(usage.get("completion_tokens", 0)),
            cached_by_tier=by_tier,
            recomputed_tokens=max(0, prompt - cached),
            queue_s=0.0,
            kv_load_s=load_s,
            ttft_s=ttft if ttft is not None else e2e,
            e2e_s=e2e,
            finish_reason="stop" if finish == "stop" else "length",
        )

    async def _cached_by_tier(self, tag: str, cached: int) -> tuple[dict[str, int], float]:
        """Splits the engine's cached count: what the connector loaded came from host/disk, the rest
        from the engine's own prefix cache (GPU)."""
        rec = None
        if cached:
            try:
                rec = await self._control_call("GET", f"/v1/requests/{quote(tag, safe='')}")
            except SymphonyError as e:  # the turn itself succeeded: only the attribution is lost
                log.warning("cannot read the connector's load record of %s: %s", tag, e)
        host = int(rec.get("host_tokens", 0)) if rec else 0
        disk = int(rec.get("disk_tokens", 0)) if rec else 0
        host, disk = min(host, cached), min(disk, max(0, cached - host))
        by_tier = {"gpu": cached - host - disk, "host": host, "disk": disk}
        return {k: v for k, v in by_tier.items() if v}, float(rec.get("load_s", 0.0)) if rec else 0.0

    # ---- K,V control ----------------------------------------------------------------------------
    async def prepare(
        self,
        session_id: str,
        source: str,
        messages: Sequence[Message],
        peer: PeerRef | None,
        eta_s: float,
        fetcher: PeerFetcher,
    ) -> PrepareOutcome:
        if source not in ("auto", "local", "peer", "recompute"):
            raise InvalidArgument("source", f"must be auto, local, peer or recompute, got {source!r}")
        t0 = time.perf_counter()
        outcome: PrepareOutcome | None = None
        if source in ("auto", "local"):
            doc = await self._control_call("POST", f"/v1/sessions/{quote(session_id, safe='')}/prefetch")
            if doc is not None and int(doc.get("tokens", 0)) > 0:
                seconds = time.perf_counter() - t0
                self._transfer("disk", "host", int(doc.get("bytes_read", 0)), seconds)
                outcome = PrepareOutcome(True, "local", seconds, int(doc["tokens"]))
        if outcome is None and source in ("auto", "peer") and peer is not None and self._control is not None:
            outcome = await self._import_from_peer(session_id, peer, fetcher, t0)
        if outcome is None and messages:
            outcome = await self._warm_up(session_id, messages, t0)
        if outcome is None:
            return PrepareOutcome(False, "none", 0.0, 0)
        self._prepared.add(session_id)
        return outcome

    async def _import_from_peer(
        self, session_id: str, peer: PeerRef, fetcher: PeerFetcher, t0: float
    ) -> PrepareOutcome | None:
        tokens = nbytes = 0
        try:
            async for piece in fetcher.fetch(peer, session_id):
                nbytes += len(piece.payload)
                if not piece.payload:
                    raise InvalidArgument(
                        "payload", f"peer {peer.node_id} sent K,V without data (a sim node?)"
                    )
                doc = await self._control_call(
                    "PUT",
                    f"/v1/sessions/{quote(session_id, safe='')}/layers/{piece.layer_start}",
                    piece.payload,
                )
                tokens = int(doc.get("tokens", 0)) if doc else tokens
        except (NotFound, Unavailable, InvalidArgument) as e:
            log.info("peer import of %s from %s failed (%s); falling back", session_id, peer.node_id, e)
            return None
        if not tokens:
            return None
        seconds = time.perf_counter() - t0
        self._transfer("peer", "host", nbytes, seconds)
        self._from_peer.add(session_id)
        return PrepareOutcome(True, "peer", seconds, tokens)

    async def _warm_up(self, session_id: str, messages: Sequence[Message], t0: float) -> PrepareOutcome:
        """A one-token prefill of the transcript: the engine computes its K,V (and the connector saves
        it), so the next turn finds the prefix cached."""
        body = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": 1,
            "add_generation_prompt": False,
            "kv_transfer_params": {"symphony_session_id": session_id},
        }
        status, raw = await self._request(
            "POST", f"{self._url}/v1/chat/completions", "the warm-up", json_body=body
        )
        if status != 200:
            raise error_from_http(status, raw.decode(errors="replace"), "the warm-up")
        usage = json.loads(raw).get("usage") or {}
        return PrepareOutcome(True, "recompute", time.perf_counter() - t0, int(usage.get("prompt_tokens", 0)))

    async def release(self, session_id: str, prefetch_only: bool) -> int:
        self._prepared.discard(session_id)
        if not prefetch_only:
            self._from_peer.discard(session_id)
        sid = quote(session_id, safe="")
        doc = (
            await self._control_call("POST", f"/v1/sessions/{sid}/demote")
            if prefetch_only
            else await self._control_call("DELETE", f"/v1/sessions/{sid}")
        )
        return int(doc.get("bytes_freed", 0)) if doc else 0

    async def export_kv(self, session_id: str) -> AsyncIterator[KvPiece]:
        """Layer by layer (lower layers first, so the importer can start using them), each layer cut
        into frames of at most ``export_frame_bytes`` so no gRPC message exceeds its limit."""
        sid = quote(session_id, safe="")
        doc = await self._control_call("GET", f"/v1/sessions/{sid}")
        if doc is None or not int(doc.get("tokens", 0)):
            raise NotFound(f"this node holds no K,V for session {session_id!r}")
        info = await self._get_json(f"{self._control}/v1/info")
        layers, block_size = int(info["num_layers"]), int(info["block_size"])
        block_layer_bytes = int(info.get("kv_bytes_per_token", 0)) * block_size // max(1, layers)
        blocks, tokens = int(doc["blocks"]), int(doc["tokens"])
        per_frame = (
            max(1, self.settings.export_frame_bytes // block_layer_bytes) if block_layer_bytes else blocks
        )
        for layer in range(layers):
            for first in range(0, blocks, per_frame):
                url = f"{self._control}/v1/sessions/{sid}/layers/{layer}?first={first}&count={per_frame}"
                status, body = await self._request("GET", url, "a K,V export")
                if status == 404:
                    raise NotFound(f"session {session_id!r} was evicted during its export")
                if status != 200:
                    raise error_from_http(status, body.decode(errors="replace"), "a K,V export")
                yield KvPiece(
                    layer_start=layer, layer_end=layer + 1, tokens=tokens, nbytes=len(body), payload=body
                )
