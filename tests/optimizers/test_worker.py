from __future__ import annotations

import collections
import time
import warnings

import optuna
from fusion_dspy.optimizers.storage import open_storage
from fusion_dspy.optimizers.worker import TrialLoop
from fusion_dspy.optimizers.worker import enqueue_budget
from optuna.trial import TrialState


def objective(trial: optuna.Trial) -> float:
    time.sleep(0.01)
    return trial.suggest_float("x", 0, 1)


def test_threads_run_exactly_the_budget():
    opened = open_storage(None)
    study = optuna.create_study(storage=opened.storage, study_name="budget")
    assert enqueue_budget(study, 9, baselines=[{"x": 0.5}]) == 9
    TrialLoop(study=study, storage=opened.storage, objective=objective, n_jobs=3).run()
    trials = study.get_trials()
    assert len(trials) == 9 and all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].params == {"x": 0.5} and trials[0].user_attrs["baseline"] is True
    assert enqueue_budget(study, 9) == 0  # a finished study needs nothing more
    assert enqueue_budget(study, 11) == 2


def test_a_dead_workers_trial_is_failed_and_retried_once(tmp_path):
    opened = open_storage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=opened.storage, study_name="hb")
    enqueue_budget(study, 4)
    # A worker claims trial 0, beats once, and dies before telling the study anything.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Optuna: heartbeats are meant for Study.optimize
        dead = study.ask()
    dead_id = opened.storage.get_trial_id_from_study_id_trial_number(
        opened.storage.get_study_id_from_name("hb"), dead.number)
    opened.storage.record_heartbeat(dead_id)
    TrialLoop(study=study, storage=opened.storage, objective=objective, wait_for_others=True,
              poll_interval=0.2).run()
    trials = study.get_trials()
    states = collections.Counter(t.state for t in trials)
    assert states == {TrialState.COMPLETE: 4, TrialState.FAIL: 1}
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
