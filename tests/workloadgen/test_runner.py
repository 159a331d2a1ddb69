"""The runner against a fake scheduler on loopback: the timing model, N active sessions, advisories,
retries, failures and stopping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from symphony.grpcutil import ServerHandle
from symphony_workloadgen.clients.symphony_grpc import SymphonyGrpcTarget
from symphony_workloadgen.dataset import Conversation, Turn
from symphony_workloadgen.runner import RunConfig, Runner
from symphony_workloadgen.session import SessionPlanner, UserModel

from .fakes import Arrival, FakeScheduler, start_fake_scheduler

# Prompt and answer lengths chosen so that planned send times of different sessions stay apart.
CONVERSATIONS = [
    Conversation("a", (Turn("p" * 60, "a" * 100), Turn("q" * 90, "b" * 250), Turn("r" * 30, "c" * 50))),
    Conversation("b", (Turn("x" * 120, "y" * 300), Turn("z" * 45, "w" * 75))),
    Conversation("c", (Turn("m" * 75, "n" * 200), Turn("o" * 150, "k" * 20), Turn("l" * 10, "j" * 10))),
]
SCALE = 40.0  # typing 60 chars at 6 chars/s = 10 s of user time = 0.25 s of test time


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeScheduler, ServerHandle]]:
    f = FakeScheduler()
    server = await start_fake_scheduler(f)
    yield f, server
    await server.stop(0)


def make_runner(
    server: ServerHandle, config: RunConfig, model: UserModel | None = None, seed: int = 7
) -> tuple[Runner, SymphonyGrpcTarget]:
    target = SymphonyGrpcTarget(f"127.0.0.1:{server.port}")
    planner = SessionPlanner(CONVERSATIONS, model or UserModel(time_scale=SCALE), seed=seed)
    return Runner(target, planner, config), target


async def run(runner: Runner, target: SymphonyGrpcTarget):  # type: ignore[no-untyped-def]
    await target.start()
    try:
        return await runner.run()
    finally:
        await target.close()


async def test_turns_are_sent_at_the_planned_times(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    active: list[int] = []  # sessions active when a turn arrived, while the run was still sending
    runner, target = make_runner(server, RunConfig(num_clients=3, max_turns=14))

    def on_turn(_a: Arrival) -> None:
        p = runner.progress()
        if p.sending:
            active.append(p.active_sessions)

    sched.on_turn = on_turn
    result = await run(runner, target)

    records = {(r.session_id, r.turn_index): r for r in result.records}
    assert len(result.records) == 14 and all(r.ok for r in result.records)
    plans = {
        runner.planner.plan(n).session_id: runner.planner.plan(n) for n in range(result.sessions_started)
    }
    # Sessions are replaced in the order they end: the k-th to end is replaced by session 3 + k.
    ends = sorted(r.finished for r in result.records if r.is_last)
    for r in sorted(result.records, key=lambda r: r.planned):
        plan = plans[r.session_id]
        prompt = plan.conversation.turns[r.turn_index].prompt
        typing = len(prompt) / 6.0 / SCALE
        if r.turn_index == 0:
            # The first sessions start at 0; a replacement starts when the session before it ended.
            start = 0.0 if plan.number < 3 else ends[plan.number - 3]
            expected = start + typing
        else:
            prev = records[(r.session_id, r.turn_index - 1)]
            reading = len(plan.conversation.turns[r.turn_index - 1].answer) / 25.0 / SCALE
            expected = prev.finished + reading + typing
        assert r.planned == pytest.approx(expected, abs=1e-3), (r.session_id, r.turn_index)
        assert r.sent >= r.planned

    arrivals = {(a.session_id, a.turn_index): a.t - runner.origin for a in sched.turns}
    for key, r in records.items():
        # The fake scheduler never sees a turn before its planned time, nor before the generator sent it.
        assert arrivals[key] >= r.planned - 1e-3
        assert arrivals[key] >= r.sent - 1e-3
    # The request whose wait ends first is sent first.
    by_arrival = [(a.session_id, a.turn_index) for a in sched.turns]
    assert by_arrival == sorted(by_arrival, key=lambda k: records[k].planned)
    # Exactly N sessions were active whenever a turn arrived; every session id is unique.
    assert set(active) == {3} and len(active) >= 10
    assert len({r.session_id for r in result.records}) == len({a.session_id for a in sched.turns})
    assert result.sessions_started == len(plans) >= 6


async def test_advisory_at_typing_start_with_typing_eta(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    runner, target = make_runner(server, RunConfig(num_clients=2, max_turns=6))
    result = await run(runner, target)
    turns = {(r.session_id, r.turn_index): r for r in result.records}
    assert len(sched.advisories) >= 6
    for a in sched.advisories:
        rec = turns.get((a.session_id, a.turn_index))
        if rec is None:  # advised, but the run stopped before the send
            continue
        plan = next(
            runner.planner.plan(n) for n in range(10) if runner.planner.plan(n).session_id == a.session_id
        )
        typing = plan.turns[a.turn_index].typing_s
        assert a.request.eta_s == pytest.approx(typing)
        assert a.request.expected_prompt_chars == len(plan.turns[a.turn_index].prompt)
        # Sent when typing starts: ETA before the turn's planned send, never earlier.
        assert a.t - runner.origin >= rec.planned - typing - 1e-3
        assert a.t - runner.origin < rec.planned
    assert result.advisories_sent == len(sched.advisories)


async def test_no_advisories_baseline_sends_none(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    runner, target = make_runner(
        server, RunConfig(num_clients=2, max_turns=5), UserModel(time_scale=SCALE, advisories=False)
    )
    result = await run(runner, target)
    assert len(result.records) == 5 and not sched.advisories and result.advisories_sent == 0


async def test_history_carries_dataset_answers_and_is_last(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    runner, target = make_runner(server, RunConfig(num_clients=1, max_turns=3))
    await run(runner, target)
    plan = runner.planner.plan(0)
    reqs = [a.request for a in sched.turns if a.session_id == plan.session_id]
    last = reqs[-1]
    expected = []
    for i, t in enumerate(plan.conversation.turns[: last.turn_index + 1]):
        expected.append(("user", t.prompt))
        if i < last.turn_index:
            expected.append(("assistant", t.answer))
    assert [(m.role, m.content) for m in last.messages] == expected
    assert [r.is_last for r in reqs] == [t.is_last for t in plan.turns[: len(reqs)]]
    assert all(r.expected_response == plan.turns[r.turn_index].expected_answer for r in reqs)
    assert all(r.ignore_eos and r.max_tokens == -(-len(r.expected_response) // 4) for r in reqs)


async def test_unavailable_turns_are_retried(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    sched.unavailable_first = 2
    runner, target = make_runner(server, RunConfig(num_clients=1, max_turns=2, retry_backoff_s=0.001))
    result = await run(runner, target)
    assert [r.attempts for r in result.records] == [3, 1]
    assert all(r.ok for r in result.records)


async def test_failed_turn_ends_the_session_and_a_new_one_starts(
    fake: tuple[FakeScheduler, ServerHandle],
) -> None:
    sched, server = fake
    sched.fail_turns = frozenset({1})
    runner, target = make_runner(server, RunConfig(num_clients=1, max_turns=4))
    result = await run(runner, target)
    failed = [r for r in result.records if r.error]
    assert failed and all(r.turn_index == 1 and r.error.startswith("INVALID_ARGUMENT") for r in failed)
    assert all(r.attempts == 1 for r in failed)  # not retryable
    assert result.sessions_started >= 2
    assert [r.turn_index for r in result.records] == [0, 1, 0, 1]


async def test_stop_drains_in_flight_turns(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    sched.hold = asyncio.Event()
    runner, target = make_runner(server, RunConfig(num_clients=2))
    task = asyncio.create_task(run(runner, target))
    await sched.started.wait()
    runner.stop()
    sched.hold.set()
    result = await task
    assert result.interrupted
    assert result.records and all(r.ok for r in result.records)


async def test_second_stop_cancels_in_flight_turns(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    sched.hold = asyncio.Event()
    runner, target = make_runner(server, RunConfig(num_clients=2))
    task = asyncio.create_task(run(runner, target))
    await sched.started.wait()
    runner.stop()
    runner.stop()
    result = await task
    assert result.interrupted and result.records
    assert all(r.cancelled and not r.error for r in result.records)


async def test_live_history_carries_the_received_answers(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    sched.answer = lambda expected: expected.upper()[: len(expected) // 2]
    runner, target = make_runner(server, RunConfig(num_clients=1, max_turns=2, history="live"))
    result = await run(runner, target)
    plan = runner.planner.plan(0)
    second = sched.turns[1].request
    live = plan.turns[0].expected_answer.upper()[: len(plan.turns[0].expected_answer) // 2]
    assert [(m.role, m.content) for m in second.messages][1] == ("assistant", live)
    # Reading time follows the answer actually shown to the user.
    first, nxt = result.records
    expected = first.finished + (len(live) / 25 + len(plan.turns[1].prompt) / 6) / SCALE
    assert nxt.planned == pytest.approx(expected, abs=1e-3)


async def test_spurious_and_missed_advisories(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    model = UserModel(time_scale=SCALE, advisory_miss_rate=1.0, advisory_spurious_rate=1.0)
    runner, target = make_runner(server, RunConfig(num_clients=1, max_turns=3), model)
    result = await run(runner, target)
    assert result.advisories_sent == 0 and result.spurious_sent >= 2
    recs = result.records
    # Each answer is followed, half-way through the reading time, by an advisory no turn follows then.
    for a in sched.advisories[:2]:
        prev = next(r for r in recs if r.session_id == a.session_id and r.turn_index == a.request.turn_index)
        plan = runner.planner.plan(prev.session_number)
        half = len(plan.turns[prev.turn_index].expected_answer) / 25 / SCALE / 2
        assert a.t - runner.origin >= prev.finished + half - 1e-3
        assert a.request.eta_s == pytest.approx(plan.spurious_eta_s(prev.turn_index))


async def test_max_sessions_ends_the_run_when_they_are_done(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    runner, target = make_runner(server, RunConfig(num_clients=2, max_sessions=3))
    result = await run(runner, target)
    assert result.sessions_started == 3 == result.sessions_finished
    played = [runner.planner.plan(n) for n in range(3)]
    assert len(result.records) == sum(len(p.turns) for p in played) == len(sched.turns)
    assert all(r.ok for r in result.records) and not result.interrupted
