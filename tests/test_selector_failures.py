"""Selector failures a person can act on (issue 10): recorded in the report, raised with it."""

from __future__ import annotations

import pytest

from fusion_dspy import FusionError
from fusion_dspy.errors import SelectorFailedError
from fusion_dspy.selectors.base import Selection
from fusion_dspy.selectors.base import Selector
from tests.helpers import fusor_engine
from tests.helpers import make_fuse


class Raises(Selector):
    name = "raises"

    def select(self, signature, inputs, candidates):
        raise KeyError("no such field: verdict")


class TooFewScores(Selector):
    name = "too-few"

    def select(self, signature, inputs, candidates):
        return Selection(position=0, scores=(1.0,))


class OutOfRange(Selector):
    name = "out-of-range"

    def select(self, signature, inputs, candidates):
        return Selection(position=len(candidates))


def test_a_selector_that_raises_is_reported_and_raised_with_the_report(call):
    with pytest.raises(SelectorFailedError) as info:
        call(make_fuse(3, mode="select", selector=Raises()), question="q")
    error = info.value
    assert isinstance(error, FusionError) and isinstance(error.__cause__, KeyError)
    failure = error.report.selector_failure
    assert failure.selector == "raises" and failure.role == "select"
    assert failure.error_type == "KeyError" and "no such field: verdict" in failure.error
    assert len(error.report.succeeded) == 3  # the candidates are not lost
    assert "Selector 'raises' (select) failed: KeyError" in str(error)


def test_the_fusors_earlier_failure_is_kept(call):
    fuse = make_fuse(3, fusor=fusor_engine(fail=True).lm(), selector=Raises())
    with pytest.raises(SelectorFailedError) as info:
        call(fuse, question="q")
    report = info.value.report
    assert report.fusor.error_type == "LMUnexpectedError" and "told to fail" in report.fusor.error
    assert report.fallback.startswith("fusor failed")
    assert "Earlier, the fusor failed: LMUnexpectedError" in str(info.value)
    assert "selector raises (select) failed" in report.summary()


def test_too_few_scores_says_what_is_wrong(call):
    with pytest.raises(SelectorFailedError, match=r"returned 1 scores for 3 candidates; return one score per"):
        call(make_fuse(3, mode="select", selector=TooFewScores()), question="q")


def test_a_position_out_of_range_says_what_is_wrong(call):
    with pytest.raises(SelectorFailedError, match=r"returned position 3 for 3 candidates"):
        call(make_fuse(3, mode="select", selector=OutOfRange()), question="q")


def test_a_failing_guard_is_reported_as_the_guard(call):
    with pytest.raises(SelectorFailedError) as info:
        call(make_fuse(3, selector=TooFewScores(), guard=True), question="q")
    failure = info.value.report.selector_failure
    assert failure.role == "guard" and "1 scores for 3 candidates" in failure.error  # the pick, on the 3 draws
    assert info.value.report.fusor.error is None  # the fusor answered; the guard failed


def test_a_selector_that_implements_nothing_fails_clearly():
    class Empty(Selector):
        name = "empty"

    with pytest.raises(SelectorFailedError, match="must implement select"):
        make_fuse(2, mode="select", selector=Empty())(question="q")
