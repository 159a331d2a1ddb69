"""Symphony's KV connector for stock vLLM (``KVConnectorBase_V1``, vLLM 0.32).

Enable it with::

    --kv-transfer-config '{"kv_connector": "SymphonyConnector",
        "kv_connector_module_path": "symphony_vllm.connector", "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"store_dir": "/var/lib/symphony/kv",
            "control_listen": "127.0.0.1:8201", "host_capacity_gib": 4, "disk_capacity_gib": 64}}'

The scheduler-side instance answers "how much of this prompt does the store hold" from the disk
tier's completion markers (the two sides may live in different processes); the worker-side instance
owns the host-memory cache, copies blocks between vLLM's paged buffers and the store layer by layer
(load just before a layer runs, save just after it ran), and serves the control API the node
scheduler drives (:mod:`symphony_vllm.control`).

Requests name their session through the OpenAI request field
``kv_transfer_params: {"symphony_session_id": ..., "symphony_request_id": ...}``; without it the
connector still saves and loads blocks by prefix, it just cannot list them per session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.logger import init_logger

from symphony_vllm.blocks import block_keys, loadable_blocks, plan_step
from symphony_vllm.control import ControlServer, parse_listen
from symphony_vllm.store import TierStore

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

logger = init_logger(__name__)

GIB = 1 << 30


@dataclass
class StepRequest:
    """One request's work in one step: engine block ids paired with store keys."""

    req_id: str
    session_id: str | None
    tag: str | None
    keys: list[str]  # keys of every full prompt block, for the session index
    load: list[tuple[str, int]] = field(default_factory=list)
    save: list[tuple[str, int]] = field(default_factory=list)
    finished_prefill: bool = False


@dataclass
class SymphonyConnectorMetadata(KVConnectorMetadata):  # type: ignore[misc]
    requests: list[StepRequest] = field(default_factory=list)


@dataclass
class _ReqState:
    keys: list[str]
    num_prompt_tokens: int
    block_ids: list[int]
    saved: int  # leading blocks known to be in the store
    external_tokens: int
    session_id: str | None
    tag: str | None


