from __future__ import annotations

from fusion_dspy.attribution import copy_ratio


def test_verbatim_copy_is_fully_attributed():
    assert copy_ratio("The capital is Canberra.", ["The capital is Canberra.", "Sydney"]) == 1.0


def test_new_text_is_not_attributed():
    assert copy_ratio("zzzzzzzz", ["abcdefgh"]) == 0.0


def test_union_of_blocks_from_different_candidates():
    fused = "alpha beta gamma delta"
    ratio = copy_ratio(fused, ["alpha beta", "gamma delta"])
    assert 0.85 < ratio < 1.0  # everything but the joining space


def test_empty_answer():
    assert copy_ratio("", ["x"]) == 0.0
