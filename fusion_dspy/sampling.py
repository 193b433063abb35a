"""How fusion-dspy runs LM calls: the requests a call engine yields, and the two drivers that serve them.

A Fuse call (and an LLM selector) is a sans-I/O generator: it yields :class:`Batch` (LM calls to make
concurrently) and :class:`Invoke` (a blocking step such as a user's selector or a store wait) and is
sent back the outcomes as :class:`Tracked` values. :func:`drive` serves those requests with threads,
:func:`adrive` with asyncio tasks; nothing else differs between ``forward`` and ``aforward``.

The model, for sync and async alike:

* **What a timeout means.** ``timeout`` is how long one LM call may take *once it has started*:
  the clock runs while an LM request is in flight (seen through DSPy's ``on_lm_start`` /
  ``on_lm_end`` callbacks), so neither waiting for a slot (below) nor the adapter's formatting and
  parsing counts; each request of a call (DSPy may retry with another adapter) gets the full timeout
  (an LM that reports no requests is timed from the moment the call got its slots). In async, time
  the event loop is too busy to run a call's last steps (many calls answering at once) is queue
  time too: it extends that call's deadline, by at most ``timeout``.
  A call still running at its deadline is reported as :class:`TeacherTimeoutError` and abandoned:
  its slots are freed at once, but the call itself is not killed (a thread cannot be; an asyncio
  task is left running so that a paid-for answer is not thrown away). When it answers, the batch's
  ``on_late`` hook receives it: the Fuse stores it in its candidate store and adds its usage to the
  report (``CandidateRecord.late_usage``).
* **Which bounds apply.** (1) Per LM, process-wide and shared by threads and event loops: at most
  :func:`lm_concurrency` calls (default :data:`DEFAULT_LM_CONCURRENCY`, change it with
  :func:`set_lm_concurrency`) that are running and within their timeout. A slow or hung LM fills
  only its own slots, and an abandoned call frees its slot, so queued calls to that LM still get
  their turn. (2) Per batch: ``max_concurrency`` (a Fuse's ``max_threads``, a judge's
  ``num_threads``). There is no process-wide pool size: sync calls run on an elastic pool of daemon
  threads (an idle thread is reused, else a new one starts; idle threads exit after
  :data:`IDLE_THREAD_S` seconds), so hung calls of one Fuse never delay the calls of another.
* **Context.** Every call runs with the caller's ``dspy.context`` overrides, under its own usage
  tracker (so its usage is attributable), with DSPy trace recording off (the engine adds the steps it
  accepted to the trace itself). Usage of calls that return in time is merged into the caller's
  ``dspy.track_usage()`` tracker; a late answer's usage is not (that tracker's block may have ended).

:func:`run_threads` is the same runner for plain functions (context carried, usage merged), for
code outside the core that needs threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Generator
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import TypeVar
from typing import Union

import dspy
from dspy.dsp.utils.settings import thread_local_overrides
from dspy.utils.callback import BaseCallback

from fusion_dspy.report import TokenUsage
from fusion_dspy.report import usage_from_tracker
from fusion_dspy.store import StoredDraw
from fusion_dspy.teacher import Draw

__all__ = [
    "DEFAULT_LM_CONCURRENCY",
    "IDLE_THREAD_S",
    "Batch",
    "DrawOutcome",
    "Invoke",
    "LMCall",
    "Request",
    "Stepper",
    "TeacherTimeoutError",
    "Tracked",
    "adrive",
    "apply_context",
    "bind_context",
    "capture_context",
    "drive",
    "lm_concurrency",
    "merge_into_parent_tracker",
    "run_threads",
    "set_lm_concurrency",
    "tracked",
]

_logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Calls in flight per LM (process-wide) unless :func:`set_lm_concurrency` says otherwise.
DEFAULT_LM_CONCURRENCY = 64
#: Seconds an idle pool thread waits for work before it exits.
IDLE_THREAD_S = 30.0
#: An event loop that takes longer than this to come back to a call's watcher is congested.
_LOOP_LAG_S = 0.005


class TeacherTimeoutError(TimeoutError):
    """An LM call did not answer within ``timeout`` seconds of its start."""


# -- outcomes ------------------------------------------------------------------------------------------


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


# -- requests ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LMCall:
    """One predictor call: ``predict(**kwargs)`` (``kwargs`` may hold ``lm`` and ``config``)."""

    predict: Any
    kwargs: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Batch:
    """LM calls to run concurrently; the engine is sent back one :class:`Tracked` per call, in order.

    ``on_late(position, tracked)`` receives the answer of a call that timed out, when it arrives
    (from another thread, or as a callback on the event loop).
    """

    calls: tuple[LMCall, ...]
    timeout: float | None = None
    max_concurrency: int | None = None
    on_late: Callable[[int, Tracked], None] | None = None


@dataclasses.dataclass(frozen=True)
class Invoke:
    """A blocking step; the engine is sent back its :class:`Tracked`. ``arun`` is its async form
    (``None``: the async driver runs ``run`` in a worker thread)."""

    run: Callable[[], Any]
    arun: Callable[[], Awaitable[Any]] | None = None


Request = Union[Batch, Invoke]
Steps = Generator[Request, Any, T]


class Stepper:
    """Steps a call engine: ``send(reply)`` returns its next request, or ``None`` once it is ``done``
    (its return value is then in ``value``)."""

    def __init__(self, steps: Steps[Any]) -> None:
        self._steps = steps
        self.done = False
        self.value: Any = None

    def send(self, reply: Any) -> Request | None:
        try:
            return self._steps.send(reply)
        except StopIteration as stop:
            self.done, self.value = True, stop.value
            return None


def drive(steps: Steps[T]) -> T:
    """Run a call engine to completion, serving its requests with threads."""
    stepper = Stepper(steps)
    request = stepper.send(None)
    while request is not None:
        request = stepper.send(_run_batch(request) if isinstance(request, Batch) else _invoke(request))
    return stepper.value


async def adrive(steps: Steps[T]) -> T:
    """Run a call engine to completion, serving its requests with asyncio tasks."""
    stepper = Stepper(steps)
    request = stepper.send(None)
    while request is not None:
        request = stepper.send(await (_arun_batch(request) if isinstance(request, Batch) else _ainvoke(request)))
    return stepper.value


def _invoke(request: Invoke) -> Tracked:
    result = tracked(request.run)
    merge_into_parent_tracker([result])
    return result


async def _ainvoke(request: Invoke) -> Tracked:
    # to_thread copies the current context, so dspy.context overrides still apply in the thread.
    result = await _atracked(request.arun or (lambda: asyncio.to_thread(request.run)))
    merge_into_parent_tracker([result])
    return result


# -- bounds ------------------------------------------------------------------------------------------


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


_LM_SLOTS: dict[int, tuple[Any, _Slots]] = {}
_LM_SLOTS_LOCK = threading.Lock()


def _slots_for(lm: Any) -> _Slots:
    key = id(lm)
    with _LM_SLOTS_LOCK:
        entry = _LM_SLOTS.get(key)
        if entry is None or entry[0] is not lm:
            entry = (lm, _Slots(DEFAULT_LM_CONCURRENCY))
            _LM_SLOTS[key] = entry
        return entry[1]


def set_lm_concurrency(lm: Any, limit: int) -> None:
    """Allow at most ``limit`` calls to ``lm`` in flight at once, across the process."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"set_lm_concurrency(limit=...) must be an int >= 1, got {limit!r}.")
    with _LM_SLOTS_LOCK:
        _LM_SLOTS[id(lm)] = (lm, _Slots(limit))


