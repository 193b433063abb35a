"""What an LM-backed call comes back as: its value or error, its own usage and its latency.

:class:`Tracked` is the outcome of one call (an LM call of a batch, or an ``Invoke`` step);
:class:`DrawOutcome` pairs a planned draw with its outcome; :class:`TeacherTimeoutError` is the error
of a call abandoned at its deadline. :func:`tracked` runs a call under its own usage tracker with DSPy
trace recording off (so its usage is attributable, and the engine adds the steps it accepted to the
trace itself), capturing its exception; :func:`merge_into_parent_tracker` adds calls' usage to the
caller's ``dspy.track_usage()`` tracker. Which usage is merged, and when a call times out, is part of
the timeout and bounds model stated in :mod:`fusion_dspy.drivers`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import dspy

from fusion_dspy.report import TokenUsage
from fusion_dspy.report import usage_from_tracker
from fusion_dspy.store import StoredDraw
from fusion_dspy.teacher import Draw

__all__ = [
    "DrawOutcome",
    "TeacherTimeoutError",
    "Tracked",
    "merge_into_parent_tracker",
    "tracked",
]


class TeacherTimeoutError(TimeoutError):
    """An LM call did not answer within ``timeout`` seconds of its start."""


@dataclasses.dataclass
class Tracked:
    """The outcome of one LM-backed call: its value or exception, its own usage, its latency."""

    value: Any = None
    error: BaseException | None = None
    raw_usage: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    latency_s: float = 0.0

    @property
    def usage(self) -> dict[str, TokenUsage]:
        return usage_from_tracker(self.raw_usage)


@dataclasses.dataclass
class DrawOutcome:
    """A draw and how it went. ``stored`` is set when the candidate came from a candidate store."""

    draw: Draw
    result: Tracked
    stored: StoredDraw | None = None


class _Meter:
    """Runs a block under its own usage tracker with trace recording off, and times it."""

    def __enter__(self) -> _Meter:
        self._context = dspy.context(usage_tracker=None, trace=None)
        self._context.__enter__()
        self._track = dspy.track_usage()
        self._tracker = self._track.__enter__()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.latency_s = time.perf_counter() - self._start
        self._track.__exit__(*exc)
        self._context.__exit__(*exc)

    def result(self, value: Any, error: BaseException | None) -> Tracked:
        usage = {name: list(entries) for name, entries in self._tracker.usage_data.items()}
        return Tracked(value, error, usage, self.latency_s)


def tracked(call: Callable[[], Any]) -> Tracked:
    """Run ``call`` under its own usage tracker; exceptions are captured in the result, not raised."""
    with _Meter() as meter:
        try:
            value, error = call(), None
        except Exception as exc:
            value, error = None, exc
    return meter.result(value, error)


async def _atracked(make: Callable[[], Awaitable[Any]]) -> Tracked:
    with _Meter() as meter:
        try:
            value, error = await make(), None
        except Exception as exc:
            value, error = None, exc
    return meter.result(value, error)


def merge_into_parent_tracker(results: Sequence[Tracked], parent: Any = None) -> None:
    """Add the calls' usage to ``parent`` (default: the caller's ``dspy.track_usage()`` tracker)."""
    parent = parent if parent is not None else dspy.settings.usage_tracker
    if parent is None:
        return
    for result in results:
        for lm_name, entries in result.raw_usage.items():
            for entry in entries:
                parent.add_usage(lm_name, entry)


def _tracked_in_thread(call: Callable[[], Any]) -> Tracked:
    """:func:`tracked` for a worker thread: an interrupt is carried back to the caller too."""
    try:
        return tracked(call)
    except BaseException as interrupt:  # KeyboardInterrupt, SystemExit: re-raised by the caller
        return Tracked(error=interrupt)


def _reraise_interrupts(results: Sequence[Tracked | None]) -> None:
    for result in results:
        if result is not None and result.error is not None and not isinstance(result.error, Exception):
            raise result.error
