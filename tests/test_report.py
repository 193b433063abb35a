"""The report's cost accounting: selector calls, replayed candidates, the summary."""

from __future__ import annotations

import dspy
import pytest

from fusion_dspy import Teacher
from fusion_dspy.selectors import LLMJudge
from fusion_dspy.selectors import SelectionError
from fusion_dspy.selectors.base import Selector
from fusion_dspy.testing import FakeEngine
from tests.helpers import make_fuse
from tests.helpers import teacher_engine


@pytest.mark.parametrize("use_async", [False, True])
async def test_selector_calls_are_part_of_the_reports_cost(use_async):
    judge = FakeEngine(name="judge", responder=lambda request: {"reasoning": "fine", "score": 5.0})
    fuse = make_fuse(3, mode="select", selector=LLMJudge(lm=judge.lm()))
    with dspy.track_usage() as tracker:
        pred = await fuse.acall(question="q") if use_async else fuse(question="q")
    selection = pred.fusion.selection
    assert selection.usage["local/judge"].calls == 3 == judge.calls and selection.latency_s > 0
    assert pred.fusion.usage["local/judge"] == selection.usage["local/judge"]
    assert pred.fusion.total_usage.calls == 3 + 3 and pred.fusion.spent_usage.calls == 6
    # ...and the outer tracker sees each call exactly once.
    assert len(tracker.usage_data["local/judge"]) == 3


def test_a_failing_selector_raises_and_its_calls_still_reach_the_outer_tracker():
    judge = FakeEngine(name="judge")

    class GivesUp(Selector):
        name = "gives-up"

        def select(self, signature, inputs, candidates):
            dspy.Predict("question -> verdict")(question="which?", lm=judge.lm())  # paid for...
            raise SelectionError("no candidate could be scored")  # ...then fails

    fuse = make_fuse(2, mode="select", selector=GivesUp())
    with dspy.track_usage() as tracker, pytest.raises(SelectionError, match="no candidate could be scored"):
        fuse(question="q")
    assert len(tracker.usage_data["local/judge"]) == 1


def test_summary_says_when_dspys_cache_hid_the_cost():
    engine = teacher_engine("a")
    lm = engine.lm(cache=True)
    fuse = make_fuse(2, teachers=[Teacher(lm, name="a")], mode="select")
    with dspy.context(usage_tracker=None):
        fuse(question="cache me")
        again = fuse(question="cache me")  # DSPy's cache answers: no model call, no usage
    assert engine.calls == 2 and all(c.cached and not c.usage for c in again.fusion.candidates)
    assert "2 answered by DSPy's cache, whose cost is unknown" in again.fusion.summary()
