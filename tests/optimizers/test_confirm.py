from __future__ import annotations

import pytest
from fusion_dspy.optimizers import FusionOptimizer
from fusion_dspy.optimizers import SearchSpace
from fusion_dspy.optimizers.confirm import Confirmed
from fusion_dspy.optimizers.confirm import choose_confirmed
from fusion_dspy.optimizers.optimizer import CHOICE_ATTR

from tests.optimizers.builders import exact
from tests.optimizers.builders import examples
from tests.optimizers.builders import poisoned_pool


def test_a_cheaper_configuration_within_noise_is_preferred():
    best = Confirmed(trial=0, quality=0.6, cost=900.0, scores=(1, 0, 1, 1, 0))
    cheap = Confirmed(trial=1, quality=0.4, cost=100.0, scores=(1, 0, 0, 1, 0))
    choice = choose_confirmed([best, cheap])
    assert choice.best == 0 and choice.chosen == 1 and choice.equivalent == (0, 1)
    assert choice.vs_best["diff"] == pytest.approx(-0.2) and choice.vs_best["ci_high"] >= 0
    mean, low, high = choice.ci
    assert mean == pytest.approx(0.4) and low <= mean <= high


def test_a_significantly_worse_cheaper_configuration_is_not_chosen():
    best = Confirmed(trial=3, quality=1.0, cost=900.0, scores=(1.0,) * 30)
    cheap = Confirmed(trial=4, quality=0.2, cost=10.0, scores=(1.0,) * 6 + (0.0,) * 24)
    choice = choose_confirmed([cheap, best])
    assert choice.chosen == 3 == choice.best and choice.equivalent == (3,)
    assert choice.vs_best == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_bootstrap": 1.0}


def test_ties_in_cost_go_to_the_higher_mean_and_mappings_are_accepted():
    rows = [{"trial": 7, "quality": 0.5, "cost": 5.0, "scores": [1, 0]},
            {"trial": 8, "quality": 1.0, "cost": 5.0, "scores": [1, 1]}]
    assert choose_confirmed(rows).chosen == 8


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="at least one"):
        choose_confirmed([])
    with pytest.raises(ValueError, match="same, non-empty valset"):
        choose_confirmed([Confirmed(0, 1.0, 1.0, (1.0,)), Confirmed(1, 1.0, 1.0, (1.0, 0.0))])
    with pytest.raises(ValueError, match="alpha"):
        choose_confirmed([Confirmed(0, 1.0, 1.0, (1.0,))], alpha=1.5)


def test_the_optimizer_records_its_choice_with_a_confidence_interval():
    problem = poisoned_pool()
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=4,
                          search_space=SearchSpace(modes=("select",), temperatures=None), num_instructions=0,
                          pruner=None)
    compiled = opt.compile(problem.fuse(), trainset=examples(6))
    choice = opt.study.user_attrs[CHOICE_ATTR]
    confirmed = {c["trial"]: c for c in opt.study.user_attrs["fusion_dspy.confirmed"]}
    assert choice["chosen"] in choice["equivalent"] and choice["best"] in confirmed
    mean, low, high = choice["ci"]
    assert low <= mean <= high and mean == pytest.approx(confirmed[choice["chosen"]]["quality"])
    assert compiled.score == pytest.approx(mean)
    # Nothing cheaper among the equivalent ones was passed over.
    assert confirmed[choice["chosen"]]["cost"] == min(confirmed[t]["cost"] for t in choice["equivalent"])


def test_the_report_marks_the_chosen_configuration_and_its_interval():
    problem = poisoned_pool()
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=3,
                          search_space=SearchSpace(modes=("select",), temperatures=None), num_instructions=0,
                          pruner=None)
    opt.compile(problem.fuse(), trainset=examples(5))
    text = str(opt.report())
    assert text.count("(chosen, 95% CI [") == 1


def test_nothing_below_the_best_teacher_alone_is_chosen():
    fusion = Confirmed(trial=0, quality=0.6, cost=900.0, scores=(1, 0, 1, 1, 0))
    strong = Confirmed(trial=1, quality=0.6, cost=10.0, scores=(1, 1, 1, 0, 0))
    weak = Confirmed(trial=2, quality=0.4, cost=5.0, scores=(1, 0, 0, 1, 0))  # cheaper, within noise
    assert choose_confirmed([fusion, strong, weak]).chosen == 2  # without a floor: the cheapest equivalent
    choice = choose_confirmed([fusion, strong, weak], floor_trials=[1, 2])
    assert choice.chosen == 1 and choice.floor == pytest.approx(0.6) and 2 not in choice.equivalent
    # A floor above every other configuration: the best teacher alone itself.
    rows = [Confirmed(0, 0.5, 900.0, (1, 0, 1, 0)), Confirmed(1, 0.75, 10.0, (1, 1, 1, 0))]
    assert choose_confirmed(rows, floor_trials=[1]).chosen == 1


def test_a_floor_trial_must_be_confirmed():
    with pytest.raises(ValueError, match=r"floor_trials \[5\] are not among the confirmed trials \[0\]"):
        choose_confirmed([Confirmed(0, 1.0, 1.0, (1.0,))], floor_trials=[5])


def test_the_optimizer_confirms_each_teacher_alone_and_never_chooses_below_the_best():
    problem = poisoned_pool()
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=6,
                          search_space=SearchSpace(modes=("select",), temperatures=None), num_instructions=0,
                          pruner=None)
    opt.compile(problem.fuse(), trainset=examples(6))
    choice = opt.study.user_attrs[CHOICE_ATTR]
    confirmed = {c["trial"]: c for c in opt.study.user_attrs["fusion_dspy.confirmed"]}
    singles = [t for t in opt.study.trials if t.user_attrs.get("baseline")
               and all(s["n"] == 1 for s in t.user_attrs.get("config", {}).values())]
    assert len(singles) == len(problem.teachers)  # each teacher alone ran first ...

    def alone(number):
        config = opt.study.trials[number].user_attrs["config"]
        return all(s["n"] == 1 for s in config.values()), tuple(s["teachers"][0] for s in config.values())

    confirmed_alone = {alone(t)[1] for t in confirmed if alone(t)[0]}
    assert confirmed_alone == {alone(t.number)[1] for t in singles}  # ... and each is confirmed on the full valset
    single_best = max(confirmed[t]["quality"] for t in confirmed if alone(t)[0])
    assert choice["floor"] == pytest.approx(single_best)
    assert confirmed[choice["chosen"]]["quality"] >= single_best
