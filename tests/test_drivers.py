"""One call engine, two drivers (issue 9, item 1): every option behaves the same in forward and aforward."""

from __future__ import annotations

import asyncio
import itertools
import time

import dspy
import pytest

from fusion_dspy import CandidatesExhaustedError
from fusion_dspy import Teacher
from fusion_dspy.selectors import LLMJudge
from fusion_dspy.selectors import UniversalSelfConsistency
from fusion_dspy.store import MemoryStore
from fusion_dspy.testing import FakeEngine
from tests.helpers import fusor_engine
from tests.helpers import make_fuse
from tests.helpers import teacher_engine
from tests.selectors.builders import QA
from tests.selectors.builders import answers


@pytest.fixture(params=["select", "aselect"])
def select(request):
    if request.param == "select":
        return lambda selector, *args: selector.select(*args)
    return lambda selector, *args: asyncio.run(selector.aselect(*args))


def test_max_threads_bounds_both_drivers(call):
    """The issue's repro: n=8, max_threads=2, 0.2 s per draw took 0.24 s through acall."""
    engine = teacher_engine("t", delay=0.2)
    fuse = make_fuse(8, teachers=[Teacher(engine.lm(), name="t")], max_threads=2, mode="select")
    start = time.perf_counter()
    pred = call(fuse, question="q")
    elapsed = time.perf_counter() - start
    assert engine.calls == 8 and len(pred.fusion.succeeded) == 8
    assert engine.gauge.peak == 2
    assert elapsed >= 0.75  # four waves of two; a lower bound, which load cannot break


def test_without_max_threads_all_draws_overlap(call):
    engine = teacher_engine("t", delay=0.2)
    fuse = make_fuse(8, teachers=[Teacher(engine.lm(), name="t")], mode="select")
    call(fuse, question="q")
    assert engine.gauge.peak == 8


def test_timeout_drops_the_slow_teacher_in_both(call):
    fast = Teacher(teacher_engine("fast").lm(), name="fast")
    slow = Teacher(teacher_engine("slow", delay=2.0).lm(), name="slow")
    pred = call(make_fuse(2, teachers=[fast, slow], timeout=0.3), question="q")
    assert [(c.teacher, c.error_type) for c in pred.fusion.failed] == [("slow", "TeacherTimeoutError")]
    assert pred.fusion.path == "single"


def test_store_replays_in_both(call):
    engine = teacher_engine("a")
    store = MemoryStore()
    fuse = make_fuse(3, teachers=[Teacher(engine.lm(), name="a")], store=store, mode="select")
    first = call(fuse, question="q")
    second = call(fuse, question="q")
    assert engine.calls == 3 and all(c.cached for c in second.fusion.candidates)
    assert [c.outputs for c in first.fusion.candidates] == [c.outputs for c in second.fusion.candidates]
    assert second.fusion.candidates[0].usage == first.fusion.candidates[0].usage


def test_min_candidates_in_both(call):
    good = Teacher(teacher_engine("good").lm(), name="good")
    bad = Teacher(teacher_engine("bad", fail=True).lm(), name="bad")
    with pytest.raises(CandidatesExhaustedError, match="min_candidates=2"):
        call(make_fuse(2, teachers=[good, bad], min_candidates=2), question="q")


def test_the_same_call_gives_the_same_report_in_both(call):
    teachers = [Teacher(teacher_engine(f"t{i}").lm(), name=f"t{i}") for i in range(3)]
    fuse = make_fuse(3, teachers=teachers, fusor=fusor_engine("F").lm(), guard=False)
    pred = call(fuse, question="q")
    reference = fuse(question="q")
    assert pred.answer == reference.answer == "F"
    assert [c.outputs for c in pred.fusion.candidates] == [c.outputs for c in reference.fusion.candidates]
    assert pred.fusion.fusor.order == reference.fusion.fusor.order
    assert pred.fusion.total_usage == reference.fusion.total_usage


def test_a_fuse_with_a_judge_bounds_the_judge_calls_in_both(call):
    judge = FakeEngine(name="judge", responder=lambda request: {"reasoning": "ok", "score": 5.0}, delay=0.2)
    fuse = make_fuse(4, mode="select", selector=LLMJudge(lm=judge.lm(), num_threads=2))
    pred = call(fuse, question="q")
    assert judge.calls == 4 and pred.fusion.selection.usage["local/judge"].calls == 4
    assert judge.gauge.peak == 2


def test_usc_selects_the_same_in_both(select):
    engine = FakeEngine(name="usc", responder=lambda request: {"index": 2})
    selection = select(UniversalSelfConsistency(lm=engine.lm()), QA, {"question": "q"}, answers("a", "b", "c"))
    assert selection.position == 1 and engine.calls == 1


