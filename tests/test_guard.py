"""The selection guard's decision rule (fusion_dspy.guard), independent of how the selector runs."""

from __future__ import annotations

import dspy
import pytest

from fusion_dspy.candidate import Candidate
from fusion_dspy.guard import FUSED_INDEX
from fusion_dspy.guard import decide
from fusion_dspy.guard import guard_pool
from fusion_dspy.selectors.base import Selection
from fusion_dspy.selectors.mbr import MBRSelector


def _candidates(*answers: str) -> list[Candidate]:
    return [Candidate(index=i, teacher=f"t{i}", sample=0, outputs={"answer": a}) for i, a in enumerate(answers)]


def test_pool_puts_the_fused_answer_first():
    pool = guard_pool(_candidates("a", "b"), {"answer": "fused"})
    assert [c.index for c in pool] == [FUSED_INDEX, 0, 1]
    assert pool[0].outputs == {"answer": "fused"}


def test_a_candidate_that_strictly_outranks_the_fused_answer_wins():
    pool = guard_pool(_candidates("a", "b", "c"), {"answer": "f"})
    decision = decide(Selection(position=2, scores=(0.5, 0.2, 0.9, 0.9)), pool)
    assert not decision.kept_fused
    assert decision.index == 1  # the first of the tied best candidates (position 2 -> draw index 1)
    assert decision.margin == pytest.approx(0.4)
    assert decision.scores == {FUSED_INDEX: 0.5, 0: 0.2, 1: 0.9, 2: 0.9}


def test_ties_keep_the_fused_answer():
    pool = guard_pool(_candidates("a", "b"), {"answer": "f"})
    decision = decide(Selection(position=1, scores=(0.7, 0.7, 0.1)), pool)
    assert decision.kept_fused and decision.index == FUSED_INDEX and decision.margin == 0


def test_rank_only_selectors_decide_by_position():
    pool = guard_pool(_candidates("a", "b"), {"answer": "f"})
    assert decide(Selection(position=0), pool).kept_fused
    decision = decide(Selection(position=2), pool)
    assert not decision.kept_fused and decision.index == 1 and decision.scores is None


@pytest.mark.parametrize(
    ("selection", "pool_ok", "match"),
    [
        (Selection(position=5), True, "position 5"),
        (Selection(position=0, scores=(1.0,)), True, "1 scores for 3 answers"),
        (Selection(position=0), False, "guard_pool"),
    ],
)
def test_malformed_inputs_are_refused_with_a_reason(selection, pool_ok, match):
    pool = guard_pool(_candidates("a", "b"), {"answer": "f"}) if pool_ok else _candidates("a", "b")
    with pytest.raises(ValueError, match=match):
        decide(selection, pool)


def test_mbr_replaces_an_outlier_fusion_with_the_consensus_candidate():
    sig = dspy.Signature("question -> answer")
    cands = _candidates("The capital of Australia is Canberra.", "The capital of Australia is Canberra.",
                        "Canberra is the capital of Australia.")
    pool = guard_pool(cands, {"answer": "Sydney, obviously, is where the government sits."})
    decision = decide(MBRSelector().select(sig, {"question": "?"}, pool), pool)
    assert not decision.kept_fused and decision.index in (0, 1)
    pool = guard_pool(cands, {"answer": "The capital of Australia is Canberra."})
    assert decide(MBRSelector().select(sig, {"question": "?"}, pool), pool).kept_fused
