"""Bad harness arguments are refused up front, naming the argument."""

from __future__ import annotations

import pytest

from fusion_dspy import Fuse
from fusion_dspy.evaluate import Harness
from tests.evaluate.builders import metric
from tests.evaluate.builders import more_examples


@pytest.mark.parametrize("name", ["fusion", "fusion:vote", "oracle", "random", "bon-mbr", "single:a", "candidates",
                                  "mine+guard", ""])
def test_a_program_named_like_a_harness_method_is_refused(tmp_path, name):
    """A program called "oracle" would be skipped as done (its result is the oracle's) or reported as one."""
    with pytest.raises(ValueError, match="programs"):
        Harness(fuse=Fuse("question, tag -> answer", 1), metric=metric, examples=more_examples(2), ns=[1],
                out_dir=tmp_path, progress=False, programs={name: lambda **inputs: None})
    assert not (tmp_path / "results.jsonl").exists()


def test_a_program_with_its_own_name_is_accepted(tmp_path):
    harness = Harness(fuse=Fuse("question, tag -> answer", 1), metric=metric, examples=more_examples(2), ns=[1],
                      out_dir=tmp_path, progress=False, programs={"alone:f": lambda **inputs: None})
    assert list(harness.programs) == ["alone:f"]


@pytest.mark.parametrize("budget", ["60", float("nan"), -1.0, True])
def test_a_bad_time_budget_is_refused_before_any_example_runs(tmp_path, budget):
    """A string failed with a TypeError after the first example had run; NaN never stopped the run."""
    from tests.evaluate.builders import toy_harness

    harness, (a, b, fusor) = toy_harness(tmp_path, count=2, delayed=False)
    with pytest.raises(ValueError, match="time_budget_s must be"):
        harness.run(time_budget_s=budget)
    assert a.calls + b.calls + fusor.calls == 0


def test_two_selectors_of_one_name_are_refused(tmp_path):
    """Both would journal `bon-majority` at every N: each example ran the selector twice and the report kept
    whichever came last, under one row."""
    from fusion_dspy.selectors import MajorityVote

    with pytest.raises(ValueError, match=r"selectors: .*'majority'.*more than once"):
        Harness(fuse=Fuse("question, tag -> answer", 1), metric=metric, examples=more_examples(2), ns=[1],
                out_dir=tmp_path, progress=False, selectors=[MajorityVote(), "mbr", MajorityVote()])


@pytest.mark.parametrize("bad, match", [
    (lambda: {"question": "q0", "tag": 0}, r"examples\[1\] is a dict"),
    (lambda: __import__("dspy").Example(question="q0", tag=0, answer="2"), r"examples\[1\] has no inputs"),
    (lambda: __import__("dspy").Example(question="q0", answer="2").with_inputs("question"),
     r"examples\[1\] lacks the input field\(s\) \['tag'\]"),
])
def test_bad_examples_are_refused_up_front_naming_the_row(tmp_path, bad, match):
    """A row that is not a dspy.Example, has no inputs set, or misses an input field of the Fuse's signature
    failed inside run(), after the journal was created, with an error that did not say which row."""
    examples = [*more_examples(1), bad(), *more_examples(1)]
    with pytest.raises(ValueError, match=match):
        Harness(fuse=Fuse("question, tag -> answer", 1), metric=metric, examples=examples, ns=[1],
                out_dir=tmp_path, progress=False)
    assert not (tmp_path / "results.jsonl").exists()
