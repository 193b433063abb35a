from __future__ import annotations

import json

import dspy
import optuna
import pytest
from fusion_dspy.optimizers import FusionOptimizer
from fusion_dspy.optimizers import SearchSpace

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine
from tests.optimizers.builders import exact
from tests.optimizers.builders import examples
from tests.optimizers.builders import poisoned_pool
from tests.optimizers.builders import right


def test_finds_the_strong_teacher_alone_when_fusion_copies_the_weak_one():
    problem = poisoned_pool()
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=10,
                          search_space=SearchSpace(temperatures=None), num_instructions=0, minibatch_size=4)
    student = problem.fuse(n=4)
    compiled = opt.compile(student, trainset=examples(3), valset=examples(8))
    assert compiled.score == 1.0
    assert compiled.n == 1 and compiled.settings.teachers[0] == "strong"  # N=1: only the first teacher draws
    baseline = opt.study.trials[0]  # the student's own configuration ran first, and lost
    assert baseline.user_attrs["config"]["self"]["n"] == 4 and baseline.user_attrs["result"]["quality"] == 0.0
    assert len(compiled.trial_logs) == 10
    json.dumps(compiled.trial_logs)  # JSON only: no program objects in the log or in user_attrs


def test_compile_never_mutates_the_student():
    problem = poisoned_pool()
    student = problem.fuse(n=3)
    before = (json.dumps(student.dump_state(), sort_keys=True, default=str), dict(student.pool.teachers),
              dict(student.pool.fusors), student.fusor.signature.instructions, student.store)
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=5,
                          num_instructions=0)
    compiled = opt.compile(student, trainset=examples(4))
    after = (json.dumps(student.dump_state(), sort_keys=True, default=str), dict(student.pool.teachers),
             dict(student.pool.fusors), student.fusor.signature.instructions, student.store)
    assert before == after
    assert compiled is not student and compiled.store is None  # the bank stays with the study
    assert compiled.generate is not student.generate


@pytest.mark.parametrize(("guards", "fuse_score"), [((False,), 0.0), ((True,), 1.0)])
def test_select_wins_where_fake_teachers_make_fusion_worse(guards, fuse_score):
    problem = poisoned_pool()
    weak, strong = problem.teachers
    teachers = [weak, strong.replace(samples=2)]  # plan W S S: the strong teacher holds the majority
    space = SearchSpace(n=(3, 3), search_pool=False, temperatures=None, modes=("fuse", "select"),
                        selectors=("majority",), instructions=False, criteria=(("content",),),
                        discard_worst=(True,), length_control=(False,), guards=guards)
    opt = FusionOptimizer(metric=exact, teachers=teachers, fusors=[problem.fusor_lm], trials=4, search_space=space,
                          num_instructions=0, baselines=False, pruner=None)
    compiled = opt.compile(Fuse("question -> answer", n=3, teachers=teachers, fusor=problem.fusor_lm),
                           trainset=examples(6))
    by_mode = {t.params["self.mode"]: t.value for t in opt.study.get_trials()}
    # Unguarded, the fusor copies the weak teacher's wrong answer. Guarded, majority vote's pick (the
    # strong teacher's answer) beats that copy: fusion ties selection, and selection is cheaper.
    assert by_mode == {"fuse": fuse_score, "select": 1.0}
    assert compiled.mode == "select" and compiled.score == 1.0
    assert compiled(question="q9").answer == right("q9")


class TwoFuses(dspy.Module):
    def __init__(self, problem) -> None:
        super().__init__()
        self.draft = problem.fuse(n=2)
        self.review = problem.fuse(n=2)

    def forward(self, question: str) -> dspy.Prediction:
        first = self.draft(question=question).answer
        second = self.review(question=question).answer
        return dspy.Prediction(answer=f"{first}|{second}")


