"""MBRSelector: the consensus-like candidate wins, with sacrebleu's own chrF numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dspy
import pytest
from sacrebleu.metrics import CHRF

from fusion_dspy.selectors import MBRSelector
from fusion_dspy.selectors import mbr_scores
from tests.selectors.builders import INPUTS
from tests.selectors.builders import QA
from tests.selectors.builders import answers
from tests.selectors.builders import outputs

ROOT = Path(__file__).resolve().parents[2]

TEXTS = [
    "Dogs bark loudly at night.",  # the outlier comes first, so "lowest position" cannot explain a win
    "The cat sat on a mat.",
    "The cat sat on the mat.",
    "A cat sat on the mat.",
]


def expected_means(texts: list[str], scorer: CHRF) -> list[float]:
    """Each text's mean sentence chrF against every other text, straight from sacrebleu."""
    means = []
    for i, hypothesis in enumerate(texts):
        others = [scorer.sentence_score(hypothesis, [ref]).score for j, ref in enumerate(texts) if j != i]
        means.append(sum(others) / len(others))
    return means


def test_picks_the_consensus_candidate_with_sacrebleu_scores():
    selection = MBRSelector().select(QA, INPUTS, answers(*TEXTS))

    expected = expected_means(TEXTS, CHRF())
    assert selection.scores == pytest.approx(expected)
    assert selection.position == 2  # "The cat sat on the mat." is one edit away from both others
    assert selection.position == max(range(len(expected)), key=expected.__getitem__)
    assert selection.scores[0] == min(selection.scores)  # the outlier agrees least
    assert "candidates[2]" in selection.rationale


def test_chrf_plus_plus_uses_word_bigrams():
    chrf = MBRSelector(metric="chrf").select(QA, INPUTS, answers(*TEXTS))
    chrf_pp = MBRSelector(metric="chrf++").select(QA, INPUTS, answers(*TEXTS))

    assert chrf_pp.scores == pytest.approx(expected_means(TEXTS, CHRF(word_order=2)))
    assert chrf_pp.scores != pytest.approx(chrf.scores)


def test_mbr_scores_function_matches_selector():
    assert mbr_scores(TEXTS) == pytest.approx(expected_means(TEXTS, CHRF()))
    assert mbr_scores(["only one"]) == [100.0]
    assert mbr_scores([]) == []


def test_single_candidate_is_returned():
    selection = MBRSelector().select(QA, INPUTS, answers("anything"))
    assert selection.position == 0


def test_ties_go_to_the_lower_position():
    assert MBRSelector().select(QA, INPUTS, answers("same", "same")).position == 0
    # Two symmetric pairs: every candidate scores the same.
    symmetric = answers("blue sky", "red car", "blue sky", "red car")
    assert MBRSelector().select(QA, INPUTS, symmetric).position == 0


def test_works_on_typed_and_multi_field_outputs():
    class Typed(dspy.Signature):
        """Count and list."""

        question: str = dspy.InputField()
        total: int = dspy.OutputField()
        items: list[str] = dspy.OutputField()

    candidates = outputs(
        {"items": ["x", "y"], "total": 99},
        {"total": 12, "items": ["apple", "pear"]},
        {"items": ["apple", "pear"], "total": 12},  # same content, keys in another order
    )
    selection = MBRSelector().select(Typed, INPUTS, candidates)
    assert selection.position == 1
    assert selection.scores[1] == pytest.approx(selection.scores[2])


def test_unknown_metric_is_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="chrf\\+\\+"):
        MBRSelector(metric="bleu")


def test_importing_selectors_does_not_import_sacrebleu():
    code = "import sys, fusion_dspy.selectors; assert 'sacrebleu' not in sys.modules, 'imported eagerly'"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
