"""Errors raised by Fuse at call time."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusion_dspy.report import FusionReport

__all__ = ["CandidatesExhaustedError", "FusionError"]


class FusionError(RuntimeError):
    """Base class of fusion-dspy's runtime errors."""


class CandidatesExhaustedError(FusionError):
    """Fewer candidates survived than ``min_candidates``. ``report`` holds every draw and its error."""

    def __init__(self, report: FusionReport, min_candidates: int) -> None:
        self.report = report
        failures = "\n".join(
            f"  - draw #{c.index} from teacher {c.teacher!r}: {c.error_type}: {c.error}" for c in report.failed
        )
        super().__init__(
            f"Only {len(report.succeeded)} of {len(report.candidates)} candidates succeeded; "
            f"min_candidates={min_candidates}. Failures:\n{failures}\n"
            "Check the teachers' LM settings and connectivity, raise `timeout`, or lower `min_candidates`."
        )
