"""GEPA-ready metrics: the same score as the plain metric, plus task feedback from the Fuse's report."""

from __future__ import annotations

import inspect

import dspy
import pytest
from fusion_dspy.programs.math import MathProgram
from fusion_dspy.programs.math import exact_number_match
from fusion_dspy.programs.math import exact_number_match_feedback
from fusion_dspy.programs.translate import TranslationProgram
from fusion_dspy.programs.translate import chrf
from fusion_dspy.programs.translate import chrf_feedback

from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine

GEPA_ARGS = (None, None, None, None, None)


def _queue_teacher(field, values, **extra):
    queue = iter(values)
    return FakeEngine(name="t", responder=lambda r: {field: next(queue), **extra})


def test_chrf_feedback_scores_like_chrf_and_names_the_best_candidate():
    teacher = _queue_teacher("translation", ["Der Hund schläft.", "Die Katze schläft.", "Ein Hund."])
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "translation": "Ein Hund."})
    # guard=False: the feedback is on the fused answer (the guard would return MBR's pick, the best one).
    program = TranslationProgram(n=3, teachers=[Teacher(teacher.lm(), name="t", samples=3, temperature=0.8)],
                                 fusor=fusor.lm(), max_threads=1, guard=False)
    example = dspy.Example(source="The dog sleeps.", target="Der Hund schläft.").with_inputs("source")
    pred = program(source="The dog sleeps.", target_language="German")
    result = chrf_feedback(example, pred)
    inspect.signature(chrf_feedback).bind(*GEPA_ARGS)  # the five-argument form GEPA requires
    assert isinstance(result, dspy.Prediction)
    assert float(result) == pytest.approx(chrf(example, pred)) == pytest.approx(result.score)
    assert result.score < 100
    assert "best of the 3 candidates (t) scored 100.0" in result.feedback
    assert "below it" in result.feedback and "Reference: Der Hund schläft." in result.feedback
    assert "fusor wrote" in result.feedback
    # Without a Fuse report (a plain prediction) it still scores and says what it can.
    plain = chrf_feedback(example, dspy.Prediction(translation="Der Hund schläft."))
    assert plain.score == 100.0 and "candidates" not in plain.feedback


def test_math_feedback_says_right_or_wrong_and_gives_the_majority_answer():
    teacher = _queue_teacher("answer", ["18", "18", "17"], reasoning="r")
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "reasoning": "r", "answer": "17"})
    # guard=False: the feedback is on the fused answer (the guard would return the majority's 18).
    program = MathProgram(n=3, teachers=[Teacher(teacher.lm(), name="t", samples=3, temperature=0.8)],
                          fusor=fusor.lm(), mode="fuse", max_threads=1, guard=False)
    example = dspy.Example(question="9*2?", answer="18").with_inputs("question")
    pred = program(question="9*2?")
    result = exact_number_match_feedback(example, pred)
    assert float(result) == exact_number_match(example, pred) == 0.0
    assert "Wrong: answered 17, the reference answer is 18." in result.feedback
    assert "Majority answer among the 3 candidates: 18 (2 of 3); 2 of 3 candidates were right." in result.feedback
    assert "A correct candidate was available but not chosen." in result.feedback
    right = exact_number_match_feedback(example, dspy.Prediction(answer=18.0))
    assert right.score == 1.0 and right.feedback.startswith("Right: 18 is the reference answer.")


def test_ifeval_feedback_lists_the_failed_instructions():
    pytest.importorskip("if_verifiable", reason="needs the instruct extra: pip install 'fusion-dspy[instruct]'")
    from fusion_dspy.programs.instruct import InstructProgram
    from fusion_dspy.programs.instruct import instruction_accuracy
    from fusion_dspy.programs.instruct import instruction_feedback

    example = dspy.Example(key=1, prompt="Write.", instruction_id_list=["punctuation:no_comma",
                                                                         "change_case:english_lowercase"],
                           kwargs=[{}, {}]).with_inputs("prompt")
    teacher = _queue_teacher("response", ["all lowercase and no commas here", "Upper, comma"])
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "response": "lowercase, comma"})
    # guard=False: the feedback is on the fused answer (the guard would return the better candidate).
    program = InstructProgram(n=2, teachers=[Teacher(teacher.lm(), name="t", samples=2, temperature=0.8)],
                              fusor=fusor.lm(), max_threads=1, guard=False)
    pred = program(prompt="Write.")
    result = instruction_feedback(example, pred)
    assert float(result) == instruction_accuracy(example, pred) == 0.5
    assert "Followed 1 of 2 instructions. Failed: punctuation:no_comma." in result.feedback
    assert "best of the 2 candidates (t) followed 100%" in result.feedback
