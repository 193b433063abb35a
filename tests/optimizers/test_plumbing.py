"""Optimizer plumbing: value objects, metric errors stop the study, program errors are reported, callbacks."""

from __future__ import annotations

import logging

import optuna
import pytest
from fusion_dspy.optimizers import Budget
from fusion_dspy.optimizers import FusionOptimizer
from fusion_dspy.optimizers import Parallelism
from fusion_dspy.optimizers import Proposals
from fusion_dspy.optimizers import SearchSpace
from fusion_dspy.optimizers import Storage

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine
from tests.optimizers.builders import exact
from tests.optimizers.builders import examples
from tests.optimizers.builders import poisoned_pool
from tests.optimizers.builders import right

SMALL = SearchSpace(temperatures=None, modes=("select",), selectors=("majority",), n=(1, 2))


def test_a_metric_that_raises_stops_the_study_with_its_error():
    problem = poisoned_pool()
    calls = []

    def broken(example, prediction, trace=None):
        calls.append(example)
        raise KeyError("answer_text")  # e.g. a typo in the field name

    opt = FusionOptimizer(metric=broken, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=6,
                          search_space=SMALL, num_instructions=0, num_threads=1)
    with pytest.raises(KeyError, match="answer_text") as info:
        opt.compile(problem.fuse(n=2), trainset=examples(4))
    assert any("metric" in note for note in getattr(info.value, "__notes__", []))
    states = [t.state for t in opt.study.get_trials()]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and optuna.trial.TrialState.COMPLETE not in states
    assert len(calls) == 1  # today: caught, scored 0 on every example of every trial


def test_program_errors_are_counted_reported_and_warned_about(caplog):
    strong = FakeEngine(name="strong", responder=lambda r: {"answer": right(r.inputs["question"])},
                        fail=lambda r: r.inputs["question"] == "q1")
    teachers = [Teacher(strong.lm(), name="strong")]
    opt = FusionOptimizer(metric=exact, teachers=teachers, fusors=[FakeEngine(name="f").lm()], trials=2,
                          search_space=SearchSpace(temperatures=None, modes=("select",), selectors=("mbr",), n=(1, 1)),
                          num_instructions=0, pruner=None, baselines=False)
    with caplog.at_level(logging.WARNING, logger="fusion_dspy"):
        opt.compile(Fuse("question -> answer", 1, teachers=teachers), trainset=examples(3))
    results = [t.user_attrs["result"] for t in opt.study.get_trials()]
    assert results[0]["errors"] == 1 and "CandidatesExhaustedError" in (results[0]["first_error"] or "")
    report = opt.report()
    assert report.errors["examples"] >= 1 and "CandidatesExhaustedError" in report.errors["first"]
    assert "program errors:" in str(report) and " err " in report.table.splitlines()[0] + " "
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("the program raised on 1 of 3" in m for m in warned)
    assert any("The program raised on" in m and "opt.report()" in m for m in warned)


def test_optuna_callbacks_stay_optuna_callbacks(caplog):
    problem = poisoned_pool()
    seen = []

    def progress(study, trial):
        seen.append(trial.number)

    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=3,
                          search_space=SMALL, num_instructions=0, callbacks=[progress])
    with caplog.at_level(logging.WARNING):
        opt.compile(problem.fuse(n=2), trainset=examples(2))
    assert seen == [0, 1, 2]
    assert not [r for r in caplog.records if "callback" in r.getMessage().lower()]  # today: 2 DSPy warnings
    assert not getattr(opt, "callbacks", [])  # DSPy reads Teleprompter.callbacks as DSPy callbacks


def test_value_objects_and_keyword_shortcuts_are_one_configuration():
    problem = poisoned_pool()
    grouped = FusionOptimizer(metric=exact, budget=Budget(trials=7, confirm=2), parallelism=Parallelism(n_jobs=2),
                              storage=Storage(study_name="s", bank=False), proposals=Proposals(num_instructions=0))
    flat = FusionOptimizer(metric=exact, trials=7, confirm=2, n_jobs=2, study_name="s", bank=False,
                           num_instructions=0)
    for name in ("budget", "parallelism", "storage", "proposals"):
        assert getattr(grouped, name) == getattr(flat, name)
    assert FusionOptimizer(metric=exact, storage="sqlite:///x.db").storage.url == "sqlite:///x.db"
    defaults = FusionOptimizer(metric=exact, teachers=problem.teachers)
    assert (defaults.budget.trials, defaults.budget.minibatch_size, defaults.budget.confirm) == (40, 10, 3)
    assert (defaults.parallelism.n_jobs, defaults.parallelism.num_threads) == (1, 4)
    storage = defaults.storage
    assert (storage.heartbeat_interval, storage.grace_period, storage.max_retry) == (10, 30, 3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"trials": 0}, ValueError, r"trials=0"),
        ({"n_jobs": 0}, ValueError, r"n_jobs=0"),
        ({"num_threads": "4"}, ValueError, r"num_threads='4'"),
        ({"heartbeat_interval": 30, "grace_period": 30}, ValueError, "must exceed heartbeat_interval"),
        ({"budget": Budget(trials=3), "trials": 4}, ValueError, r"\['trials'\] given both"),
        ({"trails": 3}, TypeError, r"unknown keyword\(s\) \['trails'\]"),
        ({"budget": {"trials": 3}}, TypeError, "must be a Budget"),
        ({"n_range": (0, 3)}, ValueError, "n must be an int >= 1"),
        ({"pruner": "hyperband"}, ValueError, "pruner must be one of"),
        ({"sampler": "tpe"}, TypeError, "sampler must be an optuna sampler"),
        ({"sampler": optuna.samplers.GridSampler({"x": [1]})}, ValueError, "GridSampler is not supported"),
        ({"seed": "0"}, TypeError, "seed must be an int"),
    ],
)
def test_bad_optimizer_arguments_name_themselves(kwargs, error, match):
    with pytest.raises(error, match=match):
        FusionOptimizer(metric=exact, **kwargs)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_sampler_the_gridsampler_error_recommends_runs_a_study():
    problem = poisoned_pool()
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=3,
                          num_instructions=0, pruner=None, sampler=optuna.samplers.BruteForceSampler(seed=0))
    opt.compile(problem.fuse(), trainset=examples(3))
    states = [t.state for t in opt.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3, states
