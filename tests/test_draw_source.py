"""Single flight: concurrent Fuse calls generate each draw once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from fusion_dspy import CandidatesExhaustedError
from fusion_dspy import Teacher
from fusion_dspy.store import MemoryStore
from tests.helpers import make_fuse
from tests.helpers import teacher_engine


def test_concurrent_calls_generate_each_draw_once():
    engine = teacher_engine("slow", delay=0.3)
    fuse = make_fuse(3, teachers=[Teacher(engine.lm(), name="slow")], mode="select", store=MemoryStore())
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        preds = list(pool.map(lambda _: fuse(question="q"), range(4)))
    assert engine.calls == 3  # not 12
    outputs = {tuple(c.outputs["answer"] for c in p.fusion.candidates) for p in preds}
    assert len(outputs) == 1  # every call saw the same candidates
    assert sum(not c.cached for p in preds for c in p.fusion.candidates) == 3  # each paid for once


async def test_concurrent_async_calls_generate_each_draw_once():
    engine = teacher_engine("slow", delay=0.3)
    fuse = make_fuse(2, teachers=[Teacher(engine.lm(), name="slow")], mode="select", store=MemoryStore())
    preds = await asyncio.gather(*(fuse.acall(question="q") for _ in range(3)))
    assert engine.calls == 2
    assert all(p.answer == preds[0].answer for p in preds)


def test_a_waiting_call_generates_itself_when_the_first_generation_fails():
    first = threading.Event()

    def fail_first(request):
        if not first.is_set():
            first.set()
            return True
        return False

    engine = teacher_engine("flaky", delay=0.3, fail=fail_first)
    fuse = make_fuse(1, teachers=[Teacher(engine.lm(), name="flaky")], store=MemoryStore(), min_candidates=1)

    def call(_):
        try:
            return fuse(question="q")
        except CandidatesExhaustedError as error:
            return error

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(call, range(2)))
    # One call owned the draw and its teacher failed (a transient fault: not stored); the other was
    # waiting for it, found nothing, and asked the teacher itself instead of failing too.
    assert engine.calls == 2
    assert sum(isinstance(r, CandidatesExhaustedError) for r in results) == 1
    (ok,) = [r for r in results if not isinstance(r, CandidatesExhaustedError)]
    assert ok.answer.startswith("flaky-")
