"""Dataset loaders: ShareGPT files (valid prefix of truncated files, clear errors), synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from symphony_workloadgen.dataset import (
    DatasetError,
    Distribution,
    SyntheticSpec,
    load,
    load_file,
    load_sharegpt,
    synthetic,
)


def write(tmp_path: Path, data: object, raw: str | None = None) -> Path:
    p = tmp_path / "data.json"
    p.write_text(raw if raw is not None else json.dumps(data))
    return p


def conv(*values: str, with_from: bool = True) -> dict[str, object]:
    roles = ("human", "gpt")
    return {
        "conversations": [
            {"from": roles[i % 2], "value": v} if with_from else {"value": v} for i, v in enumerate(values)
        ]
    }


def test_pairs_prompts_with_answers_and_skips_short_conversations(tmp_path: Path) -> None:
    data = [
        conv("hi", "hello", "how?", "so"),
        conv("alone"),
        conv("a", "b", with_from=False),
        {"conversations": []},
    ]
    report = load_file(write(tmp_path, data))
    assert report.kept == 2 and report.dropped_short == 2 and not report.truncated
    first = report.conversations[0]
    assert [(t.prompt, t.answer) for t in first.turns] == [("hi", "hello"), ("how?", "so")]
    assert report.conversations[1].turns[0].answer == "b"


def test_truncated_file_keeps_the_valid_prefix(tmp_path: Path) -> None:
    whole = json.dumps([conv("a", "b"), conv("c", "d"), conv("e", "f")])
    cut = whole[: whole.index('"e"') + 2]
    report = load_file(write(tmp_path, None, raw=cut))
    assert report.kept == 2 and report.truncated and report.dropped == 1
    assert "kept 2 conversations, dropped 1" in report.describe()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"conversations": []}, "expected a JSON list"),
        ([conv("a", "b"), 7], "entry 1: expected an object"),
        ([{"id": 1}], "entry 0: missing 'conversations'"),
        (
            [{"conversations": [{"from": "human", "value": 3}]}],
            "entry 0, message 0: 'value' must be a string",
        ),
        ([{"conversations": [{"from": "robot", "value": "x"}]}], "unknown speaker 'robot'"),
        ([conv("only")], "no conversation with at least one prompt and answer"),
    ],
)
def test_malformed_files_name_the_offending_entry(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_file(write(tmp_path, data))


def test_invalid_json_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="invalid JSON after entry 1"):
        load_file(write(tmp_path, None, raw='[{"conversations": [{"value": "a"}, {"value": "b"}]}, {oops}]'))
    with pytest.raises(DatasetError, match="cannot read"):
        load_file(tmp_path / "missing.json")


def test_bundled_sharegpt_loads_its_valid_prefix() -> None:
    report = load_sharegpt(limit=50)
    assert report.kept == 50 and all(c.turns for c in report.conversations)


@pytest.mark.slow
def test_whole_bundled_sharegpt_reports_truncation() -> None:
    report = load_sharegpt()
    assert report.truncated
    assert report.entries_read == 17_671 and report.kept + report.dropped_short == 17_671


def test_synthetic_is_seeded_and_follows_its_distributions() -> None:
    spec = SyntheticSpec(
        conversations=200,
        turns=Distribution.parse("2-6", "t"),
        prompt_chars=Distribution.parse("40-120", "p"),
        answer_chars=Distribution.parse("normal:200:20", "a"),
    )
    a, b, c = synthetic(spec, 1), synthetic(spec, 1), synthetic(spec, 2)
    assert a.conversations == b.conversations != c.conversations
    turns = [t for cv in a.conversations for t in cv.turns]
    assert all(2 <= len(cv.turns) <= 6 for cv in a.conversations)
    assert all(40 <= len(t.prompt) <= 120 for t in turns)
    mean_answer = sum(len(t.answer) for t in turns) / len(turns)
    assert 180 < mean_answer < 220
    assert load("synthetic", seed=1, spec=spec).conversations == a.conversations


@pytest.mark.parametrize("text", ["", "a-b", "5-2", "0", "normal:x:1"])
def test_bad_distributions_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"^x: "):
        Distribution.parse(text, "x")
