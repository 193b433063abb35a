"""Run one function over several items in threads without losing DSPy's context or usage.

Plain threads drop ``dspy.context(lm=...)`` overrides, and DSPy's ``ParallelExecutor`` keeps them
but gives each worker a private copy of the usage tracker, so tokens spent in workers vanish from
an outer ``dspy.track_usage()``. This helper uses ``ParallelExecutor`` (with ``timeout=0``: no
duplicate "straggler" calls to slow local models) and merges each worker's usage back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

__all__ = ["run_parallel"]

T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class _Failure:
    """Carries an exception back as a value, so ParallelExecutor neither logs nor counts it."""

    error: Exception


def run_parallel(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    num_threads: int | None = None,
) -> list[R | Exception]:
    """Call ``fn`` on every item concurrently; return results in order, exceptions in place.

    Args:
        fn: The work for one item. It runs with the caller's ``dspy.context`` overrides.
        items: The items, one thread each up to ``num_threads``.
        num_threads: Thread cap; ``None`` means one thread per item.

    Returns:
        One entry per item: ``fn``'s return value, or the exception it raised.
    """
    import dspy
    from dspy.utils.parallelizer import ParallelExecutor

    if not items:
        return []
    parent = dspy.settings.usage_tracker

    def job(item: T) -> tuple[Any, Any]:
        if parent is None:
            return _call(fn, item), None
        with dspy.context(usage_tracker=None), dspy.track_usage() as tracker:
            outcome = _call(fn, item)
        return outcome, tracker.usage_data

    executor = ParallelExecutor(
        num_threads=max(1, min(num_threads or len(items), len(items))),
        max_errors=len(items) + 1,
        disable_progress_bar=True,
        provide_traceback=False,
        timeout=0,
    )
    results: list[R | Exception] = []
    for raw in executor.execute(job, list(items)):
        if raw is None or isinstance(raw, Exception):  # cancelled, or a failure outside ``fn``
            results.append(raw if raw is not None else RuntimeError("the parallel job was cancelled"))
            continue
        outcome, usage = raw
        if parent is not None and usage:
            for lm_name, entries in usage.items():
                parent.usage_data[lm_name].extend(entries)
        results.append(outcome.error if isinstance(outcome, _Failure) else outcome)
    return results


def _call(fn: Callable[[T], R], item: T) -> R | _Failure:
    try:
        return fn(item)
    except Exception as error:  # reported to the caller, which decides how to record it
        return _Failure(error)
