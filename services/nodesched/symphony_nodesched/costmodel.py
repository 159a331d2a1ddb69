"""The per-step time of the simulated engine (CALIBRATION.md, "A cost model that reproduces these").

    N      = Σ cᵢ + (number of decoding sequences)
    T_lin  = sqrt(T_w² + (N·t_c)²)                 soft roofline over the linear layers
    T_step = t_0 + t_r·R + T_lin + T_head + k_a·Σ cᵢ·(sᵢ + cᵢ/2) + k_d·Σ ctxⱼ

with prefill chunks (cᵢ new tokens on top of sᵢ already computed) and decoding sequences of context
ctxⱼ; R is the number of requests in the batch. Returns seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from symphony_nodesched.profile import Profile


class CostModel:
    def __init__(self, profile: Profile) -> None:
        self.p = profile

    def step_s(self, prefill_chunks: Sequence[tuple[int, int]], decode_contexts: Sequence[int]) -> float:
        """Seconds of one engine step; an empty batch costs nothing."""
        if not prefill_chunks and not decode_contexts:
            return 0.0
        p = self.p
        n = sum(c for c, _ in prefill_chunks) + len(decode_contexts)
        t_lin = math.hypot(p.tw_ms, n * p.tc_ms)
        attn = p.ka_ms * sum(c * (s + c / 2) for c, s in prefill_chunks)
        decode = p.kd_ms * sum(decode_contexts)
        requests = len(prefill_chunks) + len(decode_contexts)
        return (p.t0_ms + p.tr_ms * requests + t_lin + p.thead_ms + attn + decode) / 1000.0

    def prefill_s(self, tokens: int, already_computed: int = 0) -> float:
        """Seconds to prefill ``tokens`` alone on an idle engine, in max_num_batched_tokens chunks."""
        total, done, left = 0.0, already_computed, tokens
        while left > 0:
            c = min(left, self.p.max_num_batched_tokens)
            total += self.step_s([(c, done)], [])
            done, left = done + c, left - c
        return total
