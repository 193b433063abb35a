"""Errors raised by Fuse at call time."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusion_dspy.report import FusionReport

__all__ = ["CandidatesExhaustedError", "FusionError", "StoredFailure"]


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


class StoredFailure(FusionError):
    """A draw that failed when it was first made, replayed from a candidate store.

    ``error_type`` is the original exception's class name (e.g. ``AdapterParseError``); the message is
    the original message. Replaying it keeps the candidate set of a re-run identical to the first run.
    """

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        super().__init__(message)