def test_a_selectors_own_aselect_is_used_by_the_async_driver():
    from fusion_dspy.selectors.base import Selection
    from fusion_dspy.selectors.base import Selector

    class TwoFaced(Selector):
        name = "two-faced"

        def select(self, signature, inputs, candidates):
            return Selection(position=0, rationale="sync")

        async def aselect(self, signature, inputs, candidates):
            await asyncio.sleep(0)
            return Selection(position=1, rationale="async")

    fuse = make_fuse(2, mode="select", selector=TwoFaced())
    assert fuse(question="q").fusion.selection.rationale == "sync"
    assert asyncio.run(fuse.acall(question="q")).fusion.selection.rationale == "async"


_skip_ids = itertools.count()


def test_skip_response_cache_makes_every_call_of_a_fuse_sync_and_async(call):
    """DSPy's cache answers a repeated request with no usage; inside skip_response_cache the calls
    are made (and their usage reported), in worker threads and tasks too; outside it the cache applies."""

    from fusion_dspy import Fuse
    from fusion_dspy import skip_response_cache

    tag = f"skip-{next(_skip_ids)}"  # DSPy's cache is process-wide: names of their own
    engines = [FakeEngine(name=f"t{i}-{tag}") for i in range(3)]
    fusor = FakeEngine(name=f"fusor-{tag}", responder=lambda r: {"comparison": "c", "answer": "fused"})
    teachers = [Teacher(e.lm(cache=True), name=f"t{i}", temperature=0.0) for i, e in enumerate(engines)]
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor.lm(cache=True), guard=False)
    engines.append(fusor)

    def counts():
        return [e.calls for e in engines]

    call(fuse, question="q")
    assert counts() == [1, 1, 1, 1]
    pred = call(fuse, question="q")
    assert counts() == [1, 1, 1, 1]  # DSPy's cache answered all four, reporting no usage
    assert not pred.fusion.fusor.usage
    with skip_response_cache():
        pred = call(fuse, question="q")
    assert counts() == [2, 2, 2, 2]
    assert pred.fusion.fusor.usage and all(c.usage for c in pred.fusion.candidates)
    call(fuse, question="q")
    assert counts() == [2, 2, 2, 2]  # outside the block, the cache again


async def test_a_cancelled_async_call_releases_its_store_claims():
    """``asyncio.wait_for`` around a call, a client disconnect: the engine's claims must not outlive it."""
    engine = teacher_engine("t", delay=0.5)
    store = MemoryStore()
    fuse = make_fuse(2, teachers=[Teacher(engine.lm(), name="t")], mode="select", store=store)
    task = asyncio.ensure_future(fuse.acall(question="q"))
    while engine.gauge.entered < 2:  # both draws claimed and in flight
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as kept:  # held, as a logger would: the engine's frames stay alive
        await task
    assert not store._in_flight
    pred = await fuse.acall(question="q")  # generates the draws itself instead of waiting on dead claims
    assert engine.calls == 4 and len(pred.fusion.succeeded) == 2
    assert kept.value is not None


def test_an_interrupted_sync_call_releases_its_store_claims():
    def respond(request):
        if request.call == 0:  # the first draw is interrupted (KeyboardInterrupt reaches the caller)
            raise KeyboardInterrupt
        return {"answer": "ok"}

    store = MemoryStore()
    fuse = make_fuse(2, teachers=[Teacher(FakeEngine(name="t", responder=respond).lm(), name="t")], mode="select",
                     store=store)
    with pytest.raises(KeyboardInterrupt) as kept:  # held: the engine's frames stay alive
        fuse(question="q")
    assert not store._in_flight
    assert kept.value is not None


class _AsyncOnlyLM(dspy.BaseLM):
    """A custom LM with only ``aforward`` (no sync path), as some provider wrappers are written."""

    def __init__(self) -> None:
        super().__init__(model="custom/async-only", model_type="chat", temperature=0.0, max_tokens=64, cache=False)
        self.calls = 0

    async def aforward(self, prompt=None, messages=None, **kwargs):
        from types import SimpleNamespace

        self.calls += 1
        await asyncio.sleep(0.01)
        text = f"[[ ## answer ## ]]\nok-{self.calls}\n\n[[ ## completed ## ]]"
        message = SimpleNamespace(content=text, tool_calls=None)
        return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason="stop", logprobs=None)],
                               usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                               model="custom/async-only")


def test_a_timed_async_call_serves_an_lm_that_has_only_aforward():
    """Timed async calls run in pool threads on the LM's sync path; an LM without one is awaited there instead
    (before: every draw failed with NotImplementedError)."""
    lm = _AsyncOnlyLM()
    fuse = make_fuse(2, teachers=[Teacher(lm, name="custom")], mode="select", timeout=5.0)
    pred = asyncio.run(fuse.acall(question="q"))
    assert lm.calls == 2 and len(pred.fusion.succeeded) == 2
    assert pred.fusion.usage["custom/async-only"].calls == 2
