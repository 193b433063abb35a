"""The selection guard's decision rule (fusion_dspy.guard), independent of how the selector runs."""

from __future__ import annotations

import math
import random

import dspy
import pytest

from fusion_dspy.candidate import Candidate
from fusion_dspy.drivers import drive
from fusion_dspy.guard import FUSED_INDEX
from fusion_dspy.guard import comparison_pool
from fusion_dspy.guard import decide
from fusion_dspy.guard import fused_candidate
from fusion_dspy.guard import guard_steps
from fusion_dspy.selectors.base import Selection
from fusion_dspy.selectors.base import Selector
from fusion_dspy.selectors.majority import MajorityVote
from fusion_dspy.selectors.mbr import MBRSelector
from fusion_dspy.selectors.mbr import closest_text
from fusion_dspy.selectors.mbr import mbr_scores

SIG = dspy.Signature("question -> answer")
MATH = dspy.Signature("question -> reasoning, answer")


def _candidates(*answers: str) -> list[Candidate]:
    return [Candidate(index=i, teacher=f"t{i}", sample=0, outputs={"answer": a}) for i, a in enumerate(answers)]


def _guard(selector: Selector, candidates: list[Candidate], fused: str, signature=SIG):
    return drive(guard_steps(selector, signature, {"question": "?"}, candidates, {"answer": fused}))


def test_the_comparison_pool_is_fused_then_pick_then_references():
    a, b, c = _candidates("a", "b", "c")
    pool = comparison_pool(fused_candidate({"answer": "f"}), b, [a, c])
    assert [x.index for x in pool] == [FUSED_INDEX, 1, 0, 2] and pool[0].outputs == {"answer": "f"}
    with pytest.raises(ValueError, match="fused answer .* first"):
        comparison_pool(a, b, [c])


def test_the_pick_outscoring_the_fused_answer_is_returned_never_a_reference():
    pool = comparison_pool(fused_candidate({"answer": "f"}), *[(c := _candidates("a", "b", "c"))[1], [c[0], c[2]]])
    decision = decide(Selection(position=3, scores=(0.5, 0.6, 0.2, 0.9)), pool, source=2)
    assert not decision.kept_fused and decision.index == decision.pick == 1  # the reference scoring 0.9 is no option
    assert decision.margin == pytest.approx(0.1) and decision.references == (0, 2) and decision.source == 2
    assert decision.scores == {FUSED_INDEX: 0.5, 1: 0.6, 0: 0.2, 2: 0.9}


def test_ties_keep_the_fused_answer():
    a, b = _candidates("a", "b")
    decision = decide(Selection(position=1, scores=(0.7, 0.7, 0.1)), comparison_pool(fused_candidate({}), a, [b]))
    assert decision.kept_fused and decision.index == FUSED_INDEX and decision.margin == 0


@pytest.mark.parametrize("score", [math.inf, -math.inf])
def test_equal_infinite_scores_are_a_tie_and_keep_the_fused_answer(score):
    # inf - inf is NaN, and "NaN <= 0" is False: the tie used to drop the fused answer with margin=nan.
    a, b = _candidates("a", "b")
    decision = decide(Selection(position=1, scores=(score, score, 0.0)), comparison_pool(fused_candidate({}), a, [b]))
    assert decision.kept_fused and decision.index == FUSED_INDEX
    assert decision.margin == 0


def test_a_reward_of_inf_for_both_the_fused_answer_and_the_pick_keeps_the_fused_answer():
    from fusion_dspy.selectors import RewardSelector

    perfect = RewardSelector(reward_fn=lambda inputs, pred: math.inf if pred.answer in ("a", "f") else 0.0)
    decision = _guard(perfect, _candidates("a", "b", "c"), "f")
    assert decision.scores[FUSED_INDEX] == decision.scores[decision.pick] == math.inf
    assert decision.kept_fused and decision.index == FUSED_INDEX and decision.margin == 0


def test_the_rationale_says_which_answer_each_comparison_position_is():
    # The selector explains the comparison by position in [fused, pick, *references] ("candidates [1, 2]"),
    # while the record names draws by Candidate.index: without a key the report named the wrong draws.
    cands = _candidates("Paris", "Lyon", "Paris", "Paris")
    decision = _guard(MajorityVote(), cands, "Lyon")
    assert not decision.kept_fused and decision.pick == 0 and decision.references == (2, 3)
    legend, _, explanation = decision.rationale.partition("majority:")
    assert explanation  # the selector's own explanation is kept
    assert "fused" in legend
    for position, index in enumerate((decision.pick, *decision.references), start=1):
        assert f"[{position}] #{index}" in legend


def test_rank_only_selectors_must_put_the_fused_answer_first():
    a, b = _candidates("a", "b")
    pool = comparison_pool(fused_candidate({"answer": "f"}), b, [a])
    assert decide(Selection(position=0), pool).kept_fused
    for position in (1, 2):  # the pick, or a reference: either way the pick is returned
        decision = decide(Selection(position=position), pool)
        assert not decision.kept_fused and decision.index == 1 and decision.scores is None


