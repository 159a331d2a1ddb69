"""Every setting of a node scheduler process, one field per CLI flag (see ``__main__``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _check_host_port(value: str, field: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{field} must be HOST:PORT, got {value!r}")
    return value


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str = Field(min_length=1, max_length=128, description="Unique name of this node.")
    listen: str = Field("0.0.0.0:50061", description="gRPC listen address of the NodeScheduler service.")
    advertise: str = Field("127.0.0.1:50061", description="Address the scheduler and peers dial.")
    scheduler: str = Field("127.0.0.1:50051", description="The global scheduler's gRPC address.")
    engine: str = Field("sim", description="Engine backend: sim | vllm.")
    profile: str = Field("a100-80gb/llama-3.1-8b", description="Hardware/model profile (sim).")
    time_scale: float = Field(1.0, gt=0, description="Modelled seconds per wall second (sim).")
    metrics_listen: str = Field("0.0.0.0:9100", description="HTTP address of /metrics and /healthz.")
    vllm_url: str = Field("http://127.0.0.1:8000", description="The vLLM sidecar's OpenAI server.")
    vllm_control_url: str = Field(
        "http://127.0.0.1:8201", description="The KV connector's control API ('' when absent)."
    )
    vllm_model: str = Field("", description="Served model name ('' = the sidecar's first model).")
    disk_dir: Path | None = Field(None, description="Directory of the disk K,V tier (vllm).")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="Status report period until told otherwise.")
    log_level: str = Field("info", description="debug | info | warning | error.")
    tls_cert: Path | None = Field(
        None, description="PEM certificate (server and client); see symphony.security."
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    tls_ca: Path | None = Field(
        None, description="PEM CA trusted; with it the gRPC server requires client certs."
    )
    tls_server_name: str = Field(
        "", description="Host name expected in the scheduler's and peers' certificates."
    )
    otlp_endpoint: str | None = Field(
        None, description="OTLP/gRPC trace collector (None: $OTEL_EXPORTER_OTLP_ENDPOINT; '': off)."
    )
    trace_sample_ratio: float | None = Field(
        None, ge=0, le=1, description="Fraction of traces sampled (None: $OTEL_TRACES_SAMPLER_ARG or 1)."
    )

    @field_validator("listen", "advertise", "scheduler", "metrics_listen")
    @classmethod
    def _host_port(cls, v: str, info: object) -> str:
        return _check_host_port(v, getattr(info, "field_name", "address"))

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"log_level must be debug, info, warning or error, got {v!r}")
        return v.lower()
