"""find_consensus (mode="auto"): the largest group of equal answers, empty answers abstaining."""

from __future__ import annotations

import pytest

from fusion_dspy.candidate import Candidate
from fusion_dspy.consensus import find_consensus


def _candidates(*values):
    return [Candidate(index=i, teacher="t", sample=i, outputs={"answer": v}) for i, v in enumerate(values)]


def test_the_largest_group_wins_and_ties_go_to_the_first():
    assert find_consensus(_candidates("Paris", "Lyon", "paris."), ["answer"]).share == pytest.approx(2 / 3)
    tie = find_consensus(_candidates("Lyon", "Paris", "Paris", "Lyon"), ["answer"])
    assert (tie.position, tie.share) == (0, 0.5)


@pytest.mark.parametrize("empty", ["", None, "?"])
def test_empty_answers_never_settle_a_question_another_candidate_answered(empty):
    """Before: four empty answers were a 0.8 consensus, so auto mode skipped the fusor and returned nothing."""
    consensus = find_consensus(_candidates(empty, empty, empty, empty, "Paris"), ["answer"])
    assert (consensus.position, consensus.share) == (4, 0.2)


def test_all_empty_answers_are_still_a_consensus():
    assert find_consensus(_candidates("", None), ["answer"]).share == 1.0
