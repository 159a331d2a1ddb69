"""The I/O-free user model: seeded plans, speeds, scaling, advisory miss and spurious rates."""

from __future__ import annotations

import pytest

from symphony_workloadgen.dataset import Conversation, Turn
from symphony_workloadgen.session import SessionPlanner, UserModel

CONVS = [
    Conversation(str(i), tuple(Turn("p" * (10 + i), "a" * (50 + i)) for _ in range(4))) for i in range(20)
]


def test_waits_follow_the_reading_and_typing_model() -> None:
    plan = SessionPlanner(CONVS, UserModel(time_scale=2.0), seed=0).plan(0)
    prompt = len(plan.turns[1].prompt)
    assert plan.wait_s(0, 0) == pytest.approx(len(plan.turns[0].prompt) / 6 / 2)
    assert plan.wait_s(1, 100) == pytest.approx((100 / 25 + prompt / 6) / 2)
    assert plan.advisory_lead_s(1) == plan.turns[1].typing_s
    assert [t.is_last for t in plan.turns] == [False, False, False, True]


def test_same_seed_same_sessions_and_ids_are_unique() -> None:
    model = UserModel(read_speed_std=10, type_speed_std=3, advisory_miss_rate=0.3, advisory_spurious_rate=0.2)
    a = SessionPlanner(CONVS, model, seed=5)
    b = SessionPlanner(CONVS, model, seed=5)
    c = SessionPlanner(CONVS, model, seed=6)
    pa = [a.next_session() for _ in range(50)]
    pb = [b.next_session() for _ in range(50)]
    assert pa == pb
    assert [p.conversation for p in pa] != [c.next_session().conversation for _ in range(50)]
    assert len({p.session_id for p in pa}) == 50
    assert a.plan(17) == pa[17]  # a session does not depend on the order sessions are planned in


def test_per_session_speeds_are_normal_and_floored() -> None:
    planner = SessionPlanner(CONVS, UserModel(read_speed=25, read_speed_std=10, min_speed=5), seed=1)
    speeds = [planner.plan(n).read_speed for n in range(2000)]
    assert min(speeds) == 5
    assert 24 < sum(speeds) / len(speeds) < 27
    assert len(set(speeds)) > 1000
    fixed = SessionPlanner(CONVS, UserModel(), seed=1)
    assert {fixed.plan(n).read_speed for n in range(50)} == {25.0}


def test_advisory_miss_and_spurious_rates() -> None:
    model = UserModel(advisory_miss_rate=0.1, advisory_spurious_rate=0.6)
    planner = SessionPlanner(CONVS, model, seed=3)
    turns = [t for n in range(2000) for t in planner.plan(n).turns]
    missed = sum(not t.advise for t in turns) / len(turns)
    spurious = sum(t.spurious_after for t in turns) / len(turns)
    assert 0.08 < missed < 0.12
    assert 0.57 < spurious < 0.63
    off = SessionPlanner(CONVS, UserModel(advisories=False, advisory_spurious_rate=0.5), seed=3).plan(0)
    assert not any(t.advise or t.spurious_after for t in off.turns)


def test_max_turns_per_session_cuts_conversations() -> None:
    plan = SessionPlanner(CONVS, UserModel(), seed=0, max_turns_per_session=2).plan(0)
    assert len(plan.turns) == 2 and plan.turns[-1].is_last


@pytest.mark.parametrize(
    "kwargs", [{"read_speed": 0}, {"time_scale": -1}, {"advisory_miss_rate": 1.5}, {"type_speed_std": -1}]
)
def test_bad_models_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        UserModel(**kwargs)  # type: ignore[arg-type]
