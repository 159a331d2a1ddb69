"""A deterministic stand-in tokenizer shared by the simulated engine, the scheduler and the simulator.

Real tokenizers average about four characters per token on English chat text (ShareGPT: 882 chars
per message ≈ 220 Llama-3 tokens). Token ids are content hashes of fixed character chunks, so the
same conversation prefix always yields the same ids in every process — which is all that prefix
caching and K,V reuse need. A chat template adds a few tokens of role header per message, as
Llama-3's does.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Protocol

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4  # <|start_header_id|>role<|end_header_id|>\n\n ... <|eot_id|>
GENERATION_PROMPT_TOKENS = 4  # the assistant header that opens the answer


class MessageLike(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


def count_text_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def message_token_count(content: str) -> int:
    return MESSAGE_OVERHEAD_TOKENS + count_text_tokens(content)


def prompt_token_count(messages: Iterable[MessageLike]) -> int:
    """Tokens of the rendered prompt, including the generation prompt for the answer."""
    return sum(message_token_count(m.content) for m in messages) + GENERATION_PROMPT_TOKENS


def _header_ids(role: str) -> list[int]:
    return [1, zlib.crc32(role.encode()), 2, 3]  # begin-header, role, end-header, blank line


def text_token_ids(text: str) -> list[int]:
    """Ids of a text's tokens: CRC32 of each chunk of ``CHARS_PER_TOKEN`` characters."""
    step = CHARS_PER_TOKEN
    return [
        zlib.crc32(text[i : i + step].encode("utf-8", "surrogatepass")) for i in range(0, len(text), step)
    ]


def message_token_ids(role: str, content: str) -> list[int]:
    """Ids of one rendered message: its role header, then its text."""
    return _header_ids(role) + text_token_ids(content)


def prompt_token_ids(messages: Sequence[MessageLike]) -> list[int]:
    ids: list[int] = []
    for m in messages:
        ids.extend(message_token_ids(m.role, m.content))
    # The generation prompt is the answer's own header, so the prompt of turn n plus the ids of its
    # answer's text (``text_token_ids``) is exactly a prefix of the prompt of turn n+1.
    ids.extend(_header_ids("assistant"))
    return ids
