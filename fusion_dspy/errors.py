"""Errors raised by Fuse at call time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusion_dspy.report import FusionReport

__all__ = [
    "CandidatesExhaustedError",
    "FusionError",
    "SelectionError",
    "SelectorFailedError",
    "StoredFailure",
    "error_text",
    "error_type_name",
]

_MAX_ERROR_CHARS = 2000


def error_text(error: BaseException) -> str:
    """The error's message, capped so a huge LM answer quoted in it cannot bloat the report."""
    from fusion_dspy.credentials import redact
    from fusion_dspy.text_safety import clean_text

    # It may quote an unencodable answer (lone surrogates) or a credential read from the environment.
    text = redact(clean_text(str(error) or repr(error))[0])
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + " [...]"


def error_type_name(error: BaseException) -> str:
    """The class name a report records for ``error``: a replayed failure keeps its original one."""
    return error.error_type if isinstance(error, StoredFailure) else type(error).__name__


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


class SelectionError(FusionError):
    """A selector could not rank any candidate (e.g. every judge call or reward call failed).

    ``errors`` maps each candidate position (or ``-1`` for a failure not tied to one candidate) to
    the exception it raised, so callers can log or re-raise the root cause.
    """

    def __init__(self, message: str, errors: Mapping[int, BaseException] | None = None) -> None:
        super().__init__(message)
        self.errors: dict[int, BaseException] = dict(errors or {})


class SelectorFailedError(SelectionError):
    """A Fuse's selector raised, or returned a selection that does not fit the candidates.

    ``report`` holds the call so far: every candidate, the fusor's record (and its failure, when the
    selector ran as the fusor's fallback) and ``report.selector_failure`` (type and message). The
    selector's own exception is the ``__cause__``.
    """

    def __init__(self, report: FusionReport, cause: BaseException | None = None) -> None:
        self.report = report
        failure = report.selector_failure
        what = f"{failure.error_type}: {failure.error}" if failure is not None else "unknown error"
        role = f" ({failure.role})" if failure is not None else ""
        message = f"Selector {failure.selector if failure else '?'!r}{role} failed: {what}."
        if report.fusor is not None and report.fusor.error is not None:
            message += f" Earlier, the fusor failed: {report.fusor.error_type}: {report.fusor.error}."
        message += " The report is in this error's .report."
        errors = cause.errors if isinstance(cause, SelectionError) else ({-1: cause} if cause is not None else {})
        super().__init__(message, errors)


class StoredFailure(FusionError):
    """A draw that failed when it was first made, replayed from a candidate store.

    ``error_type`` is the original exception's class name (e.g. ``AdapterParseError``); the message is
    the original message. Replaying it keeps the candidate set of a re-run identical to the first run.
    """

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        super().__init__(message)
