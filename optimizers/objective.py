"""Score a program configuration on examples: per-example metric, real cost, pruning on minibatches.

``dspy.Evaluate`` has no per-example hook and loses worker usage (see ``dspy-facts.md`` §8), so
this module runs its own small loop: examples of a minibatch in parallel threads that carry the
caller's ``dspy.context``, every Fuse report captured through a DSPy callback, the result of each
(configuration, example) remembered in the :class:`~fusion_dspy.optimizers.memo.EvaluationMemo`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy
import optuna
from dspy.utils.callback import BaseCallback
from fusion_dspy.optimizers.cost import CostModel
from fusion_dspy.optimizers.fuses import apply_settings
from fusion_dspy.optimizers.fuses import find_fuses
from fusion_dspy.optimizers.memo import EvaluationMemo
from fusion_dspy.optimizers.memo import ExampleResult
from fusion_dspy.optimizers.search_space import FuseSpace
from fusion_dspy.optimizers.search_space import InfeasibleConfigError

from fusion_dspy import Fuse
from fusion_dspy import FuseSettings
from fusion_dspy import FusionReport
from fusion_dspy import TokenUsage
from fusion_dspy import skip_response_cache
from fusion_dspy.credentials import redact
from fusion_dspy.hashing import stable_hash
from fusion_dspy.report import usage_from_tracker
from fusion_dspy.teacher import plan_draws
from fusion_dspy.threads import apply_context
from fusion_dspy.threads import run_threads

__all__ = ["Evaluation", "Evaluator", "FusionObjective", "Metric"]

_logger = logging.getLogger(__name__)

#: ``metric(example, prediction, trace=None)`` returning a number, a bool, or something with ``.score``.
Metric = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A configuration scored on some examples (by valset index)."""

    results: Mapping[int, ExampleResult]
    cost_model: CostModel
    stopped_early: bool = False

    @property
    def quality(self) -> float:
        return _mean([r.score for r in self.results.values()])

    @property
    def cost(self) -> float:
        """Mean cost per example of the configuration's answers (see :class:`CostModel`)."""
        return _mean([self.cost_model.cost(r.usage) for r in self.results.values()])

    def summary(self) -> dict[str, Any]:
        """JSON-ready counters, stored as ``trial.user_attrs["result"]``."""
        results = list(self.results.values())
        return {
            "quality": self.quality,
            "cost": self.cost,
            "examples": len(results),
            "lm_calls": sum(r.calls for r in results),
            "new_draws": sum(r.draws for r in results),
            "fusor_calls": sum(r.fusor_calls for r in results),
            "memo_hits": sum(r.memo_hit for r in results),
            "errors": sum(r.error is not None for r in results),
            "first_error": next((r.error for r in results if r.error is not None), None),
            "uncounted_draws": sum(r.uncounted_draws for r in results),
        }


