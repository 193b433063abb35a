"""``FusionOptimizer``: tune every Fuse of a program against the user's metric with Optuna."""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy
import optuna
from dspy.teleprompt.teleprompt import Teleprompter
from fusion_dspy.optimizers.bank import CandidateBank
from fusion_dspy.optimizers.confirm import choose_confirmed
from fusion_dspy.optimizers.cost import CostModel
from fusion_dspy.optimizers.cost import Price
from fusion_dspy.optimizers.front import FrontPoint
from fusion_dspy.optimizers.front import front_from_study
from fusion_dspy.optimizers.front import pareto_front
from fusion_dspy.optimizers.front import select_from_front
from fusion_dspy.optimizers.fuses import apply_settings
from fusion_dspy.optimizers.fuses import find_fuses
from fusion_dspy.optimizers.objective import Metric
from fusion_dspy.optimizers.options import Budget
from fusion_dspy.optimizers.options import Parallelism
from fusion_dspy.optimizers.options import Proposals
from fusion_dspy.optimizers.options import Shortcuts
from fusion_dspy.optimizers.options import Storage
from fusion_dspy.optimizers.options import group_options
from fusion_dspy.optimizers.proposer import InstructionProposer
from fusion_dspy.optimizers.search_space import SearchSpace
from fusion_dspy.optimizers.session import Session
from fusion_dspy.optimizers.session import build_session
from fusion_dspy.optimizers.storage import open_storage
from fusion_dspy.optimizers.worker import INTERRUPTED_ATTR
from fusion_dspy.optimizers.worker import Callback
from fusion_dspy.optimizers.worker import TrialLoop
from fusion_dspy.optimizers.worker import enqueue_budget
from fusion_dspy.optimizers.worker import requeue_interrupted
from typing_extensions import Unpack

from fusion_dspy import FuseSettings
from fusion_dspy import Teacher
from fusion_dspy.config import check_setting
from fusion_dspy.threads import capture_context

__all__ = ["FusionOptimizer"]

_logger = logging.getLogger(__name__)

CONFIRMED_ATTR = "fusion_dspy.confirmed"
_PRUNERS = ("auto", "wilcoxon", "median")
#: Study attribute: how the confirmed configuration was chosen (:class:`~fusion_dspy.optimizers.confirm.Choice`).
CHOICE_ATTR = "fusion_dspy.choice"
_OBJECTIVES = {("quality",): ("maximize",), ("quality", "cost"): ("maximize", "minimize")}


