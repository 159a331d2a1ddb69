"""Prefix block keys: the identity of a full K,V block is the chain hash of every token before it.

K,V of a token depends on all earlier tokens, so a block can only be reused after the very same
prefix. Chaining (key_i = H(key_{i-1} || tokens of block i)) makes equal keys mean equal prefixes, as
vLLM's own prefix cache does; a namespace (the model name) keeps two models' blocks apart. Only full
blocks get keys: a partial last block is recomputed, never stored.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BlockKeys:
    block_size: int
    keys: tuple[str, ...]

    @property
    def tokens(self) -> int:
        return self.block_size * len(self.keys)


def block_keys(token_ids: Sequence[int], block_size: int, namespace: str = "") -> BlockKeys:
    """Keys of the full blocks of ``token_ids``, in order."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    parent = hashlib.sha256(f"symphony-kv/{namespace}/{block_size}".encode()).digest()
    keys: list[str] = []
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        chunk = token_ids[start : start + block_size]
        h = hashlib.sha256(parent)
        h.update(struct.pack(f"<{block_size}q", *chunk))
        parent = h.digest()
        keys.append(parent.hex()[:32])
    return BlockKeys(block_size, tuple(keys))


def loadable_blocks(held: int, num_prompt_tokens: int, block_size: int) -> int:
    """How many leading held blocks a request may load: the engine must compute at least one prompt
    token itself (it needs the logits of the last one), so a fully held prompt loads one block less."""
    if held * block_size >= num_prompt_tokens:
        return max(0, (num_prompt_tokens - 1) // block_size)
    return held


@dataclass(frozen=True)
class BlockPlan:
    """What one engine step does with one request's blocks: block index -> engine block id."""

    load: tuple[tuple[int, int], ...]  # (block index in the prompt, engine block id)
    save: tuple[tuple[int, int], ...]


def plan_step(
    *,
    num_prompt_tokens: int,
    block_size: int,
    engine_block_ids: Sequence[int],
    computed_before: int,
    computed_after: int,
    external_tokens: int,
    already_saved: int,
) -> BlockPlan:
    """Blocks to load before and save after one step of a (possibly chunked) prefill.

    ``computed_before`` counts tokens the engine had (its prefix cache plus ``external_tokens`` to be
    loaded by the connector); ``computed_after`` counts them at the end of the step. Full prompt blocks
    that are complete by the end of the step and were neither loaded nor already in the store are
    saved, including blocks the engine's own prefix cache supplied (the store may have evicted them).
    """
    first_ext = (computed_before - external_tokens) // block_size
    last_ext = computed_before // block_size
    load = tuple((i, engine_block_ids[i]) for i in range(first_ext, last_ext) if i < len(engine_block_ids))
    full_prompt_blocks = num_prompt_tokens // block_size
    done_blocks = min(computed_after, num_prompt_tokens) // block_size
    # Loaded blocks lie below ``already_saved`` (they came from the store), so they are never saved.
    save = tuple(
        (i, engine_block_ids[i])
        for i in range(already_saved, min(done_blocks, full_prompt_blocks))
        if i < len(engine_block_ids) and not first_ext <= i < last_ext
    )
    return BlockPlan(load, save)
