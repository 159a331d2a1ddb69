"""Checks of incoming requests. Each failure names the field, so a client can fix its request."""

from __future__ import annotations

import math

from symphony.errors import InvalidArgument, ResourceExhausted
from symphony.limits import Limits
from symphony.v1 import common_pb2, scheduler_pb2

VALID_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


def check_session_id(session_id: str, limits: Limits, field: str = "session_id") -> None:
    if not session_id:
        raise InvalidArgument(field, "must not be empty")
    if len(session_id) > limits.max_session_id_len:
        raise InvalidArgument(field, f"longer than {limits.max_session_id_len} characters")


def check_turn(turn: common_pb2.TurnRequest, limits: Limits, prefix: str = "") -> None:
    """Validates a turn completely before anything is routed or recorded."""
    check_session_id(turn.session_id, limits, prefix + "session_id")
    if turn.turn_index < 0:
        raise InvalidArgument(prefix + "turn_index", f"must be >= 0, got {turn.turn_index}")
    if turn.max_tokens <= 0:
        raise InvalidArgument(prefix + "max_tokens", f"must be > 0, got {turn.max_tokens}")
    if turn.max_tokens > limits.max_tokens:
        raise InvalidArgument(prefix + "max_tokens", f"must be <= {limits.max_tokens}, got {turn.max_tokens}")
    if not turn.messages:
        raise InvalidArgument(prefix + "messages", "must contain at least one message")
    if len(turn.messages) > limits.max_messages:
        raise ResourceExhausted(
            f"{prefix}messages: {len(turn.messages)} messages exceed the limit of {limits.max_messages}"
        )
    chars = 0
    for i, m in enumerate(turn.messages):
        if m.role not in VALID_ROLES:
            raise InvalidArgument(f"{prefix}messages[{i}].role", f"unknown role {m.role!r}")
        chars += len(m.content)
    if chars > limits.max_prompt_chars:
        raise ResourceExhausted(
            f"{prefix}messages: {chars} characters exceed the limit of {limits.max_prompt_chars}"
        )
    s = turn.sampling
    if s.min_tokens < 0:
        raise InvalidArgument(prefix + "sampling.min_tokens", f"must be >= 0, got {s.min_tokens}")
    if s.min_tokens > turn.max_tokens:
        raise InvalidArgument(prefix + "sampling.min_tokens", "must not exceed max_tokens")
    if not math.isfinite(s.temperature) or s.temperature < 0:
        raise InvalidArgument(prefix + "sampling.temperature", "must be a finite number >= 0")
    if not math.isfinite(s.top_p) or not 0 <= s.top_p <= 1:
        raise InvalidArgument(prefix + "sampling.top_p", "must be in [0, 1]")


def check_advice(req: scheduler_pb2.AdviseRequest, limits: Limits) -> None:
    check_session_id(req.session_id, limits)
    if not math.isfinite(req.eta_s) or req.eta_s < 0:
        raise InvalidArgument("eta_s", f"must be a finite number >= 0, got {req.eta_s}")
    if req.eta_s > limits.max_eta_s:
        raise InvalidArgument("eta_s", f"must be <= {limits.max_eta_s}, got {req.eta_s}")
    if req.turn_index < 0:
        raise InvalidArgument("turn_index", f"must be >= 0, got {req.turn_index}")