def test_nested_program_tunes_each_fuse_with_its_own_parameters():
    problem = poisoned_pool()
    spaces = {"draft": SearchSpace(n=(1, 2), temperatures=None, modes=("select",)),
              "review": SearchSpace(n=(1, 3), temperatures=None, modes=("fuse",), instructions=False)}
    opt = FusionOptimizer(metric=lambda ex, pred, trace=None: pred.answer == f"{ex.answer}|{ex.answer}",
                          teachers=problem.teachers, fusors=[problem.fusor_lm], trials=8, search_space=spaces,
                          num_instructions=0)
    student = TwoFuses(problem)
    compiled = opt.compile(student, trainset=examples(4))
    params = set().union(*(t.params for t in opt.study.get_trials()))
    assert {"draft.n", "draft.use.weak", "review.n", "review.use.strong"} <= params
    assert not any(p.startswith("draft.") and "instruction" in p for p in params)
    assert compiled.score == 1.0
    for fuse, low_high in ((compiled.draft, (1, 2)), (compiled.review, (1, 3))):
        assert low_high[0] <= fuse.n <= low_high[1] and fuse.settings.teachers[: fuse.n] == ["strong"] * 1
    assert student.draft.n == 2 and student.review.n == 2


def test_threads_keep_the_dspy_context():
    engine = FakeEngine(responder=lambda r: {"answer": right(r.inputs["question"]), "comparison": "same"})
    student = Fuse("question -> answer", n=2)  # teachers and fusor: the context LM
    opt = FusionOptimizer(metric=exact, trials=4, n_jobs=2, num_threads=2, num_instructions=0,
                          search_space=SearchSpace(temperatures=None))
    with dspy.context(lm=engine.lm()):
        compiled = opt.compile(student, trainset=examples(4))
    trials = opt.study.get_trials()
    assert all(t.user_attrs["result"]["errors"] == 0 for t in trials), [t.user_attrs for t in trials]
    assert compiled.score == 1.0 and engine.calls > 0


def test_multi_objective_returns_the_pareto_front_and_selects_under_a_budget():
    problem = poisoned_pool()
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=10,
                          objectives=("quality", "cost"), search_space=SearchSpace(temperatures=None),
                          num_instructions=0)
    compiled = opt.compile(problem.fuse(n=3), trainset=examples(4))
    trials = [t for t in opt.study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    front = opt.pareto_front()
    on_front = {p.trial for p in front}
    for t in trials:  # every trial off the front is dominated by one on it, and none on it is
        dominated = any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
                        for o in trials)
        assert dominated == (t.number not in on_front) or any(o.values == t.values and o.number in on_front
                                                                for o in trials)
    assert compiled.score == max(p.quality for p in front)
    assert compiled.pareto_front == [dict(trial=p.trial, quality=p.quality, cost=p.cost, config=p.config)
                                     for p in front]
    cheapest = min(front, key=lambda p: p.cost)
    cheap = opt.select_from_front(max_cost=cheapest.cost)
    assert cheap.score == cheapest.quality
    with pytest.raises(ValueError, match="cheapest on the front"):
        opt.select_from_front(max_cost=cheapest.cost / 10)


def test_metric_may_return_a_bool_and_program_errors_score_zero():
    engine = FakeEngine(name="flaky", responder=lambda r: {"answer": right(r.inputs["question"])},
                        fail=lambda r: r.inputs.get("question") == "q0")
    teacher = Teacher(engine.lm(), name="flaky")
    opt = FusionOptimizer(metric=exact, teachers=[teacher], trials=2, num_instructions=0, pruner=None,
                          search_space=SearchSpace(n=(1, 1), temperatures=None))
    compiled = opt.compile(Fuse("question -> answer", n=1, teachers=[teacher]), trainset=examples(4))
    assert compiled.score == 0.75
    assert opt.study.trials[0].user_attrs["result"]["errors"] == 1


def test_bad_arguments_say_how_to_fix_them():
    with pytest.raises(ValueError, match="objectives"):
        FusionOptimizer(metric=exact, objectives=("cost",))
    with pytest.raises(TypeError, match="callable"):
        FusionOptimizer(metric="exact")
    opt = FusionOptimizer(metric=exact, trials=1)
    with pytest.raises(ValueError, match="contains no fusion_dspy.Fuse"):
        opt.compile(dspy.Predict("question -> answer"), trainset=examples(1))
    with pytest.raises(RuntimeError, match="call compile"):
        opt.report()
