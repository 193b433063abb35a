"""RewardSelector: every candidate is scored; failures are visible, never silent."""

from __future__ import annotations

import logging
import math

import dspy
import pytest

from fusion_dspy.selectors import RewardSelector
from fusion_dspy.selectors import SelectionError
from fusion_dspy.testing import FakeEngine
from tests.selectors.builders import INPUTS
from tests.selectors.builders import QA
from tests.selectors.builders import answers


def length_reward(inputs, prediction):
    return float(len(prediction.answer))


def test_picks_the_highest_reward_and_passes_inputs_and_a_prediction():
    seen = []

    def reward(inputs, prediction):
        seen.append((inputs, prediction))
        return length_reward(inputs, prediction)

    selection = RewardSelector(reward_fn=reward).select(QA, INPUTS, answers("ab", "abcd", "abc"))

    assert selection.position == 1
    assert selection.scores == (2.0, 4.0, 3.0)
    assert [p.answer for _, p in seen] == ["ab", "abcd", "abc"]
    assert all(isinstance(p, dspy.Prediction) for _, p in seen)
    assert all(i == INPUTS and i is not INPUTS for i, _ in seen)  # a fresh dict each time


def test_ties_go_to_the_lower_position():
    selection = RewardSelector(reward_fn=lambda i, p: 1.0).select(QA, INPUTS, answers("a", "b", "c"))
    assert selection.position == 0


def test_a_raising_reward_scores_minus_inf_and_is_recorded(caplog):
    def reward(inputs, prediction):
        if prediction.answer == "best":
            raise ZeroDivisionError("reward blew up")
        return 1.0 if prediction.answer == "good" else 0.0

    with caplog.at_level(logging.WARNING):
        selection = RewardSelector(reward_fn=reward).select(QA, INPUTS, answers("bad", "best", "good"))

    assert selection.position == 2
    assert selection.scores[1] == -math.inf
    assert "candidates[1]" in selection.rationale
    assert "ZeroDivisionError: reward blew up" in selection.rationale
    assert "reward blew up" in caplog.text


@pytest.mark.parametrize("bad", [None, float("nan"), "high", "0.9", b"7"])  # a numeric string is still a string
def test_a_non_numeric_reward_counts_as_a_failure(bad):
    selection = RewardSelector(reward_fn=lambda i, p: bad if p.answer == "x" else 0.5).select(
        QA, INPUTS, answers("x", "y")
    )
    assert selection.position == 1
    assert selection.scores[0] == -math.inf
    assert "candidates[0]" in selection.rationale


def test_all_failing_raises_with_every_error():
    def reward(inputs, prediction):
        raise RuntimeError(f"no reward for {prediction.answer}")

    with pytest.raises(SelectionError, match="all 2 candidates") as info:
        RewardSelector(reward_fn=reward).select(QA, INPUTS, answers("a", "b"))
    assert sorted(info.value.errors) == [0, 1]
    assert "no reward for b" in str(info.value)


def test_reward_fn_must_be_callable():
    with pytest.raises(TypeError, match="callable"):
        RewardSelector(reward_fn=3)


async def test_aselect_keeps_the_dspy_context():
    lm = FakeEngine().lm()

    def reward(inputs, prediction):
        return 1.0 if dspy.settings.lm is lm and prediction.answer == "b" else 0.0

    with dspy.context(lm=lm):
        selection = await RewardSelector(reward_fn=reward).aselect(QA, INPUTS, answers("a", "b"))
    assert selection.position == 1
