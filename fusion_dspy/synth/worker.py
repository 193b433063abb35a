"""One prompt's work, wherever it runs (a local thread or a Ray actor): bounded attempts, then a
record, a failed row, or a stop. Nothing here writes to disk; the run directory's single writer does."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from fusion_dspy.concurrency import fuse_variant
from fusion_dspy.fuse import Fuse
from fusion_dspy.limits import report_error_types
from fusion_dspy.limits import stop_cause
from fusion_dspy.selectors.base import Selector
from fusion_dspy.synth.prompts import Prompt
from fusion_dspy.synth.record import build_record

__all__ = ["PromptWorker", "Work", "failure_row"]

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Work:
    """What one prompt's attempts produced: a record, a failure after every attempt, or a stop."""

    record: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    stop: str | None = None


class PromptWorker:
    """Does prompts for one Fuse: thread-safe (the Fuse is never re-configured; the Best-of-N pick
    runs on a variant of it), so one worker serves every thread of a process or of a Ray actor.

    Args:
        fuse: The configured Fuse.
        selector: The ``also_select`` selector, or ``None``.
        digest: The run's configuration hash (stored in every record and failed row).
        max_attempts: Tries per prompt before it becomes a failed row.
    """

    def __init__(self, fuse: Fuse, selector: Selector | None, *, digest: str, max_attempts: int) -> None:
        self.fuse = fuse
        self.select_fuse = fuse_variant(fuse, mode="select", selector=selector) if selector is not None else None
        self.output_fields = tuple(fuse.signature.output_fields)
        self.digest = digest
        self.max_attempts = max_attempts

    def __call__(self, prompt: Prompt) -> Work:
        """Up to ``max_attempts`` tries at one prompt (transient LM faults are retried by DSPy inside each)."""
        error: BaseException | None = None
        for number in range(1, self.max_attempts + 1):
            try:
                record, reports = _one(self.fuse, self.select_fuse, prompt, self.output_fields, self.digest)
            except Exception as exc:  # every failure of one prompt is its own, never the run's
                cause = stop_cause(exc)
                if cause is not None:
                    return Work(stop=f"prompt {prompt.id}: {cause}")
                error = exc
                _logger.debug("prompt %s attempt %d failed: %s: %s", prompt.id, number, type(exc).__name__, exc)
                continue
            cause = stop_cause(None, [pair for report in reports for pair in report_error_types(report)])
            if cause is not None:  # a draw hit the quota: keep the prompt for the resume, complete
                return Work(stop=f"prompt {prompt.id}: {cause}")
            return Work(record=record)
        assert error is not None
        return Work(failure=failure_row(prompt, self.digest, self.max_attempts, error))


def failure_row(prompt: Prompt, digest: str, attempts: int, error: BaseException) -> dict[str, Any]:
    return {
        "id": prompt.id,
        "index": prompt.index,
        "attempts": attempts,
        "error_type": type(error).__name__,
        "error": _encodable(str(error)),
        "config_hash": digest,
        "time": time.time(),
    }


def _encodable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) escaped, so the row can be written."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _one(fuse: Fuse, select_fuse: Fuse | None, prompt: Prompt, output_fields: tuple[str, ...],
         digest: str) -> tuple[dict[str, Any], list[Any]]:
    started = time.perf_counter()
    fused = fuse(**prompt.inputs)
    reports = [fused.fusion]
    selected = selection_report = None
    if select_fuse is not None:
        pick = select_fuse(**prompt.inputs)
        selected = {name: pick[name] for name in output_fields}
        selection_report = pick.fusion
        reports.append(selection_report)
    record = build_record(
        prompt=prompt,
        output_fields=output_fields,
        fused={name: fused[name] for name in output_fields},
        report=fused.fusion,
        selected=selected,
        selection_report=selection_report,
        config_hash=digest,
    )
    # The shard line must be writable: a value UTF-8 cannot encode fails this attempt, not the writer.
    json.dumps(record, ensure_ascii=False, default=str).encode("utf-8")
    _logger.debug("prompt %s done in %.2fs (path %s)", prompt.id, time.perf_counter() - started, fused.fusion.path)
    return record, reports
