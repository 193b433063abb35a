"""Resume keeps what a study must not lose, and bad input to the optimizer fails early and names itself."""

from __future__ import annotations

import logging
import math

import optuna
import pytest
from fusion_dspy.optimizers import FusionOptimizer
from fusion_dspy.optimizers import SearchSpace
from fusion_dspy.optimizers.storage import open_storage
from optuna.storages.journal import BaseJournalBackend
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from fusion_dspy.cli import main
from fusion_dspy.testing import FakeEngine
from tests.optimizers.builders import exact
from tests.optimizers.builders import examples
from tests.optimizers.builders import poisoned_pool
from tests.optimizers.test_cli import write_inputs

SPACE = SearchSpace(temperatures=None, modes=("fuse",), instructions=False, criteria=(("content",),),
                    discard_worst=(True,), length_control=(False,))


def _optimizer(problem, storage, **kwargs):
    defaults = dict(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=6, search_space=SPACE,
                    num_instructions=0, storage=storage, study_name="s", pruner=None, seed=0)
    return FusionOptimizer(**{**defaults, **kwargs})


def _alone(trial, teacher):
    return all(s["n"] == 1 and list(s["teachers"]) == [teacher] for s in trial.user_attrs["config"].values())


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_a_baseline_interrupted_by_ctrl_c_runs_again_on_resume_and_stays_the_floor(tmp_path, storage):
    url = str(tmp_path / "study.journal") if storage == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    problem = poisoned_pool()
    scored = []

    def interrupting(example, prediction, trace=None):
        scored.append(1)
        if len(scored) == 4 * 2 + 2:  # in the middle of trial 2, the baseline "strong alone at N=1"
            raise KeyboardInterrupt
        return exact(example, prediction)

    first = _optimizer(problem, url, metric=interrupting)
    with pytest.raises(KeyboardInterrupt):
        first.compile(problem.fuse(), trainset=examples(4))
    interrupted = first.study.trials[2]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["baseline"] is True
    assert _alone(interrupted, "strong")

    resumed = _optimizer(problem, url)
    resumed.compile(problem.fuse(), trainset=examples(4))
    trials = resumed.study.get_trials()
    retries = [t for t in trials if t.user_attrs.get("retry_of") == interrupted.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == interrupted.params and retries[0].user_attrs["baseline"] is True
    # The budget holds: 6 trials finished, the interrupted one replaced by its retry, not by a sampled one.
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    assert resumed.study.user_attrs["fusion_dspy.choice"]["floor"] == 1.0  # strong alone, measured after all
    # A second resume has nothing to retry.
    again = _optimizer(problem, url)
    again.compile(problem.fuse(), trainset=examples(4))
    assert len(again.study.get_trials()) == len(trials)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_metric_that_returns_nan_or_inf_stops_the_study_with_a_clear_error(bad):
    problem = poisoned_pool()
    opt = _optimizer(problem, None, metric=lambda example, prediction, trace=None: bad, trials=3)
    with pytest.raises(ValueError, match="finite number") as info:
        opt.compile(problem.fuse(), trainset=examples(2))
    assert any("metric" in note for note in getattr(info.value, "__notes__", []))
    states = [t.state for t in opt.study.get_trials()]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 1


def test_the_first_trial_is_the_students_whole_configuration():
    problem = poisoned_pool()
    other = FakeEngine(name="other-fusor", responder=lambda r: {"comparison": "x", "answer": "zzz"})
    space = SearchSpace(temperatures=None, modes=("fuse", "select"), instructions=False)
    fusors = {"fusor": problem.fusor_lm, "other": other.lm()}
    for seed in range(3):  # Sampled, any of these would differ on some seed.
        selecting = problem.fuse(n=2, mode="select", selector="majority")
        opt = _optimizer(problem, None, fusors=fusors, search_space=space, trials=1, seed=seed)
        opt.compile(selecting, trainset=examples(2))
        config = opt.study.trials[0].user_attrs["config"]["self"]
        assert (config["mode"], config["selector"], config["n"]) == ("select", "majority", 2)

        fusing = problem.fuse(n=2, mode="fuse", prompt=problem.fuse().settings.prompt.model_copy(
            update={"strategy": "edit", "discard_worst": False}))
        opt = _optimizer(problem, None, fusors=fusors, search_space=space, trials=1, seed=seed)
        opt.compile(fusing, trainset=examples(2))
        config = opt.study.trials[0].user_attrs["config"]["self"]
        student = fusing.settings
        assert config["fusor"] == "fusor"  # the student's fusor LM, under the optimizer's name for it
        assert config["prompt"]["strategy"] == "edit" and config["prompt"]["discard_worst"] is False
        assert list(config["prompt"]["criteria"]) == list(student.prompt.criteria)
        assert config["guard"] is True  # guard=None resolves to on with the free MBR selector


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_cost": 100.0}, r"objectives=\('quality', 'cost'\)"),
        ({"teachers": []}, "teachers is empty"),
    ],
)
def test_arguments_that_would_be_ignored_or_fail_later_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusionOptimizer(metric=exact, **kwargs)


