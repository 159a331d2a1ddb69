"""Each policy's decisions on hand-built cluster states (no I/O, times chosen by the test)."""

from __future__ import annotations

import pytest

from symphony.errors import InvalidArgument, NotFound, Unavailable
from symphony.v1 import common_pb2, scheduler_pb2
from symphony_scheduler.commands import PrepareCommand, ReleaseCommand
from symphony_scheduler.core import SchedulerCore
from symphony_scheduler.policies import default_registry

GPU, HOST, DISK = common_pb2.TIER_GPU, common_pb2.TIER_HOST, common_pb2.TIER_DISK


def make_core(
    policy: str,
    nodes: tuple[str, ...] = ("a", "b"),
    lease_s: float = 5.0,
    session_ttl_s: float = 900.0,
    advice_grace_s: float = 30.0,
) -> SchedulerCore:
    core = SchedulerCore(
        default_registry().create(policy), lease_s, session_ttl_s, advice_grace_s=advice_grace_s
    )
    for i, node_id in enumerate(nodes):
        core.register_node(
            scheduler_pb2.RegisterNodeRequest(
                node_id=node_id,
                address=f"127.0.0.1:{7000 + i}",
                kv_bytes_per_token=131_072,
                host_link_gbps=24.8,
                network_gbps=12.5,
                max_num_seqs=64,
            ),
            now=0.0,
        )
    return core


def report(
    core: SchedulerCore,
    node_id: str,
    now: float,
    running: int = 0,
    sessions: tuple[tuple[str, int, int], ...] = (),
) -> None:
    st = common_pb2.NodeStatus(node_id=node_id, load=common_pb2.NodeLoad(running_requests=running))
    for sid, tokens, tier in sessions:
        st.sessions.add(session_id=sid, tokens=tokens, tier=tier)
    core.node_status(st, now)


def turn(session: str, index: int = 1, chars: int = 400, is_last: bool = False) -> common_pb2.TurnRequest:
    return common_pb2.TurnRequest(
        session_id=session,
        turn_index=index,
        messages=[common_pb2.ChatMessage(role="user", content="x" * chars)],
        max_tokens=16,
        is_last=is_last,
    )


def finish(
    core: SchedulerCore, t: common_pb2.TurnRequest, node: str, now: float, kv_load_s: float = 0.0
) -> None:
    summary = common_pb2.TurnSummary(
        session_id=t.session_id, node_id=node, prompt_tokens=110, completion_tokens=16, kv_load_s=kv_load_s
    )
    core.turn_finished(summary, t.is_last, now)


def test_unknown_policy_is_refused_with_the_known_names() -> None:
    with pytest.raises(InvalidArgument, match="round_robin"):
        default_registry().create("fastest")


