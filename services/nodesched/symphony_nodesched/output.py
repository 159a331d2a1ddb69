"""What the simulated engine answers: the dataset's answer when given, else deterministic filler.

Text is emitted in 4-character chunks (one token each), so the ids of an answer equal
``symphony.tokens.text_token_ids(answer)`` and the next turn's prompt extends the cached K,V.
"""

from __future__ import annotations

from symphony.tokens import CHARS_PER_TOKEN
from symphony_nodesched.engine import EngineRequest

FILLER = "The quick brown fox jumps over the lazy dog and then naps. "  # 60 chars: whole 4-char chunks


def filler_chunks(n: int, offset: int = 0) -> list[str]:
    step = CHARS_PER_TOKEN
    cycle = len(FILLER) // step
    return [FILLER[((offset + i) % cycle) * step : ((offset + i) % cycle + 1) * step] for i in range(n)]


def planned_output(req: EngineRequest) -> tuple[list[str], str]:
    """The token texts a request will produce and its finish reason ("stop" or "length")."""
    step = CHARS_PER_TOKEN
    text = req.expected_response
    chunks = [text[i : i + step] for i in range(0, len(text), step)] if text else []
    if not text:
        return filler_chunks(req.max_tokens), "length"
    if len(chunks) >= req.max_tokens:
        return chunks[: req.max_tokens], "length"
    floor = req.max_tokens if req.ignore_eos else req.min_tokens
    if len(chunks) < floor:
        return chunks + filler_chunks(floor - len(chunks)), "length" if floor == req.max_tokens else "stop"
    return chunks, "stop"
