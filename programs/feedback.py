"""GEPA-style feedback metrics: a score plus text that says what went wrong, built from a Fuse's report.

``dspy.GEPA`` reflects on *why* a program scored what it did, so its metric may return
``dspy.Prediction(score=..., feedback=...)``. The tasks' ``*_feedback`` functions do that with the same
score as their plain metric (``float(chrf_feedback(ex, pred)) == chrf(ex, pred)``: a ``dspy.Prediction``
with a ``score`` converts to it), so one function serves ``dspy.Evaluate``, our optimizer and GEPA.
The feedback compares the answer with the candidates the Fuse drew (from ``prediction.fusion``), which
is the signal a fusor prompt can act on: "the best candidate scored more than your fusion".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import dspy

__all__ = ["FeedbackMetric", "ScoredCandidate", "feedback", "path_note", "score_candidates"]

#: ``metric(gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction(score, feedback)``.
FeedbackMetric = Callable[..., dspy.Prediction]


@dataclasses.dataclass(frozen=True)
class ScoredCandidate:
    """One successful candidate of the Fuse call, scored with the task metric."""

    index: int
    teacher: str
    outputs: dict[str, Any]
    score: float


def score_candidates(
    example: dspy.Example, prediction: Any, metric: Callable[..., float]
) -> list[ScoredCandidate]:
    """The Fuse call's successful candidates scored by ``metric`` (``[]`` without a fusion report)."""
    report = getattr(prediction, "fusion", None)
    records = getattr(report, "candidates", None) or []
    scored = []
    for record in records:
        if record.outputs is None:
            continue
        outputs = dict(record.outputs)
        scored.append(ScoredCandidate(record.index, record.teacher, outputs,
                                      float(metric(example, dspy.Prediction(**outputs)))))
    return scored


def path_note(prediction: Any) -> str:
    """How the Fuse produced the answer, as a sentence (``""`` without a report)."""
    report = getattr(prediction, "fusion", None)
    if report is None:
        return ""
    notes = {"fuse": "The fusor wrote this answer.", "select": "A selector picked this answer among the candidates.",
             "consensus": "The candidates agreed, so their common answer was returned without fusing.",
             "single": "Only one candidate was available; it was returned as is.",
             "guarded": "The fusor wrote an answer, but the selector's pick among the candidates scored "
                        "higher than it, so the pick was returned."}
    note = notes.get(report.path, f"Path: {report.path}.")
    if report.fallback:
        note += f" (Fallback: {report.fallback}.)"
    return note


def feedback(score: float, parts: Sequence[str]) -> dspy.Prediction:
    """The GEPA return value: ``score`` and the non-empty ``parts`` joined into one feedback text."""
    return dspy.Prediction(score=float(score), feedback=" ".join(p.strip() for p in parts if p and p.strip()))