def test_round_robin_cycles_over_nodes_ignoring_the_cache() -> None:
    core = make_core("round_robin", ("a", "b", "c"))
    report(core, "a", 0.0, sessions=(("s", 5000, GPU),))
    picks = [core.route(turn("s"), 1.0).node_id for _ in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_least_loaded_picks_the_idle_node_and_counts_its_own_routes_at_once() -> None:
    core = make_core("least_loaded")
    report(core, "a", 0.0, running=10)
    report(core, "b", 0.0, running=2)
    assert core.route(turn("s1"), 1.0).node_id == "b"
    # No heartbeat in between: the scheduler's own routes must steer the later turns.
    picks = [core.route(turn(f"x{i}"), 1.0).node_id for i in range(11)]
    assert picks.count("b") == 9 and picks.count("a") == 2
    assert core.nodes["a"].requests == core.nodes["b"].requests == 12


def test_sticky_stays_home_even_when_home_is_busier() -> None:
    core = make_core("sticky")
    t = turn("s", 0)
    first = core.route(t, 0.0)
    assert first.reason == "new_session"
    finish(core, t, first.node_id, 1.0)
    other = "b" if first.node_id == "a" else "a"
    report(core, first.node_id, 2.0, running=60)
    report(core, other, 2.0, running=0)
    again = core.route(turn("s", 1), 3.0)
    assert (again.node_id, again.reason) == (first.node_id, "home")


def test_sticky_moves_when_home_expires() -> None:
    core = make_core("sticky", lease_s=5.0)
    t = turn("s", 0)
    home = core.route(t, 0.0).node_id
    finish(core, t, home, 1.0)
    other = "b" if home == "a" else "a"
    report(core, other, 9.0)
    core.expire(10.0)  # home's last report was at 0.0: lease gone
    assert home not in core.nodes
    decision = core.route(turn("s", 1), 10.0)
    assert (decision.node_id, decision.reason) == (other, "home_gone")


def test_prefix_aware_prefers_the_node_holding_most_cached_tokens() -> None:
    core = make_core("prefix_aware", ("a", "b", "c"))
    report(core, "a", 0.0, sessions=(("s", 40, GPU),))
    report(core, "b", 0.0, sessions=(("s", 100, GPU),))
    report(core, "c", 0.0)
    decision = core.route(turn("s"), 1.0)
    assert (decision.node_id, decision.reason) == ("b", "cache_hit")


def test_prefix_aware_weights_tiers_gpu_over_host_over_disk() -> None:
    core = make_core("prefix_aware", ("a", "b"))
    report(core, "a", 0.0, sessions=(("s", 100, DISK),))
    report(core, "b", 0.0, sessions=(("s", 100, HOST),))
    assert core.route(turn("s"), 1.0).node_id == "b"


def test_prefix_aware_avoids_an_overloaded_holder() -> None:
    core = make_core("prefix_aware", ("a", "b"))
    report(core, "a", 0.0, running=63, sessions=(("s", 100, GPU),))  # 63/64 slots busy
    report(core, "b", 0.0, running=1)
    decision = core.route(turn("s"), 1.0)
    assert (decision.node_id, decision.reason) == ("b", "overloaded")


def test_symphony_advisory_then_request_lands_on_the_prepared_node() -> None:
    core = make_core("symphony")
    report(core, "a", 0.0, sessions=(("s", 2000, HOST),))
    report(core, "b", 0.0)
    advice = core.advise("s", eta_s=2.0, turn_index=1, now=1.0)
    assert advice.node_id == "a" and advice.reason == "kv_local"
    [prepare] = advice.commands
    assert isinstance(prepare, PrepareCommand)
    assert (prepare.node_id, prepare.source, prepare.eta_s) == ("a", "local", 2.0)
    decision = core.route(turn("s"), 3.0)
    assert (decision.node_id, decision.reason) == ("a", "advised")
    finish(core, turn("s"), "a", 7.0)
    assert core.advice_outcomes["used"] == 1


def test_symphony_overloaded_home_loses_to_a_light_peer_when_the_transfer_fits() -> None:
    core = make_core("symphony")
    report(core, "a", 0.0, running=60, sessions=(("s", 4000, GPU),))
    report(core, "b", 0.0, running=1)
    advice = core.advise("s", eta_s=2.0, turn_index=3, now=1.0)
    assert (advice.node_id, advice.reason) == ("b", "kv_peer")
    [prepare] = advice.commands
    assert isinstance(prepare, PrepareCommand)
    assert (prepare.source, prepare.peer_node_id, prepare.peer_address) == ("peer", "a", "127.0.0.1:7000")


def test_symphony_keeps_a_hot_session_on_a_moderately_loaded_home() -> None:
    core = make_core("symphony")
    report(core, "a", 0.0, running=8, sessions=(("s", 4000, GPU),))
    report(core, "b", 0.0, running=4)
    advice = core.advise("s", eta_s=2.0, turn_index=3, now=1.0)
    assert (advice.node_id, advice.reason, advice.commands) == ("a", "kv_gpu", [])


def test_symphony_without_advisory_decides_at_request_time_and_says_so() -> None:
    core = make_core("symphony")
    report(core, "a", 0.0, sessions=(("s", 4000, GPU),))
    report(core, "b", 0.0)
    decision = core.route(turn("s"), 1.0)
    assert (decision.node_id, decision.reason) == ("a", "no_advisory")
    assert core.route_reasons["no_advisory"] == 1


def test_cancel_releases_the_prefetched_copy() -> None:
    core = make_core("symphony")
    report(core, "a", 0.0, sessions=(("s", 2000, HOST),))
    core.advise("s", 2.0, 1, 1.0)
    commands = core.cancel_advice("s", 2.0)
    assert commands == [ReleaseCommand("a", "s", prefetch_only=True)]
    assert core.advice_outcomes["cancelled"] == 1
    assert not core.has_advice("s")


def test_cancel_of_an_unknown_session_is_not_found() -> None:
    core = make_core("symphony")
    with pytest.raises(NotFound, match="unknown session"):
        core.cancel_advice("nobody", 1.0)


def test_advised_node_expiry_places_the_advisory_again_and_reroutes() -> None:
    core = make_core("symphony", lease_s=5.0)
    report(core, "a", 0.0, sessions=(("s", 2000, HOST),))
    report(core, "b", 0.0)
    assert core.advise("s", 2.0, 1, 1.0).node_id == "a"
    report(core, "b", 5.5)
    core.expire(6.0)  # a missed its heartbeats
    assert "a" not in core.nodes
    advice = core.sessions["s"].advice
    assert advice is not None and advice.node_id == "b"
    decision = core.route(turn("s"), 8.0)
    assert (decision.node_id, decision.reason) == ("b", "advised")
    assert core.take_removed_nodes() == [("a", "127.0.0.1:7000")]


def test_spurious_advisory_expires_unused_and_its_prefetch_is_released() -> None:
    core = make_core("symphony", advice_grace_s=10.0, lease_s=1000.0)
    report(core, "a", 0.0, sessions=(("s", 2000, HOST),))
    core.advise("s", 2.0, 1, 1.0)
    assert core.expire(10.0) == []  # 1 + 2 + 10 = 13: still pending
    report(core, "a", 12.5, sessions=(("s", 2000, HOST),))
    assert core.expire(13.5) == [ReleaseCommand("a", "s", prefetch_only=True)]
    assert core.advice_outcomes["unused"] == 1


def test_a_turn_that_came_before_its_kv_was_ready_counts_as_late() -> None:
    core = make_core("symphony")
    report(core, "a", 0.0, sessions=(("s", 2000, HOST),))
    core.advise("s", 0.5, 1, 1.0)
    t = turn("s")
    assert core.route(t, 1.1).reason == "advised"
    finish(core, t, "a", 2.0, kv_load_s=0.3)
    assert core.advice_outcomes == {"late": 1}


def test_baselines_count_advisories_as_unused() -> None:
    core = make_core("least_loaded")
    decision = core.advise("s", 5.0, 0, 0.0)
    assert (decision.node_id, decision.reason) == (None, "policy_ignores_advisories")
    core.route(turn("s", 0), 1.0)
    assert core.advice_outcomes["unused"] == 1


def test_no_healthy_node_is_unavailable() -> None:
    core = make_core("symphony", nodes=())
    with pytest.raises(Unavailable, match="no healthy node"):
        core.route(turn("s"), 0.0)
    core2 = make_core("symphony", nodes=("a",))
    with pytest.raises(Unavailable, match="tried: a"):
        core2.route(turn("s"), 0.0, exclude=frozenset({"a"}))


def test_status_of_an_unregistered_node_is_not_found() -> None:
    core = make_core("symphony")
    with pytest.raises(NotFound, match="register again"):
        core.node_status(common_pb2.NodeStatus(node_id="ghost"), 0.0)


def test_last_turn_ends_the_session_and_releases_its_kv_everywhere() -> None:
    core = make_core("symphony")
    report(core, "a", 0.0, sessions=(("s", 100, HOST),))
    t = turn("s", 2, is_last=True)
    core.route(t, 1.0, exclude=frozenset({"a"}))  # served by b while a still holds an old copy
    summary = common_pb2.TurnSummary(session_id="s", node_id="b", prompt_tokens=110, completion_tokens=16)
    commands = core.turn_finished(summary, True, 2.0)
    assert sorted(commands, key=lambda c: c.node_id) == [
        ReleaseCommand("a", "s", prefetch_only=False),
        ReleaseCommand("b", "s", prefetch_only=False),
    ]
    assert "s" not in core.sessions
    assert "s" not in core.nodes["a"].sessions


def test_idle_sessions_are_dropped_after_the_ttl() -> None:
    core = make_core("symphony", session_ttl_s=100.0, lease_s=1000.0)
    t = turn("s")
    node = core.route(t, 0.0).node_id
    finish(core, t, node, 1.0)
    core.route(turn("fresh"), 90.0)
    commands = core.expire(102.0)
    assert "s" not in core.sessions and "fresh" in core.sessions
    assert commands == [ReleaseCommand(node, "s", prefetch_only=False)]


def test_session_map_is_rebuilt_from_node_reports_after_a_restart() -> None:
    core = make_core("symphony")  # a fresh scheduler: it knows no sessions
    report(core, "b", 0.0, sessions=(("s", 3000, GPU),))
    assert core.sessions["s"].locations["b"].tokens == 3000
    decision = core.route(turn("s"), 1.0)
    assert decision.node_id == "b"
    report(core, "b", 2.0)  # b no longer holds it
    assert "b" not in core.sessions["s"].locations or core.sessions["s"].active_node == "b"


def test_route_updates_the_session_map_without_waiting_for_a_heartbeat() -> None:
    core = make_core("symphony")
    t = turn("s", 0)
    node = core.route(t, 0.0).node_id
    finish(core, t, node, 1.0)
    rec = core.sessions["s"]
    assert rec.locations[node].tier == "gpu" and rec.locations[node].tokens == 126
    assert rec.transcript[-1].content == "x" * 400


def test_symphony_defers_a_long_advisory_and_places_it_on_fresh_load() -> None:
    core = make_core("symphony", lease_s=1000.0)
    report(core, "a", 0.0, running=2, sessions=(("s", 4000, HOST),))
    report(core, "b", 0.0, running=2)
    advice = core.advise("s", eta_s=30.0, turn_index=2, now=1.0)  # the user started typing
    assert (advice.node_id, advice.reason, advice.commands) == (None, "deferred", [])
    report(core, "a", 20.0, running=200, sessions=(("s", 4000, HOST),))  # a got swamped meanwhile
    assert core.expire(20.0) == []  # not yet: decided about 2 s before the turn
    [prepare] = core.expire(29.5)
    assert isinstance(prepare, PrepareCommand)
    assert (prepare.node_id, prepare.source, prepare.peer_node_id) == ("b", "peer", "a")
    assert prepare.eta_s == pytest.approx(1.5)
    assert core.route(turn("s", 2), 31.0).reason == "advised"


def test_a_turn_before_its_deferred_advisory_is_placed_now() -> None:
    core = make_core("symphony", lease_s=1000.0)
    report(core, "a", 0.0, sessions=(("s", 4000, GPU),))
    assert core.advise("s", eta_s=30.0, turn_index=2, now=1.0).reason == "deferred"
    decision = core.route(turn("s", 2), 3.0)
    assert (decision.node_id, decision.reason) == ("a", "advice_not_placed_yet")
    assert core.advice_outcomes == {"unused": 1}
    assert core.expire(40.0) == []  # the consumed advisory's timers are inert
