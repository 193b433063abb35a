"""Distributed study on a real PostgreSQL server: 4 processes, one worker killed mid-trial.

Needs ``FUSION_DSPY_TEST_POSTGRES_URL`` (``eval "$(bash .ci/postgres.sh)"`` starts a server).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.optimizers.test_cli import write_inputs

URL = os.environ.get("FUSION_DSPY_TEST_POSTGRES_URL")
ROOT = Path(__file__).resolve().parents[2]
TRIALS = 12

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not URL, reason="set FUSION_DSPY_TEST_POSTGRES_URL (see .ci/postgres.sh)"),
]


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.Popen([sys.executable, "-m", "fusion_dspy.cli", *args], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def test_four_processes_one_killed_mid_trial_complete_the_study_exactly(tmp_path):
    import optuna

    pool, data = write_inputs(tmp_path)
    study_name = f"pg-{uuid.uuid4().hex[:8]}"
    common = ["optimize", "--program", "tests.optimizers.cli_program:Slow", "--config", str(pool),
              "--valset", str(data), "--trials", str(TRIALS), "--storage", URL, "--study-name", study_name,
              "--heartbeat-interval", "1", "--grace-period", "3", "--num-threads", "1", "--num-instructions", "0",
              "--temperatures", "keep", "--no-progress", "--bank-dir", str(tmp_path / "bank")]
    coordinator = _spawn([*common, "--output", str(tmp_path / "out.json")], tmp_path / "coordinator.log")
    workers = [_spawn([*common, "--worker"], tmp_path / f"worker{i}.log") for i in range(3)]
    processes = [coordinator, *workers]
    killed = None
    try:
        deadline = time.monotonic() + 60
        storage = optuna.storages.RDBStorage(URL)
        while killed is None and time.monotonic() < deadline:  # kill the first worker seen running a trial
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name=study_name, storage=storage)
            except KeyError:
                continue
            for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                pid = str(trial.user_attrs.get("worker", "")).split(":")[1:2]
                victim = next((w for w in workers if pid == [str(w.pid)]), None)
                if victim is not None:
                    victim.send_signal(signal.SIGKILL)
                    killed = trial.number
                    break
        assert killed is not None, "no worker was seen running a trial"
        assert coordinator.wait(timeout=90) == 0, (tmp_path / "coordinator.log").read_text()[-3000:]
        for worker in workers:
            worker.wait(timeout=30)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()

    study = optuna.load_study(study_name=study_name, storage=optuna.storages.RDBStorage(URL))
    trials = study.get_trials()
    states = collections.Counter(t.state for t in trials)
    finished = states[optuna.trial.TrialState.COMPLETE] + states[optuna.trial.TrialState.PRUNED]
    assert finished == TRIALS, states  # no trial lost, none run twice
    assert states[optuna.trial.TrialState.FAIL] == 1 and states[optuna.trial.TrialState.RUNNING] == 0
    assert states[optuna.trial.TrialState.WAITING] == 0
    assert next(t for t in trials if t.state == optuna.trial.TrialState.FAIL).number == killed
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state != optuna.trial.TrialState.FAIL
    assert len({t.user_attrs["worker"].split(":")[1] for t in trials}) >= 3  # the work was shared
    assert (tmp_path / "out.json").exists()
