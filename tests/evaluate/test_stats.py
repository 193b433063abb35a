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


@pytest.mark.parametrize("resamples", [0, 1, 99, -5, 2000.0, True, "2000"])
def test_resamples_must_be_an_int_of_at_least_100(resamples):
    """One resample gives a "CI" that excludes the estimate and zero crashes: both refused, naming the argument."""
    with pytest.raises(ValueError, match="resamples must be an int >= 100"):
        bootstrap_ci([1.0, 0.0, 1.0], resamples=resamples)
    with pytest.raises(ValueError, match="resamples must be an int >= 100"):
        paired_bootstrap([1.0, 0.0, 1.0], [0.0, 0.0, 0.0], resamples=resamples)
    assert bootstrap_ci([1.0, 0.0, 1.0], resamples=100)[0] == pytest.approx(2 / 3)


@pytest.mark.parametrize("wins, ties, losses, floor", [(1, 0, 0, 1.0), (3, 0, 0, 0.25), (5, 0, 0, 0.0625),
                                                        (3, 97, 0, 0.25), (5, 95, 0, 0.0625)])
def test_paired_bootstrap_p_value_is_never_below_what_k_discordant_pairs_can_show(wins, ties, losses, floor):
    """With k discordant pairs no exact test can go below 2^(1-k) (all k signs agree): one win in one pair is
    no evidence (p = 1), though every resample of it agrees. The bootstrap p-value is floored there."""
    a = [1.0] * wins + [0.0] * (ties + losses)
    b = [0.0] * (wins + ties) + [1.0] * losses
    result = paired_bootstrap(a, b, resamples=2000)
    assert result.p_bootstrap == pytest.approx(floor)
    assert result.p_bootstrap >= result.p_sign  # here, every discordant pair goes one way: both are 2^(1-k)


def test_paired_bootstrap_p_value_with_many_discordant_pairs_is_the_bootstrap_one():
    a, b = [1.0] * 6 + [0.0] * 94, [0.0] * 98 + [1.0] * 2  # W/T/L 6/92/2: 2^(1-8) is far below the bootstrap
    assert 0.1 < paired_bootstrap(a, b, resamples=2000).p_bootstrap < 0.3


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_score_is_refused_naming_the_position_not_turned_into_a_nan_interval(bad):
    """A NaN gave a NaN mean and interval, and paired_bootstrap a p-value of 0.5 and one "win"; the sign test
    silently counted it as a tie. Each refuses it instead, saying where it is."""
    with pytest.raises(ValueError, match=r"values\[1\] is"):
        bootstrap_ci([1.0, bad, 0.0])
    with pytest.raises(ValueError, match=r"a\[1\] is"):
        paired_bootstrap([1.0, bad, 0.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"b\[0\] is"):
        paired_bootstrap([1.0, 1.0], [bad, 0.0])
    with pytest.raises(ValueError, match=r"a\[1\] is"):
        sign_test([1.0, bad], [0.0, 0.0])
