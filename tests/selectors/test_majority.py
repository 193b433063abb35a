"""MajorityVote: normalized answers vote, MBR breaks ties, then the lower position."""

from __future__ import annotations

import pytest
from sacrebleu.metrics import CHRF

from fusion_dspy.selectors import MajorityVote
from tests.selectors.builders import INPUTS
from tests.selectors.builders import QA
from tests.selectors.builders import Reasoned
from tests.selectors.builders import answers
from tests.selectors.builders import outputs


def test_numbers_vote_after_normalization():
    selection = MajorityVote().select(QA, INPUTS, answers(7, 42, 42.0, "42", 7))
    assert selection.position == 1
    assert selection.scores == pytest.approx((0.4, 0.6, 0.6, 0.6, 0.4))
    assert "3/5" in selection.rationale


def test_strings_vote_after_normalization():
    selection = MajorityVote().select(QA, INPUTS, answers("Lyon", "Paris.", "paris", " PARIS! "))
    assert selection.position == 1
    assert selection.scores == pytest.approx((0.25, 0.75, 0.75, 0.75))


def test_vote_on_a_subset_of_fields():
    candidates = outputs(
        {"reasoning": "Lyon is big.", "answer": "Lyon"},
        {"reasoning": "The capital is Paris.", "answer": "Paris"},
        {"reasoning": "France's government sits in Paris.", "answer": "paris."},
    )
    assert MajorityVote(fields=["answer"]).select(Reasoned, INPUTS, candidates).position == 1
    # On all fields (the default) the reasonings differ, so no group has two votes.
    assert MajorityVote().select(Reasoned, INPUTS, candidates).scores == pytest.approx((1 / 3,) * 3)


def test_tie_between_groups_is_broken_by_agreement_with_the_pool():
    texts = ["Lyon", "Lyon", "Paris, France", "Paris, France", "Paris"]
    selection = MajorityVote().select(QA, INPUTS, answers(*texts))

    # Independently: mean chrF of each tied group's members against all other candidates.
    chrf = CHRF()

    def agreement(i: int) -> float:
        return sum(chrf.sentence_score(texts[i], [t]).score for j, t in enumerate(texts) if j != i) / 4

    assert (agreement(2) + agreement(3)) / 2 > (agreement(0) + agreement(1)) / 2
    assert selection.position == 2  # the later group wins on MBR, and its first member is chosen
    assert selection.scores == pytest.approx((0.4, 0.4, 0.4, 0.4, 0.2))
    assert "tied" in selection.rationale


def test_full_tie_goes_to_the_lower_position():
    assert MajorityVote().select(QA, INPUTS, answers("north", "south")).position == 0
    assert MajorityVote().select(QA, INPUTS, answers("south", "north")).position == 0
    assert MajorityVote().select(QA, INPUTS, answers("x", "y", "y", "x")).position == 0


def test_single_candidate():
    selection = MajorityVote().select(QA, INPUTS, answers("only"))
    assert selection.position == 0
    assert selection.scores == (1.0,)


def test_bad_fields_are_reported():
    with pytest.raises(ValueError, match="at least one field"):
        MajorityVote(fields=[])
    with pytest.raises(KeyError, match="verdict"):
        MajorityVote(fields=["verdict"]).select(QA, INPUTS, answers("a", "b"))


@pytest.mark.parametrize("empty", ["", None, "   ", "?", '""'])
def test_empty_answers_abstain_instead_of_outvoting_a_real_one(empty):
    """Two teachers that answered nothing outvoted the one that answered: an empty answer is no vote."""
    selection = MajorityVote().select(QA, INPUTS, answers(empty, empty, "Paris"))
    assert selection.position == 2
    assert selection.scores == pytest.approx((0.0, 0.0, 1 / 3))


def test_all_empty_answers_still_pick_one():
    selection = MajorityVote().select(QA, INPUTS, answers("", None, ""))
    assert selection.position == 0
    assert selection.scores == pytest.approx((1.0, 1.0, 1.0))


def test_the_guard_does_not_keep_an_empty_fused_answer_over_a_real_pick():
    """With every draw answering differently, an empty fused answer used to tie at one vote and be kept."""
    from fusion_dspy.guard import guard_decision

    decision = guard_decision(MajorityVote(), QA, INPUTS, answers("Paris", "Lyon", "Nice"), {"answer": ""})
    assert not decision.kept_fused and decision.index == decision.pick
