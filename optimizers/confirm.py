"""Choosing under uncertainty: among the confirmed configurations, the cheapest one that is not
significantly worse than the best.

The optimizer scores its few best configurations on the full valset (``confirm``). Taking the top
mean there over-fits the valset when the runner-up is within noise: on one recorded translation pool
the top mean was one system alone, 1.6 chrF *below* 5-way MBR on a held-out split. So each
configuration is compared with the best one by a paired bootstrap over the same valset examples;
those whose difference is not significant at ``alpha`` are equivalent, and the cheapest of them
(then the higher mean, then the earlier trial) is chosen. The choice reports its own bootstrap
confidence interval and its paired comparison with the best mean.

A floor keeps "cheaper" from meaning "worse than a teacher alone": configurations marked as the
floor (the optimizer marks each teacher alone at N=1) are confirmed too, and nothing whose valset
mean is below the best of them is chosen. So the chosen configuration is never below the best
single teacher on the valset; whether it holds on held-out data is a measurement, not a guarantee.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from fusion_dspy.evaluate.stats import bootstrap_ci
from fusion_dspy.evaluate.stats import paired_bootstrap

__all__ = ["Choice", "Confirmed", "choose_confirmed"]


@dataclasses.dataclass(frozen=True)
class Confirmed:
    """One configuration scored on the full valset.

    Attributes:
        trial: The Optuna trial number.
        quality: Mean score over the valset.
        cost: Mean cost per example.
        scores: Per-example scores, in valset order (the same order for every configuration).
    """

    trial: int
    quality: float
    cost: float
    scores: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Choice:
    """The chosen configuration and why.

    Attributes:
        chosen: Trial number of the chosen configuration.
        best: Trial number of the configuration with the best mean.
        ci: ``(mean, low, high)``: bootstrap CI of the chosen configuration's valset mean.
        vs_best: Paired comparison chosen - best: ``diff``, ``ci_low``, ``ci_high``, ``p_bootstrap``
            (all zero when the best itself is chosen).
        equivalent: Trials not significantly worse than the best (the chosen one among them).
        floor: The best valset mean among the floor trials, when any were given; nothing below it is chosen.
    """

    chosen: int
    best: int
    ci: tuple[float, float, float]
    vs_best: dict[str, float]
    equivalent: tuple[int, ...]
    floor: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def choose_confirmed(
    confirmed: Sequence[Confirmed | Mapping[str, Any]],
    *,
    floor_trials: Sequence[int] = (),
    alpha: float = 0.05,
    resamples: int = 2000,
    seed: int = 0,
) -> Choice:
    """Pick the cheapest configuration not significantly worse than the best mean, nor below the floor.

    "Significantly worse" means the paired bootstrap CI (level ``1 - alpha``) of ``candidate - best``
    lies entirely below zero. The floor is the best mean among ``floor_trials`` (trial numbers in
    ``confirmed``); a configuration with a lower mean is never chosen. Mappings need ``trial``,
    ``quality``, ``cost`` and ``scores``.

    Raises:
        ValueError: ``confirmed`` is empty, the score lists differ in length (not paired), or a floor
            trial is not among the confirmed ones.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
    items = [c if isinstance(c, Confirmed) else Confirmed(int(c["trial"]), float(c["quality"]), float(c["cost"]),
                                                          tuple(float(s) for s in c["scores"])) for c in confirmed]
    if not items:
        raise ValueError("choose_confirmed() needs at least one confirmed configuration.")
    if len({len(c.scores) for c in items}) != 1 or not items[0].scores:
        raise ValueError("every confirmed configuration needs scores on the same, non-empty valset.")
    by_trial = {c.trial: c for c in items}
    missing = sorted(set(floor_trials) - set(by_trial))
    if missing:
        raise ValueError(f"floor_trials {missing} are not among the confirmed trials {sorted(by_trial)}; "
                         "confirm the floor configurations too.")
    floor = max((by_trial[t].quality for t in floor_trials), default=None)
    best = max(items, key=lambda c: (c.quality, -c.cost, -c.trial))
    comparisons: dict[int, dict[str, float]] = {}
    equivalent = []
    for item in items:
        if item is best:
            comparisons[item.trial] = {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_bootstrap": 1.0}
            equivalent.append(item)
            continue
        paired = paired_bootstrap(item.scores, best.scores, confidence=1 - alpha, resamples=resamples, seed=seed)
        comparisons[item.trial] = {"diff": paired.diff, "ci_low": paired.ci_low, "ci_high": paired.ci_high,
                                   "p_bootstrap": paired.p_bootstrap}
        if paired.ci_high >= 0 and (floor is None or item.quality >= floor):  # not significantly worse
            equivalent.append(item)
    chosen = min(equivalent, key=lambda c: (c.cost, -c.quality, c.trial))
    ci = bootstrap_ci(list(chosen.scores), confidence=1 - alpha, resamples=resamples, seed=seed)
    return Choice(chosen=chosen.trial, best=best.trial, ci=ci, vs_best=comparisons[chosen.trial],
                  equivalent=tuple(c.trial for c in equivalent), floor=floor)
