"""Compare single samples, Best-of-N, Fusion and the oracle at equal N, on the same candidates.

For every example the harness draws the largest N's candidates once (the Fuse's candidate store
keeps them), then re-uses them: Fusion at each N reads the first N draws (``plan_draws`` is
prefix-stable), Best-of-N at each N re-configures the same Fuse to ``mode="select"``, and single
samples, random pick and the oracle are scored straight from the recorded candidates. A draw that
failed in the first call (also a transient fault, which the store does not keep) fails again in every
later call of the example. So every method sees exactly the same candidates, differences are paired,
and the teachers are paid once.
Extra fusor strategies (``strategies=``) fuse the same stored candidates at the largest N, and the
selection guard (``guard=True``) re-ranks each fused answer against those candidates after the fact.

Every result is appended to a journal as soon as it exists; a killed run resumes where it stopped.
With ``concurrency=K`` up to K examples run at once (threads; each method/N combination calls its
own variant of the Fuse, so no call re-configures a Fuse another one is using). Results reach the
journal in completion order; the report is keyed by example id and ordered by the example list, so
its statistics do not depend on that order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy

from fusion_dspy.candidate import Candidate
from fusion_dspy.concurrency import bounded_map
from fusion_dspy.concurrency import check_concurrency
from fusion_dspy.concurrency import fuse_variant
from fusion_dspy.draw_source import draw_keys
from fusion_dspy.drivers import drive
from fusion_dspy.errors import CandidatesExhaustedError
from fusion_dspy.errors import SelectorFailedError
from fusion_dspy.evaluate.journal import Journal
from fusion_dspy.evaluate.report import GUARD_SUFFIX
from fusion_dspy.evaluate.report import EvalReport
from fusion_dspy.evaluate.report import MethodResult
from fusion_dspy.evaluate.report import summarize
from fusion_dspy.evaluate.stats import check_resamples
from fusion_dspy.fuse import Fuse
from fusion_dspy.guard import GUARD_RULE
from fusion_dspy.guard import guard_steps
from fusion_dspy.limits import QuotaExhaustedError
from fusion_dspy.limits import report_error_types
from fusion_dspy.limits import stop_cause
from fusion_dspy.report import FusionReport
from fusion_dspy.report import TokenUsage
from fusion_dspy.report import usage_from_tracker
from fusion_dspy.selectors.base import Selector
from fusion_dspy.store import CandidateStore
from fusion_dspy.store import JsonlStore
from fusion_dspy.store import LayeredStore
from fusion_dspy.store import StoredDraw
from fusion_dspy.strategies import STRATEGIES
from fusion_dspy.teacher import plan_draws

__all__ = ["Harness", "example_id", "example_ids"]

_logger = logging.getLogger(__name__)

Metric = Callable[..., float]
CorpusMetric = Callable[[Sequence[dspy.Example], Sequence[Any]], float]


def _digest(fields: Mapping[str, Any]) -> str:
    payload = json.dumps(dict(fields), sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:16]  # lone surrogates too


def example_id(example: dspy.Example) -> str:
    """A stable id from the example's inputs (so resumed runs and re-ordered data line up)."""
    return _digest(example.inputs())


def example_ids(examples: Sequence[dspy.Example]) -> list[str]:
    """One id per example, unique even when inputs repeat, and independent of the list's order.

    Every row of the data is an item of its own, run and scored against its own labels, so a dataset with a
    repeated source sentence counts it as often as it occurs. (Its draws have the same inputs and seeds as the
    other occurrences', so a candidate store or a deterministic engine gives it the same candidates.)

    - Inputs unique in the list: :func:`example_id`, unchanged (journals written before repeats had ids of
      their own still resume).
    - Repeated inputs with different labels (the non-input fields, e.g. one reference per row):
      ``<id>-<labels digest>``, so a reordered list gives each row its own journaled results again.
    - Fully identical rows can only be told apart by position among themselves: the k-th gets ``<key>-<k>``
      (the first keeps ``<key>``); which of them is which does not matter, their results are interchangeable.
    """
    bases = [example_id(example) for example in examples]
    labels: dict[str, set[str]] = {}
    digests = []
    for example, base in zip(examples, bases, strict=True):
        digest = _digest(example.labels())[:8]
        digests.append(digest)
        labels.setdefault(base, set()).add(digest)
    seen: dict[str, int] = {}
    ids = []
    for base, digest in zip(bases, digests, strict=True):
        key = base if len(labels[base]) == 1 else f"{base}-{digest}"
        repeat = seen.get(key, 0)
        seen[key] = repeat + 1
        ids.append(key if repeat == 0 else f"{key}-{repeat}")
    return ids


def _usage_sum(usages: Sequence[Mapping[str, TokenUsage]]) -> TokenUsage:
    total = TokenUsage()
    for usage in usages:
        for part in usage.values():
            total = total + part
    return total