@pytest.mark.parametrize(
    ("selection", "pool_ok", "match"),
    [
        (Selection(position=5), True, "position 5"),
        (Selection(position=0, scores=(1.0,)), True, "1 scores for 3 answers"),
        (Selection(position=0), False, "comparison_pool"),
    ],
)
def test_malformed_inputs_are_refused_with_a_reason(selection, pool_ok, match):
    a, b = _candidates("a", "b")
    pool = comparison_pool(fused_candidate({"answer": "f"}), a, [b]) if pool_ok else [a, b]
    with pytest.raises(ValueError, match=match):
        decide(selection, pool)


def test_guard_steps_refuses_an_empty_candidate_list():
    with pytest.raises(ValueError, match="at least one candidate"):
        _guard(MBRSelector(), [], "f")


@pytest.mark.parametrize("indexes", [(0, 0, 0, 0), (0, 1, 1, 2), (FUSED_INDEX, 0, 1, 2)])
def test_guard_steps_refuses_candidates_that_share_an_index_or_the_fused_one(indexes):
    # The guard tells answers apart by Candidate.index: with all four draws at index 0, the references
    # vanished and a fused minority answer outvoted a 3-of-4 majority.
    cands = [Candidate(index=i, teacher="t", sample=0, outputs={"answer": a})
             for i, a in zip(indexes, ["Paris", "Paris", "Paris", "Lyon"], strict=True)]
    with pytest.raises(ValueError, match="candidates"):
        _guard(MajorityVote(), cands, "Lyon")


def test_mbr_replaces_an_outlier_fusion_with_the_consensus_pick():
    cands = _candidates("The capital of Australia is Canberra.", "The capital of Australia is Canberra.",
                        "Canberra is the capital of Australia.")
    decision = _guard(MBRSelector(), cands, "Sydney, obviously, is where the government sits.")
    assert not decision.kept_fused and decision.index == decision.pick == 0
    assert _guard(MBRSelector(), cands, "The capital of Australia is Canberra.").kept_fused


# Three candidates say one thing, two another; MBR picks from the three. A fusor that copies one of the two
# verbatim used to win the N+1 ranking on its own copy's 100-point self-match (the WMT finding).
CAT = ["The cat sat on the warm mat all day.", "The cat sat on the warm mat all day long.",
       "All day the cat sat on the warm mat."]
DOG = ["A small dog slept under a wooden bench.", "A small dog slept under the wooden bench."]


def test_a_verbatim_copy_of_a_minority_candidate_cannot_win_on_its_self_match():
    cands = _candidates(*CAT, *DOG)
    fused = DOG[0]
    ranked_all = mbr_scores([fused, *CAT, *DOG])  # the old rule: rank all N+1 with each other as references
    winner = [fused, *CAT, *DOG][ranked_all.index(max(ranked_all))]
    assert winner in DOG, "the repro: the copy's vote moves the N+1 ranking to the minority"
    decision = _guard(MBRSelector(), cands, fused)
    assert decision.source == 3 and 3 not in decision.references  # the copied draw is no reference
    assert not decision.kept_fused and decision.index == decision.pick
    assert decision.pick == MBRSelector().select(SIG, {}, cands).position  # exactly what select returns


def test_a_copy_of_the_pick_ties_and_is_kept_with_every_other_draw_as_reference():
    cands = _candidates(*CAT, *DOG)
    pick = MBRSelector().select(SIG, {}, cands).position
    decision = _guard(MBRSelector(), cands, CAT[pick])
    assert decision.kept_fused and decision.margin == pytest.approx(0.0)
    assert decision.source == decision.pick and decision.references == tuple(i for i in range(5) if i != pick)


def test_a_fused_answer_closer_to_the_pool_than_the_pick_is_kept():
    cands = _candidates("The cat sat on the mat.", "The cat sat on a mat today.", "A cat sat on the mat today.")
    decision = _guard(MBRSelector(), cands, "The cat sat on the mat today.")
    assert decision.kept_fused and decision.margin < 0


@pytest.mark.parametrize("fused", ["The cat sat on a mat.", "A dog slept soundly."])
def test_with_no_draw_left_as_reference_the_two_are_compared_head_to_head(fused):
    one = _candidates("The cat sat on the mat.")
    decision = _guard(MBRSelector(), one, fused)
    assert decision.references == () and set(decision.scores) == {FUSED_INDEX, 0}
    two = _candidates("The cat sat on the mat.", "A dog slept.")
    decision = _guard(MBRSelector(), two, fused)
    expected = () if decision.source != decision.pick else (1 - decision.pick,)
    assert decision.references == expected


