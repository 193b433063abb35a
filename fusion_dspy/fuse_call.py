"""One Fuse call as a sans-I/O state machine: plan, draws, path, fusor or selector, guard, report.

:meth:`FuseCall.steps` is a generator. It yields the requests of :mod:`fusion_dspy.drivers`
(:class:`~fusion_dspy.drivers.Batch` of LM calls, :class:`~fusion_dspy.drivers.Invoke` of a
blocking step) and is sent their outcomes; it returns the :class:`FusedPrediction`. ``Fuse.forward``
serves it with :func:`~fusion_dspy.drivers.drive` (threads) and ``Fuse.aforward`` with
:func:`~fusion_dspy.drivers.adrive` (asyncio), so every option behaves the same in both. The
candidate store is read and written in place (local and fast); only its blocking wait for a draw
or a fusor reply another call is making is a request (:mod:`fusion_dspy.draw_source`). The store
answers the fusor too, when it holds a reply to the same prompt.

LM outputs (candidates' and the fusor's) enter the call state in one place,
:meth:`FuseCall.enter_outputs`; the fusor's inputs are rendered in one place,
:func:`~fusion_dspy.fusion_signature.render_fusor_inputs`.

What the call contributes to a DSPy trace (``trace_entries``, recorded by the driver when DSPy is
recording, as in BootstrapFewShot, MIPROv2's bootstrapping and GEPA): only steps consistent with the
returned answer. A selected, consensus or single answer contributes that candidate's ``generate``
step. A fused answer contributes the fusor's step plus the ``generate`` steps of candidates whose
normalised answer equals the fused answer, once per distinct text (so a wrong candidate the fusor
repaired never becomes a demo). A guarded call that returned a candidate contributes that candidate's step only.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Generator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy

from fusion_dspy.attribution import copy_ratio
from fusion_dspy.candidate import Candidate
from fusion_dspy.candidate import render_outputs
from fusion_dspy.config import FuseSettings
from fusion_dspy.consensus import find_consensus
from fusion_dspy.draw_source import draw_steps
from fusion_dspy.draw_source import stored_call_steps
from fusion_dspy.drivers import LMCall
from fusion_dspy.drivers import Request
from fusion_dspy.drivers import Stepper
from fusion_dspy.drivers import Steps
from fusion_dspy.errors import CandidatesExhaustedError
from fusion_dspy.errors import SelectorFailedError
from fusion_dspy.errors import error_text
from fusion_dspy.errors import error_type_name
from fusion_dspy.fusion_signature import FusionFields
from fusion_dspy.fusion_signature import render_fusor_inputs
from fusion_dspy.fusion_signature import with_candidate_fence
from fusion_dspy.guard import GUARD_RULE
from fusion_dspy.guard import guard_steps
from fusion_dspy.hashing import stable_hash
from fusion_dspy.normalize import answer_key
from fusion_dspy.outcomes import DrawOutcome
from fusion_dspy.outcomes import Tracked
from fusion_dspy.prediction import FusedPrediction
from fusion_dspy.report import CandidateRecord
from fusion_dspy.report import FusionReport
from fusion_dspy.report import FusorRecord
from fusion_dspy.report import GuardRecord
from fusion_dspy.report import Path
from fusion_dspy.report import SelectionRecord
from fusion_dspy.report import SelectorFailure
from fusion_dspy.report import TokenUsage
from fusion_dspy.selectors.base import Selection
from fusion_dspy.selectors.base import Selector
from fusion_dspy.selectors.base import check_selection
from fusion_dspy.store import CandidateStore
from fusion_dspy.store import fusor_key
from fusion_dspy.teacher import Draw
from fusion_dspy.teacher import Teacher
from fusion_dspy.teacher import plan_draws
from fusion_dspy.text_safety import clean_value

__all__ = ["FuseCall", "TraceEntry", "check_selection", "error_text"]

_logger = logging.getLogger(__name__)

#: ``(predictor, inputs, prediction)``, the shape DSPy records in ``dspy.settings.trace``.
TraceEntry = tuple[Any, dict[str, Any], dspy.Prediction]


class FuseCall:
    """The state of one call. Build it, run :meth:`steps` under a driver, read the prediction."""

    def __init__(
        self,
        *,
        signature: type[dspy.Signature],
        settings: FuseSettings,
        inputs: Mapping[str, Any],
        teachers: Sequence[Teacher],
        generate: dspy.Predict,
        fusor: dspy.Predict,
        fusor_lm: dspy.BaseLM | None,
        fields: FusionFields,
        selector: Selector,
        store: CandidateStore | None = None,
        timeout: float | None = None,
        max_threads: int | None = None,
    ) -> None:
        self.signature = signature
        self.settings = settings
        self.inputs = dict(inputs)
        self.teachers = list(teachers)
        self.generate = generate
        self.fusor = fusor
        self.fusor_lm = fusor_lm
        self.fields = fields
        self.selector = selector
        self.store = store
        self.timeout = timeout
        self.max_threads = max_threads
        self.output_fields = tuple(signature.output_fields)
        self.started = time.perf_counter()
        self.records: list[CandidateRecord] = []
        self.candidates: list[Candidate] = []
        self.fallback: str | None = None
        self.fusor_record: FusorRecord | None = None
        self.selection_record: SelectionRecord | None = None
        self.guard_record: GuardRecord | None = None
        self.selector_failure: SelectorFailure | None = None
        self.agreement: float | None = None
        self.outputs: dict[str, Any] | None = None
        self.trace_entries: list[TraceEntry] = []
        self._records_by_index: dict[int, CandidateRecord] = {}

    # -- the machine -------------------------------------------------------------------------------

    def steps(self) -> Steps[FusedPrediction]:
        """The whole call; yields requests, returns the prediction (raises a ``FusionError`` on failure)."""
        draws = plan_draws(self.teachers, self.settings.n, seed=self.settings.seed)
        for draw in draws:
            self._open_record(draw)
        outcomes = yield from draw_steps(
            self.generate, draws, self.inputs, signature=self.signature, store=self.store,
            timeout=self.timeout, max_threads=self.max_threads, on_late=self._late,
        )
        for outcome in outcomes:
            self._enter_draw(outcome)
        if len(self.candidates) < self.settings.min_candidates or not self.candidates:
            raise CandidatesExhaustedError(self._report("single"), self.settings.min_candidates)
        path = self._initial_path()
        if path == "fuse":
            path = yield from self._fuse()
        if path == "select":
            steps = self.selector.steps(self.signature, self.inputs, self.candidates)
            selection, usage, latency = yield from self._run_selector(steps, "select", len(self.candidates))
            self._accept_selection(selection, usage, latency)
        return self._finish(path)

    def _fuse(self) -> Generator[Request, Any, Path]:
        order = self._shown_order()
        shown = [self.candidates[i] for i in order]
        fusor_inputs = render_fusor_inputs(
            self.inputs, shown, settings=self.settings, fields=self.fields, output_fields=self.output_fields
        )
        signature = with_candidate_fence(self.fusor.signature, self.fields)
        kwargs = {**fusor_inputs, "signature": signature}
        if self.fusor_lm is not None:
            kwargs["lm"] = self.fusor_lm
        result, stored = yield from stored_call_steps(
            LMCall(self.fusor, kwargs), key=self._fusor_key(signature, fusor_inputs), signature=signature,
            store=self.store,
        )
        paid = stored if stored is not None else result
        record = FusorRecord(lm=self.settings.fusor, order=[c.index for c in shown], usage=paid.usage,
                             latency_s=paid.latency_s, cached=stored is not None)
        self.fusor_record = record
        if result.error is not None:
            record.error, record.error_type = error_text(result.error), error_type_name(result.error)
            self.fallback = f"fusor failed ({record.error_type}); used select instead"
            _logger.warning("Fuse: the fusor failed (%s); falling back to select.", record.error_type)
            return "select"
        comparison = result.value.get(self.fields.comparison)
        (record.comparison, self.outputs), record.sanitized = self.enter_outputs(result.value, comparison)
        self.trace_entries.append((self.fusor, fusor_inputs, result.value))
        agreeing: dict[tuple[str, ...], Candidate] = {}
        for candidate in self.candidates:  # one entry per distinct agreeing answer
            if self._agrees(candidate):
                agreeing.setdefault(answer_key(candidate.outputs, self.output_fields) + (candidate.text(),), candidate)
        self.trace_entries += [self._generate_entry(c) for c in agreeing.values()]
        if not self.settings.guard_enabled(self.selector):
            return "fuse"
        steps = guard_steps(self.selector, self.signature, self.inputs, self.candidates, self.outputs)
        decision, usage, latency = yield from self._run_selector(steps, "guard")
        self.guard_record = GuardRecord(
            selector=self.selector.name, kept_fused=decision.kept_fused, index=decision.index,
            pick=decision.pick, references=list(decision.references), source=decision.source,
            scores=decision.scores, margin=decision.margin, rationale=clean_value(decision.rationale)[0],
            rule=GUARD_RULE, usage=usage, latency_s=latency,
        )
        if decision.kept_fused:
            return "fuse"
        chosen = next(c for c in self.candidates if c.index == decision.index)
        self.outputs = dict(chosen.outputs)
        self.trace_entries = [self._generate_entry(chosen)]
        return "guarded"

    def _fusor_key(self, signature: type[dspy.Signature], fusor_inputs: Mapping[str, Any]) -> str:
        """The store key of this fusor prompt (see :func:`~fusion_dspy.store.fusor_key`)."""
        lm = self.fusor_lm or self.fusor.lm or dspy.settings.lm
        lm_settings = {name: value for name, value in (getattr(lm, "kwargs", None) or {}).items()
                       if isinstance(value, (str, int, float, bool, type(None)))}
        return fusor_key(
            signature=signature, demos=[dict(demo) for demo in self.fusor.demos], inputs=fusor_inputs,
            fusor=self.settings.fusor,
            lm_settings={"model": str(getattr(lm, "model", type(lm).__name__)), **lm_settings},
        )

    def _run_selector(
        self, steps: Steps[Any], role: str, count: int | None = None
    ) -> Generator[Request, Any, tuple[Any, dict[str, TokenUsage], float]]:
        """Run a selector's steps inside this call (``count``: check the selection fits that many);
        its failure becomes a SelectorFailedError."""
        start = time.perf_counter()
        replies: list[Any] = []
        try:
            value = yield from _forward(steps, replies)
            if count is not None:
                check_selection(value, count, self.selector.name)
        except Exception as error:
            self.selector_failure = SelectorFailure(
                selector=self.selector.name, role=role, error=error_text(error), error_type=type(error).__name__,
                usage=_usage_of(replies), latency_s=time.perf_counter() - start,
            )
            raise SelectorFailedError(self._report("select" if role == "select" else "fuse"), error) from error
        return value, _usage_of(replies), time.perf_counter() - start

    # -- where LM outputs enter --------------------------------------------------------------------

    def enter_outputs(
        self, prediction: Mapping[str, Any] | dspy.Prediction, *extra: Any
    ) -> tuple[Any, int]:
        """The one place LM outputs (a candidate's or the fusor's) enter the call.

        Returns the task's output fields (with ``extra`` values, as a tuple, when given) made safe to
        write anywhere (:func:`~fusion_dspy.text_safety.clean_value`), and how many characters that
        replaced (recorded as ``sanitized`` in the report).
        """
        outputs = {name: prediction[name] for name in self.output_fields}
        return clean_value((*extra, outputs) if extra else outputs)

    def _open_record(self, draw: Draw) -> None:
        record = CandidateRecord(index=draw.index, teacher=draw.teacher.name, sample=draw.sample,
                                 temperature=draw.teacher.temperature, seed=draw.seed)
        self.records.append(record)
        self._records_by_index[draw.index] = record

    def _enter_draw(self, outcome: DrawOutcome) -> None:
        draw, result, stored = outcome.draw, outcome.result, outcome.stored
        record = self._records_by_index[draw.index]
        record.usage = stored.usage if stored is not None else result.usage
        record.latency_s = stored.latency_s if stored is not None else result.latency_s
        # Replayed from a store, or answered by DSPy's cache (which reports no usage): no model call now.
        record.cached = stored is not None or (result.error is None and not result.raw_usage)
        if result.error is not None:
            error = result.error
            record.error = error_text(error)
            record.error_type = error_type_name(error)
            return
        outputs, record.sanitized = self.enter_outputs(result.value)
        record.outputs = outputs
        self.candidates.append(Candidate(draw.index, draw.teacher.name, draw.sample, outputs))

    def _late(self, draw: Draw, result: Tracked) -> None:
        """A draw that timed out answered after all: it was paid for, so its usage joins the report."""
        self._records_by_index[draw.index].late_usage = result.usage

    # -- decisions ---------------------------------------------------------------------------------

    def _initial_path(self) -> Path:
        if len(self.candidates) == 1:
            self._take(self.candidates[0])
            return "single"
        if self.settings.mode == "select":
            return "select"
        if self.settings.mode == "auto":
            consensus = find_consensus(self.candidates, self.output_fields)
            self.agreement = consensus.share
            if consensus.share >= self.settings.agree:
                self._take(self.candidates[consensus.position])
                return "consensus"
        return "fuse"

    def _shown_order(self) -> list[int]:
        order = list(range(len(self.candidates)))
        if self.settings.shuffle:
            # Seeded by the inputs too: each input gets its own order (no systematic position bias),
            # yet the same call renders the same prompt (reproducible, cache-friendly).
            digest = stable_hash(self.inputs)
            random.Random(f"{self.settings.seed}:{digest}").shuffle(order)
        return order

    def _accept_selection(self, selection: Selection, usage: dict[str, TokenUsage], latency_s: float) -> None:
        chosen = self.candidates[selection.position]
        scores = None
        if selection.scores is not None:
            scores = {c.index: float(s) for c, s in zip(self.candidates, selection.scores, strict=True)}
        self.selection_record = SelectionRecord(
            selector=self.selector.name, index=chosen.index, scores=scores,
            rationale=clean_value(selection.rationale)[0],  # a judge's words are LM output too
            usage=usage, latency_s=latency_s,
        )
        self._take(chosen)

    def _take(self, candidate: Candidate) -> None:
        self.outputs = dict(candidate.outputs)
        self.trace_entries = [self._generate_entry(candidate)]

    def _agrees(self, candidate: Candidate) -> bool:
        assert self.outputs is not None
        return answer_key(candidate.outputs, self.output_fields) == answer_key(self.outputs, self.output_fields)

    def _generate_entry(self, candidate: Candidate) -> TraceEntry:
        return (self.generate, dict(self.inputs), dspy.Prediction(**dict(candidate.outputs)))

    # -- result ------------------------------------------------------------------------------------

    def _report(self, path: Path) -> FusionReport:
        attribution = None
        if path == "fuse" and self.outputs is not None:
            fused = render_outputs(self.outputs, self.output_fields)
            attribution = copy_ratio(fused, [c.text(self.output_fields) for c in self.candidates])
        return FusionReport(
            mode=self.settings.mode,
            path=path,
            fallback=self.fallback,
            candidates=self.records,
            fusor=self.fusor_record,
            selection=self.selection_record,
            agreement=self.agreement,
            attribution=attribution,
            guard=self.guard_record,
            selector_failure=self.selector_failure,
            wall_time_s=time.perf_counter() - self.started,
        )

    def _finish(self, path: Path) -> FusedPrediction:
        assert self.outputs is not None, "a path produced no outputs"
        prediction = FusedPrediction(**{name: self.outputs[name] for name in self.output_fields})
        prediction.fusion = self._report(path)
        return prediction


def _forward(steps: Steps[Any], replies: list[Any]) -> Steps[Any]:
    """Pass a nested engine's requests through, keeping the replies (for its usage)."""
    with Stepper(steps) as stepper:
        request = stepper.send(None)
        while request is not None:
            replies.append((yield request))
            request = stepper.send(replies[-1])
        return stepper.value


def _usage_of(replies: Sequence[Any]) -> dict[str, TokenUsage]:
    totals: dict[str, TokenUsage] = {}
    for reply in replies:
        for result in reply if isinstance(reply, list) else [reply]:
            for lm_name, usage in result.usage.items():
                totals[lm_name] = totals.get(lm_name, TokenUsage()) + usage
    return totals
