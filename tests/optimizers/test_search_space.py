from __future__ import annotations

import optuna
import pytest
from fusion_dspy.optimizers import FusionOptimizer
from fusion_dspy.optimizers import SearchSpace
from fusion_dspy.optimizers.search_space import InfeasibleConfigError
from fusion_dspy.optimizers.search_space import resolve_space

from fusion_dspy import FuseSettings
from tests.optimizers.builders import exact
from tests.optimizers.builders import examples
from tests.optimizers.builders import poisoned_pool


def _space(problem, space: SearchSpace, **kwargs):
    return resolve_space(path="answer", space=space, base=FuseSettings(teachers=["weak", "strong"]),
                         teachers={t.name: t for t in problem.teachers}, fusors=["local/fusor"],
                         instructions=["default"], n_range=(1, 8), **kwargs)


def test_restricted_space_is_honoured_by_every_trial():
    problem = poisoned_pool()
    space = SearchSpace(n=(2, 3), teachers=("strong",), temperatures=(0.3, 1.0), modes=("select",),
                        selectors=("majority",))
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=6,
                          search_space=space, num_instructions=0, pruner=None)
    compiled = opt.compile(problem.fuse(), trainset=examples(4))
    trials = opt.study.get_trials()
    assert len(trials) == 6
    for trial in trials:
        # Fixed dimensions (one choice) never become parameters; pool search needs two teachers.
        assert set(trial.params) <= {"self.n", "self.temperature.strong"}
        assert 2 <= trial.params.get("self.n", 2) <= 3
        config = trial.user_attrs["config"]["self"]
        assert config["mode"] == "select" and config["selector"] == "majority"
        assert config["teachers"] in (["strong@t0.3"], ["strong@t1"])
    assert problem.weak.calls == 0  # the weak teacher was never eligible
    assert compiled.settings.teachers[0].startswith("strong@t")


def test_all_false_pool_draw_is_repaired_to_the_whole_pool():
    problem = poisoned_pool()
    fuse_space = _space(problem, SearchSpace(temperatures=None, modes=("select",)))
    trial = optuna.trial.FixedTrial({"answer.n": 2, "answer.use.weak": False, "answer.use.strong": False,
                                     "answer.selector": "mbr"})
    assert fuse_space.suggest(trial).teachers == ["weak", "strong"]
    trial = optuna.trial.FixedTrial({"answer.n": 2, "answer.use.weak": False, "answer.use.strong": True,
                                     "answer.selector": "mbr"})
    assert fuse_space.suggest(trial).teachers == ["strong"]


def test_temperature_zero_drawn_twice_is_infeasible_and_pruned_without_calls():
    problem = poisoned_pool()
    space = SearchSpace(n=(2, 2), teachers=("strong",), temperatures=(0.0,), modes=("select",))
    fuse_space = _space(problem, space)
    with pytest.raises(InfeasibleConfigError, match="temperature 0"):
        fuse_space.suggest(optuna.trial.FixedTrial({"answer.selector": "mbr"}))
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=2,
                          search_space=space, num_instructions=0, baselines=False)
    with pytest.raises(RuntimeError, match="No trial"):
        opt.compile(problem.fuse(), trainset=examples(2))
    assert {t.state for t in opt.study.get_trials()} == {optuna.trial.TrialState.PRUNED}
    assert all("temperature 0" in t.user_attrs["infeasible"] for t in opt.study.get_trials())
    assert problem.teacher_calls == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": (3, 2)}, "1 <= low <= high"),
        ({"selectors": ("reward",)}, "reward"),
        ({"modes": ()}, "at least one choice"),
        ({"temperatures": (-0.1,)}, "finite number >= 0"),
        ({"agree": (0.0,)}, "agree must be a share"),
        ({"n": (0, 2)}, "n must be an int >= 1"),
    ],
)
def test_search_space_rejects_bad_declarations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(**kwargs)


def test_unknown_teacher_in_space_names_the_known_ones():
    problem = poisoned_pool()
    with pytest.raises(ValueError, match=r"unknown teacher\(s\) \['nobody'\].*'strong', 'weak'"):
        _space(problem, SearchSpace(teachers=("nobody",)))


def test_named_pools_are_one_categorical_choice():
    problem = poisoned_pool()
    pools = {"both": ("weak", "strong"), "strong-alone": ("strong",)}
    fuse_space = _space(problem, SearchSpace(pools=pools, temperatures=None, modes=("select",)))
    for pool, expected in (("both", ["weak", "strong"]), ("strong-alone", ["strong"])):
        trial = optuna.trial.FixedTrial({"answer.n": 2, "answer.pool": pool, "answer.selector": "mbr"})
        assert fuse_space.suggest(trial).teachers == expected
    assert fuse_space.params_for(n=1, teachers=["strong"]) == {"answer.n": 1, "answer.pool": "strong-alone"}
    assert fuse_space.can_select(["strong"]) and not fuse_space.can_select(["weak"])


def test_named_pools_study_only_ever_uses_the_declared_pools():
    problem = poisoned_pool()
    space = SearchSpace(pools={"both": ("weak", "strong"), "strong-alone": ("strong",)}, temperatures=None,
                        modes=("select",), selectors=("majority",), n=(1, 3))
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=8,
                          search_space=space, num_instructions=0, pruner=None)
    compiled = opt.compile(problem.fuse(), trainset=examples(4))
    trials = opt.study.get_trials()
    assert all(not any(name.startswith("self.use.") for name in t.params) for t in trials)
    assert {tuple(t.user_attrs["config"]["self"]["teachers"]) for t in trials} <= {("weak", "strong"), ("strong",)}
    # The strong-alone baseline is enqueued (the weak teacher alone is no declared pool) and wins.
    assert trials[1].params["self.pool"] == "strong-alone" and trials[1].params["self.n"] == 1
    assert compiled.settings.teachers == ["strong"]


@pytest.mark.parametrize(
    "pools, message",
    [
        ({}, "at least one named pool"),
        ({"x": ()}, "at least one teacher"),
        ({"x": ("a", "a")}, "names a teacher twice"),
    ],
)
def test_bad_pool_declarations(pools, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(pools=pools)


def test_pools_must_stay_within_the_eligible_teachers():
    with pytest.raises(ValueError, match=r"teacher\(s\) \['weak'\] that SearchSpace.teachers leaves out"):
        SearchSpace(teachers=("strong",), pools={"p": ("weak", "strong")})
    problem = poisoned_pool()
    with pytest.raises(ValueError, match=r"unknown teacher\(s\) \['nobody'\]"):
        _space(problem, SearchSpace(pools={"p": ("strong", "nobody")}))


def test_cli_pools_syntax():
    from fusion_dspy.cli.optimize import parse_pools

    assert parse_pools("diverse=a, b;strong=c;") == {"diverse": ("a", "b"), "strong": ("c",)}
    with pytest.raises(ValueError, match="NAME=TEACHER"):
        parse_pools("a,b")
    with pytest.raises(ValueError, match="defined twice"):
        parse_pools("x=a;x=b")