@pytest.mark.parametrize("storage", [None, "journal"])
def test_a_worker_without_a_database_storage_is_refused_at_once(tmp_path, storage):
    problem = poisoned_pool()
    url = None if storage is None else str(tmp_path / "study.journal")
    opt = _optimizer(problem, url)
    with pytest.raises(ValueError, match="needs a database storage"):
        opt.work(problem.fuse(), trainset=examples(2), wait_timeout=30)
    assert problem.teacher_calls == 0


def test_resuming_with_other_instructions_is_refused_not_ignored(tmp_path):
    problem = poisoned_pool()
    space = SearchSpace(temperatures=None, modes=("fuse",))
    url = str(tmp_path / "study.journal")
    _optimizer(problem, url, search_space=space, instructions=["Say A."], trials=2).compile(
        problem.fuse(), trainset=examples(2))
    same = _optimizer(problem, url, search_space=space, instructions=["Say A."], trials=3)
    same.compile(problem.fuse(), trainset=examples(2))
    with pytest.raises(ValueError, match=r"other fusor instructions.*Say B"):
        _optimizer(problem, url, search_space=space, instructions=["Say B."], trials=4).compile(
            problem.fuse(), trainset=examples(2))


def test_a_storage_object_keeps_its_bank_beside_its_file(tmp_path, caplog):
    journal = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "a.journal")))
    assert open_storage(journal).bank_root == tmp_path / "a.journal.fusion"
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'b.db'}")
    assert open_storage(rdb).bank_root == tmp_path / "b.db.fusion"
    assert open_storage(rdb, bank_dir=tmp_path / "x").bank_root == tmp_path / "x"

    class MemoryBackend(BaseJournalBackend):  # A journal with no file: nothing to put a bank beside.
        def __init__(self) -> None:
            self.logs: list[dict] = []

        def read_logs(self, log_number_from: int) -> list[dict]:
            return self.logs[log_number_from:]

        def append_logs(self, logs: list[dict]) -> None:
            self.logs.extend(logs)

    with caplog.at_level(logging.WARNING, logger="fusion_dspy"):
        assert open_storage(optuna.storages.JournalStorage(MemoryBackend())).bank_root is None
    assert any("bank_dir" in r.getMessage() for r in caplog.records)

    problem = poisoned_pool()
    _optimizer(problem, journal, trials=3).compile(problem.fuse(), trainset=examples(3))
    calls = problem.teacher_calls
    resumed = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "a.journal")))
    _optimizer(problem, resumed, trials=4).compile(problem.fuse(), trainset=examples(3))
    assert problem.teacher_calls - calls < calls  # the draws of the first run came from the bank


@pytest.mark.parametrize("flag, value", [("--limit", "0"), ("--limit", "-1"), ("--n-range", "8"),
                                         ("--n-range", "4,2"), ("--trials", "0")])
def test_optimize_cli_refuses_bad_numbers_naming_the_option(tmp_path, capsys, flag, value):
    pool, data = write_inputs(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["optimize", "--program", "tests.optimizers.cli_program:program", "--config", str(pool),
              "--valset", str(data), flag, value])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err
