"""How fusion-dspy runs LM calls: the requests a call engine yields, and the two drivers that serve them.

A Fuse call (and an LLM selector) is a sans-I/O generator: it yields :class:`Batch` (LM calls to make
concurrently) and :class:`Invoke` (a blocking step such as a user's selector or a store wait) and is
sent back the outcomes as :class:`~fusion_dspy.outcomes.Tracked` values. :func:`drive` serves those
requests with threads, :func:`adrive` on the event loop (asyncio tasks; a call with a timeout runs in
a pool thread, see below); nothing else differs between ``forward`` and ``aforward``.

This is the one statement of the timeout and bounds model, for sync and async alike (the modules that
implement parts of it, :mod:`fusion_dspy.lm_slots`, :mod:`fusion_dspy.threads` and
:mod:`fusion_dspy.outcomes`, refer here):

* **What a timeout means.** ``timeout`` is how long one LM call may take *once it has started*:
  the clock runs while an LM request is in flight (seen through DSPy's ``on_lm_start`` /
  ``on_lm_end`` callbacks), so neither waiting for a slot (below) nor the adapter's formatting and
  parsing counts; each request of a call (DSPy may retry with another adapter) gets the full timeout
  (an LM that reports no requests is timed from the moment the call got its slots). In async, time
  the event loop is too busy to take a call's answer (many calls answering at once) is queue time
  too: it extends that call's deadline, by at most ``timeout``.
  A call still running at its deadline is reported as
  :class:`~fusion_dspy.outcomes.TeacherTimeoutError` and abandoned: its slots are freed at once, but
  the call itself is not killed, so that a paid-for answer is not thrown away. When it answers, the
  batch's ``on_late`` hook receives it: the Fuse stores it in its candidate store and adds its usage
  to the report (``CandidateRecord.late_usage``). Only the process ending first loses it: then a
  warning at exit (logger ``fusion_dspy.drivers``) says how many abandoned calls were still running.
* **Where a call with a timeout runs.** In a pool thread, in async code too (the event loop only
  awaits its answer and keeps its clock), because an abandoned call must outlive its caller: an
  asyncio task would be cancelled when its loop ends (``asyncio.run`` returning first) and its
  answer lost. So a late answer is stored and reported whenever it arrives while the process runs,
  whatever became of the caller's loop. Likewise when an async caller is cancelled mid-batch (say by
  ``asyncio.wait_for``): its timed calls are not stopped, and each one's answer, in already or still
  to come, goes to ``on_late`` (the store keeps it; no report is left to count it). The cost: a timed
  async call holds a thread while it runs, as in ``forward``, and uses the LM's sync path (every
  ``dspy.LM`` has one; a custom ``BaseLM`` with only ``aforward`` is awaited on the thread's own loop).
  Calls without a timeout are asyncio calls in async code: they end with the caller's await, and
  cancelling the caller cancels them.
* **An interrupted sync caller.** Ctrl-C (or ``SystemExit``) while :func:`drive` waits, or inside a
  call the caller's own thread makes, stops the caller at once, and the batch's calls are abandoned
  as at a timeout: each answer already in and not yet consumed goes to ``on_late`` now, each running
  call's answer when it comes, and calls still waiting for their slots are not made at all. Only the
  call that the interrupt itself hit is lost.
* **Which bounds apply.** (1) Per LM, process-wide and shared by threads and event loops: at most
  :func:`~fusion_dspy.lm_slots.lm_concurrency` calls (default
  :data:`~fusion_dspy.lm_slots.DEFAULT_LM_CONCURRENCY`, change it with
  :func:`~fusion_dspy.lm_slots.set_lm_concurrency`) that are running and within their timeout. A slow
  or hung LM fills only its own slots, and an abandoned call frees its slot, so queued calls to that
  LM still get their turn. (2) Per batch: ``max_concurrency`` (a Fuse's ``max_threads``, a judge's
  ``num_threads``). There is no process-wide pool size: sync calls (and timed async calls) run on the
  elastic pool of :mod:`fusion_dspy.threads`, which starts a thread whenever none is idle, so hung
  calls of one Fuse never delay the calls of another.
* **Context.** Every call runs with the caller's ``dspy.context`` overrides, under its own usage
  tracker (so its usage is attributable), with DSPy trace recording off (the engine adds the steps it
  accepted to the trace itself). Usage of calls that return in time is merged into the caller's
  ``dspy.track_usage()`` tracker; a late answer's usage is not (that tracker's block may have ended).
* **DSPy's response cache.** Calls use it as their LM is configured, except inside
  :func:`skip_response_cache`: there every call is made (``config={"cache": False}``). A cache hit
  reports no token usage, so code that measures what an answer costs (the optimizer) needs the calls
  made; it keeps its own records of what it already paid for.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Generator
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from typing import TypeVar
from typing import Union

import dspy

from fusion_dspy.lm_slots import _LMClock
from fusion_dspy.lm_slots import _Slots
from fusion_dspy.lm_slots import _slots_for
from fusion_dspy.outcomes import TeacherTimeoutError
from fusion_dspy.outcomes import Tracked
from fusion_dspy.outcomes import _atracked
from fusion_dspy.outcomes import _reraise_interrupts
from fusion_dspy.outcomes import _tracked_in_thread
from fusion_dspy.outcomes import merge_into_parent_tracker
from fusion_dspy.outcomes import tracked
from fusion_dspy.threads import _POOL
from fusion_dspy.threads import bind_context

__all__ = ["Batch", "Invoke", "LMCall", "Request", "Stepper", "adrive", "drive", "skip_response_cache"]

T = TypeVar("T")

#: An event loop that takes longer than this to come back to a call's watcher is congested.
_LOOP_LAG_S = 0.005
#: The ``dspy.context`` key set by :func:`skip_response_cache` (a DSPy override, so threads carry it).
_SKIP_CACHE = "fusion_dspy_skip_response_cache"

_logger = logging.getLogger(__name__)

#: Abandoned calls that have not answered yet, process-wide (their answers are still to be kept).
_unanswered = 0
_UNANSWERED_LOCK = threading.Lock()


def _count_unanswered(delta: int) -> None:
    global _unanswered
    with _UNANSWERED_LOCK:
        _unanswered += delta


@atexit.register
def _warn_unanswered_at_exit() -> None:
    """The one loss left: the process ends while abandoned calls still run. Say so, with how many."""
    if _unanswered > 0:
        _logger.warning(
            "fusion-dspy: %d LM call(s) abandoned at their timeout (or by an interrupted caller) were still running "
            "when the process exited: "
            "their answers are neither stored nor reported, though a provider may bill them.", _unanswered
        )


@contextlib.contextmanager
def skip_response_cache() -> Iterator[None]:
    """Inside this block, a Fuse's predictor calls (teachers, fusor, LLM judge, USC) skip DSPy's response cache.

    A cached answer reports no token usage (DSPy clears it on a hit), so its cost would count as
    zero, and a configuration would look cheaper because an earlier run asked the same question. The
    optimizer scores configurations inside this block; it re-uses answers through its own candidate
    bank and evaluation memo, which keep their original cost. Not affected: calls made outside a Fuse
    (a program's other predictors) and a ``RewardSelector``'s own function. Thread- and task-safe: it
    is a ``dspy.context`` override.
    """
    with dspy.context(**{_SKIP_CACHE: True}):
        yield


def _cache_policy(calls: tuple[LMCall, ...]) -> tuple[LMCall, ...]:
    """``calls`` as they must run here: with ``cache=False`` in their config inside :func:`skip_response_cache`."""
    if not dspy.settings.get(_SKIP_CACHE):
        return calls
    return tuple(LMCall(c.predict, {**c.kwargs, "config": {**(c.kwargs.get("config") or {}), "cache": False}})
                 for c in calls)


@dataclasses.dataclass(frozen=True)
class LMCall:
    """One predictor call: ``predict(**kwargs)`` (``kwargs`` may hold ``lm`` and ``config``)."""

    predict: Any
    kwargs: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Batch:
    """LM calls to run concurrently; the engine is sent back one :class:`Tracked` per call, in order.

    ``on_late(position, tracked)`` receives the answer of a call the caller abandoned (it timed out,
    or an async caller was cancelled), when it arrives: from the call's thread, or on the event loop
    for a call that had answered before its async caller was cancelled.
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
    (its return value is then in ``value``).

    Use it as a context manager (every driver does): leaving the block closes the engine, so when an
    exception or a cancellation stops the call mid-way, the engine's ``finally`` blocks (releasing
    its store claims) run at once, not whenever the garbage collector gets to it.
    """

    def __init__(self, steps: Steps[Any]) -> None:
        self._steps = steps
        self.done = False
        self.value: Any = None

    def __enter__(self) -> Stepper:
        return self

    def __exit__(self, *exc: object) -> None:
        self._steps.close()  # a no-op once the engine has returned

    def send(self, reply: Any) -> Request | None:
        try:
            return self._steps.send(reply)
        except StopIteration as stop:
            self.done, self.value = True, stop.value
            return None


def drive(steps: Steps[T]) -> T:
    """Run a call engine to completion, serving its requests with threads."""
    with Stepper(steps) as stepper:
        request = stepper.send(None)
        while request is not None:
            request = stepper.send(_run_batch(request) if isinstance(request, Batch) else _invoke(request))
        return stepper.value


async def adrive(steps: Steps[T]) -> T:
    """Run a call engine to completion, serving its requests with asyncio tasks."""
    with Stepper(steps) as stepper:
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


def _lm_of(call: LMCall) -> Any:
    return call.kwargs.get("lm") or getattr(call.predict, "lm", None) or dspy.settings.lm


class _Job:
    """One call of a batch: queued, running (``clock``), finished (``result``) or abandoned by its caller."""

    __slots__ = ("call", "position", "lm_slots", "clock", "result", "abandoned", "started")

    def __init__(self, call: LMCall, position: int, lm_slots: _Slots, clock: _LMClock) -> None:
        self.call = call
        self.position = position
        self.lm_slots = lm_slots
        self.clock = clock
        self.result: Tracked | None = None
        self.abandoned = False
        self.started = False


def _run_batch(batch: Batch) -> list[Tracked]:
    parent = dspy.settings.usage_tracker
    changed = threading.Condition()

    def notify() -> None:
        with changed:
            changed.notify_all()

    jobs = []
    for position, call in enumerate(_cache_policy(batch.calls)):
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
        with changed:
            if job.abandoned:  # the caller was interrupted while this call waited for its slots: not made
                free(job)
                return
            job.started = True
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
            return
        _deliver_late(batch.on_late, job, result)

    timeout = batch.timeout
    # Without a timeout the caller would only wait: it makes the first call itself (one thread hop less).
    inline = jobs[0] if timeout is None else None
    for job in jobs:
        if job is not inline:
            _POOL.submit(bind_context(lambda job=job: work(job)))
    try:
        if inline is not None:
            work(inline)
            _reraise_interrupts([inline.result])  # Ctrl-C stopped the call the caller made: stop now
        _wait_for_jobs(jobs, changed, timeout, free)
        results = [job.result if not job.abandoned else _timed_out(timeout) for job in jobs]
        _reraise_interrupts(results)
    except BaseException:
        # Interrupted (Ctrl-C, SystemExit): calls that answered are paid for and go to on_late now, running
        # ones when they answer; calls still queued for their slots are not made.
        _abandon_all(jobs, changed, free, batch.on_late)
        raise
    merge_into_parent_tracker(results, parent)
    return results  # type: ignore[arg-type, return-value]


def _wait_for_jobs(jobs: list[_Job], changed: threading.Condition, timeout: float | None,
                   free: Callable[[_Job], None]) -> None:
    """Wait until every job has answered or is abandoned at its deadline (its slots freed at once)."""
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
                        _count_unanswered(1)
                        free(job)  # the slot goes to the next caller; the call runs on unobserved
                        continue
                    deadlines.append(deadline)
                waiting = True
            if not waiting:
                break
            changed.wait(min(deadlines) - now if deadlines else None)


def _abandon_all(jobs: list[_Job], changed: threading.Condition, free: Callable[[_Job], None],
                 on_late: Callable[[int, Tracked], None] | None) -> None:
    """The sync caller is gone (interrupted): hand every answer it will not consume to ``on_late``."""
    answered: list[tuple[int, Tracked]] = []
    with changed:
        for job in jobs:
            if job.abandoned:  # timed out already: its answer goes to on_late when it comes
                continue
            job.abandoned = True
            if job.result is not None:
                answered.append((job.position, job.result))
            elif job.started:  # running: it answers on its own (work() delivers it); its slots go now
                _count_unanswered(1)
                free(job)
    if on_late is None:
        return
    for position, result in answered:
        if result.error is None or isinstance(result.error, Exception):  # not the interrupt itself
            on_late(position, result)


def _timed_out(timeout: float | None) -> Tracked:
    error = TeacherTimeoutError(f"no answer within {timeout} s of the call's start")
    return Tracked(error=error, latency_s=float(timeout or 0.0))


async def _arun_batch(batch: Batch) -> list[Tracked]:
    """Serve a batch on the event loop: untimed calls as asyncio tasks, timed calls in pool threads.

    A timed call may outlive the caller (it is abandoned at its deadline, and the caller may return or
    be cancelled before it answers), so it runs where the caller's event loop ending cannot cancel it:
    on the elastic pool, as in :func:`_run_batch`. The loop only awaits its answer and keeps its clock.
    """
    parent = dspy.settings.usage_tracker
    timeout = batch.timeout
    batch_slots = _Slots(batch.max_concurrency) if batch.max_concurrency else None
    jobs = []
    for position, call in enumerate(_cache_policy(batch.calls)):
        lm = _lm_of(call)
        jobs.append(_Job(call, position, _slots_for(lm), _LMClock(lambda: None, reports=isinstance(lm, dspy.BaseLM))))
    lock = threading.Lock()  # guards each job's result and abandoned flag (set by its thread and by the loop)

    def time_out(job: _Job) -> Tracked | None:
        """At ``job``'s deadline: its result if it answered meanwhile, else ``None`` and it is abandoned."""
        with lock:
            if job.result is None:
                job.abandoned = True
                _count_unanswered(1)
            return job.result

    def abandon(job: _Job) -> Tracked | None:
        """The caller is gone: ``job`` answers on its own; its result if it had one not delivered yet."""
        with lock:
            if job.abandoned:
                return None
            job.abandoned = True
            if job.result is None and job.clock.slotted is not None:  # started: it answers on its own
                _count_unanswered(1)
            return job.result

    async def one(job: _Job) -> Tracked:
        call = job.call
        if batch_slots is not None:
            await batch_slots.aacquire()
        try:
            await job.lm_slots.aacquire()
        except BaseException:
            if batch_slots is not None:
                batch_slots.release()
            raise
        try:
            if timeout is None:  # the call cannot outlive this await: an asyncio call, no thread
                return await _atracked(lambda: call.predict.acall(**call.kwargs))
            loop = asyncio.get_running_loop()
            wake = asyncio.Event()
            answered: asyncio.Future[Tracked] = loop.create_future()
            job.clock.on_change = lambda: _call_soon(loop, wake.set)
            job.clock.slotted = time.perf_counter()
            # bind_context: the task's dspy.context overrides apply in the thread too.
            _POOL.submit(bind_context(lambda: _work_for_loop(job, lock, loop, answered, batch.on_late)))
            if await _watch(answered, job.clock, wake, timeout):
                return answered.result()
            result = time_out(job)  # it may have answered while the loop was coming back here
            return _timed_out(timeout) if result is None else result
        finally:  # the slots go to the next caller, also when the call is abandoned above
            job.lm_slots.release()
            if batch_slots is not None:
                batch_slots.release()

    runs = [one(job) for job in jobs]
    try:
        results = [await runs[0]] if len(runs) == 1 else list(await asyncio.gather(*runs))
    except BaseException:
        # Cancelled (or interrupted): a timed call cannot be stopped, and its answer was paid for. One
        # that answered already goes to on_late now; one still running, when it answers.
        if timeout is not None and batch.on_late is not None:
            for job in jobs:
                result = abandon(job)
                if result is not None:
                    batch.on_late(job.position, result)
        raise
    _reraise_interrupts(results)
    merge_into_parent_tracker([r for r in results if not isinstance(r.error, TeacherTimeoutError)], parent)
    return results