def test_whatever_the_guard_decides_it_returns_the_fused_answer_or_the_free_selection():
    rng = random.Random(0)
    words = ["the", "cat", "a", "dog", "sat", "slept", "on", "mat", "rug", "today"]
    for _ in range(60):
        n = rng.randint(1, 6)
        cands = _candidates(*(" ".join(rng.choices(words, k=rng.randint(2, 7))) for _ in range(n)))
        fused = " ".join(rng.choices(words, k=rng.randint(2, 7))) if rng.random() < 0.5 else rng.choice(cands).text()
        for selector in (MBRSelector(), MajorityVote()):
            decision = _guard(selector, cands, fused)
            assert decision.pick == selector.select(SIG, {}, cands).position
            assert decision.index == (FUSED_INDEX if decision.kept_fused else decision.pick)
            assert decision.pick not in decision.references and FUSED_INDEX not in decision.references
            assert len(decision.references) >= n - 2


def _math(reasoning: str, answer: str, index: int = 0) -> Candidate:
    return Candidate(index=index, teacher="t", sample=index, outputs={"reasoning": reasoning, "answer": answer})


def test_majority_takes_the_source_among_the_same_answer_not_the_closest_reasoning():
    shared = "Add 3 and 4 to get the total number of apples in the basket."
    cands = [_math(shared, "7", 0), _math(shared + " So 7.", "7", 1), _math("Three plus five is eight.", "8", 2)]
    fused = Candidate(index=FUSED_INDEX, teacher="fusor", sample=0, outputs={"reasoning": shared, "answer": "8"})
    assert MajorityVote(fields=["answer"]).closest(MATH, fused, cands) == 2  # the "8" draw, not a reasoning twin
    assert MBRSelector().closest(MATH, fused, cands) in (0, 1)  # text agreement alone picks the reasoning twin


def test_a_fused_minority_answer_does_not_outvote_the_majority():
    shared = "Add 3 and 4 to get the total number of apples in the basket."
    cands = [_math(shared, "7", 0), _math(shared, "7", 1), _math("Three plus five is eight.", "8", 2),
             _math("Three and five make eight.", "9", 3)]
    decision = drive(guard_steps(MajorityVote(fields=["answer"]), MATH, {"question": "?"}, cands,
                                 {"reasoning": shared, "answer": "8"}))
    assert decision.source == 2 and not decision.kept_fused and decision.index == decision.pick == 0
    # Agreeing with the majority's answer ties the pick and keeps the fused text.
    decision = drive(guard_steps(MajorityVote(fields=["answer"]), MATH, {"question": "?"}, cands,
                                 {"reasoning": "3 + 4 = 7.", "answer": "7"}))
    assert decision.kept_fused


def test_closest_text_is_mbrs_direction_and_refuses_nothing_to_compare():
    assert closest_text("the cat sat", ["a dog", "the cat sat down", "cat"]) == 1
    with pytest.raises(ValueError, match="at least one text"):
        closest_text("x", [])


class RankOnly(Selector):
    """Ranks by length, no scores: the guard must read its position."""

    name = "rank-only"
    calls_lm = False

    def select(self, signature, inputs, candidates):
        lengths = [len(c.text()) for c in candidates]
        return Selection(position=lengths.index(max(lengths)))


def test_guard_steps_with_a_rank_only_selector():
    cands = _candidates("short", "a longer one")
    assert _guard(RankOnly(), cands, "the longest answer of all").kept_fused
    decision = _guard(RankOnly(), cands, "tiny")
    assert not decision.kept_fused and decision.index == 1 and decision.scores is None


def test_the_public_drivers_decide_as_the_steps_do_sync_and_async():
    import asyncio

    from fusion_dspy import aguard_decision
    from fusion_dspy import guard_decision

    rng = random.Random(1)
    words = ["the", "cat", "a", "dog", "sat", "slept", "on", "mat"]
    for _ in range(20):
        cands = _candidates(*(" ".join(rng.choices(words, k=rng.randint(2, 6))) for _ in range(rng.randint(1, 5))))
        fused = " ".join(rng.choices(words, k=rng.randint(2, 6)))
        for selector in (MBRSelector(), MajorityVote()):
            expected = _guard(selector, cands, fused)
            args = (selector, SIG, {"question": "?"}, cands, {"answer": fused})
            assert guard_decision(*args) == expected
            assert asyncio.run(aguard_decision(*args)) == expected


def test_the_public_drivers_make_an_llm_judges_calls_twice():
    import asyncio

    from fusion_dspy import aguard_decision
    from fusion_dspy import guard_decision
    from fusion_dspy.selectors import LLMJudge
    from fusion_dspy.testing import FakeEngine

    # The judge rates the fused answer ("best") 9 and every draw 3: the fused answer is kept.
    judge = FakeEngine(name="judge", responder=lambda r: {"reasoning": "r", "score": 9.0 if "best" in str(r.inputs)
                                                           else 3.0})
    cands = _candidates("one", "two", "three")
    args = (LLMJudge(lm=judge.lm()), SIG, {"question": "?"}, cands, {"answer": "best"})
    decision = guard_decision(*args)
    assert decision.kept_fused and decision.index == FUSED_INDEX
    sync_calls = judge.calls
    assert sync_calls >= len(cands) + 2  # the pick over 3 draws, then the comparison (fused, pick, refs)
    assert asyncio.run(aguard_decision(*args)) == decision
    assert judge.calls == 2 * sync_calls
