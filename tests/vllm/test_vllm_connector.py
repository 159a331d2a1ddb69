"""Connector pieces that need torch and vLLM; they skip in the dev venv and run inside the vLLM venv
of `make e2e-vllm` (which then drives the connector in two real engines)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="torch is only installed in the vLLM venv (make e2e-vllm)")
pytest.importorskip("vllm", reason="vLLM is only installed in the vLLM venv (make e2e-vllm)")

from symphony_vllm import connector  # noqa: E402


def test_the_connector_implements_every_abstract_method_of_this_vllm() -> None:
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1

    assert issubclass(connector.SymphonyConnector, KVConnectorBase_V1)
    assert not connector.SymphonyConnector.__abstractmethods__


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_a_block_round_trips_through_bytes_into_a_paged_buffer(dtype: str) -> None:
    dt = getattr(torch, dtype)
    # A standardized per-layer view [blocks, heads, block tokens, channels], made non-contiguous.
    src = torch.randn(4, 8, 2, 16).to(dt).permute(0, 2, 1, 3)
    dst = torch.zeros(4, 8, 2, 16, dtype=dt).permute(0, 2, 1, 3)
    data = connector._to_bytes(src[2])
    assert len(data) == src[2].numel() * src.element_size()
    connector._copy_in(dst[1], data)
    assert torch.equal(dst[1], src[2])
    assert torch.count_nonzero(dst[0]) == 0 and torch.count_nonzero(dst[2]) == 0


# ---- the connector's scheduler and worker halves together, on a real VllmConfig ----------------------
# Needs a model directory for vLLM's ModelConfig: `make e2e-vllm` passes its tiny model here.
MODEL_ENV = "SYMPHONY_VLLM_TEST_MODEL"
BLOCK = 16


@pytest.fixture(scope="module")
def vllm_config(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import os

    model = os.environ.get(MODEL_ENV)
    if not model:
        pytest.skip(f"set {MODEL_ENV} to a model directory (make e2e-vllm does)")
    from vllm.config import CacheConfig, KVTransferConfig, ModelConfig, VllmConfig

    store = tmp_path_factory.mktemp("kv")
    kv = KVTransferConfig(
        kv_connector="SymphonyConnector",
        kv_connector_module_path="symphony_vllm.connector",
        kv_role="kv_both",
        kv_connector_extra_config={"store_dir": str(store), "control_listen": "127.0.0.1:0"},
    )
    return VllmConfig(
        model_config=ModelConfig(model=model, dtype="bfloat16"),
        cache_config=CacheConfig(block_size=BLOCK),
        kv_transfer_config=kv,
    )


def _output(req_id: str, prompt: list[int], blocks: list[int], computed: int, session: str) -> Any:
    new = SimpleNamespace(
        req_id=req_id,
        prompt_token_ids=prompt,
        block_ids=(blocks,),
        num_computed_tokens=computed,
        sampling_params=SimpleNamespace(extra_args={"kv_transfer_params": {"symphony_session_id": session}}),
    )
    cached = SimpleNamespace(req_ids=[], new_block_ids=[], resumed_req_ids=set(), num_computed_tokens=[])
    return SimpleNamespace(
        scheduled_new_reqs=[new],
        scheduled_cached_reqs=cached,
        num_scheduled_tokens={req_id: len(prompt) - computed},
    )


def _step(worker: Any, meta: Any, kv: dict[str, Any]) -> None:
    """What vLLM's model runner does around one forward pass."""
    worker.bind_connector_metadata(meta)
    worker.start_load_kv(
        SimpleNamespace(no_compile_layers={n: SimpleNamespace(kv_cache=t) for n, t in kv.items()})
    )
    for name, t in kv.items():
        worker.wait_for_layer_load(name)
        worker.save_kv_layer(name, t, None)
    worker.wait_for_save()
    worker.clear_connector_metadata()


def test_blocks_saved_by_one_request_are_restored_into_another_requests_blocks(vllm_config: Any) -> None:
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole

    sched = connector.SymphonyConnector(vllm_config, KVConnectorRole.SCHEDULER, None)
    worker = connector.SymphonyConnector(vllm_config, KVConnectorRole.WORKER, None)
    layers = vllm_config.model_config.get_num_layers(vllm_config.parallel_config)
    kv = {
        f"model.layers.{i}.self_attn.attn": torch.randn(8, 2, BLOCK, 64).to(torch.bfloat16)
        for i in range(layers)
    }
    worker.register_kv_caches(kv)
    try:
        prompt = list(range(100, 140))  # 2 full blocks and a partial one
        req = SimpleNamespace(request_id="r1", prompt_token_ids=prompt)
        assert sched.get_num_new_matched_tokens(req, 0) == (0, False)
        sched.update_state_after_alloc(req, None, 0)
        _step(worker, sched.build_connector_meta(_output("r1", prompt, [3, 5, 6], 0, "s1")), kv)
        sched.request_finished(req, [3, 5, 6])
        saved = {n: (t[3].clone(), t[5].clone()) for n, t in kv.items()}
        assert worker._store.session_info("s1").tokens == 2 * BLOCK

        # The next turn extends the prompt; the engine's own cache is gone (its blocks reused).
        prompt2 = [*prompt, *range(7, 17)]
        req2 = SimpleNamespace(request_id="r2", prompt_token_ids=prompt2)
        assert sched.get_num_new_matched_tokens(req2, 0) == (2 * BLOCK, False)
        sched.update_state_after_alloc(req2, None, 2 * BLOCK)
        for t in kv.values():
            t.zero_()
        _step(worker, sched.build_connector_meta(_output("r2", prompt2, [1, 2, 4, 7], 2 * BLOCK, "s1")), kv)
        for name, t in kv.items():
            assert torch.equal(t[1], saved[name][0]) and torch.equal(t[2], saved[name][1])
        assert worker.get_block_ids_with_load_errors() == set()

        # A prompt that diverges inside block 1 can reuse block 0 only.
        req3 = SimpleNamespace(request_id="r3", prompt_token_ids=[*prompt[:20], *range(900, 940)])
        assert sched.get_num_new_matched_tokens(req3, 0) == (BLOCK, False)

        # Blocks deleted between vLLM's decision and the load are reported, not crashed on.
        req4 = SimpleNamespace(request_id="r4", prompt_token_ids=prompt2)
        # (r2 saved its third, now full, block: 3 blocks are held.)
        assert sched.get_num_new_matched_tokens(req4, 0) == (3 * BLOCK, False)
        sched.update_state_after_alloc(req4, None, 3 * BLOCK)
        meta = sched.build_connector_meta(_output("r4", prompt2, [0, 6, 4, 7], 3 * BLOCK, "s4"))
        worker._store.delete("s1")
        _step(worker, meta, kv)
        assert worker.get_block_ids_with_load_errors() == {0, 6, 4}
    finally:
        worker.shutdown()
