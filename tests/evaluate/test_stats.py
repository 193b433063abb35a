from __future__ import annotations

import pytest

from fusion_dspy.evaluate.stats import bootstrap_ci
from fusion_dspy.evaluate.stats import paired_bootstrap
from fusion_dspy.evaluate.stats import sign_test


def test_bootstrap_ci_of_the_mean():
    mean, low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and 1.0 <= low < 2.5 < high <= 4.0
    assert bootstrap_ci([7.0] * 5) == (7.0, 7.0, 7.0)
    assert bootstrap_ci([3.0]) == (3.0, 3.0, 3.0)
    assert bootstrap_ci([1.0, 2.0, 3.0, 4.0], seed=1) == bootstrap_ci([1.0, 2.0, 3.0, 4.0], seed=1)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_bootstrap_ci_with_a_corpus_statistic_resamples_examples():
    values = [0.0, 10.0, 20.0]
    estimate, low, high = bootstrap_ci(values, statistic=lambda idx: max(values[i] for i in idx), resamples=300)
    assert estimate == 20.0 and low in (0.0, 10.0, 20.0) and high == 20.0


def test_sign_test_exact_values():
    # 9 wins, 1 loss: two-sided p = 2 * (C(10,0) + C(10,1)) / 2**10.
    assert sign_test([1] * 9 + [0], [0] * 9 + [1]) == pytest.approx(2 * 11 / 1024)
    assert sign_test([1, 2], [1, 2]) == 1.0  # all ties
    assert sign_test([1, 0], [0, 1]) == 1.0
    with pytest.raises(ValueError):
        sign_test([1], [1, 2])


def test_paired_bootstrap_detects_a_consistent_gain_and_not_noise():
    a = [x + 1.0 for x in range(30)]
    b = [float(x) for x in range(30)]
    result = paired_bootstrap(a, b)
    assert result.diff == pytest.approx(1.0) and result.ci_low == pytest.approx(1.0)
    assert result.p_bootstrap < 0.01 and result.p_sign < 1e-6
    assert (result.wins, result.ties, result.losses) == (30, 0, 0)
    same = paired_bootstrap(b, b)
    assert same.diff == 0 and same.p_bootstrap == 1.0 and same.p_sign == 1.0 and same.ties == 30
    noisy = paired_bootstrap([1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1])
    assert noisy.p_bootstrap > 0.5 and noisy.ci_low < 0 < noisy.ci_high
