from __future__ import annotations

import pytest
from fusion_dspy.optimizers import FrontPoint
from fusion_dspy.optimizers import pareto_front
from fusion_dspy.optimizers import select_from_front

POINTS = [
    FrontPoint(trial=0, quality=0.50, cost=100),  # on the front (cheapest)
    FrontPoint(trial=1, quality=0.40, cost=150),  # dominated by 0
    FrontPoint(trial=2, quality=0.70, cost=300),  # on the front
    FrontPoint(trial=3, quality=0.70, cost=300),  # duplicate of 2: the earlier trial stays
    FrontPoint(trial=4, quality=0.65, cost=250),  # on the front
    FrontPoint(trial=5, quality=0.90, cost=900),  # on the front (best)
    FrontPoint(trial=6, quality=0.90, cost=950),  # dominated by 5
    FrontPoint(trial=7, quality=0.50, cost=100),  # duplicate of 0
]


def test_pareto_front_of_a_constructed_problem():
    assert [p.trial for p in pareto_front(POINTS)] == [0, 4, 2, 5]
    assert [p.trial for p in pareto_front(reversed(POINTS))] == [0, 4, 2, 5]


@pytest.mark.parametrize(
    "kwargs, trial",
    [({}, 5), ({"max_cost": 899}, 2), ({"max_cost": 260}, 4), ({"max_cost": 100}, 0),
     ({"min_quality": 0.6}, 4), ({"min_quality": 0.9}, 5)],
)
def test_select_from_front_respects_the_budget(kwargs, trial):
    assert select_from_front(pareto_front(POINTS), **kwargs).trial == trial


def test_select_from_front_explains_an_impossible_budget():
    front = pareto_front(POINTS)
    with pytest.raises(ValueError, match="cheapest on the front costs 100"):
        select_from_front(front, max_cost=50)
    with pytest.raises(ValueError, match="best on the front is 0.9"):
        select_from_front(front, min_quality=0.95)
    with pytest.raises(ValueError, match="not both"):
        select_from_front(front, max_cost=1, min_quality=1)
    with pytest.raises(ValueError, match="empty"):
        select_from_front([])
