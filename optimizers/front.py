"""The quality/cost Pareto front of a study, and picking one configuration from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import optuna

__all__ = ["FrontPoint", "front_from_study", "pareto_front", "select_from_front"]


@dataclasses.dataclass(frozen=True)
class FrontPoint:
    """One configuration with its measured quality (higher is better) and cost (lower is better).

    Attributes:
        trial: The Optuna trial number it came from.
        quality: Mean metric on the examples it was scored on.
        cost: Mean cost per example (tokens, or money with a price table).
        config: Settings per Fuse path, as JSON (``FuseSettings.model_dump(mode="json")``).
    """

    trial: int
    quality: float
    cost: float
    config: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict, compare=False)

    def dominates(self, other: FrontPoint) -> bool:
        return (self.quality >= other.quality and self.cost <= other.cost
                and (self.quality > other.quality or self.cost < other.cost))


def pareto_front(points: Iterable[FrontPoint]) -> list[FrontPoint]:
    """The non-dominated points, cheapest first. Of equal (quality, cost) points the earliest trial stays."""
    ordered = sorted(points, key=lambda p: (p.cost, -p.quality, p.trial))
    front: list[FrontPoint] = []
    for point in ordered:
        if front and (point.quality <= front[-1].quality):
            continue  # Costs at least as much as a point with at least the same quality.
        front.append(point)
    return front


def select_from_front(
    front: Sequence[FrontPoint], *, max_cost: float | None = None, min_quality: float | None = None
) -> FrontPoint:
    """The best point within a budget: highest quality with ``cost <= max_cost``, cheapest on ties.

    With ``min_quality`` instead, the cheapest point reaching it. With neither, the highest quality.

    Raises:
        ValueError: No point satisfies the constraint (the message gives the front's range), or both
            constraints were given.
    """
    if not front:
        raise ValueError("The Pareto front is empty: no trial completed. Run more trials first.")
    if max_cost is not None and min_quality is not None:
        raise ValueError("Give max_cost or min_quality, not both.")
    if min_quality is not None:
        feasible = [p for p in front if p.quality >= min_quality]
        if not feasible:
            best = max(p.quality for p in front)
            raise ValueError(f"No configuration reaches quality {min_quality}; the best on the front is {best:.4g}.")
        return min(feasible, key=lambda p: (p.cost, -p.quality, p.trial))
    feasible = [p for p in front if max_cost is None or p.cost <= max_cost]
    if not feasible:
        cheapest = min(p.cost for p in front)
        raise ValueError(
            f"No configuration costs at most {max_cost}; the cheapest on the front costs {cheapest:.6g} per example. "
            "Raise max_cost, or add cheaper options to the search space (smaller N, mode='select')."
        )
    return max(feasible, key=lambda p: (p.quality, -p.cost, -p.trial))


def front_from_study(study: optuna.Study) -> list[FrontPoint]:
    """The Pareto front of a (quality, cost) study, from trial values and the recorded configurations."""
    points = [
        FrontPoint(trial=t.number, quality=t.values[0], cost=t.values[1], config=t.user_attrs.get("config", {}))
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.values is not None and len(t.values) == 2
    ]
    return pareto_front(points)
