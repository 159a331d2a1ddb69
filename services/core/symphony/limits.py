"""Configurable input limits, enforced at every front door (gRPC and HTTP) before any state changes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_session_id_len: int = Field(256, gt=0, description="Longest accepted session id, in characters.")
    max_messages: int = Field(1024, gt=0, description="Most messages one turn may carry.")
    max_prompt_chars: int = Field(2_000_000, gt=0, description="Most characters of conversation per turn.")
    max_tokens: int = Field(131_072, gt=0, description="Largest max_tokens a turn may ask for.")
    max_eta_s: float = Field(3600.0, gt=0, description="Largest advisory ETA, in seconds.")
    max_grpc_message_bytes: int = Field(64 * 1024 * 1024, gt=0, description="gRPC receive limit.")
