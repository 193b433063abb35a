from __future__ import annotations

import copy

import dspy
import pytest

from fusion_dspy import Teacher
from fusion_dspy.teacher import draw_seed
from fusion_dspy.teacher import plan_draws
from tests.helpers import teacher_engine


def test_weighted_round_robin_covers_every_teacher_first():
    a = Teacher(teacher_engine("a").lm(), samples=1)
    b = Teacher(teacher_engine("b").lm(), samples=2)
    draws = plan_draws([a, b], 5)
    assert [d.teacher.name for d in draws] == ["local/a", "local/b", "local/b", "local/a", "local/b"]
    assert [d.sample for d in draws] == [0, 0, 1, 1, 2]


def test_repeated_draws_get_distinct_rollout_and_seed():
    t = Teacher(teacher_engine("a").lm(), temperature=0.9)
    draws = plan_draws([t], 3, seed=10)
    configs = [d.config for d in draws]
    assert [c["rollout_id"] for c in configs] == [0, 1, 2]
    assert [c["seed"] for c in configs] == [draw_seed(10, t.name, k) for k in range(3)]
    assert len({c["seed"] for c in configs}) == 3
    assert all(c["temperature"] == 0.9 for c in configs)


def test_draw_seeds_are_distinct_across_teachers_and_base_seeds_and_never_negative():
    """``seed + sample`` gave teacher x's sample 1 under seed 0 the same seed as sample 0 under seed 1, and the
    same seeds to every teacher; -1 (llama.cpp's "random") was reachable with a negative base seed."""
    seeds = [draw_seed(base, name, sample) for base in (-1, 0, 1, 2) for name in ("x", "y") for sample in range(8)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**31 for s in seeds)
    assert draw_seed(0, "x", 1) == draw_seed(0, "x", 1)  # stable within and across processes (a hash, not hash())


def test_zero_temperature_teacher_drawn_twice_is_refused():
    t = Teacher(teacher_engine("a").lm(), temperature=0.0)
    assert len(plan_draws([t], 1)) == 1
    with pytest.raises(ValueError, match="temperature 0"):
        plan_draws([t], 2)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"lm": "openai/gpt-4o"}, TypeError),
        ({"lm": None, "samples": 0}, ValueError),
        ({"lm": None, "temperature": -1}, ValueError),
        ({"lm": None, "name": "  "}, ValueError),
    ],
)
def test_bad_teacher_arguments(kwargs, error):
    lm = kwargs.pop("lm")
    with pytest.raises(error):
        Teacher(lm, **kwargs)


def test_teacher_is_immutable_and_shared_by_deepcopy():
    lm = teacher_engine("a").lm()
    t = Teacher(lm, name="a")
    with pytest.raises(AttributeError):
        t.temperature = 1.0
    assert copy.deepcopy(t) is t
    hotter = t.replace(temperature=1.0)
    assert hotter.temperature == 1.0 and hotter.lm is lm and t.temperature == 0.7


def test_default_name_is_model_string_or_default():
    assert Teacher(dspy.LM("local/x", engine=teacher_engine("x"))).name == "local/x"
    assert Teacher().name == "default"
