"""The trial loop every process runs: take a queued trial, run it, tell the study, repeat.

Why not ``study.optimize``: it creates a new trial whenever the queue is empty, so several
workers stopping at a trial budget overshoot it (each may start one more). Here the budget is
fixed up front: the coordinating process enqueues exactly ``trials`` trials (the baselines with
their parameters, the rest empty for the sampler to fill), and workers only ever *claim* queued
trials, with the same atomic WAITING -> RUNNING transition ``Study.ask`` uses. A claimed trial is
kept alive by a heartbeat thread; when a worker dies, another one fails its trial once the
heartbeat is stale and the storage's retry callback queues a copy, so no trial is lost and none
runs twice. Workers leave when nothing is queued and nothing is running.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from fusion_dspy.threads import apply_context

__all__ = ["INTERRUPTED_ATTR", "TrialLoop", "enqueue_budget", "requeue_interrupted", "worker_id"]

_logger = logging.getLogger(__name__)

#: Study user attribute holding the trial budget, set by :func:`enqueue_budget`.
BUDGET_ATTR = "fusion_dspy.trials"

Objective = Callable[[optuna.Trial], Any]
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]

_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def worker_id() -> str:
    """``host:pid[:thread]``, recorded on every trial a worker runs."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    thread = threading.current_thread()
    return name if thread is threading.main_thread() else f"{name}:{thread.name}"