def lm_concurrency(lm: Any) -> int:
    """The most calls to ``lm`` in flight at once."""
    return _slots_for(lm).limit


def _lm_of(call: LMCall) -> Any:
    return call.kwargs.get("lm") or getattr(call.predict, "lm", None) or dspy.settings.lm


# -- threads -----------------------------------------------------------------------------------------


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


class _Job:
    """One call of a sync batch: queued, running (``clock``), finished (``result``) or abandoned."""

    __slots__ = ("call", "position", "lm_slots", "clock", "result", "abandoned")

    def __init__(self, call: LMCall, position: int, lm_slots: _Slots, clock: _LMClock) -> None:
        self.call = call
        self.position = position
        self.lm_slots = lm_slots
        self.clock = clock
        self.result: Tracked | None = None
        self.abandoned = False


def _run_batch(batch: Batch) -> list[Tracked]:
    parent = dspy.settings.usage_tracker
    changed = threading.Condition()

    def notify() -> None:
        with changed:
            changed.notify_all()

    jobs = []
    for position, call in enumerate(batch.calls):
        lm = _lm_of(call)
        jobs.append(_Job(call, position, _slots_for(lm), _LMClock(notify, reports=isinstance(lm, dspy.BaseLM))))
    if len(jobs) == 1 and batch.timeout is None:
        # Nothing to overlap and nothing to time: no thread hop.
        jobs[0].lm_slots.acquire()
        try:
            results = [tracked(lambda: jobs[0].call.predict(**jobs[0].call.kwargs))]
        finally:
            jobs[0].lm_slots.release()
        merge_into_parent_tracker(results, parent)
        return results

    batch_slots = _Slots(batch.max_concurrency) if batch.max_concurrency else None

    def free(job: _Job) -> None:
        job.lm_slots.release()
        if batch_slots is not None:
            batch_slots.release()

    def work(job: _Job) -> None:
        if batch_slots is not None:
            batch_slots.acquire()
        job.lm_slots.acquire()
        if timeout is None:
            result = _tracked_in_thread(lambda: job.call.predict(**job.call.kwargs))
        else:
            job.clock.slotted = time.perf_counter()
            notify()
            with job.clock.watching():
                result = _tracked_in_thread(lambda: job.call.predict(**job.call.kwargs))
        with changed:
            job.result = result
            late = job.abandoned
            changed.notify_all()
        if not late:
            free(job)
        elif batch.on_late is not None:
            batch.on_late(job.position, result)

    timeout = batch.timeout
    # Without a timeout the caller would only wait: it makes the first call itself (one thread hop less).
    inline = jobs[0] if timeout is None else None
    for job in jobs:
        if job is not inline:
            _POOL.submit(bind_context(lambda job=job: work(job)))
    if inline is not None:
        work(inline)
    with changed:
        while True:
            now = time.perf_counter()
            deadlines = []
            waiting = False
            for job in jobs:
                if job.result is not None or job.abandoned:
                    continue
                deadline = None if timeout is None else job.clock.deadline(timeout)
                if deadline is not None:
                    if deadline <= now:
                        job.abandoned = True
                        free(job)  # the slot goes to the next caller; the call runs on unobserved
                        continue
                    deadlines.append(deadline)
                waiting = True
            if not waiting:
                break
            changed.wait(min(deadlines) - now if deadlines else None)
    results = [job.result if not job.abandoned else _timed_out(timeout) for job in jobs]
    _reraise_interrupts(results)
    merge_into_parent_tracker(results, parent)
    return results  # type: ignore[arg-type, return-value]


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


