"""Uncertainty for method comparisons: bootstrap confidence intervals, paired bootstrap, sign test.

The paper reports no confidence intervals; with 50-500 examples the differences between selection
and fusion are often within noise, so every number the harness reports carries an interval, and
every comparison against Best-of-N is *paired* (same examples, same candidates), which is far more
sensitive than comparing two independent intervals.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from collections.abc import Sequence

__all__ = ["MIN_RESAMPLES", "PairedComparison", "bootstrap_ci", "check_resamples", "paired_bootstrap", "sign_test"]

#: Fewest bootstrap resamples accepted: with fewer, the percentile interval and the p-value are noise
#: (one resample gives an "interval" that can exclude the estimate; zero has no quantile at all).
MIN_RESAMPLES = 100


def _rng(seed: int):  # numpy comes with datasets/pandas; imported lazily to keep `import fusion_dspy` light
    import numpy

    return numpy.random.default_rng(seed)


def check_resamples(resamples: object) -> int:
    """The one rule for a resample count: an int >= :data:`MIN_RESAMPLES`. Returns it."""
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < MIN_RESAMPLES:
        raise ValueError(f"resamples must be an int >= {MIN_RESAMPLES} (e.g. 2000), got {resamples!r}.")
    return resamples


def _check_finite(values: Sequence[float], name: str) -> None:
    """Refuse a NaN or infinite score: it would make the mean and interval NaN, and a paired test meaningless."""
    for position, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(f"{name}[{position}] is {value!r}: every score must be a finite number "
                             "(score a failed example 0, or leave it out).")


def bootstrap_ci(
    values: Sequence[float],
    *,
    statistic: Callable[[Sequence[int]], float] | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap interval of the mean (or of ``statistic``).

    Args:
        values: One value per example.
        statistic: ``statistic(indices) -> float`` computed on a resample given as example indices
            (e.g. corpus chrF of the resampled segments); default: the mean of ``values``.
        confidence: Interval coverage, e.g. 0.95.
        resamples: Number of bootstrap resamples, an int >= :data:`MIN_RESAMPLES`.
        seed: Resampling seed (results are reproducible).

    Returns:
        ``(estimate, low, high)``; with a single example the interval collapses to the estimate.
    """
    import numpy

    check_resamples(resamples)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    count = len(values)
    if count == 0:
        raise ValueError("bootstrap_ci() needs at least one value.")
    _check_finite(values, "values")
    data = numpy.asarray(values, dtype=float)
    if statistic is None:
        estimate = float(data.mean())
        if count == 1:
            return estimate, estimate, estimate
        samples = data[_rng(seed).integers(0, count, size=(resamples, count))].mean(axis=1)
    else:
        estimate = float(statistic(list(range(count))))
        if count == 1:
            return estimate, estimate, estimate
        draws = _rng(seed).integers(0, count, size=(resamples, count))
        samples = numpy.array([statistic(row.tolist()) for row in draws])
    alpha = (1 - confidence) / 2
    low, high = numpy.quantile(samples, [alpha, 1 - alpha])
    return estimate, float(low), float(high)


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Method A vs method B on the same examples.

    Attributes:
        diff: Mean of ``a - b``.
        ci_low: Lower end of the bootstrap CI of ``diff``.
        ci_high: Upper end.
        p_bootstrap: Two-sided paired-bootstrap p-value for "no difference", never below ``2 ** (1 - k)``
            for ``k`` discordant pairs (see :func:`paired_bootstrap`).
        p_sign: Two-sided exact sign-test p-value (ties dropped).
        wins: Examples where A scored higher.
        ties: Examples with equal scores.
        losses: Examples where B scored higher.
    """

    diff: float
    ci_low: float
    ci_high: float
    p_bootstrap: float
    p_sign: float
    wins: int
    ties: int
    losses: int


def sign_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided exact binomial sign test on paired scores; ties are dropped (1.0 if all tie).

    Raises:
        ValueError: The lists differ in length, or a score is NaN or infinite.
    """
    if len(a) != len(b):
        raise ValueError(f"sign_test() needs paired scores, got {len(a)} and {len(b)}.")
    _check_finite(a, "a")
    _check_finite(b, "b")
    wins = sum(x > y for x, y in zip(a, b, strict=True))
    losses = sum(x < y for x, y in zip(a, b, strict=True))
    trials = wins + losses
    if trials == 0:
        return 1.0
    tail = sum(math.comb(trials, k) for k in range(min(wins, losses) + 1)) / 2**trials
    return min(1.0, 2 * tail)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Compare paired per-example scores of two methods.

    The p-value follows Koehn (2004)-style paired resampling: the share of resampled mean
    differences on the other side of zero, doubled (two-sided), floored at ``1 / resamples``, and
    then at ``2 ** (1 - k)`` for ``k`` discordant pairs (pairs whose scores differ; ``p = 1`` when
    ``k = 0``). Why the second floor: with few discordant pairs that all go one way, every resample
    agrees on the sign, so the bootstrap p-value drops to ``1 / resamples`` (one win and nothing
    else gave 0.0005), far below what the data can show: the exact sign-flip (randomization) test,
    which is valid under "no difference", can never go below ``2 ** (1 - k)``, reached when all
    ``k`` signs agree. With many discordant pairs the floor is far below the bootstrap p-value and
    changes nothing.
    """
    import numpy

    check_resamples(resamples)
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap() needs paired scores, got {len(a)} and {len(b)}.")
    if not a:
        raise ValueError("paired_bootstrap() needs at least one pair.")
    _check_finite(a, "a")
    _check_finite(b, "b")
    diffs = numpy.asarray(a, dtype=float) - numpy.asarray(b, dtype=float)
    mean, low, high = bootstrap_ci(diffs.tolist(), confidence=confidence, resamples=resamples, seed=seed)
    if numpy.all(diffs == 0):
        p_value = 1.0
    else:
        means = diffs[_rng(seed).integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
        tail = (means <= 0).mean() if mean > 0 else (means >= 0).mean()
        discordant = int((diffs != 0).sum())
        p_value = float(min(1.0, max(2 * tail, 1 / resamples, 2.0 ** (1 - discordant))))
    return PairedComparison(
        diff=mean,
        ci_low=low,
        ci_high=high,
        p_bootstrap=p_value,
        p_sign=sign_test(a, b),
        wins=int((diffs > 0).sum()),
        ties=int((diffs == 0).sum()),
        losses=int((diffs < 0).sum()),
    )
