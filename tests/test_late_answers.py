"""A teacher call abandoned at its timeout loses no data, in async code too (the event loop may end first).

``asyncio.run(fuse.acall(...))`` returns as soon as the Fuse call has its answer; the teacher call that
timed out is still running then. Its answer was paid for: it must still reach the candidate store and
the report (``CandidateRecord.late_usage``) after the loop has closed, as it does with ``forward``.
A cancelled async call's paid-for answers reach the store too, and the one loss left (the process
exiting before a late answer arrives) is reported by a warning at exit.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import dspy
import pytest

from fusion_dspy import Teacher
from fusion_dspy.store import MemoryStore
from tests.helpers import make_fuse
from tests.helpers import teacher_engine


def _wait_for(condition, seconds=5.0):
    deadline = time.perf_counter() + seconds
    while not condition() and time.perf_counter() < deadline:
        time.sleep(0.02)
    return condition()


def _slow_and_fast(store, *, timeout=0.5):
    """A fast teacher and a slow one that answers 1 s after its timeout (0.5 s of slack for a loaded machine)."""
    slow_engine = teacher_engine("slow", delay=1.5)
    teachers = [Teacher(teacher_engine("fast").lm(), name="fast"), Teacher(slow_engine.lm(), name="slow")]
    return slow_engine, make_fuse(2, teachers=teachers, timeout=timeout, store=store, mode="select")


def test_a_late_answer_outlives_the_event_loop_of_asyncio_run():
    store = MemoryStore()
    slow_engine, fuse = _slow_and_fast(store)
    pred = asyncio.run(fuse.acall(question="q"))  # returns (and closes its loop) before the slow draw answers
    (late,) = pred.fusion.failed
    assert late.teacher == "slow" and late.error_type == "TeacherTimeoutError"
    assert _wait_for(lambda: late.late_usage), "the late answer's usage never reached the report"
    assert late.late_usage["local/slow"].calls == 1 and pred.fusion.usage["local/slow"].calls == 1
    assert "late answers after timeout: 1" in pred.fusion.summary()
    assert _wait_for(lambda: len(store) == 2), "the late answer never reached the store"
    again = asyncio.run(fuse.acall(question="q"))  # replayed from the store: the slow teacher is not paid twice
    assert slow_engine.calls == 1 and all(c.ok for c in again.fusion.candidates)


def test_a_late_answer_outlives_the_event_loop_under_the_sync_driver_too():
    """The same case through ``forward``, the behaviour the async driver must match."""
    store = MemoryStore()
    slow_engine, fuse = _slow_and_fast(store)
    pred = fuse(question="q")
    (late,) = pred.fusion.failed
    assert _wait_for(lambda: late.late_usage) and _wait_for(lambda: len(store) == 2)
    assert slow_engine.calls == 1


def test_a_late_answer_of_a_cancelled_async_call_is_still_stored():
    """``asyncio.wait_for`` around a call with a per-draw timeout: the draw in flight when the caller gives up
    was paid for, so its answer goes into the store (no record is left to report it)."""
    store = MemoryStore()
    slow_engine, fuse = _slow_and_fast(store, timeout=5.0)  # the caller's deadline cancels the call mid-draw

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(fuse.acall(question="q"), 0.8)

    asyncio.run(main())
    assert slow_engine.gauge.entered == 1
    assert _wait_for(lambda: len(store) == 2), "the cancelled call's paid-for answer never reached the store"
    assert not store._in_flight


def test_timed_async_calls_run_with_the_callers_dspy_context():
    """Timed async draws run in pool threads: the caller's ``dspy.context`` (here the teachers' LM) goes with them."""
    engine = teacher_engine("ctx")
    fuse = make_fuse(2, teachers=[Teacher(None, name="ctx")], timeout=5.0, mode="select")

    async def main():
        with dspy.context(lm=engine.lm()), dspy.track_usage() as tracker:
            pred = await fuse.acall(question="q")
        return pred, tracker

    pred, tracker = asyncio.run(main())
    assert engine.calls == 2 and all(c.ok for c in pred.fusion.candidates)
    assert len(tracker.usage_data["local/ctx"]) == 2  # usage of timely calls reaches the caller's tracker


@pytest.mark.parametrize("call", ["fuse(question='q')", "asyncio.run(fuse.acall(question='q'))"])
def test_exiting_while_an_abandoned_call_runs_is_reported(tmp_path, call):
    """The one loss left (the process ends before the late answer arrives) is not silent."""
    script = tmp_path / "exit_early.py"
    script.write_text(
        "import asyncio\n"
        "from fusion_dspy import Teacher\n"
        "from tests.helpers import make_fuse, teacher_engine\n"
        "teachers = [Teacher(teacher_engine('fast').lm(), name='fast'),\n"
        "            Teacher(teacher_engine('slow', delay=30).lm(), name='slow')]\n"
        "fuse = make_fuse(2, teachers=teachers, timeout=0.5, mode='select')\n"
        f"pred = {call}\n"
        "assert [c.error_type for c in pred.fusion.candidates] == [None, 'TeacherTimeoutError']\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 LM call(s) abandoned at their timeout" in done.stderr
    assert "were still running when the process exited" in done.stderr


# -- Ctrl-C in a sync call (a notebook cell interrupted while its teachers answer) ------------------------------

@pytest.fixture
def ctrl_c():
    """``ctrl_c(seconds)`` sends SIGINT to the main thread after ``seconds``, as Ctrl-C does (it wakes a blocked
    wait), with Python's own SIGINT handler in place for the test (a library loaded by another test may have
    installed its own) and the previous one restored after it."""
    import signal
    import threading

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.main_thread().ident
    timers = []

    def after(seconds):
        timer = threading.Timer(seconds, lambda: signal.pthread_kill(main, signal.SIGINT))
        timers.append(timer)
        timer.start()

    yield after
    for timer in timers:
        timer.join()
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_answers_in_flight_at_a_ctrl_c_are_stored_when_they_arrive(timeout, ctrl_c):
    """Ctrl-C while four draws run (the caller waits, or runs a draw itself when there is no timeout)."""
    store = MemoryStore()
    engine = teacher_engine("t", delay=0.6)
    fuse = make_fuse(4, teachers=[Teacher(engine.lm(), name="t")], mode="select", store=store, timeout=timeout)
    ctrl_c(0.15)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        fuse(question="q")
    stopped = time.perf_counter() - started
    # The draws the caller did not run itself answer on their own and are kept (when the caller ran one, Ctrl-C
    # stopped that one: it is the only draw lost).
    kept = 4 if timeout is not None else 3
    assert _wait_for(lambda: len(store) >= kept), f"{len(store)} of {kept} paid-for answers were stored"
    assert stopped < 0.6 or timeout is None  # with a timeout the caller only waited: Ctrl-C stopped it at once
    calls = engine.calls
    again = fuse(question="q")
    assert engine.calls - calls == 4 - kept  # the next call pays only for what Ctrl-C really stopped
    assert len(again.fusion.succeeded) == 4


def test_draws_still_queued_at_a_ctrl_c_are_not_started(ctrl_c):
    store = MemoryStore()
    engine = teacher_engine("t", delay=0.4)
    fuse = make_fuse(4, teachers=[Teacher(engine.lm(), name="t")], mode="select", store=store, timeout=5.0,
                     max_threads=1)
    ctrl_c(0.15)
    with pytest.raises(KeyboardInterrupt):
        fuse(question="q")
    assert _wait_for(lambda: len(store) == 1)
    time.sleep(0.6)  # long enough for a queued draw to start and answer, had it been started
    assert engine.calls == 1 and len(store) == 1


def test_an_interrupt_raised_inside_one_draw_keeps_the_others_answers():
    interrupted = []

    def respond(request):
        if request.sample("t") == 0 and not interrupted:
            interrupted.append(True)
            assert _wait_for(lambda: engine.gauge.current == 4, 2.0)  # the three others are running
            raise KeyboardInterrupt
        time.sleep(0.3)
        return {"answer": f"a-{request.seed}"}

    from fusion_dspy.testing import FakeEngine

    store = MemoryStore()
    engine = FakeEngine(name="t", responder=respond)
    fuse = make_fuse(4, teachers=[Teacher(engine.lm(), name="t")], mode="select", store=store)
    with pytest.raises(KeyboardInterrupt):
        fuse(question="q")
    assert _wait_for(lambda: len(store) == 3), f"{len(store)} of 3 paid-for answers were stored"
    again = fuse(question="q")
    assert engine.calls == 5 and len(again.fusion.succeeded) == 4
