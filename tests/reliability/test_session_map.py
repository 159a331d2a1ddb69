"""The session map never grows with sessions that are gone (found by the soak test): a node's
status report written before the scheduler's Release reached it does not bring an ended session
back; after a lease, a report does rebuild a session (the recovery path after a restart)."""

from __future__ import annotations

from symphony.v1 import common_pb2, scheduler_pb2
from symphony_scheduler.core import SchedulerCore
from symphony_scheduler.policies import default_registry


def _report(sequence: int, *sessions: str) -> common_pb2.NodeStatus:
    return common_pb2.NodeStatus(
        node_id="n",
        sequence=sequence,
        sessions=[
            common_pb2.SessionResidency(session_id=s, tokens=64, tier=common_pb2.TIER_GPU) for s in sessions
        ],
    )


def test_a_stale_report_does_not_revive_an_ended_session() -> None:
    core = SchedulerCore(default_registry().create("least_loaded"), lease_s=5.0)
    core.register_node(scheduler_pb2.RegisterNodeRequest(node_id="n", address="127.0.0.1:1"), now=0.0)
    turn = common_pb2.TurnRequest(
        session_id="s",
        max_tokens=4,
        is_last=True,
        messages=[common_pb2.ChatMessage(role="user", content="hi")],
    )
    core.route(turn, now=1.0)
    summary = common_pb2.TurnSummary(session_id="s", node_id="n", prompt_tokens=4, completion_tokens=4)
    commands = core.turn_finished(summary, is_last=True, now=2.0)
    assert [type(c).__name__ for c in commands] == ["ReleaseCommand"]
    assert "s" not in core.sessions

    core.node_status(_report(1, "s"), now=2.5)  # written before the Release arrived
    assert "s" not in core.sessions
    core.expire(now=3.0)
    core.node_status(_report(2, "s"), now=3.0)
    assert "s" not in core.sessions

    # Long after the end, a node that still reports the session is believed (restart recovery).
    core.expire(now=7.5)
    core.node_status(_report(3, "s"), now=7.5)
    assert "s" in core.sessions


def test_a_restarted_scheduler_rebuilds_sessions_from_reports() -> None:
    core = SchedulerCore(default_registry().create("symphony"), lease_s=5.0)
    core.register_node(scheduler_pb2.RegisterNodeRequest(node_id="n", address="127.0.0.1:1"), now=0.0)
    core.node_status(_report(1, "a", "b"), now=0.1)
    assert set(core.sessions) == {"a", "b"}
    assert core.sessions["a"].locations["n"].tokens == 64