class FusionOptimizer(Teleprompter):
    """Searches N, the teacher pool, temperatures, the fusor, the mode and the fusor prompt of every Fuse.

    DSPy's MIPROv2 tunes instructions and demos; it cannot drop a teacher, change N or decide
    that selecting beats fusing. This optimizer searches exactly those, per Fuse (parameters are
    named by the Fuse's path, so nested programs work), with Optuna's TPE. It is cheap because
    every trial draws candidates through one bank: a configuration that only changes N, the pool
    subset, the fusor or its prompt pays for fusor calls only.

    Starting points matter: besides the student's configuration, every teacher alone at N=1 is
    evaluated first, because with teachers weaker than the fusor model fusion copies their errors
    and "the strong model alone" wins (measured on the bundled local models: 68% vs 24% on math).

    Args:
        metric: ``metric(example, prediction, trace=None)`` -> number or bool; higher is better. A
            metric that raises stops the study with its error (a broken metric must not yield a
            study of zeros); a *program* that raises on an example scores 0 there, and such
            errors are counted per trial, shown in :meth:`report` and logged as warnings.
        teachers: The teacher pool to search (``Teacher`` objects or LMs). ``None``: each Fuse's own pool.
        fusors: Fusor LMs, as a list (named by model string) or a ``{name: lm}`` mapping (``None``
            means the configured LM). ``None``: each Fuse's own fusors.
        search_space: One :class:`SearchSpace` for every Fuse, or a mapping ``{fuse path: space}``.
        n_range: Inclusive range of N, unless a :class:`SearchSpace` sets its own.
        objectives: ``("quality",)`` (maximize the metric, with pruning) or ``("quality", "cost")``
            (the Pareto front; :meth:`select_from_front` picks a point).
        budget: A :class:`~fusion_dspy.optimizers.Budget` (trials, minibatch_size, confirm,
            max_cost, baselines).
        parallelism: A :class:`~fusion_dspy.optimizers.Parallelism` (n_jobs, num_threads).
        storage: A :class:`~fusion_dspy.optimizers.Storage` (url, study_name, bank, bank_dir,
            heartbeats), or just its ``url``: ``None`` (in memory), a database URL, a journal
            file path, or an Optuna storage.
        proposals: A :class:`~fusion_dspy.optimizers.Proposals` (instructions,
            num_instructions, prompt_model).
        sampler: An Optuna sampler (default: ``TPESampler(seed=seed)``).
        pruner: ``"auto"`` (Wilcoxon if scipy is installed, else median), ``"median"``,
            ``"wilcoxon"``, ``None`` (no pruning) or an Optuna pruner. Single objective only.
        prices: Price per LM (``{name or model: {"input": $, "output": $}}`` per million tokens);
            default: cost in tokens.
        seed: Seeds the sampler, the example order of each trial and the proposals.
        callbacks: Optuna callbacks, ``callback(study, frozen_trial)`` after each trial (progress
            bars, logging). They are not DSPy callbacks.
        **shortcuts: Any field of the four value objects as a keyword of the same name, e.g.
            ``trials=40, n_jobs=2, study_name="qa"`` (see :mod:`~fusion_dspy.optimizers.options`).

    Example:
        >>> opt = FusionOptimizer(metric=exact_match, teachers=pool, fusors=[big, small], trials=40,
        ...                       storage="sqlite:///study.db", study_name="qa-fusion")
        >>> compiled = opt.compile(program, trainset=train, valset=dev)
        >>> compiled.save("qa_fused.json"); print(opt.report().table)
    """

    def __init__(
        self,
        *,
        metric: Metric,
        teachers: Sequence[Teacher | dspy.BaseLM] | None = None,
        fusors: Sequence[dspy.BaseLM | None] | Mapping[str, dspy.BaseLM | None] | None = None,
        search_space: SearchSpace | Mapping[str, SearchSpace] | None = None,
        n_range: tuple[int, int] = (1, 8),
        objectives: Sequence[str] = ("quality",),
        budget: Budget | None = None,
        parallelism: Parallelism | None = None,
        storage: Storage | str | os.PathLike[str] | optuna.storages.BaseStorage | None = None,
        proposals: Proposals | None = None,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | str | None = "auto",
        prices: Mapping[str, Price | Mapping[str, float]] | None = None,
        seed: int = 0,
        callbacks: Sequence[Callback] = (),
        **shortcuts: Unpack[Shortcuts],
    ) -> None:
        super().__init__()
        if not callable(metric):
            raise TypeError("metric must be callable: metric(example, prediction, trace=None) -> float or bool.")
        objectives = tuple(objectives)
        if objectives not in _OBJECTIVES:
            raise ValueError(f"objectives must be ('quality',) or ('quality', 'cost'), got {objectives}.")
        low, high = n_range
        check_setting("n", low, owner="FusionOptimizer(n_range=...)")
        if low > high:
            raise ValueError(f"n_range must be (low, high) with 1 <= low <= high, got {n_range}.")
        if not (pruner is None or isinstance(pruner, optuna.pruners.BasePruner) or pruner in _PRUNERS):
            raise ValueError(f"pruner must be one of {list(_PRUNERS)}, None or an optuna pruner, got {pruner!r}.")
        if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler):
            raise TypeError(f"sampler must be an optuna sampler (e.g. optuna.samplers.TPESampler()), got {sampler!r}.")
        if isinstance(sampler, optuna.samplers.GridSampler):
            # The study's budget is queued as trials to fill in, which GridSampler refuses at trial 0.
            raise ValueError("sampler=GridSampler is not supported: the optimizer queues its trial budget, and "
                             "GridSampler rejects queued trials. Use optuna.samplers.BruteForceSampler() to try "
                             "every configuration of a small space.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}.")
        if storage is not None and not isinstance(storage, Storage):
            storage = Storage(url=storage)
        groups = group_options({"budget": budget, "parallelism": parallelism, "storage": storage,
                                "proposals": proposals}, shortcuts)
        self.budget: Budget = groups["budget"]
        if self.budget.max_cost is not None and len(objectives) == 1:
            raise ValueError(
                f"max_cost={self.budget.max_cost} picks a point of the (quality, cost) Pareto front: pass "
                "objectives=('quality', 'cost') with it. With one objective the study already chooses the cheapest "
                "configuration within noise of the best; drop max_cost there."
            )
        self.parallelism: Parallelism = groups["parallelism"]
        self.storage: Storage = groups["storage"]
        self.proposals: Proposals = groups["proposals"]
        self.metric = metric
        self.teachers = None if teachers is None else [t if isinstance(t, Teacher) else Teacher(t) for t in teachers]
        if self.teachers == []:
            raise ValueError("teachers is empty; pass at least one Teacher or LM (None: search each Fuse's own pool).")
        self.fusors = _named_fusors(fusors)
        self.n_range = (int(low), int(high))
        self.objectives = objectives
        self.search_space = search_space
        self.sampler = sampler
        self.pruner = pruner
        self.cost_model = CostModel(prices=None if prices is None else {k: Price.model_validate(v) if not
                                                                         isinstance(v, Price) else v
                                                                         for k, v in prices.items()})
        self.seed = seed
        # Not ``self.callbacks``: DSPy reads that attribute of a Teleprompter as *DSPy* callbacks.
        self.optuna_callbacks: list[Callback] = list(callbacks)
        self._session: Session | None = None
        self._student: dspy.Module | None = None

    # -- public API --------------------------------------------------------------------------------

    @property
    def study(self) -> optuna.Study:
        """The Optuna study of the last ``compile``/``work`` call."""
        return self._require_session().study

    @property
    def bank(self) -> CandidateBank:
        """The candidate bank of the last run (``bank.stats()`` counts hits and new generations)."""
        return self._require_session().bank

    def compile(
        self,
        student: dspy.Module,
        *,
        trainset: Sequence[dspy.Example],
        teacher: dspy.Module | None = None,
        valset: Sequence[dspy.Example] | None = None,
    ) -> dspy.Module:
        """Run the study (or the rest of it) and return a tuned copy of ``student``.

        ``student`` is never modified. ``trainset`` grounds the instruction proposals; ``valset``
        scores configurations (``None``: the trainset does both). The copy has the chosen
        settings applied to every Fuse, plus ``trial_logs`` (one JSON-ready dict per trial) and
        ``score``; with two objectives also ``pareto_front``.

        Args:
            student: The program; it must contain at least one ``Fuse``.
            trainset: Training examples (``dspy.Example`` with inputs set).
            teacher: Unused; accepted for the ``Teleprompter`` signature.
            valset: Validation examples.
        """
        del teacher  # Fusion has no separate teacher program: the teachers are the Fuse's pool.
        context = capture_context()
        session = self._open(student, trainset, valset, context, coordinator=True)
        self._fail_orphans(session)
        requeue_interrupted(session.study)  # Before the budget is topped up: the retries count towards it.
        if self.budget.baselines and not session.study.get_trials(deepcopy=False):
            baselines = session.baselines(_student_settings(student), singletons=True)
        else:
            baselines = []
        added = enqueue_budget(session.study, self.budget.trials, baselines)
        _logger.info("Study %r: %d trial(s) queued, budget %d.", session.study.study_name, added,
                     self.budget.trials)
        self._loop(session, context, wait_for_others=True).run()
        self._warn_uncounted(session)
        self._warn_errors(session)
        return self._finish(session, student)

    def work(
        self,
        student: dspy.Module,
        *,
        trainset: Sequence[dspy.Example],
        valset: Sequence[dspy.Example] | None = None,
        wait_timeout: float = 600.0,
    ) -> int:
        """Join a study as a worker: run queued trials until none are left; returns how many ran here.

        A coordinator (``compile`` in another process, or ``fusion-dspy optimize`` without
        ``--worker``) creates the study and queues its trials; workers wait up to
        ``wait_timeout`` seconds for that. Use a database storage for workers on several machines.
        """
        context = capture_context()
        session = self._open(student, trainset, valset, context, coordinator=False, wait_timeout=wait_timeout)
        ran: list[int] = []  # Callbacks fire only for trials this process ran.
        self._loop(session, context, wait_for_others=True,
                   extra=[lambda study, trial: ran.append(trial.number)]).run()
        return len(ran)

    def select_from_front(self, *, max_cost: float | None = None, min_quality: float | None = None) -> dspy.Module:
        """A compiled copy of the last student at the Pareto point chosen by budget (two objectives)."""
        session = self._require_session()
        point = select_from_front(self.pareto_front(), max_cost=max_cost, min_quality=min_quality)
        return self._compiled(session, self._student, point.config, score=point.quality)

    def pareto_front(self) -> list[FrontPoint]:
        """The (quality, cost) Pareto front of the last study; single objective: quality vs recorded cost."""
        session = self._require_session()
        if len(self.objectives) == 2:
            return front_from_study(session.study)
        return pareto_front(
            FrontPoint(trial=t.number, quality=t.user_attrs["result"]["quality"], cost=t.user_attrs["result"]["cost"],
                       config=t.user_attrs["config"])
            for t in session.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get("result", {}).get("complete")
        )

    def report(self, *, plots_dir: str | os.PathLike[str] | None = None) -> Any:
        """A :class:`~fusion_dspy.optimizers.reporting.StudyReport`: trial table, best configurations,
        parameter importances, and PNG plots in ``plots_dir`` (needs matplotlib)."""
        from fusion_dspy.optimizers.reporting import build_report

        session = self._require_session()
        return build_report(session.study, bank=session.bank.stats(), plots_dir=plots_dir)

    # -- internals -----------------------------------------------------------------------------------

    def _open(self, student: dspy.Module, trainset: Sequence[dspy.Example], valset: Sequence[dspy.Example] | None,
              context: Mapping[str, Any], *, coordinator: bool, wait_timeout: float = 600.0) -> Session:
        if not isinstance(student, dspy.Module):
            raise TypeError(f"student must be a dspy.Module, got {type(student).__name__}.")
        trainset = list(trainset)
        valset = list(valset) if valset is not None else trainset
        if not valset:
            raise ValueError("valset (or trainset, when valset is None) is empty; the optimizer needs examples.")
        find_fuses(student)  # A clear error before any storage is touched.
        store = self.storage
        opened = open_storage(store.url, bank_dir=store.bank_dir, heartbeat_interval=store.heartbeat_interval,
                              grace_period=store.grace_period, max_retry=store.max_retry)
        if not coordinator and not opened.heartbeat:
            raise ValueError(
                f"work() needs a database storage shared with the coordinator (storage='sqlite:///study.db' on one "
                f"machine, 'postgresql://...' across machines), got {type(opened.storage).__name__}: only a "
                "database records heartbeats, which tell a live worker's trial from a dead one. In memory or in a "
                "journal file, run the study in one process (n_jobs= runs trials in parallel threads)."
            )
        seed = self.seed if coordinator else self.seed + os.getpid()
        prompt_model = self.proposals.prompt_model or next(
            (lm for lm in (self.fusors or {}).values() if lm is not None), None
        )
        proposer = None
        if self.proposals.num_instructions > 0:
            proposer = InstructionProposer(lm=prompt_model, num_instructions=self.proposals.num_instructions,
                                           seed=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            session = build_session(
                student=student, trainset=trainset, valset=valset, metric=self.metric, teachers=self.teachers,
                fusors=self.fusors, search_space=self.search_space, n_range=self.n_range,
                instructions=list(self.proposals.instructions), proposer=proposer, opened=opened,
                study_name=store.study_name or f"fusion-{type(student).__name__}",
                directions=_OBJECTIVES[self.objectives], sampler=self.sampler or optuna.samplers.TPESampler(seed=seed),
                pruner=self._make_pruner(), use_bank=store.bank, bank_name=store.bank_name,
                cost_model=self.cost_model,
                minibatch_size=self.budget.minibatch_size, num_threads=self.parallelism.num_threads, seed=self.seed,
                context=context,
                coordinator=coordinator, wait_timeout=wait_timeout,
            )
        self._session, self._student = session, student
        return session

    def _make_pruner(self) -> optuna.pruners.BasePruner:
        if len(self.objectives) > 1 or self.pruner is None:
            return optuna.pruners.NopPruner()
        if isinstance(self.pruner, optuna.pruners.BasePruner):
            return self.pruner
        kind = self.pruner
        if kind == "auto":
            try:
                import scipy  # noqa: F401  (WilcoxonPruner needs it)

                kind = "wilcoxon"
            except ImportError:
                kind = "median"
        if kind == "wilcoxon":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=self.budget.minibatch_size)
        if kind == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=self.budget.minibatch_size)
        raise ValueError(f"pruner must be 'auto', 'wilcoxon', 'median', None or an optuna pruner, got {kind!r}.")

    def _loop(self, session: Session, context: Mapping[str, Any], *, wait_for_others: bool,
              extra: Sequence[Callback] = ()) -> TrialLoop:
        def refresh(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            session.bank.refresh()  # See draws other workers added since.
            session.memo.refresh()

        callbacks = [*self.optuna_callbacks, *extra]
        if session.opened.heartbeat or session.bank.path is not None:
            callbacks.insert(0, refresh)
        return TrialLoop(study=session.study, storage=session.opened.storage, objective=session.objective,
                         n_jobs=self.parallelism.n_jobs, callbacks=callbacks, wait_for_others=wait_for_others,
                         poll_interval=min(1.0, self.storage.heartbeat_interval / 2), context=context)

    def _fail_orphans(self, session: Session) -> None:
        """Without heartbeats a storage cannot tell a dead run's RUNNING trial from a live one.

        The coordinator of such a storage (in memory, journal file) is the only process, so a
        RUNNING trial at start belongs to an interrupted run: fail it as interrupted, so that
        :func:`~fusion_dspy.optimizers.worker.requeue_interrupted` queues it again.
        """
        if session.opened.heartbeat:
            return
        storage = session.opened.storage
        study_id = storage.get_study_id_from_name(session.study.study_name)
        for trial in session.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, True)
            storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
            _logger.warning("Trial %d was left running by an interrupted run.", trial.number)

    @staticmethod
    def _warn_uncounted(session: Session) -> None:
        uncounted = sum(t.user_attrs.get("result", {}).get("uncounted_draws", 0) for t in session.study.trials)
        if uncounted:
            _logger.warning(
                "%d candidate(s) came from the bank with no recorded token usage (drawn from DSPy's cache, which "
                "reports none for hits, by a run that did not bypass it), so their cost counted as 0. The "
                "optimizer's own calls bypass that cache; for honest costs start this bank anew.", uncounted)

    @staticmethod
    def _warn_errors(session: Session) -> None:
        from fusion_dspy.optimizers.reporting import program_errors

        errors = program_errors(session.study.get_trials(deepcopy=False))
        if errors:
            _logger.warning(
                "The program raised on %d example(s) in %d trial(s); they scored 0 (first: %s). See opt.report().",
                errors["examples"], errors["trials"], errors["first"])

    def _finish(self, session: Session, student: dspy.Module) -> dspy.Module:
        if len(self.objectives) == 2:
            front = front_from_study(session.study)
            point = select_from_front(front, max_cost=self.budget.max_cost)
            compiled = self._compiled(session, student, point.config, score=point.quality)
            compiled.pareto_front = [dataclasses.asdict(p) for p in front]
            return compiled
        best = self._confirm(session)
        return self._compiled(session, student, best["config"], score=best["quality"])

    def _confirm(self, session: Session) -> dict[str, Any]:
        """Score the best few configurations, and each teacher alone, on the full valset; choose with
        :func:`~fusion_dspy.optimizers.confirm.choose_confirmed` (the best teacher alone is the floor)."""
        finished = [t for t in session.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                    if "result" in t.user_attrs]
        if not finished:
            raise RuntimeError(
                f"No trial of study {session.study.study_name!r} completed, so there is no configuration to return. "
                "Check the trial table (opt.report()) for errors; raise `trials` if they were all pruned."
            )
        finished.sort(key=lambda t: (-t.value, t.user_attrs["result"]["cost"], t.number))
        picked: list[optuna.trial.FrozenTrial] = []
        keys: set[str] = set()
        for trial in finished:
            if trial.user_attrs["result"]["config_key"] not in keys:
                keys.add(trial.user_attrs["result"]["config_key"])
                picked.append(trial)
            if len(picked) == self.budget.confirm:
                break
        # The floor: each teacher alone (every Fuse at N=1), its best trial, confirmed as well.
        floor: dict[tuple[tuple[str, ...], ...], optuna.trial.FrozenTrial] = {}
        for trial in finished:
            config = trial.user_attrs["config"]
            if all(int(s.get("n", 0)) == 1 for s in config.values()):
                floor.setdefault(tuple(tuple(s.get("teachers") or ()) for _, s in sorted(config.items())), trial)
        by_key = {t.user_attrs["result"]["config_key"]: t for t in picked}
        for trial in floor.values():
            by_key.setdefault(trial.user_attrs["result"]["config_key"], trial)
        picked = list(by_key.values())
        floor_trials = sorted({by_key[t.user_attrs["result"]["config_key"]].number for t in floor.values()})
        everything = list(range(len(session.evaluator.examples)))
        confirmed = []
        for trial in picked:
            settings = {path: FuseSettings.model_validate(s) for path, s in trial.user_attrs["config"].items()}
            evaluation = session.evaluator.evaluate(settings, everything, minibatch_size=len(everything))
            confirmed.append({"trial": trial.number, "quality": evaluation.quality, "cost": evaluation.cost,
                              "config": trial.user_attrs["config"], **{k: v for k, v in evaluation.summary().items()
                                                                       if k in ("lm_calls", "memo_hits")},
                              "scores": [evaluation.results[i].score for i in everything]})
        # The cheapest not significantly worse than the best mean, and not below the best teacher alone.
        choice = choose_confirmed(confirmed, floor_trials=floor_trials)
        for c in confirmed:
            c["within_noise"] = c["trial"] in choice.equivalent
            if c["trial"] == choice.chosen:
                c.update(chosen=True, ci_low=choice.ci[1], ci_high=choice.ci[2])
        session.study.set_user_attr(CONFIRMED_ATTR, [{k: v for k, v in c.items() if k not in ("config", "scores")}
                                                     for c in confirmed])
        session.study.set_user_attr(CHOICE_ATTR, choice.as_dict())
        best = next(c for c in confirmed if c["trial"] == choice.chosen)
        _logger.info("Chose trial %d: quality %.4f [%.4f, %.4f], cost %.1f per example (confirmed on %d examples; "
                     "best mean: trial %d).", best["trial"], best["quality"], choice.ci[1], choice.ci[2], best["cost"],
                     len(everything), choice.best)
        return best

    def _compiled(self, session: Session, student: dspy.Module | None, config: Mapping[str, Mapping[str, Any]],
                  *, score: float) -> dspy.Module:
        if student is None:
            raise RuntimeError("No student program: call compile() first.")
        compiled = student.deepcopy()
        template_fuses = find_fuses(session.template)
        for path, fuse in find_fuses(compiled).items():
            pool = template_fuses[path].pool
            fuse.register(teachers=pool.teachers.values(), fusors=pool.fusors)
        apply_settings(compiled, {path: FuseSettings.model_validate(s) for path, s in config.items()})
        compiled.trial_logs = trial_logs(session.study)
        compiled.score = score
        return compiled

    def _require_session(self) -> Session:
        if self._session is None:
            raise RuntimeError("Nothing has run yet: call compile() (or work()) first.")
        return self._session


