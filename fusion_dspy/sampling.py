"""Run the planned draws concurrently, keeping ``dspy.context`` and per-draw usage.

Why not ``dspy.utils.parallelizer.ParallelExecutor`` directly: it resubmits stragglers (a duplicate
LM call) instead of giving up on them, and it deep-copies the usage tracker per thread so usage is
lost. A teacher that times out must be *dropped and reported*, so we run our own small pool but
propagate DSPy's thread-local overrides exactly as ParallelExecutor does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy
from dspy.dsp.utils.settings import thread_local_overrides

from fusion_dspy.report import TokenUsage
from fusion_dspy.report import usage_from_tracker
from fusion_dspy.store import StoredDraw
from fusion_dspy.teacher import Draw

__all__ = [
    "DrawOutcome",
    "TeacherTimeoutError",
    "Tracked",
    "arun_draws",
    "atracked",
    "merge_into_parent_tracker",
    "run_draws",
    "tracked",
]


class TeacherTimeoutError(TimeoutError):
    """A teacher did not answer within the Fuse's ``timeout``."""


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


def tracked(call: Callable[[], Any]) -> Tracked:
    """Run ``call`` under its own usage tracker, so its usage is attributable to it.

    Exceptions are captured, not raised: the caller records them in the report and decides whether
    they are fatal.
    """
    start = time.perf_counter()
    with dspy.context(usage_tracker=None), dspy.track_usage() as tracker:
        try:
            value, error = call(), None
        except Exception as exc:
            value, error = None, exc
    return Tracked(value, error, _snapshot(tracker), time.perf_counter() - start)


async def atracked(make: Callable[[], Awaitable[Any]], *, timeout: float | None = None) -> Tracked:
    """The asyncio counterpart of :func:`tracked`, with an optional timeout."""
    start = time.perf_counter()
    with dspy.context(usage_tracker=None), dspy.track_usage() as tracker:
        try:
            value, error = await asyncio.wait_for(make(), timeout), None
        except asyncio.TimeoutError:
            value, error = None, TeacherTimeoutError(f"no answer within {timeout} s")
        except Exception as exc:
            value, error = None, exc
    return Tracked(value, error, _snapshot(tracker), time.perf_counter() - start)


def _snapshot(tracker: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: list(entries) for name, entries in tracker.usage_data.items()}


def _call_kwargs(draw: Draw, inputs: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = dict(inputs)
    kwargs["config"] = draw.config
    if draw.teacher.lm is not None:
        kwargs["lm"] = draw.teacher.lm
    return kwargs


def run_draws(
    generate: dspy.Predict,
    draws: Sequence[Draw],
    inputs: Mapping[str, Any],
    *,
    timeout: float | None = None,
    max_threads: int | None = None,
) -> list[DrawOutcome]:
    """Run the draws concurrently (at most ``max_threads`` at once) and wait for all of them.

    Draws still running after ``timeout`` seconds are reported as :class:`TeacherTimeoutError`; their
    calls are abandoned (Python cannot kill a thread) and their late results are discarded.
    """
    if not draws:
        return []
    if len(draws) == 1 and timeout is None:
        # Nothing to overlap: skip the thread hop (cheaper, and keeps tracebacks simple).
        return [DrawOutcome(draws[0], tracked(lambda: generate(**_call_kwargs(draws[0], inputs))))]

    parent_overrides = thread_local_overrides.get().copy()
    limit = threading.BoundedSemaphore(max_threads) if max_threads else None

    def worker(draw: Draw) -> DrawOutcome:
        token = thread_local_overrides.set({**thread_local_overrides.get(), **parent_overrides})
        try:
            if limit is None:
                return DrawOutcome(draw, tracked(lambda: generate(**_call_kwargs(draw, inputs))))
            with limit:
                return DrawOutcome(draw, tracked(lambda: generate(**_call_kwargs(draw, inputs))))
        finally:
            thread_local_overrides.reset(token)

    futures = {_executor().submit(worker, draw): draw for draw in draws}
    done, _ = concurrent.futures.wait(futures, timeout=timeout)
    outcomes = []
    for future, draw in futures.items():
        if future in done:
            outcomes.append(future.result())
        else:
            future.cancel()  # Drops it if still queued; a running call finishes unobserved.
            error = TeacherTimeoutError(f"no answer within {timeout} s")
            outcomes.append(DrawOutcome(draw, Tracked(error=error, latency_s=float(timeout or 0.0))))
    return outcomes


#: Upper bound on teacher calls in flight across all Fuse calls of the process (threads are
#: created on demand and reused: starting threads per call cost more than the rest of Fuse).
MAX_POOL_THREADS = 64
_EXECUTOR: concurrent.futures.ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide draw pool. Workers only run LM calls, never submit to the pool, so nested
    programs (a Fuse inside ``dspy.Evaluate`` threads) queue rather than deadlock."""
    global _EXECUTOR
    if _EXECUTOR is None:
        with _EXECUTOR_LOCK:
            if _EXECUTOR is None:
                _EXECUTOR = concurrent.futures.ThreadPoolExecutor(
                    max_workers=MAX_POOL_THREADS, thread_name_prefix="fuse-draw"
                )
    return _EXECUTOR


async def arun_draws(
    generate: dspy.Predict,
    draws: Sequence[Draw],
    inputs: Mapping[str, Any],
    *,
    timeout: float | None = None,
) -> list[DrawOutcome]:
    """The asyncio counterpart of :func:`run_draws`: one task per draw, gathered."""

    async def one(draw: Draw) -> DrawOutcome:
        return DrawOutcome(draw, await atracked(lambda: generate.acall(**_call_kwargs(draw, inputs)), timeout=timeout))

    return list(await asyncio.gather(*(one(draw) for draw in draws)))


def merge_into_parent_tracker(results: Sequence[Tracked]) -> None:
    """Add the calls' usage to the caller's ``dspy.track_usage()`` tracker, if there is one."""
    parent = dspy.settings.usage_tracker
    if parent is None:
        return
    for result in results:
        for lm_name, entries in result.raw_usage.items():
            for entry in entries:
                parent.add_usage(lm_name, entry)
