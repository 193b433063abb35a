"""Per-LM concurrency bounds, and the LM clock that a call's timeout runs on.

Each LM object has one set of slots, process-wide and shared by threads and event loops
(:class:`_Slots`: a counting semaphore whose waiters are served in order, whether they block a thread
or await on a loop). The slots are kept while the LM object lives, never the LM itself; a copy of an
LM is another LM, with slots of its own. A call holds a slot of its LM while it runs and is within
its timeout; the limit is :data:`DEFAULT_LM_CONCURRENCY` unless :func:`set_lm_concurrency` sets
another, and :func:`lm_concurrency` reads it. The same semaphore bounds a batch's ``max_concurrency``.

:class:`_LMClock` is a DSPy callback that sees one call's LM requests start and end
(``on_lm_start`` / ``on_lm_end``) and gives the deadline the drivers wait for.

How these bounds and the clock combine with per-batch bounds, abandoned calls and late answers (the
timeout and bounds model, the same in sync and async) is stated once, in :mod:`fusion_dspy.drivers`.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

__all__ = ["DEFAULT_LM_CONCURRENCY", "lm_concurrency", "set_lm_concurrency"]

#: Calls in flight per LM (process-wide) unless :func:`set_lm_concurrency` says otherwise.
DEFAULT_LM_CONCURRENCY = 64


class _Slots:
    """A counting semaphore that threads and event loops can share; waiters are served in order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._lock = threading.Lock()
        self._waiters: collections.deque[Callable[[], None]] = collections.deque()

    def acquire(self) -> None:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            granted = threading.Event()
            self._waiters.append(granted.set)
        granted.wait()  # release() hands its slot over directly

    async def aacquire(self) -> None:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if future.cancelled():
                self.release()  # the waiter gave up: pass the slot on
            else:
                future.set_result(None)

        def grant() -> None:
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop is closed
                self.release()

        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            self._waiters.append(grant)
        await future

    def release(self) -> None:
        with self._lock:
            waiter = self._waiters.popleft() if self._waiters else None
            if waiter is None:
                self._free += 1
        if waiter is not None:
            waiter()


class _Entry:
    """An LM's slots, held by ``id(lm)`` with a weak reference to the LM: the entry goes when the LM does."""

    __slots__ = ("lm", "slots", "finalizer")

    def __init__(self, lm: Any, slots: _Slots) -> None:
        self.slots = slots
        self.finalizer: weakref.finalize | None
        try:
            self.lm: Callable[[], Any] = weakref.ref(lm)
            self.finalizer = weakref.finalize(lm, _forget, id(lm), self)
            self.finalizer.atexit = False  # nothing to tidy at interpreter exit
        except TypeError:  # an object without weak references: kept alive while registered
            self.lm, self.finalizer = (lambda: lm), None


#: Slots per LM, by ``id(lm)``; an entry is dropped when its LM is garbage (see :class:`_Entry`).
_LM_SLOTS: dict[int, _Entry] = {}
# Re-entrant: a collection during a registration may finalize another LM, whose entry then goes.
_LM_SLOTS_LOCK = threading.RLock()


def _forget(key: int, entry: _Entry) -> None:
    with _LM_SLOTS_LOCK:
        if _LM_SLOTS.get(key) is entry:
            del _LM_SLOTS[key]


def _register(lm: Any, slots: _Slots) -> _Slots:
    """Make ``slots`` ``lm``'s (holding the lock)."""
    old = _LM_SLOTS.get(id(lm))
    if old is not None and old.finalizer is not None:
        old.finalizer.detach()
    _LM_SLOTS[id(lm)] = _Entry(lm, slots)
    return slots


def _slots_for(lm: Any) -> _Slots:
    with _LM_SLOTS_LOCK:
        entry = _LM_SLOTS.get(id(lm))
        if entry is None or entry.lm() is not lm:
            return _register(lm, _Slots(DEFAULT_LM_CONCURRENCY))
        return entry.slots


def set_lm_concurrency(lm: Any, limit: int) -> None:
    """Allow at most ``limit`` calls to ``lm`` in flight at once, across the process."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"set_lm_concurrency(limit=...) must be an int >= 1, got {limit!r}.")
    with _LM_SLOTS_LOCK:
        _register(lm, _Slots(limit))


def lm_concurrency(lm: Any) -> int:
    """The most calls to ``lm`` in flight at once."""
    return _slots_for(lm).limit


class _LMClock(BaseCallback):
    """Watches one call's LM requests (DSPy callbacks): the clock of its timeout.

    ``deadline`` counts from the start of the LM request in flight, so neither a wait for a slot nor
    the adapter's formatting and parsing around it (CPU work that a busy process may delay) counts.
    Between requests (the answer arrived and is being parsed) there is no deadline; a second request
    of the same call (DSPy's fallback to another adapter) gets the full timeout again. An LM that
    reports no requests (``reports=False``: not a ``dspy.BaseLM``) is timed from the moment the call
    got its slots.
    """

    def __init__(self, on_change: Callable[[], None], *, reports: bool = True) -> None:
        self.on_change = on_change
        self.reports = reports
        self.slotted: float | None = None
        self.request_started: float | None = None
        self.in_flight = 0
        self.requests = 0

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.in_flight += 1
        self.requests += 1
        self.request_started = time.perf_counter()
        self.on_change()

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        self.in_flight -= 1
        self.on_change()

    def deadline(self, timeout: float) -> float | None:
        if self.requests == 0:
            return None if self.reports or self.slotted is None else self.slotted + timeout
        if self.in_flight > 0 and self.request_started is not None:
            return self.request_started + timeout
        return None

    def watching(self) -> Any:
        """The ``dspy.context`` under which the call reports its LM requests to this clock."""
        return dspy.context(callbacks=[*(dspy.settings.get("callbacks") or []), self])
