"""Hardware/model profiles of the simulated engine: one YAML data file per profile, each number cited.

A profile is named ``<hardware>/<model>`` and stored as ``profiles/<hardware>__<model>.yaml`` inside
the package (so the wheel ships it). Unknown keys are rejected, so a stale profile fails at load
time, not in the middle of a run. Cost-model constants are in milliseconds, as CALIBRATION.md gives
them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from symphony.errors import InvalidArgument

GB = 1_000_000_000


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Profile name, `<hardware>/<model>`.")
    hardware: str = Field(description="Accelerator, as in CALIBRATION.md's hardware table.")
    model: str = Field(description="Served model name, reported to the scheduler.")
    source: str = Field(description="Where the numbers come from (CALIBRATION.md rows).")
    # Model geometry.
    num_layers: int = Field(gt=0, description="Transformer layers: the unit of partial residency.")
    kv_bytes_per_token: int = Field(gt=0, description="K,V bytes per token over all layers (2·L·H_kv·d·2).")
    block_size: int = Field(16, gt=0, description="Tokens per paged K,V block (vLLM's default 16).")
    max_model_len: int = Field(gt=0, description="Longest sequence (prompt + output) the engine accepts.")
    # Engine limits and memory.
    gpu_kv_tokens: int = Field(gt=0, description="GPU K,V capacity in tokens at gpu_memory_utilization 0.9.")
    host_kv_bytes: int = Field(ge=0, description="Host DRAM given to the node's K,V tier (per GPU).")
    disk_kv_bytes: int = Field(ge=0, description="Local SSD given to the node's K,V tier (per GPU).")
    max_num_seqs: int = Field(256, gt=0, description="vLLM max_num_seqs: sequences per batch.")
    max_num_batched_tokens: int = Field(8192, gt=0, description="vLLM max_num_batched_tokens per step.")
    # Step cost model (CALIBRATION.md, "A cost model that reproduces these"), milliseconds.
    t0_ms: float = Field(ge=0, description="Fixed cost of an engine step.")
    tr_ms: float = Field(ge=0, description="Cost per request in the batch.")
    tw_ms: float = Field(ge=0, description="Weight-read time of the linear layers (memory-bound floor).")
    tc_ms: float = Field(ge=0, description="Compute time per batched token of the linear layers.")
    thead_ms: float = Field(ge=0, description="LM head and sampling per step.")
    ka_ms: float = Field(ge=0, description="Prefill attention per query·key pair.")
    kd_ms: float = Field(ge=0, description="Decode attention per context token.")
    # Links, GB/s (10^9 bytes) and seconds.
    host_link_gbps: float = Field(gt=0, description="GPU<->host copy bandwidth, one way.")
    disk_read_gbps: float = Field(gt=0, description="SSD read bandwidth.")
    disk_write_gbps: float = Field(gt=0, description="SSD write bandwidth.")
    disk_latency_s: float = Field(0.0, ge=0, description="SSD access latency per transfer.")
    network_gbps: float = Field(gt=0, description="Bandwidth between nodes.")

    @property
    def kv_bytes_per_token_layer(self) -> int:
        return self.kv_bytes_per_token // self.num_layers

    @property
    def gpu_kv_blocks(self) -> int:
        return self.gpu_kv_tokens // self.block_size


def _profile_dir() -> Path:
    return Path(str(resources.files("symphony_nodesched") / "profiles"))


def profile_names() -> list[str]:
    return sorted(p.stem.replace("__", "/") for p in _profile_dir().glob("*.yaml"))


def load_profile_file(path: Path) -> Profile:
    try:
        data = yaml.safe_load(path.read_text())
        return Profile.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as err:
        raise InvalidArgument("profile", f"cannot load {path.name}: {err}") from err


def load_profile(name: str) -> Profile:
    """Loads a shipped profile by name; raises InvalidArgument listing the known ones."""
    names = profile_names()
    if name not in names:
        raise InvalidArgument("profile", f"unknown profile {name!r}; known: {', '.join(names)}")
    profile = load_profile_file(_profile_dir() / (name.replace("/", "__") + ".yaml"))
    if profile.name != name:
        raise InvalidArgument("profile", f"file for {name!r} declares name {profile.name!r}")
    return profile
