from symphony.tokens import prompt_token_count, prompt_token_ids, text_token_ids
from symphony.v1.common_pb2 import ChatMessage


def test_next_prompt_extends_previous_prompt_and_answer() -> None:
    first = [ChatMessage(role="user", content="Tell me about caches, please.")]
    answer = "Caches keep recently used data close to where it is needed."
    second = [
        *first,
        ChatMessage(role="assistant", content=answer),
        ChatMessage(role="user", content="More?"),
    ]
    p1, p2 = prompt_token_ids(first), prompt_token_ids(second)
    assert p2[: len(p1) + len(text_token_ids(answer))] == p1 + text_token_ids(answer)


def test_count_matches_ids() -> None:
    msgs = [ChatMessage(role="system", content="x" * 33), ChatMessage(role="user", content="é" * 9)]
    assert prompt_token_count(msgs) == len(prompt_token_ids(msgs))


def test_ids_differ_for_different_text() -> None:
    assert text_token_ids("abcd") != text_token_ids("abce")
