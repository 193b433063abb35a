"""The bookkeeping of one Fuse call, shared by ``forward`` and ``aforward``.

``Fuse`` does the I/O (teacher draws, fusor, selector) in a sync or async flavour; this class
turns outcomes into candidates and records, picks the path, and assembles the prediction and its
report, so both flavours behave identically.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy

from fusion_dspy.attribution import copy_ratio
from fusion_dspy.candidate import Candidate
from fusion_dspy.candidate import render_outputs
from fusion_dspy.config import FuseSettings
from fusion_dspy.consensus import find_consensus
from fusion_dspy.errors import CandidatesExhaustedError
from fusion_dspy.errors import StoredFailure
from fusion_dspy.fusion_signature import FusionFields
from fusion_dspy.prediction import FusedPrediction
from fusion_dspy.report import CandidateRecord
from fusion_dspy.report import FusionReport
from fusion_dspy.report import FusorRecord
from fusion_dspy.report import Path
from fusion_dspy.report import SelectionRecord
from fusion_dspy.report import TokenUsage
from fusion_dspy.sampling import DrawOutcome
from fusion_dspy.sampling import Tracked
from fusion_dspy.selectors.base import Selection
from fusion_dspy.strategies import render_strategy_candidates

__all__ = ["FuseCall", "error_text"]

_MAX_ERROR_CHARS = 2000


def error_text(error: BaseException) -> str:
    """The error's message, capped so a huge LM answer quoted in it cannot bloat the report."""
    text = str(error) or repr(error)
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + " [...]"


class FuseCall:
    """State of one call: inputs, surviving candidates, records, and the chosen path."""

    def __init__(
        self,
        *,
        signature: type[dspy.Signature],
        settings: FuseSettings,
        inputs: Mapping[str, Any],
        outcomes: Sequence[DrawOutcome],
        started: float,
    ) -> None:
        self.signature = signature
        self.settings = settings
        self.inputs = dict(inputs)
        self.started = started
        self.output_fields = tuple(signature.output_fields)
        self.records: list[CandidateRecord] = []
        self.candidates: list[Candidate] = []
        for outcome in outcomes:
            self._record_draw(outcome)
        self.fallback: str | None = None
        self.fusor_record: FusorRecord | None = None
        self.selection_record: SelectionRecord | None = None
        self.agreement: float | None = None
        self.outputs: dict[str, Any] | None = None
        self._consensus_position = 0

    def _record_draw(self, outcome: DrawOutcome) -> None:
        draw, result = outcome.draw, outcome.result
        record = CandidateRecord(
            index=draw.index,
            teacher=draw.teacher.name,
            sample=draw.sample,
            temperature=draw.teacher.temperature,
            seed=draw.seed,
            usage=outcome.stored.usage if outcome.stored is not None else result.usage,
            latency_s=outcome.stored.latency_s if outcome.stored is not None else result.latency_s,
        )
        # Replayed from a store, or answered by DSPy's cache (which reports no usage): no model call now.
        record.cached = outcome.stored is not None or (result.error is None and not result.raw_usage)
        if result.error is not None:
            record.error = error_text(result.error)
            # A replayed failure keeps the original exception's type name.
            error = result.error
            record.error_type = error.error_type if isinstance(error, StoredFailure) else type(error).__name__
        else:
            outputs = {name: result.value[name] for name in self.output_fields}
            record.outputs = outputs
            self.candidates.append(Candidate(draw.index, draw.teacher.name, draw.sample, outputs))
        self.records.append(record)

    # -- decisions ---------------------------------------------------------------------------------

    def check_enough(self) -> None:
        if len(self.candidates) < self.settings.min_candidates or not self.candidates:
            raise CandidatesExhaustedError(self._report("single"), self.settings.min_candidates)

    def initial_path(self) -> Path:
        """The path before any fallback: single, consensus (auto), select, or fuse."""
        if len(self.candidates) == 1:
            return "single"
        if self.settings.mode == "select":
            return "select"
        if self.settings.mode == "auto":
            consensus = find_consensus(self.candidates, self.output_fields)
            self.agreement = consensus.share
            if consensus.share >= self.settings.agree:
                self._consensus_position = consensus.position
                return "consensus"
        return "fuse"

    # -- the fusor -----------------------------------------------------------------------------------

    def fusor_inputs(self, fields: FusionFields) -> tuple[dict[str, Any], list[int]]:
        """The fusor's inputs (task inputs + rendered candidates) and the shown order (candidate indices)."""
        order = list(range(len(self.candidates)))
        if self.settings.shuffle:
            # Seeded by the inputs too: each input gets its own order (no systematic position bias),
            # yet the same call renders the same prompt (reproducible, cache-friendly).
            digest = hashlib.sha256(json.dumps(self.inputs, sort_keys=True, default=str).encode()).hexdigest()
            random.Random(f"{self.settings.seed}:{digest}").shuffle(order)
        shown = [self.candidates[i] for i in order]
        inputs = dict(self.inputs)
        inputs[fields.candidates] = render_strategy_candidates(shown, self.output_fields, self.settings.prompt.strategy)
        return inputs, [c.index for c in shown]

    def accept_fusion(self, result: Tracked, *, lm_name: str, order: list[int], fields: FusionFields) -> bool:
        """Record the fusor call; ``False`` (and a fallback reason) when it failed."""
        record = FusorRecord(lm=lm_name, order=order, usage=result.usage, latency_s=result.latency_s)
        self.fusor_record = record
        if result.error is not None:
            record.error, record.error_type = error_text(result.error), type(result.error).__name__
            self.fallback = f"fusor failed ({record.error_type}); used select instead"
            return False
        prediction = result.value
        record.comparison = prediction.get(fields.comparison)
        self.outputs = {name: prediction[name] for name in self.output_fields}
        return True

    # -- selection -----------------------------------------------------------------------------------

    def accept_selection(
        self,
        selection: Selection,
        selector_name: str,
        *,
        usage: Mapping[str, TokenUsage] | None = None,
        latency_s: float = 0.0,
    ) -> None:
        if not 0 <= selection.position < len(self.candidates):
            raise IndexError(
                f"Selector {selector_name!r} returned position {selection.position} for "
                f"{len(self.candidates)} candidates."
            )
        chosen = self.candidates[selection.position]
        scores = None
        if selection.scores is not None:
            scores = {c.index: float(s) for c, s in zip(self.candidates, selection.scores, strict=True)}
        self.selection_record = SelectionRecord(
            selector=selector_name,
            index=chosen.index,
            scores=scores,
            rationale=selection.rationale,
            usage=dict(usage or {}),
            latency_s=latency_s,
        )
        self.outputs = dict(chosen.outputs)

    def take_candidate(self, position: int) -> None:
        self.outputs = dict(self.candidates[position].outputs)

    def take_consensus(self) -> None:
        self.take_candidate(self._consensus_position)

    # -- result --------------------------------------------------------------------------------------

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
            wall_time_s=time.perf_counter() - self.started,
        )

    def finish(self, path: Path) -> FusedPrediction:
        assert self.outputs is not None, "finish() called before a path produced outputs"
        prediction = FusedPrediction(**{name: self.outputs[name] for name in self.output_fields})
        prediction.fusion = self._report(path)
        return prediction

