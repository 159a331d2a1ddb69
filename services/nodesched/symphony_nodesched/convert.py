"""Conversions between the wire types (symphony.v1) and the engine contract's dataclasses."""

from __future__ import annotations

from symphony.v1 import common_pb2, nodesched_pb2, scheduler_pb2
from symphony_nodesched.engine import (
    TIER_TO_PROTO,
    EngineInfo,
    EngineRequest,
    EngineResult,
    EngineStatus,
    Message,
    TierUsage,
)

SOURCE_FROM_PROTO = {
    nodesched_pb2.KV_SOURCE_UNSPECIFIED: "auto",
    nodesched_pb2.KV_SOURCE_LOCAL: "local",
    nodesched_pb2.KV_SOURCE_PEER: "peer",
    nodesched_pb2.KV_SOURCE_RECOMPUTE: "recompute",
}
SOURCE_TO_PROTO = {v: k for k, v in SOURCE_FROM_PROTO.items()} | {"none": nodesched_pb2.KV_SOURCE_UNSPECIFIED}
ENGINE_KINDS = {"sim": scheduler_pb2.ENGINE_KIND_SIM, "vllm": scheduler_pb2.ENGINE_KIND_VLLM}


def messages_from_proto(messages: list[common_pb2.ChatMessage]) -> list[Message]:
    return [Message(m.role, m.content) for m in messages]


def engine_request(turn: common_pb2.TurnRequest, request_id: str) -> EngineRequest:
    s = turn.sampling
    return EngineRequest(
        request_id=request_id,
        session_id=turn.session_id,
        turn_index=turn.turn_index,
        messages=messages_from_proto(list(turn.messages)),
        max_tokens=turn.max_tokens,
        ignore_eos=turn.ignore_eos,
        is_last=turn.is_last,
        expected_response=turn.expected_response,
        min_tokens=s.min_tokens,
        temperature=s.temperature,
        top_p=s.top_p if s.top_p > 0 else 1.0,
        seed=s.seed if s.HasField("seed") else None,
    )


def summary(
    turn: common_pb2.TurnRequest, request_id: str, node_id: str, route_reason: str, r: EngineResult
) -> common_pb2.TurnSummary:
    return common_pb2.TurnSummary(
        request_id=request_id,
        session_id=turn.session_id,
        turn_index=turn.turn_index,
        node_id=node_id,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        cached_tokens=r.cached_tokens,
        cached_by_tier=[
            common_pb2.TierTokens(tier=TIER_TO_PROTO[t], tokens=n)
            for t, n in sorted(r.cached_by_tier.items())
            if n
        ],
        recomputed_tokens=r.recomputed_tokens,
        queue_s=r.queue_s,
        kv_load_s=r.kv_load_s,
        ttft_s=r.ttft_s,
        e2e_s=r.e2e_s,
        finish_reason=r.finish_reason,
        route_reason=route_reason,
        attempts=1,
    )


def tier_capacities(tiers: list[TierUsage]) -> list[common_pb2.TierCapacity]:
    return [
        common_pb2.TierCapacity(
            tier=TIER_TO_PROTO[t.tier], capacity_bytes=t.capacity_bytes, used_bytes=t.used_bytes
        )
        for t in tiers
        if t.tier in TIER_TO_PROTO
    ]


def node_status(node_id: str, status: EngineStatus, sequence: int) -> common_pb2.NodeStatus:
    load = status.load
    return common_pb2.NodeStatus(
        node_id=node_id,
        load=common_pb2.NodeLoad(
            running_requests=load.running_requests,
            waiting_requests=load.waiting_requests,
            running_tokens=load.running_tokens,
            waiting_tokens=load.waiting_tokens,
            kv_usage=load.kv_usage,
            step_time_s=load.step_time_s,
        ),
        tiers=tier_capacities(status.tiers),
        sessions=[
            common_pb2.SessionResidency(
                session_id=s.session_id,
                tokens=s.tokens,
                tier=TIER_TO_PROTO.get(s.tier, common_pb2.TIER_UNSPECIFIED),
                gpu_fraction=s.gpu_fraction,
                pinned=s.pinned,
                prepared=s.prepared,
            )
            for s in status.sessions
        ],
        sequence=sequence,
    )


def registration(node_id: str, address: str, info: EngineInfo) -> scheduler_pb2.RegisterNodeRequest:
    return scheduler_pb2.RegisterNodeRequest(
        node_id=node_id,
        address=address,
        engine=ENGINE_KINDS.get(info.kind, scheduler_pb2.ENGINE_KIND_UNSPECIFIED),
        model=info.model,
        tiers=tier_capacities(info.tiers),
        kv_bytes_per_token=info.kv_bytes_per_token,
        host_link_gbps=info.host_link_gbps,
        network_gbps=info.network_gbps,
        profile=info.profile,
        max_num_seqs=info.max_num_seqs,
    )