def enqueue_budget(study: optuna.Study, trials: int, baselines: Sequence[Mapping[str, Any]] = ()) -> int:
    """Queue trials until the study holds ``trials`` live or finished ones; returns how many were added.

    ``baselines`` (partial parameter sets) are queued first, only into a study that has no trials
    yet. Failed trials do not count: on resume after an interruption they are replaced. Call this
    from one process only (the coordinator); workers wait for :data:`BUDGET_ATTR`.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}.")
    existing = study.get_trials(deepcopy=False)
    live = sum(t.state in _COUNTED for t in existing)
    added = 0
    if not existing:
        for params in list(baselines)[:trials]:
            study.enqueue_trial(dict(params), user_attrs={"baseline": True})
            added += 1
    for _ in range(trials - live - added):
        study.enqueue_trial({})
        added += 1
    study.set_user_attr(BUDGET_ATTR, trials)
    return added


#: Trial user attribute set on a trial failed by an interruption (Ctrl-C) rather than by its own error.
INTERRUPTED_ATTR = "interrupted"


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Queue again, with their parameters, the failed trials a resume must not lose; returns their numbers.

    Those are the trials an interruption failed (Ctrl-C: the same configuration is re-run, as a
    ``kill -9``'d trial is by heartbeat or on restart) and failed baselines (each teacher alone is
    the floor of the choice, and the student's configuration its reference; a sampled replacement
    would lose them). Each is queued once (``retry_of``); call this before :func:`enqueue_budget`,
    which then counts the retries as part of the budget.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = []
    for trial in trials:
        if trial.state != TrialState.FAIL or trial.number in retried:
            continue
        baseline = bool(trial.user_attrs.get("baseline"))
        if not (baseline or trial.user_attrs.get(INTERRUPTED_ATTR)):
            continue
        attrs: dict[str, Any] = {"retry_of": trial.number}
        if baseline:
            attrs["baseline"] = True
        study.enqueue_trial(dict(trial.params), user_attrs=attrs)
        queued.append(trial.number)
        _logger.warning("Trial %d %s; queued it again with its parameters.", trial.number,
                        "was interrupted" if trial.user_attrs.get(INTERRUPTED_ATTR) else "(a baseline) failed")
    return queued


class TrialLoop:
    """Runs queued trials of ``study`` in ``n_jobs`` threads until the queue is drained.

    Args:
        study: The study (created or loaded by the caller).
        storage: The study's storage (the object passed to ``create_study``).
        objective: Called with each claimed :class:`optuna.Trial`.
        n_jobs: Threads; each re-applies ``context`` (``dspy.context`` is per thread).
        callbacks: ``callback(study, frozen_trial)`` after each finished trial (progress bars).
        catch: Exceptions that fail a trial without stopping the loop.
        wait_for_others: Keep polling while other workers' trials run, to pick up retries of
            trials whose worker dies. Only meaningful with heartbeats.
        poll_interval: Seconds between polls while waiting.
        context: ``dspy.context`` overrides to re-apply in every thread.
    """

    def __init__(
        self,
        *,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        objective: Objective,
        n_jobs: int = 1,
        callbacks: Sequence[Callback] = (),
        catch: tuple[type[Exception], ...] = (),
        wait_for_others: bool = False,
        poll_interval: float = 1.0,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        if n_jobs < 1:
            raise ValueError(f"n_jobs must be >= 1, got {n_jobs}.")
        self.study = study
        self.storage = storage
        self.objective = objective
        self.n_jobs = n_jobs
        self.callbacks = list(callbacks)
        self.catch = catch
        self.wait_for_others = wait_for_others
        self.poll_interval = poll_interval
        self.context = dict(context or {})
        self._study_id = storage.get_study_id_from_name(study.study_name)
        self._stop = threading.Event()
        self._errors: list[BaseException] = []

    @property
    def heartbeat_interval(self) -> int | None:
        get = getattr(self.storage, "get_heartbeat_interval", None)
        return get() if get is not None else None

    def run(self) -> None:
        """Run until the queue is drained; re-raise the first uncaught trial exception."""
        if self.n_jobs == 1:
            self._work()
        else:
            threads = [threading.Thread(target=self._thread, name=f"fusion-trial-{i}") for i in range(self.n_jobs)]
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    thread.join()
            except KeyboardInterrupt:
                self._stop.set()
                raise
        if self._errors:
            raise self._errors[0]

    def _thread(self) -> None:
        try:
            self._work()
        except BaseException as error:  # Surface it in run() and stop the other threads.
            self._errors.append(error)
            self._stop.set()

    def _work(self) -> None:
        with apply_context(self.context):
            while not self._stop.is_set():
                self._fail_stale()
                claimed = self._claim()
                if claimed is not None:
                    self._run(*claimed)
                    continue
                if not (self.wait_for_others and self.heartbeat_interval) or not self._others_running():
                    return
                time.sleep(self.poll_interval)

    def _fail_stale(self) -> None:
        if self.heartbeat_interval:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)

    def _others_running(self) -> bool:
        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))

    def _claim(self) -> tuple[optuna.Trial, int] | None:
        """Atomically move one WAITING trial to RUNNING (as ``Study.ask`` does); ``None`` if none is left.

        The storage makes the move atomic across processes on PostgreSQL/MySQL (row locks); SQLite
        has no ``SELECT ... FOR UPDATE``, so two threads could both move the same trial. The
        process-wide lock closes that race between the threads of this process.
        """
        with _CLAIM_LOCK:
            for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                trial_id = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, frozen.number)
                try:
                    if not self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                        continue
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue
                if self.heartbeat_interval:
                    # At once: Optuna never counts a RUNNING trial without any heartbeat as stale.
                    self.storage.record_heartbeat(trial_id)
                return optuna.trial.Trial(self.study, trial_id), trial_id
            return None

    def _run(self, trial: optuna.Trial, trial_id: int) -> None:
        state, values, error = TrialState.COMPLETE, None, None
        with _Heartbeat(self.storage, trial_id, self.heartbeat_interval):
            try:
                trial.set_user_attr("worker", worker_id())
                values = self.objective(trial)
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except (Exception, KeyboardInterrupt) as exc:
                state, error = TrialState.FAIL, exc
                if isinstance(exc, KeyboardInterrupt):
                    trial.set_user_attr(INTERRUPTED_ATTR, True)  # A resume re-runs it (requeue_interrupted).
        try:
            frozen = self.study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
        except Exception as exc:  # Optuna refused the values: fail the trial rather than leave it RUNNING.
            self.study.tell(trial, state=TrialState.FAIL)
            raise ValueError(f"Trial {trial.number} returned values Optuna cannot record ({values!r}): {exc}") from exc
        if state == TrialState.FAIL:
            _logger.warning("Trial %d failed: %r", trial.number, error, exc_info=error)
        for callback in self.callbacks:
            callback(self.study, frozen)
        if error is not None and not isinstance(error, self.catch):
            raise error


#: Serializes trial claims between the threads of one process (see ``TrialLoop._claim``).
_CLAIM_LOCK = threading.Lock()


class _Heartbeat:
    """Records the trial's heartbeat every ``interval`` seconds while the trial runs."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, interval: int | None) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> None:
        if not self.interval:
            return
        self._thread = threading.Thread(target=self._beat, name="fusion-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:  # A missed beat is retried next interval.
                _logger.warning("Heartbeat of trial id %d failed: %s", self.trial_id, exc)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
