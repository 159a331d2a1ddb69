"""Symphony's engine-side half for stock vLLM: a KV connector and the tiered store it writes.

Pure-Python modules (importable without torch or vLLM): :mod:`symphony_vllm.blocks` (prefix block
keys), :mod:`symphony_vllm.store` (host-memory and disk tiers), :mod:`symphony_vllm.control` (the
HTTP control API the node scheduler drives). :mod:`symphony_vllm.connector` holds the
``KVConnectorBase_V1`` subclass and imports vLLM; load it with
``"kv_connector_module_path": "symphony_vllm.connector"``.
"""

from symphony_vllm.blocks import BlockKeys, block_keys
from symphony_vllm.store import SessionInfo, StoreStats, TierStore

__all__ = ["BlockKeys", "SessionInfo", "StoreStats", "TierStore", "block_keys"]
