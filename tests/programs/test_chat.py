from __future__ import annotations

import json

import dspy
import pytest
from fusion_dspy.programs.chat import ChatProgram
from fusion_dspy.programs.chat import PairwiseJudge
from fusion_dspy.programs.chat import load_arena_hard
from fusion_dspy.programs.chat import win_rate

from fusion_dspy import Teacher
from fusion_dspy.evaluate.stats import bootstrap_ci
from fusion_dspy.testing import FakeEngine


def judge_engine(rule) -> FakeEngine:
    """A judge that answers with ``rule(response_a, response_b)`` ('A', 'B' or 'tie')."""
    return FakeEngine(
        name="judge",
        responder=lambda r: {"reasoning": "r", "verdict": rule(r.inputs["response_a"], r.inputs["response_b"])},
    )


def test_both_orders_cancel_position_bias():
    always_a = judge_engine(lambda a, b: "A")
    judge = PairwiseJudge(lm=always_a.lm())
    assert judge.compare("p", "candidate", "reference") == 0.5
    assert always_a.calls == 2
    # The candidate appeared once as A and once as B.
    assert [r.inputs["response_a"] for r in always_a.requests] == ["candidate", "reference"]


@pytest.mark.parametrize(("rule", "score"), [
    (lambda a, b: "A" if a == "good" else "B", 1.0),
    (lambda a, b: "B" if a == "good" else "A", 0.0),
    (lambda a, b: "tie", 0.5),
    (lambda a, b: "tie" if a == "good" else "A", 0.25),
])
def test_pairwise_scores(rule, score):
    judge = PairwiseJudge(lm=judge_engine(rule).lm())
    example = dspy.Example(prompt="p", reference="ref").with_inputs("prompt")
    assert judge(example, dspy.Prediction(response="good")) == score


def test_win_rate_counts_ties_and_has_a_sensible_ci():
    result = win_rate([1.0, 1.0, 0.5, 0.0, 0.75])
    assert (result.wins, result.ties, result.losses) == (3, 1, 1)
    assert result.rate == pytest.approx(65.0)
    assert (result.rate, result.ci_low, result.ci_high) == pytest.approx(
        bootstrap_ci([100, 100, 50, 0, 75], resamples=2000, seed=0))
    # 10 wins and 10 losses: 50%, and the normal approximation gives +-1.96*sqrt(.25/20) = +-21.9 points.
    even = win_rate([1.0] * 10 + [0.0] * 10)
    assert even.rate == 50.0
    assert 25 < even.ci_low < 33 and 67 < even.ci_high < 75
    unanimous = win_rate([1.0] * 8)
    assert (unanimous.ci_low, unanimous.ci_high) == (100.0, 100.0)
    assert str(result).startswith("65.0% [")
    with pytest.raises(ValueError):
        win_rate([])


def test_load_arena_hard_joins_questions_and_reference_answers(tmp_path, caplog):
    (tmp_path / "question.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"uid": "u1", "category": "arena-hard-v0.1", "cluster": "c1", "prompt": "Write a haiku."},
        {"uid": "u2", "category": "arena-hard-v0.1", "cluster": "c2", "prompt": "No answer for this one."},
    ]))
    answer = {"uid": "u1", "model": "m", "messages": [{"role": "user", "content": "Write a haiku."},
                                                        {"role": "assistant", "content": {"answer": "Old pond..."}}]}
    (tmp_path / "model_answer_m.jsonl").write_text(json.dumps(answer) + "\n")
    with caplog.at_level("WARNING"):
        [example] = load_arena_hard(tmp_path, reference_model="m")
    assert (example.prompt, example.reference, example.category) == ("Write a haiku.", "Old pond...", "c1")
    assert "1 prompt(s) have no m answer" in caplog.text  # a partial answers file is said, not silent
    with pytest.raises(FileNotFoundError, match="available: \\['m'\\]"):
        load_arena_hard(tmp_path, reference_model="other")


def test_chat_program_nested_with_judge_metric():
    teacher = FakeEngine(name="t", responder=lambda r: {"response": f"draft {r.seed}"})
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "response": "good"})

    class Assistant(dspy.Module):
        def __init__(self):
            super().__init__()
            self.chat = ChatProgram(n=2, teachers=[Teacher(teacher.lm(), name="t")], fusor=fusor.lm(), guard=False)

        def forward(self, prompt: str) -> dspy.Prediction:
            return self.chat(prompt=prompt)

    pred = Assistant()(prompt="Say something good.")
    judge = PairwiseJudge(lm=judge_engine(lambda a, b: "A" if a == "good" else "B").lm())
    assert judge(dspy.Example(prompt="Say something good.", reference="meh"), pred) == 1.0


def test_real_arena_hard(real_data):
    if not (real_data / "arena_hard_v0.1").exists():
        pytest.skip("no arena_hard_v0.1 in the data directory")
    examples = load_arena_hard(limit=3)
    assert len(examples) == 3 and all(e.reference for e in examples)


def test_limit_zero_is_no_rows_and_a_negative_limit_is_refused(tmp_path):
    (tmp_path / "question.jsonl").write_text("".join(json.dumps({"uid": f"u{i}", "prompt": f"P{i}"}) + "\n"
                                                     for i in range(3)))
    (tmp_path / "model_answer_m.jsonl").write_text("".join(
        json.dumps({"uid": f"u{i}", "messages": [{"role": "assistant", "content": f"A{i}"}]}) + "\n" for i in range(3)))
    assert load_arena_hard(tmp_path, reference_model="m", limit=0) == []  # was one row
    assert len(load_arena_hard(tmp_path, reference_model="m", limit=2)) == 2
    with pytest.raises(ValueError, match="limit"):
        load_arena_hard(tmp_path, reference_model="m", limit=-1)


def test_a_malformed_jsonl_line_names_the_file_and_line(tmp_path):
    (tmp_path / "question.jsonl").write_text(json.dumps({"uid": "u1", "prompt": "P"}) + "\n{not json\n")
    (tmp_path / "model_answer_m.jsonl").write_text(
        json.dumps({"uid": "u1", "messages": [{"role": "assistant", "content": "A"}]}) + "\n")
    # json's own message says "line 1 column 2" whatever the file line was, and names no file.
    with pytest.raises(ValueError, match=r"question\.jsonl.*line 2"):
        load_arena_hard(tmp_path, reference_model="m")