class _ExampleStore(LayeredStore):
    """One example's view of the candidate store: a draw that failed in the example's first call fails again.

    A transient fault (timeout, connection error) is not stored, so without this layer every later call of
    the example (Best-of-N at each N, fusion at a smaller N) would ask that teacher again: pay again, and
    maybe see an answer the journaled candidate set does not hold. Here such a draw replays as the failure
    it was (also when a timed-out draw's late answer was stored since); a failure the store holds itself (a
    parse error) is replayed from the store as usual. Everything else is the shared store's.
    """

    def __init__(self, store: CandidateStore, failed: Mapping[str, StoredDraw]) -> None:
        super().__init__(store)
        self.failed = dict(failed)

    def get(self, key: str) -> StoredDraw | None:
        entry = self.store.get(key)
        if key in self.failed and (entry is None or entry.ok):
            return self.failed[key]
        return entry



def _calls_latency(report: FusionReport) -> float:
    """Latency of a Fuse call's LM calls besides the draws: fusor, selector (selection or fallback), a guard
    the Fuse forces, a failed selector. The same parts as the tokens of ``FusionReport.usage``, so a
    method's ``time_s`` and tokens count the same calls."""
    parts = (report.fusor, report.selection, report.guard, report.selector_failure)
    return sum(part.latency_s for part in parts if part is not None)


def _stale_guard(result: Mapping[str, Any]) -> bool:
    """A journaled ``+guard`` result made under another guard rule: not reported, and redone on resume
    (from the journaled fused answer and candidates: no fusor call)."""
    return str(result.get("method", "")).endswith(GUARD_SUFFIX) and result.get("guard_rule") != GUARD_RULE


def _check_programs(programs: Any) -> dict[str, Callable[..., Any]]:
    """Validate ``programs``: callables under names of their own (a harness method's name would make the
    program's result pass for that method's, or be skipped as done)."""
    if programs is None:
        return {}
    if not isinstance(programs, Mapping):
        raise ValueError(f"programs must be a dict {{method name: callable}}, got {type(programs).__name__}.")
    for name, program in programs.items():
        taken = name in ("fusion", "random", "oracle", "candidates") or name.startswith(
            ("fusion:", "bon-", "single:")) or name.endswith(GUARD_SUFFIX) if isinstance(name, str) else True
        if taken or not name:
            raise ValueError(
                f"programs: {name!r} is not a usable method name (empty, not a string, or a harness method's: "
                "fusion, fusion:<strategy>, bon-<selector>, random, oracle, single:<teacher>, candidates, "
                f"<method>{GUARD_SUFFIX}); name it e.g. 'alone:<model>'."
            )
        if not callable(program):
            raise ValueError(f"programs[{name!r}] must be a callable(**inputs) -> prediction, got {program!r}.")
    return dict(programs)


def _is_fused(method: str) -> bool:
    """``fusion`` and ``fusion:<strategy>``: the methods the guard re-ranks."""
    return (method == "fusion" or method.startswith("fusion:")) and not method.endswith(GUARD_SUFFIX)


