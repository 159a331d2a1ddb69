"""Connector pieces that need torch and vLLM; they skip in the dev venv and run inside the vLLM venv
of `make e2e-vllm` (which then drives the connector in two real engines)."""

from __future__ import annotations

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