def _timed_out(timeout: float | None) -> Tracked:
    error = TeacherTimeoutError(f"no answer within {timeout} s of the call's start")
    return Tracked(error=error, latency_s=float(timeout or 0.0))


async def _arun_batch(batch: Batch) -> list[Tracked]:
    parent = dspy.settings.usage_tracker
    batch_slots = _Slots(batch.max_concurrency) if batch.max_concurrency else None

    async def one(position: int, call: LMCall, lm: Any) -> Tracked:
        lm_slots = _slots_for(lm)
        if batch_slots is not None:
            await batch_slots.aacquire()
        try:
            await lm_slots.aacquire()
        except BaseException:
            if batch_slots is not None:
                batch_slots.release()
            raise
        try:
            if batch.timeout is None:  # nothing to time: no extra task
                return await _atracked(lambda: call.predict.acall(**call.kwargs))
            loop = asyncio.get_running_loop()
            wake = asyncio.Event()
            clock = _LMClock(lambda: loop.call_soon_threadsafe(wake.set), reports=isinstance(lm, dspy.BaseLM))
            clock.slotted = time.perf_counter()
            with clock.watching():  # the task copies this context when it is created
                task = asyncio.ensure_future(_atracked(lambda: call.predict.acall(**call.kwargs)))
            try:
                done = await _watch(task, clock, wake, batch.timeout)
            except BaseException:
                task.cancel()
                raise
        finally:  # the slots go to the next caller, also when the call is abandoned below
            lm_slots.release()
            if batch_slots is not None:
                batch_slots.release()
        if done:
            return task.result()
        if batch.on_late is not None:
            on_late = batch.on_late
            task.add_done_callback(lambda t: None if t.cancelled() else on_late(position, t.result()))
        return _timed_out(batch.timeout)

    runs = [one(i, call, _lm_of(call)) for i, call in enumerate(batch.calls)]
    results = [await runs[0]] if len(runs) == 1 else list(await asyncio.gather(*runs))
    merge_into_parent_tracker([r for r in results if not isinstance(r.error, TeacherTimeoutError)], parent)
    return results


async def _watch(task: asyncio.Future[Tracked], clock: _LMClock, wake: asyncio.Event, timeout: float) -> bool:
    """Wait for ``task`` until its clock's deadline passes; ``True`` if it finished in time.

    At the deadline the loop may be too busy to have run the call's last steps (many calls finishing
    at once share one thread): the time the loop takes to come back to this watcher is queue time,
    so it extends the deadline, by at most ``timeout`` in all.
    """
    grace = 0.0
    while not task.done():
        deadline = clock.deadline(timeout)
        left = None if deadline is None else deadline + grace - time.perf_counter()
        if left is not None and left <= 0:
            before = time.perf_counter()
            await asyncio.sleep(0)  # behind every callback that is ready now
            lag = time.perf_counter() - before
            if task.done():
                break
            if lag < _LOOP_LAG_S or grace >= timeout:
                return False
            grace = min(timeout, grace + lag)
            continue
        wake.clear()
        waiter = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({task, waiter}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
    return True


# -- plain functions -----------------------------------------------------------------------------------


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
