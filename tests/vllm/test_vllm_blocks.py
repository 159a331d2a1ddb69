"""Block keys and per-step load/save planning of the KV connector (pure Python, no vLLM)."""

from __future__ import annotations

import pytest

from symphony_vllm.blocks import block_keys, loadable_blocks, plan_step

BS = 4


def test_only_full_blocks_get_keys() -> None:
    assert len(block_keys(list(range(11)), BS).keys) == 2
    assert block_keys(list(range(11)), BS).tokens == 8
    assert block_keys([1, 2, 3], BS).keys == ()


def test_keys_identify_the_whole_prefix_not_just_the_block() -> None:
    a = block_keys([1, 2, 3, 4, 5, 6, 7, 8], BS).keys
    b = block_keys([9, 2, 3, 4, 5, 6, 7, 8], BS).keys
    assert a[0] != b[0]
    assert a[1] != b[1]  # same tokens in block 1, different history: different K,V


def test_a_longer_conversation_extends_the_key_chain() -> None:
    turn1 = list(range(10))
    turn2 = [*turn1, 50, 51, 52, 53, 54, 55]
    assert block_keys(turn2, BS).keys[:2] == block_keys(turn1, BS).keys


def test_namespace_keeps_models_apart() -> None:
    assert block_keys(list(range(8)), BS, "m1").keys != block_keys(list(range(8)), BS, "m2").keys


def test_bad_block_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="block_size"):
        block_keys([1], 0)


@pytest.mark.parametrize(
    ("held", "prompt", "expected"),
    [(3, 13, 3), (3, 12, 2), (4, 12, 2), (0, 12, 0), (1, 12, 1), (2, 5, 1)],
)
def test_the_engine_always_computes_the_last_prompt_token(held: int, prompt: int, expected: int) -> None:
    assert loadable_blocks(held, prompt, BS) == expected


def test_fresh_prefill_saves_every_full_prompt_block_once() -> None:
    plan = plan_step(
        num_prompt_tokens=10,
        block_size=BS,
        engine_block_ids=[7, 8, 9],
        computed_before=0,
        computed_after=10,
        external_tokens=0,
        already_saved=0,
    )
    assert plan.load == ()
    assert plan.save == ((0, 7), (1, 8))  # the partial third block is never stored


def test_chunked_prefill_saves_each_block_in_the_step_that_completes_it() -> None:
    common = {
        "num_prompt_tokens": 14,
        "block_size": BS,
        "engine_block_ids": [3, 4, 5, 6],
        "external_tokens": 0,
    }
    first = plan_step(**common, computed_before=0, computed_after=6, already_saved=0)  # type: ignore[arg-type]
    second = plan_step(**common, computed_before=6, computed_after=14, already_saved=1)  # type: ignore[arg-type]
    assert first.save == ((0, 3),)
    assert second.save == ((1, 4), (2, 5))


def test_external_blocks_are_loaded_into_their_engine_blocks_and_not_saved_again() -> None:
    # The engine's prefix cache had block 0; the store supplies blocks 1-2; block 3 is new.
    plan = plan_step(
        num_prompt_tokens=17,
        block_size=BS,
        engine_block_ids=[10, 11, 12, 13, 14],
        computed_before=12,
        computed_after=17,
        external_tokens=8,
        already_saved=3,
    )
    assert plan.load == ((1, 11), (2, 12))
    assert plan.save == ((3, 13),)


def test_engine_cached_blocks_missing_from_the_store_are_saved() -> None:
    plan = plan_step(
        num_prompt_tokens=9,
        block_size=BS,
        engine_block_ids=[1, 2, 3],
        computed_before=8,  # all from the engine's own prefix cache
        computed_after=9,
        external_tokens=0,
        already_saved=0,
    )
    assert plan.load == ()
    assert plan.save == ((0, 1), (1, 2))
