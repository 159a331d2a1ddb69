"""Chained hashes of full K,V blocks, as vLLM's prefix cache keys them.

Block i's hash covers its own token ids and block i-1's hash, so equal hashes mean equal prefixes:
the cached part of a prompt is the longest run of equal leading hashes, always block-aligned.
"""

from __future__ import annotations

from collections.abc import Sequence


def extend_block_hashes(
    hashes: list[int], token_ids: Sequence[int], block_size: int, upto: int | None = None
) -> None:
    """Appends the hashes of every full block of ``token_ids[:upto]`` not yet in ``hashes``."""
    end = len(token_ids) if upto is None else min(upto, len(token_ids))
    prev = hashes[-1] if hashes else 0
    for start in range(len(hashes) * block_size, end - block_size + 1, block_size):
        prev = hash((prev, tuple(token_ids[start : start + block_size])))
        hashes.append(prev)


def block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    out: list[int] = []
    extend_block_hashes(out, token_ids, block_size)
    return out


def common_blocks(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading blocks two hash chains share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