class Harness:
    """Run every method at every N on a list of examples, resumably.

    Args:
        fuse: The ``Fuse`` under test (its teachers, fusor and prompt). The harness re-configures its
            ``n``, ``mode`` and ``selector``; give it a store, or one is created in ``out_dir``.
            Its ``fusion`` is plain fusion unless the Fuse forces ``guard=True`` (the auto guard is
            off here: ``guard=True`` below reports it as ``fusion+guard``).
        metric: ``metric(example, prediction) -> float`` (higher is better), e.g. chrF.
        examples: ``dspy.Example`` objects whose inputs match the Fuse's signature.
        ns: The N values to compare (e.g. ``[1, 2, 4, 8]``).
        selectors: Best-of-N selectors (objects or registered names); method names are
            ``"bon-<selector.name>"``. The first is the baseline of the paired comparisons.
        out_dir: Where the journal (``results.jsonl``), the draws (``draws.jsonl``) and the reports go.
        corpus_metric: Optional corpus-level metric (e.g. corpus chrF), reported per method.
        metric_name: Label of the metric in reports.
        task: Label of the task in reports.
        progress: Show a tqdm progress bar.
        resamples: Bootstrap resamples for CIs and paired tests, an int >= 100 (checked here, not after the run).
        plots: Write the PNG plots (needs matplotlib).
        include_fusion: Run the ``fusion`` method. ``False`` compares selection methods only (no fusor
            call at all), e.g. a cheap large-sample run next to a smaller one with fusion.
        concurrency: Examples evaluated at once (threads). Bound the providers with the LMs'
            ``limits`` (:mod:`fusion_dspy.limits`).
        programs: Other programs scored on the same examples, ``{method name: callable(**inputs) ->
            prediction}``, reported at N=1 with their own tokens and time (e.g. the fusor model alone).
        guard: Also report the selection guard (:mod:`fusion_dspy.guard`) on every fused method, as
            ``<method>+guard``. No new fusor call: the guard re-ranks the fused answers already made.
            Needs ``include_fusion``.
        strategies: Extra fusor strategies (names from :data:`fusion_dspy.strategies.STRATEGIES`) to
            fuse the same candidates with, at the largest N, as ``fusion:<strategy>``; the Fuse's own
            prompt strategy is ``fusion`` already and is skipped. Needs ``include_fusion``.

        ``guard`` and ``strategies`` only add methods: they are not part of the journal's fingerprint,
        so adding them to a finished run computes just the new methods (no new draws).

    Methods (``MethodResult.method``): ``fusion``, ``bon-<selector>``, ``random`` (a seeded uniformly random
    surviving candidate), ``oracle`` (best candidate by the reference metric: the
    selection ceiling), and ``single:<teacher>`` (that teacher's first sample, N=1). With ``strategies``:
    ``fusion:<strategy>`` (largest N only). With ``guard=True``: ``fusion+guard`` at every N and
    ``fusion:<strategy>+guard``: :mod:`fusion_dspy.guard` with the baseline selector (``selectors[0]``)
    on the first N candidates; its pick replaces the fused answer if it scores higher on the other
    candidates (path ``"select"``; kept: path ``"fuse"``). Its tokens are the fusion's (plus the
    selector's own LM calls, none for mbr, majority or reward selectors), its time the fusion's plus
    the selector's. A fusion that did not fuse (path other than ``"fuse"``, or no output) passes
    through unchanged; a guard whose selector fails gives no answer (score 0, the fault recorded), as a
    Fuse's failing guard does. ``EvalReport.to_markdown`` says how often each guard kept the fused answer.
    """

    def __init__(
        self,
        *,
        fuse: Fuse,
        metric: Metric,
        examples: Sequence[dspy.Example],
        ns: Sequence[int],
        selectors: Sequence[Selector | str] = ("mbr",),
        out_dir: str | os.PathLike[str],
        corpus_metric: CorpusMetric | None = None,
        metric_name: str = "score",
        task: str = "task",
        progress: bool = True,
        resamples: int = 2000,
        plots: bool = True,
        include_fusion: bool = True,
        concurrency: int = 1,
        programs: Mapping[str, Callable[..., Any]] | None = None,
        guard: bool = False,
        strategies: Sequence[str] = (),
    ) -> None:
        from fusion_dspy.selectors import get_selector

        if not ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in ns):
            raise ValueError(f"ns must be positive integers, e.g. [1, 2, 4, 8]; got {list(ns)!r}.")
        if not examples:
            raise ValueError("examples is empty: nothing to evaluate. Check the data path and --limit.")
        self.concurrency = check_concurrency(concurrency)
        self.fuse = fuse
        self.metric = metric
        self.examples = list(examples)
        self._check_examples()
        self.ns = sorted(set(ns))
        self.selectors = [get_selector(s) if isinstance(s, str) else s for s in selectors]
        if not self.selectors:
            raise ValueError("selectors is empty; Best-of-N needs at least one selector (e.g. 'mbr').")
        names = [s.name for s in self.selectors]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"selectors: {repeated!r} given more than once; each selector's results are journaled "
                             "as bon-<name>, so give each selector once (or a distinct name).")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.corpus_metric = corpus_metric
        self.metric_name = metric_name
        self.task = task
        self.progress = progress
        self.resamples = check_resamples(resamples)
        self.plots = plots
        self.include_fusion = include_fusion
        self.guard, self.strategies = self._check_extra_methods(guard, strategies)
        self._variants: dict[tuple[int, str, str | None, str | None], Fuse] = {}
        self._sink: Callable[[dict[str, Any]], None] | None = None
        self._lock = threading.Lock()
        self._tokens = 0
        self._errors = 0
        self.programs = _check_programs(programs)
        if self.fuse.store is None:
            self.fuse.store = JsonlStore(self.out_dir / "draws.jsonl")
        self.fingerprint = self._fingerprint()
        self.journal = Journal(self.out_dir / "results.jsonl")
        self._check_journal()

    def _check_examples(self) -> None:
        """Every example a ``dspy.Example`` whose inputs are the Fuse's input fields (checked before any call)."""
        fields = list(self.fuse.signature.input_fields)
        call = f".with_inputs({', '.join(map(repr, fields))})"
        for position, example in enumerate(self.examples):
            if not isinstance(example, dspy.Example):
                raise ValueError(f"examples[{position}] is a {type(example).__name__}, not a dspy.Example; build "
                                 "rows as dspy.Example(...).with_inputs(...).")
            try:
                names = set(example.inputs().keys())
            except ValueError:
                raise ValueError(f"examples[{position}] has no inputs set; call {call} on every example.") from None
            missing, extra = [f for f in fields if f not in names], sorted(names - set(fields))
            if missing or extra:
                raise ValueError(
                    f"examples[{position}] "
                    + (f"lacks the input field(s) {missing}" if missing else f"has extra input field(s) {extra}")
                    + f" of the Fuse's signature (inputs: {fields}); set {call}."
                )

    def _check_extra_methods(self, guard: Any, strategies: Any) -> tuple[bool, list[str]]:
        """Validate ``guard`` and ``strategies``; the strategies to run (deduplicated, not the Fuse's own)."""
        if not isinstance(guard, bool):
            raise ValueError(f"guard must be True or False (report the selection guard), got {guard!r}.")
        if isinstance(strategies, str) or not isinstance(strategies, Sequence):
            raise ValueError(f"strategies must be a list of strategy names, e.g. ['edit', 'vote']; got {strategies!r}.")
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"strategies: unknown {unknown!r}; use names from {list(STRATEGIES)}.")
        if not self.include_fusion:
            for name, value in (("guard", guard), ("strategies", list(strategies))):
                if value:
                    raise ValueError(
                        f"{name}={value!r} needs the fusion method, but include_fusion=False; "
                        f"set include_fusion=True or leave {name} out."
                    )
        own = self.fuse.prompt.strategy
        chosen = [s for s in dict.fromkeys(strategies) if s != own]
        if len(chosen) < len(set(strategies)):
            _logger.info("strategy %r is the Fuse's own prompt strategy: reported as `fusion`", own)
        return guard, chosen

    # -- public ------------------------------------------------------------------------------------

    @property
    def baseline(self) -> str:
        return f"bon-{self.selectors[0].name}"

    def run(self, *, time_budget_s: float | None = None) -> EvalReport:
        """Evaluate every example (skipping what the journal already has) and write the reports.

        Args:
            time_budget_s: Start no new example after this many seconds (a number >= 0, checked up front);
                the report then covers the examples finished so far, and a later ``run`` continues with the rest.

        Raises:
            QuotaExhaustedError: An LM hit a hard quota (billing, auth). The examples in flight are
                finished, the report of what was measured is written, and a later ``run`` resumes.
        """
        if time_budget_s is not None and (isinstance(time_budget_s, bool) or not isinstance(time_budget_s, (int, float))
                                          or not math.isfinite(time_budget_s) or time_budget_s < 0):
            raise ValueError(f"time_budget_s must be None or a number of seconds >= 0 (e.g. 3600), "
                             f"got {time_budget_s!r}.")
        done = self._done()
        ids = example_ids(self.examples)
        bar = self._bar(len(self.examples))
        started = time.monotonic()

        def work(item: tuple[dspy.Example, str]) -> None:
            example, eid = item
            self._run_example(example, eid, done.get(eid, {}))

        runs = bounded_map(work, zip(self.examples, ids, strict=True), concurrency=self.concurrency)
        stopped: QuotaExhaustedError | None = None
        try:
            for outcome in runs:
                if isinstance(outcome.error, QuotaExhaustedError):
                    if stopped is None:
                        _logger.error("stopping: %s; finishing the examples in flight", outcome.error)
                        stopped = outcome.error
                        runs.stop()
                    continue
                if outcome.error is not None:
                    raise outcome.error
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(errors=self._errors, tokens=self._tokens, refresh=False)
                if time_budget_s is not None and not runs.stopped and time.monotonic() - started > time_budget_s:
                    _logger.warning("time budget of %.0f s spent; stopping (run again to continue)", time_budget_s)
                    runs.stop()
        finally:
            if bar is not None:
                bar.close()
        if stopped is not None:
            self.report()  # what was measured so far; the journal keeps it for the resume
            raise stopped
        return self.report()

    def report(self) -> EvalReport:
        """Summarize the journal for the current examples and write JSON, Markdown and plots."""
        results: dict[str, dict[tuple[str, int], MethodResult]] = {}
        for entry in self.journal:
            if entry.get("kind") == "result" and not _stale_guard(entry["result"]):
                result = MethodResult.model_validate(entry["result"])
                results.setdefault(result.example, {})[(result.method, result.n)] = result
        ids = example_ids(self.examples)
        report = summarize(
            task=self.task,
            metric_name=self.metric_name,
            examples=self.examples,
            ids=ids,
            results=results,
            ns=self.ns,
            baseline=self.baseline,
            corpus_metric=self.corpus_metric,
            resamples=self.resamples,
            config={**self._config(), "selectors": [s.name for s in self.selectors],
                    **({"guard": True} if self.guard else {}),
                    **({"strategies": self.strategies} if self.strategies else {})},
        )
        report.write(self.out_dir, plots=self.plots)
        return report

    # -- one example -------------------------------------------------------------------------------

    def _run_example(self, example: dspy.Example, eid: str, done: dict[tuple[str, int], Any]) -> None:
        """Run every method missing from ``done`` on one example.

        ``done`` maps ``(method, n)`` to what the journal holds: ``("candidates", n)`` to the drawn
        candidates, a fused method to its result (a ``MethodResult`` or its JSON dict, which the guard
        re-ranks), any other method to ``True``. Results made here are added to it.
        """
        inputs = dict(example.inputs())
        largest = self.ns[-1]
        candidates, earlier = self._journaled_candidates(done, largest)
        if candidates is None or (self.include_fusion and ("fusion", largest) not in done):
            # The first call draws the largest N's candidates; with fusion it is also the fusion at that N.
            # Candidates a previous run journaled (at this N, or a smaller one) replay their failures.
            first = self._variant(largest, "fuse" if self.include_fusion else "select")
            known = candidates if candidates is not None else earlier
            prediction, report, _ = self._call(first, inputs, self._example_store(inputs, known) if known else None)
            candidates = self._candidates_entry(report)
            self._write_candidates(eid, largest, candidates)
            done[("candidates", largest)] = candidates
            self._count(sum(c["usage"]["input_tokens"] + c["usage"]["output_tokens"] for c in candidates
                            if c.get("usage")))
            if self.include_fusion:
                self._record(self._fusion_result(example, eid, largest, prediction, report, candidates), done)
        store = self._example_store(inputs, candidates)
        for n in self.ns:
            if self.include_fusion and ("fusion", n) not in done and n != largest:
                prediction, report, _ = self._call(self._variant(n, "fuse"), inputs, store)
                self._record(self._fusion_result(example, eid, n, prediction, report, candidates), done)
            for selector in self.selectors:
                method = f"bon-{selector.name}"
                if (method, n) in done:
                    continue
                prediction, report, _ = self._call(self._variant(n, "select", selector), inputs, store)
                self._write_result(self._selection_result(example, eid, method, n, prediction, report, candidates))
            for result in self._candidate_methods(example, eid, n, candidates, done):
                self._write_result(result)
            if self.guard:  # the constructor allows guard only with include_fusion
                self._guard_method(example, eid, "fusion", n, candidates, done)
        for strategy in self.strategies:
            method = f"fusion:{strategy}"
            if (method, largest) not in done:
                # Same candidates (the store replays them), another prompt: only the fusor runs.
                prediction, report, _ = self._call(self._variant(largest, "fuse", strategy=strategy), inputs, store)
                result = self._fusion_result(example, eid, largest, prediction, report, candidates)
                self._record(result.model_copy(update={"method": method}), done)
            if self.guard:
                self._guard_method(example, eid, method, largest, candidates, done)
        for name, program in self.programs.items():
            if (name, 1) not in done:
                self._write_result(self._program_result(example, eid, name, program))

    def _journaled_candidates(self, done: Mapping[tuple[str, int], Any],
                              largest: int) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
        """The journaled candidates of the largest N, and those of the widest smaller N a run journaled.

        The draws are prefix-stable (:func:`~fusion_dspy.teacher.plan_draws`), so a run at a larger N (an
        earlier run with more N values) journaled the largest N's candidates as its first ``largest`` ones.
        """
        journaled = sorted(n for kind, n in done if kind == "candidates")
        if largest in journaled:
            return done[("candidates", largest)], None
        wider = [n for n in journaled if n > largest]
        if wider:
            return self._first(done[("candidates", wider[0])], largest), None
        return None, (done[("candidates", journaled[-1])] if journaled else None)

    def _record(self, result: MethodResult, done: dict[tuple[str, int], Any]) -> None:
        """Journal a fused method's result and keep it in ``done`` for the guard."""
        self._write_result(result)
        done[(result.method, result.n)] = result

    def _guard_method(self, example: dspy.Example, eid: str, method: str, n: int, candidates: list[dict[str, Any]],
                      done: dict[tuple[str, int], Any]) -> None:
        """Journal ``<method>+guard`` at ``n`` unless it is done; ``method`` must be done already."""
        if (method + GUARD_SUFFIX, n) in done:
            return
        fused = done.get((method, n))
        if isinstance(fused, Mapping):
            fused = MethodResult.model_validate(fused)
        if not isinstance(fused, MethodResult):
            # A caller's ``done`` said "done" without the result (not what ``_done`` builds): nothing to guard.
            _logger.warning("no %s result at N=%d for example %s to guard; %s%s skipped",
                            method, n, eid, method, GUARD_SUFFIX)
            return
        self._write_result(self._guarded_result(example, n, fused, candidates))
        done[(method + GUARD_SUFFIX, n)] = True

    def _guarded_result(self, example: dspy.Example, n: int, fused: MethodResult,
                        candidates: list[dict[str, Any]]) -> MethodResult:
        """The selection guard on a fused result: the baseline selector ranks it among the first N candidates."""
        method = fused.method + GUARD_SUFFIX
        drawn = [Candidate(c["index"], c["teacher"], c["sample"], c["outputs"])
                 for c in self._first(candidates, n) if c["outputs"] is not None]
        if fused.path != "fuse" or fused.output is None or not drawn:
            # Nothing fused to guard: as the fusion went.
            return fused.model_copy(update={"method": method, "guard_rule": GUARD_RULE})
        # The JSON form, as the candidates are and as a resumed run reads it back: the same decision either way.
        fused_outputs = fused.model_dump(mode="json")["output"]
        start = time.perf_counter()
        failure: Exception | None = None
        with dspy.track_usage() as tracker:  # an LLM-judge baseline pays its calls; mbr/majority/reward make none
            try:
                decision = drive(guard_steps(self.selectors[0], self.fuse.signature, dict(example.inputs()), drawn,
                                             fused_outputs))
            except Exception as error:  # as a Fuse whose guard fails: no answer, scored 0 and reported
                cause = stop_cause(error)
                if cause is not None:
                    raise QuotaExhaustedError(f"{cause}; run again once the quota is back to resume") from error
                failure = error
        took = time.perf_counter() - start
        judged = _usage_sum([usage_from_tracker(tracker.usage_data)])
        self._count(judged.input_tokens + judged.output_tokens)
        changes = {"method": method, "usage": fused.usage + judged, "time_s": fused.time_s + took,
                   "guard_rule": GUARD_RULE}
        if failure is not None:
            name = self.selectors[0].name
            _logger.warning("the guard's selector %r failed for one example: %s: %s", name, type(failure).__name__,
                            str(failure).splitlines()[0] if str(failure) else "")
            return MethodResult(example=fused.example, n=n, score=0.0, output=None, path=fused.path,
                                error=f"selector {name!r} failed: {type(failure).__name__}", **changes)
        if decision.kept_fused:
            return fused.model_copy(update=changes)
        chosen = next(c for c in drawn if c.index == decision.index)
        score, error = self._score(example, chosen.outputs)
        return MethodResult(example=fused.example, n=n, score=score, output=dict(chosen.outputs), path="select",
                            error=error, **changes)

    def _program_result(self, example: dspy.Example, eid: str, name: str, program: Callable[..., Any]) -> MethodResult:
        start = time.perf_counter()
        outputs, error = None, None
        with dspy.track_usage() as tracker:
            try:
                prediction = program(**dict(example.inputs()))
                outputs = {k: prediction[k] for k in prediction.keys()}
            except Exception as exc:  # a failed call scores 0 and is reported, like a failed candidate
                cause = stop_cause(exc)
                if cause is not None:  # a hard quota: journal nothing, as for a draw; the resume asks again
                    raise QuotaExhaustedError(f"{cause}; run again once the quota is back to resume") from exc
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        score, metric_error = self._score(example, outputs)
        return MethodResult(
            example=eid, method=name, n=1, score=score, output=outputs,
            usage=_usage_sum([usage_from_tracker(tracker.usage_data)]), time_s=time.perf_counter() - start,
            error=error or metric_error,
        )

    def _variant(self, n: int, mode: str, selector: Selector | None = None, *, strategy: str | None = None) -> Fuse:
        """The Fuse for one (N, mode, selector, fusor strategy), made once and shared by every example's calls.

        A variant shares the Fuse's LMs, predictors and candidate store; the Fuse itself is never
        reconfigured (another strategy gives the variant its own fusor predictor). A Fuse whose guard
        is auto (``guard=None``) fuses unguarded here: ``fusion`` is plain fusion, and the guard is
        reported as its own method (``guard=True``); a guard forced on the Fuse is kept.
        """
        key = (n, mode, None if selector is None else f"{id(selector)}", strategy)
        with self._lock:
            if key not in self._variants:
                changes: dict[str, Any] = {"n": n, "mode": mode}
                if self.fuse.settings.guard is None:
                    changes["guard"] = False
                if selector is not None:
                    changes["selector"] = selector
                if strategy is not None:
                    changes["prompt"] = self.fuse.prompt.model_copy(update={"strategy": strategy})
                self._variants[key] = fuse_variant(self.fuse, **changes)
            return self._variants[key]

    def _example_store(self, inputs: dict[str, Any], candidates: list[dict[str, Any]]) -> CandidateStore | None:
        """The store of an example's calls after the first: its failed draws replay as failures.

        The keys are the Fuse's own (:func:`~fusion_dspy.store.draw_key` of the planned draw, as
        :mod:`fusion_dspy.draw_source` computes them), so this works for a resumed run too, from the journaled
        candidates.
        """
        failed = {c["index"]: c for c in candidates if c["outputs"] is None}
        store = self.fuse.store
        if not failed or store is None:
            return store
        draws = plan_draws(self.fuse.teachers, self.ns[-1], seed=self.fuse.settings.seed)
        keys = draw_keys(self.fuse.generate, draws, inputs)
        entries = {}
        for draw in draws:
            candidate = failed.get(draw.index)
            if candidate is None or (candidate["teacher"], candidate["sample"]) != (draw.teacher.name, draw.sample):
                continue
            key = keys[draw.index]
            kind = candidate["error"] or "Error"
            usage = candidate.get("usage")
            entries[key] = StoredDraw(
                outputs=None, usage={draw.teacher.name: TokenUsage(**usage)} if usage else {},
                latency_s=candidate["latency_s"], error_type=kind,
                error=f"{kind} in this example's first call (replayed: every method sees the same candidates)",
            )
        return _ExampleStore(store, entries)

    def _count(self, tokens: int = 0, errors: int = 0) -> None:
        with self._lock:
            self._tokens += tokens
            self._errors += errors

    def _call(self, fuse: Fuse, inputs: dict[str, Any],
              store: CandidateStore | None = None) -> tuple[Any, FusionReport, float]:
        """Call ``fuse`` (a variant) on ``inputs``; with ``store``, a copy of it reading that store."""
        if store is not None and store is not fuse.store:
            fuse = fuse_variant(fuse)
            fuse.store = store
        start = time.perf_counter()
        try:
            prediction = fuse(**inputs)
            report = prediction.fusion
            cause = stop_cause(None, report_error_types(report))
            if cause is not None:  # a draw hit a hard quota: journal nothing of this call
                raise QuotaExhaustedError(f"{cause}; run again once the quota is back to resume")
            # Tokens paid by this call beyond the candidates (counted once, when drawn): fusor, judge.
            fusor = report.paid_fusor  # a reply replayed from the store was paid for by the call that made it
            paid = [fusor.usage if fusor else {}, report.selection.usage if report.selection else {}]
            used = _usage_sum(paid)
            self._count(used.input_tokens + used.output_tokens)
            return prediction, report, time.perf_counter() - start
        except (CandidatesExhaustedError, SelectorFailedError) as error:
            cause = stop_cause(error)
            if cause is not None:
                raise QuotaExhaustedError(f"{cause}; run again once the quota is back to resume") from error
            what = "every candidate failed" if isinstance(error, CandidatesExhaustedError) else "the selector failed"
            _logger.warning("%s for one example: %s", what, str(error).splitlines()[0])
            return None, error.report, time.perf_counter() - start

    # -- results -----------------------------------------------------------------------------------

    def _candidates_entry(self, report: FusionReport) -> list[dict[str, Any]]:
        entries = []
        for record in report.candidates:
            entries.append({
                "index": record.index,
                "teacher": record.teacher,
                "sample": record.sample,
                "outputs": record.model_dump(mode="json")["outputs"],  # JSON-safe for the journal
                "error": record.error_type,
                "usage": _usage_sum([record.usage]).model_dump(),
                "latency_s": record.latency_s,
            })
        return entries

    def _score(self, example: dspy.Example, outputs: Mapping[str, Any] | None,
               report: FusionReport | None = None) -> tuple[float, str | None]:
        """The metric's score of ``outputs``; a metric that raises or gives a non-finite number scores 0, reported.

        No outputs score 0 too, with the reason: the selector's failure when ``report`` has one."""
        if outputs is None:
            failure = report.selector_failure if report is not None else None
            if failure is not None:
                return 0.0, f"selector {failure.selector!r} failed: {failure.error_type}"
            return 0.0, "no output"
        try:
            score = float(self.metric(example, dspy.Prediction(**outputs)))
            if not math.isfinite(score):  # a NaN would make every mean NaN and the journal non-standard JSON
                name = getattr(self.metric, "__name__", type(self.metric).__name__)
                raise ValueError(f"metric {name!r} gave {score!r}: a score must be a finite number")
            return score, None
        except Exception as error:  # a broken metric call scores 0 and is reported, not fatal
            _logger.warning("metric failed (%s: %s); scoring 0", type(error).__name__, error)
            return 0.0, f"metric: {type(error).__name__}: {error}"

    def _first(self, candidates: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        return [c for c in candidates if c["index"] < n]

    def _fusion_result(self, example: dspy.Example, eid: str, n: int, prediction: Any, report: FusionReport,
                       candidates: list[dict[str, Any]]) -> MethodResult:
        outputs = None if prediction is None else {k: prediction[k] for k in prediction.keys()}
        score, error = self._score(example, outputs, report)
        drawn = self._first(candidates, n)
        fusor = report.fusor
        return MethodResult(
            example=eid, method="fusion", n=n, score=score, output=outputs, path=report.path,
            usage=report.total_usage,
            time_s=sum(c["latency_s"] for c in drawn) + _calls_latency(report),
            attribution=report.attribution, error=error or (report.fallback if report.path != "fuse" else None),
            comparison=fusor.comparison if fusor else None,
        )

    def _selection_result(self, example: dspy.Example, eid: str, method: str, n: int, prediction: Any,
                          report: FusionReport, candidates: list[dict[str, Any]]) -> MethodResult:
        outputs = None if prediction is None else {k: prediction[k] for k in prediction.keys()}
        score, error = self._score(example, outputs, report)
        drawn = self._first(candidates, n)
        # The candidates come from the store at their original cost; the selector's own calls (a judge,
        # USC) are in the report's selection record.
        return MethodResult(
            example=eid, method=method, n=n, score=score, output=outputs, path=report.path,
            usage=report.total_usage, time_s=sum(c["latency_s"] for c in drawn) + _calls_latency(report), error=error,
        )

    def _candidate_methods(self, example: dspy.Example, eid: str, n: int, candidates: list[dict[str, Any]],
                           done: Mapping[tuple[str, int], Any]) -> list[MethodResult]:
        drawn = self._first(candidates, n)
        scored = [(c, *self._score(example, c["outputs"])) for c in drawn if c["outputs"] is not None]
        results = []
        if ("oracle", n) not in done:
            if scored:
                best = max(scored, key=lambda item: item[1])
                results.append(MethodResult(
                    example=eid, method="oracle", n=n, score=best[1], output=best[0]["outputs"],
                    usage=_usage_sum([{"c": TokenUsage(**c["usage"])} for c in drawn]),
                    time_s=sum(c["latency_s"] for c in drawn), error=best[2],
                ))
            else:
                results.append(MethodResult(example=eid, method="oracle", n=n, score=0.0, error="no candidate"))
        if ("random", n) not in done:
            if scored:
                # A seeded uniform pick (per example and N), so corpus metrics see one real output.
                pick = random.Random(f"{eid}:{n}").randrange(len(scored))
                chosen, score, error = scored[pick]
                results.append(MethodResult(
                    example=eid, method="random", n=n, score=score, output=chosen["outputs"],
                    usage=TokenUsage(**chosen["usage"]), time_s=chosen["latency_s"], error=error,
                ))
            else:
                results.append(MethodResult(example=eid, method="random", n=n, score=0.0, error="no candidate"))
        if n == self.ns[-1]:
            for candidate in candidates:
                method = f"single:{candidate['teacher']}"
                if candidate["sample"] != 0 or (method, 1) in done:
                    continue
                score, error = self._score(example, candidate["outputs"])
                results.append(MethodResult(
                    example=eid, method=method, n=1, score=score, output=candidate["outputs"],
                    usage=TokenUsage(**candidate["usage"]), time_s=candidate["latency_s"],
                    error=error or candidate["error"],
                ))
        return results

    # -- journal -----------------------------------------------------------------------------------

    def _append(self, entry: dict[str, Any]) -> None:
        """Journal one entry, or hand it to ``_sink`` (a Ray actor ships entries to the driver's journal)."""
        (self._sink or self.journal.append)(entry)

    def _write_candidates(self, eid: str, n: int, candidates: list[dict[str, Any]]) -> None:
        self._append({"kind": "candidates", "example": eid, "n": n, "candidates": candidates})

    def _write_result(self, result: MethodResult) -> None:
        self._count(errors=int(result.error is not None))
        self._append({"kind": "result", "result": result.model_dump(mode="json")})

    def _done(self) -> dict[str, dict[tuple[str, int], Any]]:
        done: dict[str, dict[tuple[str, int], Any]] = {}
        for entry in self.journal:
            if entry.get("kind") == "candidates":
                done.setdefault(entry["example"], {})[("candidates", entry["n"])] = entry["candidates"]
            elif entry.get("kind") == "result" and not _stale_guard(entry["result"]):
                result = entry["result"]
                method = result["method"]
                # A fused method keeps its result (JSON), so a later guard=True can re-rank it without a fusor call.
                fused = self.guard and _is_fused(method)
                done.setdefault(result["example"], {})[(method, result["n"])] = result if fused else True
        return done

    def _config(self) -> dict[str, Any]:
        settings = self.fuse.settings
        return {
            "teachers": [
                {"name": t.name, "temperature": t.temperature, "samples": t.samples} for t in self.fuse.teachers
            ],
            "fusor": settings.fusor,
            "prompt": settings.prompt.model_dump(mode="json"),
            "seed": settings.seed,
            "shuffle": settings.shuffle,
            "fusor_instructions": self.fuse.fusor.signature.instructions,
            "generate_instructions": self.fuse.generate.signature.instructions,
            **({"programs": sorted(self.programs)} if self.programs else {}),
        }

    def _fingerprint(self) -> str:
        payload = json.dumps({**self._config(), "metric": self.metric_name, "task": self.task}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def _check_journal(self) -> None:
        header = next((e for e in self.journal if e.get("kind") == "header"), None)
        if header is None:
            self.journal.append({"kind": "header", "fingerprint": self.fingerprint, "config": self._config()})
        elif header["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"{self.journal.path} holds results of another configuration (fingerprint {header['fingerprint']}, "
                f"now {self.fingerprint}): the pool, fusor or prompt changed. Use a new output "
                "directory, or delete it to start over."
            )

    def _bar(self, total: int) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"eval {self.task}", unit="example", dynamic_ncols=True)