def trial_logs(study: optuna.Study) -> list[dict[str, Any]]:
    """One JSON-ready record per trial: number, state, values, parameters and our counters."""
    return [
        {"number": t.number, "state": t.state.name, "values": t.values, "params": dict(t.params),
         **{k: v for k, v in t.user_attrs.items()}}
        for t in study.get_trials(deepcopy=False)
    ]


def _student_settings(student: dspy.Module) -> dict[str, FuseSettings]:
    return {path: fuse.settings for path, fuse in find_fuses(student).items()}


def _named_fusors(
    fusors: Sequence[dspy.BaseLM | None] | Mapping[str, dspy.BaseLM | None] | None,
) -> dict[str, dspy.BaseLM | None] | None:
    if fusors is None:
        return None
    if isinstance(fusors, Mapping):
        named = dict(fusors)
    else:
        from fusion_dspy.pool import lm_name

        named = {}
        for lm in fusors:
            name = lm_name(lm)
            if name in named and named[name] is not lm:
                raise ValueError(f"Two fusor LMs share the model name {name!r}; pass a {{name: lm}} mapping instead.")
            named[name] = lm
    if not named:
        raise ValueError("fusors is empty; pass at least one LM (or None to use each Fuse's own fusor).")
    for name, lm in named.items():
        if lm is not None and not isinstance(lm, dspy.BaseLM):
            raise TypeError(f"fusor {name!r} must be a dspy.LM, got {type(lm).__name__}.")
    return named
