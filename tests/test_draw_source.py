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
from fusion_dspy.testing import FakeEngine
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


def test_a_late_answer_does_not_replace_the_draw_a_later_call_generated_and_used():
    """Call 1's slow draw times out; call 2 generates that draw again and answers with it. When call 1's
    late answer arrives it must not overwrite call 2's entry: a replay must give the candidates call 2
    reported, not an answer no call ever used."""
    def slow_first(request):
        if request.call == 0:
            time.sleep(1.2)  # answers ~0.9 s after call 1's timeout
        return {"answer": f"slow-call-{request.call}"}

    from fusion_dspy.store import LayeredStore

    class Counting(LayeredStore):  # like the optimizer's CandidateBank: every get is a lookup
        gets = 0

        def get(self, key):
            Counting.gets += 1
            return super().get(key)

    slow = FakeEngine(name="slow", responder=slow_first)
    teachers = [Teacher(teacher_engine("fast").lm(), name="fast"), Teacher(slow.lm(), name="slow")]
    store = Counting(MemoryStore())
    fuse = make_fuse(2, teachers=teachers, timeout=0.3, store=store, mode="select")
    first = fuse(question="q")
    assert first.fusion.candidates[1].error_type == "TeacherTimeoutError"
    second = fuse(question="q")  # the late answer has not arrived yet: the slow draw is generated again
    assert second.fusion.candidates[1].outputs == {"answer": "slow-call-1"} and slow.calls == 2
    gets = Counting.gets
    deadline = time.perf_counter() + 5
    while not first.fusion.candidates[1].late_usage and time.perf_counter() < deadline:
        time.sleep(0.02)
    assert first.fusion.candidates[1].late_usage, "the late answer never arrived"
    time.sleep(0.1)  # the store is written after the report
    assert Counting.gets == gets, "keeping the late answer counted as a lookup"
    third = fuse(question="q")
    assert slow.calls == 2 and all(c.cached for c in third.fusion.candidates)
    assert third.fusion.candidates[1].outputs == {"answer": "slow-call-1"}, "the late answer replaced call 2's draw"


def test_a_store_whose_claim_fails_midway_leaks_no_claim():
    """A store's ``claim`` raising (a lock server down) after this call already claimed some draws must
    release those: a leaked claim makes every later call of the same draw wait forever."""
    from fusion_dspy.store import LayeredStore

    class FlakyClaims(LayeredStore):
        def __init__(self, store):
            super().__init__(store)
            self.claims = 0

        def claim(self, key):
            self.claims += 1
            if self.claims == 2:
                raise ConnectionError("lock server unreachable")
            return super().claim(key)

    inner = MemoryStore()
    engine = teacher_engine("t")
    fuse = make_fuse(3, teachers=[Teacher(engine.lm(), name="t")], mode="select", store=FlakyClaims(inner))
    with pytest.raises(ConnectionError):
        fuse(question="q")
    assert not inner._in_flight, f"claims leaked: {len(inner._in_flight)}"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pred = pool.submit(fuse, question="q").result(timeout=10)  # would wait forever on a leaked claim
    assert len(pred.fusion.succeeded) == 3 and engine.calls == 3