class Evaluator:
    """Runs copies of a template program under given Fuse settings.

    Args:
        template: The program with every Fuse's pool registered and the bank attached; never run
            itself, only deep-copied (copies share teachers, LMs and the bank).
        metric: ``metric(example, prediction, trace=None)``.
        examples: The valset.
        memo: Results already measured.
        cost_model: Turns usage into cost.
        num_threads: Examples evaluated concurrently within a minibatch.
        context: ``dspy.context`` overrides captured when ``compile`` started, re-applied in every
            thread (Optuna's ``n_jobs`` threads and ours do not inherit them).
    """

    def __init__(
        self,
        *,
        template: dspy.Module,
        metric: Metric,
        examples: Sequence[dspy.Example],
        memo: EvaluationMemo,
        cost_model: CostModel,
        num_threads: int = 4,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.template = template
        self.metric = metric
        self.examples = list(examples)
        self.example_keys = [stable_hash(example.toDict()) for example in self.examples]
        self.memo = memo
        self.cost_model = cost_model
        self.num_threads = max(1, num_threads)
        self.context = dict(context or {})
        self.fuses = find_fuses(template)
        self._program_key = stable_hash(
            {name: [p.signature.instructions, list(p.signature.fields), [dict(d) for d in p.demos]]
             for name, p in template.named_predictors()}
        )

    def config_key(self, settings: Mapping[str, FuseSettings]) -> str:
        """A key equal for configurations that must give the same answers.

        Each Fuse is reduced to its draw plan plus what the path after it depends on: with one
        draw nothing else matters; in ``select`` mode the fusor, its prompt and the guard do not
        matter. Every other :class:`~fusion_dspy.FuseSettings` field is in the key (a test checks
        that a change of each one changes the key).
        """
        canonical: dict[str, Any] = {"program": self._program_key}
        for path, s in sorted(settings.items()):
            teachers = self.fuses[path].pool.resolve_teachers(s.teachers)
            plan = [(d.teacher.name, d.sample, d.seed) for d in plan_draws(teachers, s.n, seed=s.seed)]
            entry: dict[str, Any] = {"plan": plan}
            if len(plan) > 1:
                entry.update(mode=s.mode, selector=s.selector, selector_args=s.selector_args,
                             min_candidates=s.min_candidates)
                if s.mode != "select":
                    entry.update(fusor=s.fusor, prompt=s.prompt.model_dump(mode="json"), shuffle=s.shuffle,
                                 guard=s.guard)
                if s.mode == "auto":
                    entry["agree"] = s.agree
            canonical[path] = entry
        return stable_hash(canonical)

    def build(self, settings: Mapping[str, FuseSettings]) -> dspy.Module:
        """A fresh copy of the template configured with ``settings``."""
        return apply_settings(self.template.deepcopy(), settings)

    def evaluate(
        self,
        settings: Mapping[str, FuseSettings],
        order: Sequence[int],
        *,
        minibatch_size: int,
        after_batch: Callable[[Mapping[int, ExampleResult], Sequence[int]], bool] | None = None,
    ) -> Evaluation:
        """Score ``settings`` on the examples at ``order``, a minibatch at a time.

        ``after_batch(results_so_far, batch_indices)`` runs after each minibatch (the last one
        too, so every score is reported); returning ``True`` stops the evaluation (pruning).
        """
        program = self.build(settings)
        paths = {id(fuse): path for path, fuse in find_fuses(program).items()}
        key = self.config_key(settings)
        results: dict[int, ExampleResult] = {}
        step = max(1, minibatch_size)
        for start in range(0, len(order), step):
            batch = list(order[start:start + step])
            for index, result in zip(batch, self._run_batch(program, paths, key, batch), strict=True):
                results[index] = result
            last = start + step >= len(order)
            if after_batch is not None and after_batch(results, batch) and not last:
                return Evaluation(results, self.cost_model, stopped_early=True)
        return Evaluation(results, self.cost_model)

    def _run_batch(self, program: dspy.Module, paths: Mapping[int, str], key: str,
                   batch: Sequence[int]) -> list[ExampleResult]:
        def one(index: int) -> ExampleResult:
            cached = self.memo.get(key, self.example_keys[index])
            if cached is not None:
                return cached
            result = self._run_example(program, paths, self.examples[index])
            if result.error is None:  # A transient LM failure must not be remembered as a 0.
                self.memo.put(key, self.example_keys[index], result)
            return result

        if self.num_threads == 1 or len(batch) == 1:
            with apply_context(self.context):
                return [one(index) for index in batch]
        with apply_context(self.context):
            results = run_threads(one, batch, max_concurrency=self.num_threads)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def _run_example(self, program: dspy.Module, paths: Mapping[int, str], example: dspy.Example) -> ExampleResult:
        collector = _FuseReports(paths)
        error = None
        score = 0.0
        with dspy.context(callbacks=[*(dspy.settings.callbacks or []), collector]), dspy.track_usage() as tracker:
            try:
                # Every Fuse call is made, not read from DSPy's cache: a hit reports no usage, so a
                # configuration would look free because an earlier run asked the same (the memo and
                # the bank re-use what this study paid for, at its cost).
                with skip_response_cache():
                    prediction = program(**example.inputs())
            except Exception as exc:  # The program failed on this example: it scores 0, counted and reported.
                error = redact(f"{type(exc).__name__}: {exc}")  # stored in the study
            if error is None:
                # A metric that raises is a bug in the study, not a weak configuration: let it stop the study.
                try:
                    score = _as_score(self.metric(example, prediction, None))
                except Exception as exc:
                    exc.add_note(f"(raised by the metric on example {str(example.inputs().toDict())[:200]}; "
                                 "FusionOptimizer stops the study on a metric error)")
                    raise
        return _example_result(score, collector.reports, usage_from_tracker(tracker.usage_data), error)


class FusionObjective:
    """The Optuna objective: suggest every Fuse's settings, score them, record the trial.

    Single objective: returns the mean metric; minibatches are reported so the study's pruner can
    stop a weak trial early. With :class:`optuna.pruners.WilcoxonPruner` each example's score is
    reported at ``step = valset index`` and a pruned trial returns its running mean (Optuna's
    recommended use); any other pruner sees the running mean at ``step = examples scored`` and a
    pruned trial raises :class:`optuna.TrialPruned`. Multi-objective: ``(quality, cost)`` on the
    full valset, no pruning (Optuna does not prune multi-objective studies).
    """

    def __init__(
        self,
        *,
        evaluator: Evaluator,
        spaces: Sequence[FuseSpace],
        objectives: Sequence[str],
        minibatch_size: int,
        seed: int,
    ) -> None:
        self.evaluator = evaluator
        self.spaces = list(spaces)
        self.objectives = tuple(objectives)
        self.minibatch_size = minibatch_size
        self.seed = seed

    def suggest(self, trial: optuna.Trial) -> dict[str, FuseSettings]:
        return {space.path: space.suggest(trial) for space in self.spaces}

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        try:
            settings = self.suggest(trial)
        except InfeasibleConfigError as error:
            trial.set_user_attr("infeasible", str(error))
            raise optuna.TrialPruned(f"infeasible configuration: {error}") from error
        trial.set_user_attr("config", {path: s.model_dump(mode="json") for path, s in settings.items()})
        order = list(range(len(self.evaluator.examples)))
        random.Random(f"{self.seed}:{trial.number}").shuffle(order)

        single = len(self.objectives) == 1
        wilcoxon = isinstance(trial.study.pruner, optuna.pruners.WilcoxonPruner)
        after_batch = None
        if single and not isinstance(trial.study.pruner, optuna.pruners.NopPruner):
            after_batch = self._pruning_hook(trial, wilcoxon)
        minibatch = self.minibatch_size if single else len(order)
        evaluation = self.evaluator.evaluate(settings, order, minibatch_size=minibatch, after_batch=after_batch)
        # One attribute for all counters: every attribute is a database commit.
        summary = evaluation.summary()
        trial.set_user_attr("result", {**summary, "complete": not evaluation.stopped_early,
                                       "config_key": self.evaluator.config_key(settings)})
        if summary["errors"]:
            _logger.warning("Trial %d: the program raised on %d of %d example(s), scored 0 (first: %s).",
                            trial.number, summary["errors"], summary["examples"], summary["first_error"])
        if evaluation.stopped_early and not wilcoxon:
            raise optuna.TrialPruned(f"pruned after {len(evaluation.results)} examples")
        if single:
            return evaluation.quality
        return evaluation.quality, evaluation.cost

    @staticmethod
    def _pruning_hook(
        trial: optuna.Trial, wilcoxon: bool
    ) -> Callable[[Mapping[int, ExampleResult], Sequence[int]], bool]:
        def after_batch(results: Mapping[int, ExampleResult], batch: Sequence[int]) -> bool:
            if wilcoxon:
                for index in batch:
                    trial.report(results[index].score, step=index)
            else:
                trial.report(_mean([r.score for r in results.values()]), step=len(results))
            return trial.should_prune()

        return after_batch


class _FuseReports(BaseCallback):
    """Collects the report of every call of the program's Fuse modules (matched by identity)."""

    def __init__(self, paths: Mapping[int, str]) -> None:
        self.paths = paths
        self.reports: list[tuple[str, FusionReport]] = []
        self._open: dict[str, str] = {}
        self._lock = threading.Lock()

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if isinstance(instance, Fuse) and id(instance) in self.paths:
            with self._lock:
                self._open[call_id] = self.paths[id(instance)]

    def on_module_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        with self._lock:
            path = self._open.pop(call_id, None)
        if path is None:
            return
        report = getattr(outputs, "fusion", None) or getattr(exception, "report", None)
        if isinstance(report, FusionReport):
            with self._lock:
                self.reports.append((path, report))


def _example_result(score: float, reports: Sequence[tuple[str, FusionReport]],
                    spent: Mapping[str, TokenUsage], error: str | None) -> ExampleResult:
    """Cost = every Fuse's answer cost (bank hits at original cost) + the other LM calls made."""
    cost: dict[str, TokenUsage] = {}
    fuse_spent: dict[str, TokenUsage] = {}
    draws = fusor_calls = uncounted = 0
    for _, report in reports:
        _add(cost, report.usage)
        for record in report.candidates:
            uncounted += record.ok and record.cached and not record.usage
            if not record.cached:
                _add(fuse_spent, record.usage)
                draws += sum(u.calls for u in record.usage.values())
        # A judge or USC selector's calls (also the guard's) are in the report. A fusor reply replayed
        # from the bank (another configuration sent the same prompt) costs its original usage, but
        # was not paid for now.
        fusor = report.paid_fusor
        for step in (fusor, report.selection, report.guard):
            if step is not None:
                _add(fuse_spent, step.usage)
        if fusor is not None:
            fusor_calls += sum(u.calls for u in fusor.usage.values())
    for lm, used in spent.items():  # Predictors outside any Fuse.
        fused = fuse_spent.get(lm, TokenUsage())
        other = TokenUsage(input_tokens=max(0, used.input_tokens - fused.input_tokens),
                           output_tokens=max(0, used.output_tokens - fused.output_tokens),
                           calls=max(0, used.calls - fused.calls))
        if other.calls or other.total_tokens:
            _add(cost, {lm: other})
    calls = sum(u.calls for u in spent.values())
    return ExampleResult(score=score, usage=cost, calls=calls, draws=draws, fusor_calls=fusor_calls, error=error,
                         uncounted_draws=uncounted)


def _add(total: dict[str, TokenUsage], usage: Mapping[str, TokenUsage]) -> None:
    for lm, used in usage.items():
        total[lm] = total.get(lm, TokenUsage()) + used


def _as_score(value: Any) -> float:
    score = getattr(value, "score", value)
    try:
        number = float(score)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"The metric returned {value!r}; it must return a number or a bool (or an object with .score)."
        ) from error
    if not math.isfinite(number):
        raise ValueError(
            f"The metric returned {value!r}; a score must be a finite number (a NaN or infinite score cannot be "
            "averaged or compared). Return 0 for an example it cannot score."
        )
    return number


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0

