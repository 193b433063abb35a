"""Traces that teach the right thing (issue 9, item 4): no wrong candidate becomes a demo."""

from __future__ import annotations

import re

import dspy
import pytest

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine


def right_answer(request):
    number = re.search(r"\d+", request.inputs.get("question", "")).group()
    return f"a{number}"


def pool():
    good = FakeEngine(name="good", responder=lambda r: {"answer": right_answer(r)})
    bad = FakeEngine(name="bad", responder=lambda r: {"answer": "wrong"})
    return [Teacher(good.lm(), name="good"), Teacher(bad.lm(), name="bad")]


def repairing_fusor():
    return FakeEngine(name="fusor", responder=lambda r: {"comparison": "c", "answer": right_answer(r)}).lm()


def trainset():
    return [dspy.Example(question=f"q{i}", answer=f"a{i}").with_inputs("question") for i in range(6)]


def exact(example, pred, trace=None):
    return example.answer == pred.answer


def test_bootstrap_few_shot_learns_no_wrong_candidate():
    """The issue's repro: six examples, a good and a bad teacher (2 of 4 demos were wrong before)."""
    fuse = Fuse("question -> answer", 2, teachers=pool(), fusor=repairing_fusor())
    optimizer = dspy.BootstrapFewShot(metric=exact, max_bootstrapped_demos=4, max_labeled_demos=0)
    compiled = optimizer.compile(fuse, trainset=trainset())
    demos = compiled.generate.demos
    assert demos  # the agreeing candidates still teach
    assert sum(demo.answer == "wrong" for demo in demos) == 0
    assert all(demo.answer == f"a{demo.question[1:]}" for demo in demos)
    assert compiled.fusor.demos  # the fusor's own step is recorded


@pytest.mark.parametrize("mode, selector", [("select", "majority"), ("fuse", "mbr")])
def test_a_call_traces_only_steps_consistent_with_its_answer(mode, selector):
    teachers = pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=repairing_fusor(), mode=mode, selector=selector)
    with dspy.context(trace=[]):
        pred = fuse(question="q7")
        trace = dspy.settings.trace
    generate = [out.answer for predictor, _, out in trace if predictor is fuse.generate]
    fusor = [out.answer for predictor, _, out in trace if predictor is fuse.fusor]
    if mode == "select":  # majority picks "wrong" (2 of 3 votes): only that one, as it was returned
        assert generate == [pred.answer] and fusor == []
    else:
        assert generate == ["a7"] and fusor == ["a7"]
    assert all(inputs == {"question": "q7"} for predictor, inputs, _ in trace if predictor is fuse.generate)


def test_a_guarded_call_traces_the_returned_candidate_only():
    good = FakeEngine(name="good", responder=lambda r: {"answer": "Paris is the capital of France."})
    fusor = FakeEngine(name="fusor", responder=lambda r: {"comparison": "c", "answer": "zzz"}).lm()
    fuse = Fuse("question -> answer", 3, teachers=[Teacher(good.lm(), name="good")], fusor=fusor, guard=True)
    with dspy.context(trace=[]):
        pred = fuse(question="q")
        trace = list(dspy.settings.trace)
    assert pred.fusion.path == "guarded"
    assert [(p is fuse.generate, out.answer) for p, _, out in trace] == [(True, pred.answer)]