class SymphonyConnector(KVConnectorBase_V1):  # type: ignore[misc]  # vLLM is untyped here
    def __init__(
        self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig
    ) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        cfg = self._kv_transfer_config
        self._block_size: int = vllm_config.cache_config.block_size
        root = cfg.get_from_extra_config("store_dir", None)
        if not root:
            raise ValueError("SymphonyConnector needs kv_connector_extra_config.store_dir")
        self._namespace = str(cfg.get_from_extra_config("namespace", vllm_config.model_config.model))
        self._root = str(root)
        self._host_bytes = int(float(cfg.get_from_extra_config("host_capacity_gib", 1)) * GIB)
        self._disk_bytes = int(float(cfg.get_from_extra_config("disk_capacity_gib", 16)) * GIB)
        self._control_listen = str(cfg.get_from_extra_config("control_listen", "127.0.0.1:8201"))
        mc, pc = vllm_config.model_config, vllm_config.parallel_config
        num_layers = mc.get_num_layers(pc)
        # 2 (K and V) x K,V heads x head size x element size, per layer.
        elem = torch.empty((), dtype=mc.dtype).element_size()
        self._kv_per_token = 2 * mc.get_num_kv_heads(pc) * mc.get_head_size() * elem * num_layers
        # Scheduler side: only the disk markers are read, so its store never caches in memory.
        self._store = TierStore(
            self._root,
            num_layers=num_layers,
            block_size=self._block_size,
            host_capacity_bytes=0 if role == KVConnectorRole.SCHEDULER else self._host_bytes,
            disk_capacity_bytes=self._disk_bytes,
        )
        self._reqs: dict[str, _ReqState] = {}
        self._pending_load: dict[str, int] = {}
        # Worker side.
        self._layer_index: dict[str, int] = {}
        self._kv_by_layer: dict[str, torch.Tensor] = {}
        self._pending_layer_loads: dict[str, list[tuple[str, int]]] = {}
        self._saved_this_step: list[StepRequest] = []
        self._load_started = 0.0
        self._load_tags: list[str] = []
        self._load_errors: set[int] = set()
        self._control: ControlServer | None = None

    # ==== worker side ============================================================================
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self._layer_index = {name: i for i, name in enumerate(kv_caches)}
        self._store = TierStore(
            self._root,
            num_layers=len(kv_caches),
            block_size=self._block_size,
            host_capacity_bytes=self._host_bytes,
            disk_capacity_bytes=self._disk_bytes,
            kv_bytes_per_token=self._kv_per_token,
        )
        host, port = parse_listen(self._control_listen)
        self._control = ControlServer(self._store, host, port)
        self._control.start()
        logger.info(
            "Symphony KV store at %s (%d layers, block %d tokens), control API on %s:%d",
            self._root,
            len(kv_caches),
            self._block_size,
            host,
            self._control.port,
        )

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, SymphonyConnectorMetadata)
        self._pending_layer_loads.clear()
        self._kv_by_layer.clear()
        loads = [(k, b) for r in meta.requests for k, b in r.load]
        if not loads:
            return
        self._load_started = time.perf_counter()
        for name in self._layer_index:
            layer = forward_context.no_compile_layers.get(name)
            kv = getattr(layer, "kv_cache", None)
            if isinstance(kv, torch.Tensor):
                self._kv_by_layer[name] = kv
                self._pending_layer_loads[name] = loads
        self._load_tags = []
        for r in meta.requests:
            if r.load and r.tag:
                tiers = {"host": 0, "disk": 0}
                for key, _ in r.load:
                    tiers["host" if self._store.in_host(key) else "disk"] += self._block_size
                self._store.note_request(r.tag, host_tokens=tiers["host"], disk_tokens=tiers["disk"])
                self._load_tags.append(r.tag)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Copies this layer's blocks in just before the layer runs, so layer i+1's copy overlaps
        nothing but never delays layer i (layer-wise restore)."""
        loads = self._pending_layer_loads.pop(layer_name, None)
        if not loads:
            return
        dst = self._kv_by_layer[layer_name]
        layer = self._layer_index[layer_name]
        for key, block_id in loads:
            try:
                data = self._store.get_layer(key, layer)
            except KeyError:  # deleted or evicted since the scheduler counted it: vLLM recomputes it
                self._load_errors.add(block_id)
                continue
            _copy_in(dst[block_id], data)
        if not self._pending_layer_loads:
            seconds = time.perf_counter() - self._load_started
            for tag in self._load_tags:
                self._store.note_request(tag, load_s=seconds)

    def save_kv_layer(
        self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any
    ) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, SymphonyConnectorMetadata)
        layer = self._layer_index.get(layer_name)
        if layer is None:
            return
        for r in meta.requests:
            for key, block_id in r.save:
                self._store.put_layer(key, layer, _to_bytes(kv_layer[block_id]))

    def wait_for_save(self) -> None:
        if not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
        assert isinstance(meta, SymphonyConnectorMetadata)
        for r in meta.requests:
            if r.session_id and (r.save or r.load or r.finished_prefill):
                self._store.record_session(r.session_id, r.keys)

    def get_block_ids_with_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        if errors:
            logger.warning("Symphony KV store lost %d block(s) before they could be loaded", len(errors))
        return errors

    def shutdown(self) -> None:
        if self._control is not None:
            self._control.stop()
            self._control = None

    # ==== scheduler side =========================================================================
    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        prompt = list(request.prompt_token_ids or [])
        keys = block_keys(prompt, self._block_size, self._namespace).keys
        held = self._store.held_prefix(keys)
        usable = loadable_blocks(held, len(prompt), self._block_size) * self._block_size
        return max(0, usable - num_computed_tokens), False

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        self._pending_load[request.request_id] = num_external_tokens

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = SymphonyConnectorMetadata()
        for new in scheduler_output.scheduled_new_reqs:
            prompt = list(new.prompt_token_ids or [])
            keys = list(block_keys(prompt, self._block_size, self._namespace).keys)
            params = _params(new.sampling_params)
            ext = self._pending_load.pop(new.req_id, 0)
            st = _ReqState(
                keys=keys,
                num_prompt_tokens=len(prompt),
                block_ids=list(new.block_ids[0]),
                saved=self._store.held_prefix(keys),
                external_tokens=ext,
                session_id=params.get("symphony_session_id"),
                tag=params.get("symphony_request_id"),
            )
            self._reqs[new.req_id] = st
            meta.requests.append(
                self._step(
                    new.req_id, st, new.num_computed_tokens, scheduler_output.num_scheduled_tokens[new.req_id]
                )
            )
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            state = self._reqs.get(req_id)
            if state is None:
                continue
            st = state
            new_ids = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:
                # A preempted request resumes with a fresh block table and recomputes: start over.
                st.block_ids = list(new_ids[0]) if new_ids else []
                st.saved = self._store.held_prefix(st.keys)
                st.external_tokens = 0
            elif new_ids:
                st.block_ids.extend(new_ids[0])
            before = cached.num_computed_tokens[i]
            if before >= st.num_prompt_tokens:
                continue  # decoding: nothing to save or load
            meta.requests.append(
                self._step(req_id, st, before, scheduler_output.num_scheduled_tokens[req_id])
            )
            st.external_tokens = 0
        self._pending_load.clear()
        return meta

    def _step(self, req_id: str, st: _ReqState, before: int, scheduled: int) -> StepRequest:
        plan = plan_step(
            num_prompt_tokens=st.num_prompt_tokens,
            block_size=self._block_size,
            engine_block_ids=st.block_ids,
            computed_before=before,
            computed_after=before + scheduled,
            external_tokens=st.external_tokens,
            already_saved=st.saved,
        )
        st.saved = max(st.saved, plan.save[-1][0] + 1) if plan.save else st.saved
        return StepRequest(
            req_id=req_id,
            session_id=st.session_id,
            tag=st.tag,
            keys=st.keys,
            load=[(st.keys[i], b) for i, b in plan.load],
            save=[(st.keys[i], b) for i, b in plan.save],
            finished_prefill=before + scheduled >= st.num_prompt_tokens,
        )

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        self._reqs.pop(request.request_id, None)
        self._pending_load.pop(request.request_id, None)
        return False, None


def _params(sampling_params: Any) -> dict[str, str]:
    extra = getattr(sampling_params, "extra_args", None) or {}
    params = extra.get("kv_transfer_params") or {}
    return {k: str(v) for k, v in params.items() if isinstance(k, str) and v is not None}


def _to_bytes(block: torch.Tensor) -> bytes:
    data: bytes = block.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()
    return data


def _copy_in(dst: torch.Tensor, data: bytes) -> None:
    src = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dst.dtype).reshape(dst.shape)
    dst.copy_(src.to(dst.device))
