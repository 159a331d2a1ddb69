import pytest

from symphony.errors import InvalidArgument, ResourceExhausted
from symphony.limits import Limits
from symphony.v1 import common_pb2, scheduler_pb2
from symphony.validation import check_advice, check_turn

LIMITS = Limits(max_messages=4)


def turn(**kw: object) -> common_pb2.TurnRequest:
    base: dict[str, object] = {
        "session_id": "s1",
        "turn_index": 0,
        "max_tokens": 8,
        "messages": [common_pb2.ChatMessage(role="user", content="hi")],
    }
    base.update(kw)
    return common_pb2.TurnRequest(**base)  # type: ignore[arg-type]


def test_valid_turn_passes() -> None:
    check_turn(turn(), LIMITS)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"session_id": ""}, "session_id"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"turn_index": -2}, "turn_index"),
        ({"messages": []}, "messages"),
        ({"messages": [common_pb2.ChatMessage(role="robot", content="x")]}, "messages[0].role"),
    ],
)
def test_invalid_turn_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_turn(turn(**kw), LIMITS)
    assert exc.value.field == field
    assert field in str(exc.value)


def test_too_many_messages_is_resource_exhausted() -> None:
    msgs = [common_pb2.ChatMessage(role="user", content="x")] * 5
    with pytest.raises(ResourceExhausted, match="exceed the limit of 4"):
        check_turn(turn(messages=msgs), LIMITS)


@pytest.mark.parametrize("eta", [-1.0, float("nan"), float("inf"), 1e9])
def test_bad_eta_is_rejected(eta: float) -> None:
    with pytest.raises(InvalidArgument, match="eta_s"):
        check_advice(scheduler_pb2.AdviseRequest(session_id="s", eta_s=eta), LIMITS)
