"""Threads for LM work: the elastic pool, carrying ``dspy.context`` across threads, and :func:`run_threads`.

Sync LM calls run on one process-wide elastic pool of daemon threads with no size cap: a job goes to
an idle thread if there is one, else a new thread starts; a thread idle for :data:`IDLE_THREAD_S`
seconds exits. So the hung calls of one Fuse never delay the calls of another; what bounds the calls
in flight is the per-LM and per-batch slots (the timeout and bounds model is stated in
:mod:`fusion_dspy.drivers`).

DSPy's ``dspy.context`` overrides are thread-local: :func:`capture_context` takes the ones active
now, :func:`apply_context` re-applies them in another thread, and :func:`bind_context` wraps a
function to run with them wherever it is called.

:func:`run_threads` is the batch runner for plain functions (context carried, usage merged into the
caller's tracker), for code outside the core that needs threads.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

import dspy
from dspy.dsp.utils.settings import thread_local_overrides

from fusion_dspy.lm_slots import _Slots
from fusion_dspy.outcomes import Tracked
from fusion_dspy.outcomes import _reraise_interrupts
from fusion_dspy.outcomes import _tracked_in_thread
from fusion_dspy.outcomes import merge_into_parent_tracker

__all__ = ["IDLE_THREAD_S", "apply_context", "bind_context", "capture_context", "run_threads"]

_logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds an idle pool thread waits for work before it exits.
IDLE_THREAD_S = 30.0


class _ElasticPool:
    """Daemon threads that are reused while busy work keeps coming and exit when idle; no size cap."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work, minus jobs queued for them

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.put(job)
            if self._idle > 0:
                self._idle -= 1
                return
        threading.Thread(target=self._work, name="fuse-call", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=IDLE_THREAD_S)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._idle -= 1
                        return
                    job = self._jobs.get_nowait()
            try:
                job()
            except BaseException:  # a job reports its own errors; never let one kill the thread
                _logger.exception("fusion-dspy: an LM job raised outside its error handling")
            job = None  # An idle thread must not keep the last job's LM and inputs alive.
            with self._lock:
                self._idle += 1


_POOL = _ElasticPool()


def capture_context() -> dict[str, Any]:
    """The ``dspy.context`` overrides active in this thread now (to re-apply in another thread)."""
    return thread_local_overrides.get().copy()


@contextlib.contextmanager
def apply_context(overrides: Mapping[str, Any]) -> Iterator[None]:
    """Re-apply captured ``dspy.context`` overrides in the current thread for the block."""
    token = thread_local_overrides.set({**thread_local_overrides.get(), **overrides}) if overrides else None
    try:
        yield
    finally:
        if token is not None:
            thread_local_overrides.reset(token)


def bind_context(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` wrapped to run, in whatever thread, with the ``dspy.context`` overrides active now."""
    overrides = capture_context()

    def bound(*args: Any, **kwargs: Any) -> T:
        with apply_context(overrides):
            return fn(*args, **kwargs)

    return bound


def run_threads(
    fn: Callable[[Any], T], items: Sequence[Any], *, max_concurrency: int | None = None
) -> list[T | Exception]:
    """Call ``fn`` on every item in threads (at most ``max_concurrency`` at once); results in order,
    exceptions in place. Each call runs with the caller's ``dspy.context`` and its LM usage is merged
    into the caller's ``dspy.track_usage()`` tracker."""
    items = list(items)
    if not items:
        return []
    parent = dspy.settings.usage_tracker
    slots = _Slots(max_concurrency or len(items))
    results: list[Tracked | None] = [None] * len(items)
    done = threading.Semaphore(0)

    def work(position: int) -> None:
        slots.acquire()
        try:
            results[position] = _tracked_in_thread(lambda: fn(items[position]))
        finally:
            slots.release()
            done.release()

    for position in range(len(items)):
        _POOL.submit(bind_context(lambda position=position: work(position)))
    for _ in items:
        done.acquire()
    outcomes = [r for r in results if r is not None]
    _reraise_interrupts(outcomes)
    merge_into_parent_tracker(outcomes, parent)
    return [r.error if r.error is not None else r.value for r in outcomes]  # type: ignore[misc]
