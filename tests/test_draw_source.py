"""Single flight: concurrent Fuse calls generate each draw once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from fusion_dspy import CandidatesExhaustedError
from fusion_dspy import Teacher
from fusion_dspy.sampling import set_lm_concurrency
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


@pytest.mark.parametrize("driver", ["threads", "asyncio"])
def test_a_waiting_call_does_not_give_up_on_a_claim_whose_draws_are_queued(driver):
    """Queued time never counts toward ``timeout``: not for the claimer, nor for a call waiting on its claim."""
    engine = teacher_engine("narrow", delay=0.3)
    lm = engine.lm()
    set_lm_concurrency(lm, 1)  # the claimer's four draws take their turns at the one slot
    fuse = make_fuse(4, teachers=[Teacher(lm, name="narrow")], timeout=0.5, mode="select", store=MemoryStore())

    def claimer_started():
        while engine.gauge.entered < 1:  # the first call holds every claim
            time.sleep(0.01)

    if driver == "threads":
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(fuse, question="q")
            claimer_started()
            preds = [fuse(question="q"), first.result()]
    else:

        async def main():
            first = asyncio.ensure_future(fuse.acall(question="q"))
            while engine.gauge.entered < 1:
                await asyncio.sleep(0.01)
            return [await fuse.acall(question="q"), await first]

        preds = asyncio.run(main())
    assert engine.calls == 4  # not 8: the waiting call generated none of them again
    assert all(len(p.fusion.succeeded) == 4 for p in preds)
    assert sum(not c.cached for p in preds for c in p.fusion.candidates) == 4