def _work_for_loop(
    job: _Job,
    lock: threading.Lock,
    loop: asyncio.AbstractEventLoop,
    answered: asyncio.Future[Tracked],
    on_late: Callable[[int, Tracked], None] | None,
) -> None:
    """Make a timed call of an async batch (in a pool thread): its answer goes to the waiting loop,
    or to ``on_late`` if the loop gave up on it (timed out, cancelled, or closed)."""
    with job.clock.watching():
        result = _tracked_in_thread(_from_a_thread(job.call))
    with lock:
        job.result = result
        late = job.abandoned
    if not late:
        if _call_soon(loop, _settle, answered, result):
            return
        with lock:  # the loop closed without giving up on the call (it stopped with the caller pending)
            job.abandoned = True
        if on_late is not None:
            on_late(job.position, result)
        return
    _deliver_late(on_late, job, result)


def _from_a_thread(call: LMCall) -> Callable[[], Any]:
    """``call`` as a pool thread makes it: on its LM's sync path, or, for a custom ``BaseLM`` that has only
    ``aforward``, awaited on an event loop of the thread's own (the caller's loop must not run it: the
    call may outlive that loop)."""
    lm = _lm_of(call)
    kind = type(lm)
    async_only = kind.forward is dspy.BaseLM.forward and kind.aforward is not dspy.BaseLM.aforward
    if isinstance(lm, dspy.BaseLM) and async_only:
        return lambda: asyncio.run(call.predict.acall(**call.kwargs))
    return lambda: call.predict(**call.kwargs)


def _deliver_late(on_late: Callable[[int, Tracked], None] | None, job: _Job, result: Tracked) -> None:
    """Hand an abandoned call's answer to ``on_late``; it no longer counts as unanswered, even if that raises."""
    try:
        if on_late is not None:
            on_late(job.position, result)
    finally:
        _count_unanswered(-1)


def _settle(answered: asyncio.Future[Tracked], result: Tracked) -> None:
    if not answered.done():
        answered.set_result(result)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> bool:
    """Schedule ``callback`` on ``loop`` from any thread; ``False`` if the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


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
