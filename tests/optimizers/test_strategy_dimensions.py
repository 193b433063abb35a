"""The dimensions issue 11 adds to the search space: fusor strategy, selection guard, self-MoA pools."""

from __future__ import annotations

import optuna
import pytest
from fusion_dspy.optimizers import SearchSpace
from fusion_dspy.optimizers.search_space import resolve_space

from fusion_dspy import FuseSettings
from tests.optimizers.builders import poisoned_pool


def _space(space: SearchSpace):
    problem = poisoned_pool()
    return resolve_space(path="answer", space=space, base=FuseSettings(teachers=["weak", "strong"]),
                         teachers={t.name: t for t in problem.teachers}, fusors=["local/fusor"],
                         instructions=["default"], n_range=(1, 8))


def _fixed(**params):
    base = {"answer.n": 3, "answer.criteria": 0, "answer.discard_worst": True, "answer.length_control": False}
    return optuna.trial.FixedTrial({**base, **{f"answer.{k}": v for k, v in params.items()}})


@pytest.mark.parametrize("strategy", ["paper", "analyse", "edit", "vote"])
def test_strategy_is_a_dimension_of_the_fusor_prompt(strategy):
    space = _space(SearchSpace(temperatures=None, search_pool=False, modes=("fuse",)))
    settings = space.suggest(_fixed(strategy=strategy, guard=False))
    assert settings.prompt.strategy == strategy


def test_strategy_is_not_a_parameter_in_select_mode_nor_when_fixed():
    space = _space(SearchSpace(temperatures=None, search_pool=False, modes=("select",)))
    study = optuna.create_study()
    trial = study.ask()
    space.suggest(trial)
    assert "answer.strategy" not in trial.params and "answer.guard" not in trial.params
    fixed = _space(SearchSpace(temperatures=None, search_pool=False, modes=("fuse",), strategies=("edit",)))
    trial = study.ask()
    assert fixed.suggest(trial).prompt.strategy == "edit"
    assert "answer.strategy" not in trial.params


def test_unknown_strategy_or_empty_choices_are_rejected():
    with pytest.raises(ValueError, match="strateg"):
        SearchSpace(strategies=("blend",))
    with pytest.raises(ValueError, match="strategies"):
        SearchSpace(strategies=())
    with pytest.raises(ValueError, match="guards"):
        SearchSpace(guards=())


def test_guard_is_a_search_dimension_of_fused_modes():
    space = _space(SearchSpace(temperatures=None, search_pool=False, modes=("fuse",)))
    study = optuna.create_study()
    trial = study.ask()
    settings = space.suggest(trial)
    assert space.guard_choices == (False, True) and "answer.guard" in trial.params
    assert settings.guard == trial.params["answer.guard"]


def test_self_moa_offers_each_member_alone_next_to_the_mixed_pools():
    named = {"mixed": ("weak", "strong")}
    plain = _space(SearchSpace(temperatures=None, pools=named))
    assert plain.pools == named
    space = _space(SearchSpace(temperatures=None, pools=named, self_moa=True))
    assert space.pools == {"mixed": ("weak", "strong"), "self:weak": ("weak",), "self:strong": ("strong",)}
    settings = space.suggest(_fixed(pool="self:strong", mode="fuse", strategy="paper", guard=False))
    assert settings.teachers == ["strong"] and settings.n == 3  # one teacher sampled N times
    assert space.pool_for(["strong"]) == "self:strong"
    # A pool the user already named for one teacher is not duplicated.
    own = _space(SearchSpace(temperatures=None, pools={"mixed": ("weak", "strong"), "s": ("strong",)},
                             self_moa=True))
    assert own.pools == {"mixed": ("weak", "strong"), "s": ("strong",), "self:weak": ("weak",)}
