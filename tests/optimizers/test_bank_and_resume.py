from __future__ import annotations

import optuna
import pytest
from fusion_dspy.optimizers import FusionOptimizer
from fusion_dspy.optimizers import SearchSpace

from fusion_dspy.store import JsonlStore
from tests.optimizers.builders import exact
from tests.optimizers.builders import examples
from tests.optimizers.builders import poisoned_pool

N_AND_POOL = SearchSpace(temperatures=None, modes=("fuse",), instructions=False, criteria=(("content",),),
                         discard_worst=(True,), length_control=(False,))


def _optimizer(problem, tmp_path, **kwargs):
    defaults = dict(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=12,
                    search_space=N_AND_POOL, num_instructions=0, storage=f"sqlite:///{tmp_path / 'study.db'}",
                    study_name="s", pruner=None)
    return FusionOptimizer(**{**defaults, **kwargs})


def test_the_bank_makes_every_teacher_generation_once(tmp_path):
    problem = poisoned_pool()
    opt = _optimizer(problem, tmp_path)
    opt.compile(problem.fuse(), trainset=examples(5))
    stats = opt.bank.stats()
    # Every teacher call is a new bank entry, and nothing else calls a model but the fusor.
    assert problem.teacher_calls == stats.generated == stats.size
    assert stats.hits > stats.generated
    logged = opt.study.get_trials()
    assert sum(t.user_attrs["result"]["new_draws"] for t in logged) == problem.teacher_calls
    assert sum(t.user_attrs["result"]["fusor_calls"] for t in logged) == problem.fusor.calls
    assert sum(t.user_attrs["result"]["lm_calls"] for t in logged) == problem.teacher_calls + problem.fusor.calls

    naive = poisoned_pool()
    _optimizer(naive, tmp_path, bank=False, storage=None).compile(naive.fuse(), trainset=examples(5))
    assert naive.teacher_calls >= 3 * problem.teacher_calls  # same trajectory, re-sampled every trial

    # The bank is a JSON Lines file beside the study; a new study over it generates nothing it holds.
    path = tmp_path / "study.db.fusion" / "s" / "draws.jsonl"
    assert len(JsonlStore(path)) == stats.size + stats.fusor_size  # draws and the fusor replies
    assert stats.fusor_stored == stats.fusor_size > 0
    again = _optimizer(problem, tmp_path, trials=16)
    calls_before = problem.teacher_calls
    again.compile(problem.fuse(), trainset=examples(5))
    assert problem.teacher_calls - calls_before == again.bank.stats().generated


def test_resume_after_interruption_keeps_completed_trials_and_draws(tmp_path):
    problem = poisoned_pool()
    scored = []

    def interrupting(example, prediction, trace=None):
        scored.append(1)
        if len(scored) == 5 * 4 + 2:  # in the middle of the fifth trial
            raise KeyboardInterrupt
        return exact(example, prediction)

    opt = _optimizer(problem, tmp_path, metric=interrupting, trials=10)
    with pytest.raises(KeyboardInterrupt):
        opt.compile(problem.fuse(), trainset=examples(4))
    first = {t.number: t.values for t in opt.study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(first) >= 3
    calls_after_first = problem.teacher_calls

    resumed = _optimizer(problem, tmp_path, trials=10)
    compiled = resumed.compile(problem.fuse(), trainset=examples(4))
    trials = resumed.study.get_trials()
    states = [t.state for t in trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1  # the interrupted one, replaced
    assert sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states) == 10
    assert {t.number: t.values for t in trials if t.number in first} == first
    # The interrupted trial's draws were banked: the resumed run generated only draws the first did not.
    assert problem.teacher_calls - calls_after_first == resumed.bank.stats().generated
    assert compiled.score == 1.0


def test_concurrent_trials_share_draws_instead_of_generating_them_twice(tmp_path):
    problem = poisoned_pool()
    problem.strong.delay = problem.weak.delay = 0.05  # generations overlap across the two trial threads
    opt = _optimizer(problem, tmp_path, n_jobs=2, trials=8, baselines=False)
    opt.compile(problem.fuse(), trainset=examples(4))
    stats = opt.bank.stats()
    assert problem.teacher_calls == stats.generated == stats.size  # no draw paid for twice
    assert stats.misses == stats.generated


def test_studies_that_name_one_bank_share_its_draws_and_keep_their_own_scores(tmp_path):
    problem = poisoned_pool()
    first = _optimizer(problem, tmp_path, study_name="split-0", bank_name="shared", trials=8)
    first.compile(problem.fuse(), trainset=examples(5))
    teacher_calls, fusor_calls = problem.teacher_calls, problem.fusor.calls
    assert first.bank.stats().generated == teacher_calls > 0

    # Another study (another seed, same examples): every draw and fusor prompt the first paid for is re-used.
    scored = []

    def counting(example, prediction, trace=None):
        scored.append(1)
        return exact(example, prediction)

    second = _optimizer(problem, tmp_path, study_name="split-1", bank_name="shared", trials=8, seed=1,
                        metric=counting)
    second.compile(problem.fuse(), trainset=examples(5))
    stats = second.bank.stats()
    assert problem.teacher_calls - teacher_calls == stats.generated
    assert stats.hits > 0 and stats.size >= first.bank.stats().size
    assert problem.fusor.calls - fusor_calls == stats.fusor_stored
    # The scores are the study's own: its metric ran (no memo of the other study answered it).
    assert scored
    root = tmp_path / "study.db.fusion"
    assert (root / "shared" / "draws.jsonl").exists()
    assert (root / "split-0" / "evals.jsonl").exists() and (root / "split-1" / "evals.jsonl").exists()
    assert not (root / "split-1" / "draws.jsonl").exists()

    # The same second study over a bank of its own pays for every draw again.
    alone = poisoned_pool()
    control = _optimizer(alone, tmp_path, study_name="control", trials=8, seed=1)
    control.compile(alone.fuse(), trainset=examples(5))
    assert stats.generated < control.bank.stats().generated
    assert stats.fusor_stored < control.bank.stats().fusor_stored


@pytest.mark.parametrize("bad", ["", "..", ".", "a/b", "a\\b", " x"])
def test_a_bank_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="bank_name"):
        _optimizer(poisoned_pool(), tmp_path, bank_name=bad)
